// Permissions as a NATS client sees them, compared byte for byte with a real nats-server run
// with the same configuration (one JSON file both read): the -ERR strings for refused
// publishes and subscriptions (with and without a queue group), +OK only for what was
// allowed, the connection staying open, deny rules holding at delivery for wildcard
// subscriptions, queue-group rules and allow_responses.

import t from 'tap'
import net from 'node:net'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { validateOptions } from '../src/config.ts'
import { startBroker } from './helpers/broker.ts'
import { freePort, havePeer, spawnServer } from './helpers/peers.ts'

const CONFIG = {
  authorization: {
    users: [
      {
        user: 'p',
        password: 'p',
        permissions: {
          publish: { allow: ['foo.>', '_INBOX.>'], deny: ['foo.secret'] },
          subscribe: { allow: ['>'], deny: ['foo.secret', 'q.x', '*.hidden'] },
        },
      },
      { user: 'f', password: 'f' },
      { user: 'r', password: 'r', permissions: { subscribe: ['svc.>'], allow_responses: true } },
      { user: 'q', password: 'q', permissions: { subscribe: { allow: ['work.> workers', 'open.>'] } } },
      { user: 'l', password: 'l', permissions: { publish: 'only.this', subscribe: 'only.that' } },
      { user: 'w', password: 'w', permissions: { subscribe: { allow: ['foo.*'], deny: ['foo.*.x'] } } },
    ],
  },
}

/** A raw client connection; `out` is everything after INFO. */
class Raw {
  out = ''
  closed = false
  private seenInfo = false
  private constructor(readonly s: net.Socket) {
    s.on('data', (d: Buffer) => {
      let text = d.toString('latin1')
      if (!this.seenInfo) {
        const i = text.indexOf('\r\n')
        this.seenInfo = true
        text = text.slice(i + 2)
      }
      this.out += text
    })
    s.on('close', () => (this.closed = true))
    s.on('error', () => {})
  }
  static open(port: number, user: string, verbose = false): Promise<Raw> {
    return new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        const r = new Raw(s)
        s.write(`CONNECT ${JSON.stringify({ user, pass: user, verbose })}\r\n`)
        resolve(r)
      })
    })
  }
  /** Sends the lines (CRLF added) and waits for the PONG of a trailing PING. */
  async send(...lines: string[]): Promise<void> {
    const pongs = this.out.split('PONG\r\n').length
    this.s.write([...lines, 'PING\r\n'].join('\r\n'))
    const end = Date.now() + 3000
    while (this.out.split('PONG\r\n').length === pongs && !this.closed && Date.now() < end) await new Promise((r) => setTimeout(r, 5))
  }
  close(): void {
    this.s.destroy()
  }
}

interface Case {
  name: string
  /** Returns one transcript per connection that matters. */
  run(port: number): Promise<string[]>
  /** A deliberate difference: why, and what each server says. */
  differs?: { why: string; sprig: string[]; nats: string[] }
}

const CASES: Case[] = [
  {
    name: 'publish and subscribe refused with -ERR, connection stays, +OK only when allowed',
    async run(port) {
      const c = await Raw.open(port, 'p', true)
      await c.send('PUB bar 2', 'hi', 'PUB foo.secret 2', 'hi', 'PUB foo.ok 2', 'hi', 'SUB foo.secret 1', 'SUB q.x grp 2', 'SUB foo.* 3', 'SUB x.hidden 4', 'SUB q.y grp 5')
      c.close()
      return [c.out + (c.closed ? '<closed>' : '')]
    },
  },
  {
    name: 'a wildcard subscription overlapping a deny rule never gets the denied subjects',
    async run(port) {
      const a = await Raw.open(port, 'p')
      await a.send('SUB foo.* 1', 'SUB > 2', 'SUB *.* 3')
      const b = await Raw.open(port, 'f')
      await b.send('PUB foo.secret 1', 'x', 'PUB foo.ok 1', 'y', 'PUB a.hidden 1', 'z', 'PUB q.x 1', 'w')
      await a.send()
      a.close()
      b.close()
      // The order across a client's own subscriptions is the index's; compare as a set.
      return a.out.split(/(?=MSG |PONG)/).sort()
    },
  },
  {
    name: 'allow_responses: one reply to a request received, nothing else',
    async run(port) {
      const r = await Raw.open(port, 'r')
      await r.send('SUB svc.echo 1')
      const f = await Raw.open(port, 'f')
      await f.send('SUB _INBOX.x 1', 'PUB svc.echo _INBOX.x 2', 'hi')
      await r.send('PUB _INBOX.x 2', 'ok', 'PUB _INBOX.x 2', 'no', 'PUB other 1', 'x', 'PUB svc.echo 1', 'x')
      await f.send()
      r.close()
      f.close()
      return [r.out, f.out]
    },
  },
  {
    name: 'queue group rules: "work.> workers" allows only that group',
    async run(port) {
      const c = await Raw.open(port, 'q')
      await c.send('SUB work.a workers 1', 'SUB work.a 2', 'SUB work.a other 3', 'SUB open.a 4', 'SUB open.b g 5', 'SUB closed 6')
      c.close()
      return [c.out]
    },
  },
  {
    name: 'a single subject as the whole rule',
    async run(port) {
      const c = await Raw.open(port, 'l')
      await c.send('PUB only.this 1', 'x', 'PUB only.that 1', 'x', 'SUB only.that 1', 'SUB only.this 2')
      c.close()
      return [c.out]
    },
  },
  {
    name: 'a subscription wider than its allow rule',
    async run(port) {
      const c = await Raw.open(port, 'w')
      await c.send('SUB foo.* 1', 'SUB foo.> 2', 'SUB > 3', 'SUB *.* 4', 'SUB foo.a 5')
      c.close()
      return [c.out]
    },
    differs: {
      why: 'nats-server 2.9 lets "foo.>" through an allow of "foo.*" (its "*" matches the ">" token), and then delivers foo.a.b; sprig requires the subscription to lie inside an allow rule',
      sprig: [`-ERR 'Permissions Violation for Subscription to "foo.>"'\r\n-ERR 'Permissions Violation for Subscription to ">"'\r\n-ERR 'Permissions Violation for Subscription to "*.*"'\r\nPONG\r\n`],
      nats: [`-ERR 'Permissions Violation for Subscription to ">"'\r\n-ERR 'Permissions Violation for Subscription to "*.*"'\r\nPONG\r\n`],
    },
  },
]

t.test('permissions: sprig and nats-server answer the same', async (t) => {
  if (!havePeer(t, 'nats-server', 'nats-server')) return
  const dir = mkdtempSync(join(tmpdir(), 'sprig-perm-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'nats.json')
  const port = await freePort()
  writeFileSync(file, JSON.stringify({ ...CONFIG, host: '127.0.0.1', port }))
  const ns = await spawnServer('nats-server', ['-c', file], port)
  t.teardown(() => ns.stop())
  const opts = validateOptions(CONFIG)
  const b = await startBroker({ authorization: opts.authorization })
  t.teardown(() => b.stop())
  for (const c of CASES) {
    const sprig = await c.run(b.port)
    const nats = await c.run(ns.port)
    if (c.differs) {
      t.same(sprig, c.differs.sprig, `${c.name}: sprig (differs: ${c.differs.why})`)
      t.same(nats, c.differs.nats, `${c.name}: nats-server`)
    } else {
      t.same(sprig, nats, c.name)
      t.ok(sprig.join('').length > 0, `${c.name}: something was said`)
    }
  }
  t.match(b.logs.join('\n'), /Publish Violation - User "p", Subject "bar"/, 'publish violations are logged as nats-server logs them')
  t.match(b.logs.join('\n'), /Subscription Violation - User "p", Subject "q.x", Queue: "grp", SID 2/, 'subscription violations too')
})
