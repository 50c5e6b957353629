// Bun.listen's socket as the adapters see it (targets/bun.ts BunWire), driven by a fake
// socket that takes as many bytes per write() as the test says, the way Bun.listen's
// unbuffered write() does: every split of a write at every byte, what buffered() and idle()
// report meanwhile, drain() handing the rest on in order, end() and close while bytes are
// held, and an Outbound over the wire reusing its buffer only when the wire holds nothing.
// The real Bun.listen under load (a reader that stops, so max_pending is reached) is covered
// per listener in the second half, against the bundle on Bun.

import t from 'tap'
import net from 'node:net'
import { existsSync } from 'node:fs'
import { bunHandlers, type BunSocket, type BunWire } from '../targets/bun.ts'
import type { Conn, Wire } from '../src/host.ts'
import { Outbound } from '../src/outbound.ts'
import { createLogger } from '../src/log.ts'
import { guardAccept } from '../targets/runtime.ts'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { fakeSocket } from './helpers/fake-bun.ts'
import { freePort, spawnServer } from './helpers/peers.ts'

interface Seen {
  data: Uint8Array[]
  drained: number
  closed: (string | undefined)[]
}

function open(take: () => number): { h: ReturnType<typeof bunHandlers>; s: BunSocket & { ended: number }; sent: number[]; w: Wire; seen: Seen } {
  const { s, sent } = fakeSocket(take)
  const seen: Seen = { data: [], drained: 0, closed: [] }
  let wire: Wire | null = null
  const h = bunHandlers((w) => {
    wire = w
    const c: Conn = { data: (d) => void seen.data.push(d), drained: () => void seen.drained++, closed: (why) => void seen.closed.push(why) }
    return c
  }, () => {})
  h.open(s)
  return { h, s, sent, w: wire!, seen }
}

const bytes = (n: number, from: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (from + i) & 255)

t.test('a write split at every byte, then drained in steps of every size', async (t) => {
  const parts = [bytes(5, 0), bytes(7, 5), bytes(3, 12)]
  const all = [...parts.flatMap((p) => [...p])]
  for (let first = 0; first < parts[0]!.length; first++) {
    for (const step of [1, 2, 3, 7, 100]) {
      let budget = first
      const { h, s, sent, w, seen } = open(() => budget)
      t.equal(w.remoteAddress, '127.0.0.1', 'the v4-mapped prefix is dropped')
      t.equal(w.write(parts[0]!), false, 'a partial write reports backpressure')
      t.equal(w.write(parts[1]!), false, 'nothing is written past a held rest')
      t.equal(w.write(parts[2]!), false)
      t.equal(w.idle!(), false, 'not idle while bytes are held')
      t.equal(w.buffered(), all.length - first, `buffered() after ${first} taken`)
      let rounds = 0
      while (sent.length < all.length && rounds++ < 100) {
        budget = step
        h.drain(s)
        t.equal(w.buffered(), all.length - sent.length, `buffered() after a drain of ${step}`)
      }
      t.same(sent, all, `first write took ${first}, drains of ${step}: every byte once, in order`)
      t.equal(w.idle!(), true, 'idle once everything is taken')
      t.equal(seen.drained, 1, 'drained() once, when the last byte is taken')
      budget = Infinity
      t.equal(w.write(bytes(4, 0)), true, 'a write after the drain goes straight through')
    }
  }
})

t.test('a write taken at once leaves nothing held', async (t) => {
  const { w, sent } = open(() => Infinity)
  t.equal(w.write(bytes(10, 0)), true)
  t.equal(w.idle!(), true)
  t.equal(w.buffered(), 0)
  t.equal(sent.length, 10)
})

t.test('end() while bytes are held ends only after the drain; close reports the socket error', async (t) => {
  let budget = 2
  const { h, s, sent, w, seen } = open(() => budget)
  w.write(bytes(10, 0))
  w.end()
  t.equal(s.ended, 0, 'not ended while the rest is held')
  budget = 3
  h.drain(s)
  t.equal(s.ended, 0)
  budget = 100
  h.drain(s)
  t.equal(sent.length, 10, 'the rest is sent before the end')
  t.equal(s.ended, 1, 'ended once drained')
  t.equal(seen.drained, 0, 'a closing wire does not ask for more')
  h.error(s, new Error('ECONNRESET'))
  h.close(s)
  t.same(seen.closed, ['ECONNRESET'], 'the first socket error is the reason')
  h.close(s)
  t.same(seen.closed, ['ECONNRESET'], 'closed() once')
})

t.test('close while bytes are held: the connection hears of it, nothing is written after', async (t) => {
  let budget = 1
  const { h, s, sent, w, seen } = open(() => budget)
  w.write(bytes(50, 0))
  h.close(s, new Error('gone'))
  t.same(seen.closed, ['gone'])
  budget = 100
  h.data(s, bytes(3, 0))
  t.same(seen.data, [], 'data after close reaches no one')
  t.equal(sent.length, 1)
})

t.test('an Outbound over the wire reuses its buffer only when the wire holds nothing', async (t) => {
  let budget = Infinity
  const { h, s, sent, w } = open(() => budget)
  const o = new Outbound(w, 1 << 20, () => {})
  const expect: number[] = []
  const batch = (n: number, seed: number): void => {
    const b = bytes(n, seed)
    t.ok(o.push(b))
    expect.push(...b)
  }
  batch(5000, 1) // a busy batch (≥ 4 KiB): its buffer may be reused
  o.flush(1)
  const first = o.buf
  batch(5000, 2)
  t.equal(o.buf, first, 'taken at once: the next batch goes into the same buffer')
  budget = 1000 // the next write is taken only in part: the rest stays in that buffer
  o.flush(2)
  t.not(o.buf, first, 'held by the wire: the next batch gets a fresh buffer')
  t.ok(o.blocked)
  batch(6000, 3) // must not overwrite the 4,000 bytes the wire holds
  budget = Infinity
  h.drain(s)
  o.drained(3) // what the connection does when the wire says drained()
  t.notOk(o.blocked, 'drained')
  o.flush(3)
  t.same(sent, expect, 'every byte, in order, none overwritten')
})

t.test('a guarded listener: the wire guards its Conn itself, four fields, no GuardedConn', async (t) => {
  const logs: string[] = []
  const log = createLogger({ level: 'debug', sink: (l) => void logs.push(l) })
  const seen: Seen = { data: [], drained: 0, closed: [] }
  let boom = ''
  const inner: Conn = {
    data(d) {
      if (boom === 'data') throw new Error('injected data failure')
      seen.data.push(d)
    },
    drained() {
      if (boom === 'drained') throw new Error('injected drain failure')
      seen.drained++
    },
    closed(why) {
      seen.closed.push(why)
      if (boom === 'closed') throw new Error('injected close failure')
    },
  }
  const accept = guardAccept(() => inner, log)
  t.ok(accept.guard, 'guardAccept hands targets its Guard')
  for (const where of ['data', 'drained', 'closed']) {
    seen.data = []
    seen.drained = 0
    seen.closed = []
    boom = ''
    let budget = Infinity
    const { s } = fakeSocket(() => budget)
    const h = bunHandlers(accept, () => {})
    h.open(s)
    const w = s.data
    t.equal(w.conn, inner, 'the adapter Conn itself, no wrapper object')
    t.ok(Object.keys(w).length <= 4, `BunWire has ${Object.keys(w).length} fields (≤ 4: JSC's 48-byte size class)`)
    t.equal(w.remotePort, 5555)
    t.equal(w.remoteAddress, '127.0.0.1')
    h.data(s, bytes(3, 0))
    t.equal(seen.data.length, 1, 'data reaches the Conn')
    boom = where
    if (where === 'data') h.data(s, bytes(3, 0))
    if (where === 'drained') {
      budget = 1
      w.write(bytes(4, 0))
      budget = Infinity
      h.drain(s)
    }
    if (where !== 'closed') {
      t.equal((s as unknown as { terminated: number }).terminated, 1, `an exception in ${where}() destroys the socket`)
      t.ok(logs.some((l) => l.includes(`127.0.0.1:5555 - internal error in ${where}: Error: injected`)), `logged with the peer (${where})`)
      boom = ''
      h.data(s, bytes(3, 0))
      t.equal(seen.data.length, 1, 'nothing more reaches a Conn that threw')
    }
    h.error(s, new Error('EPIPE'))
    h.close(s)
    h.close(s)
    t.same(seen.closed, ['EPIPE'], 'closed() once, with the socket error, even after a failure')
    if (where === 'closed') t.ok(logs.some((l) => l.includes('127.0.0.1:5555 - internal error in close: Error: injected close failure')), 'an exception in closed() is logged, not thrown')
  }
})

// The real thing: the bundle on Bun, a reader that stops reading, until max_pending is reached.
const bun = runtimeBin('bun')

async function stopReading(port: number, hello: Buffer, sub: Buffer): Promise<{ sock: net.Socket; closed: Promise<void> }> {
  const sock = net.connect(port, '127.0.0.1')
  await new Promise<void>((r) => sock.once('connect', () => r()))
  sock.write(hello)
  sock.write(sub)
  await new Promise((r) => setTimeout(r, 200))
  sock.pause() // stop reading: the server's writes pile up in the kernel, then in the BunWire
  const closed = new Promise<void>((r) => sock.once('close', () => r()))
  return { sock, closed }
}

t.test('Bun.listen under a reader that stops: slow consumer on NATS and MQTT, the server stays up', { timeout: 60_000 }, async (t) => {
  if (!existsSync(bun)) return t.fail(`${bun} not found: it is a devDependency (package bun), run npm install`)
  const bundle = freshBundle()
  const port = await freePort()
  const mport = await freePort()
  const p = await spawnServer(bun, [bundle, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', String(mport), '--max-pending', '2MB'], port, { NODE_OPTIONS: '', SPRIG_NET: '' })
  t.teardown(() => p.stop())
  t.match(p.output(), / on bun \d[\d.]*$/m, 'Bun.listen is the default')

  const nats = await stopReading(port, Buffer.from('CONNECT {"verbose":false}\r\n'), Buffer.from('SUB flood 1\r\nPING\r\n'))
  // MQTT 3.1.1 CONNECT (clean session, client id "slow"), then SUBSCRIBE flood at QoS 0.
  const connect = Buffer.from([0x10, 16, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 60, 0, 4, 0x73, 0x6c, 0x6f, 0x77])
  const subscribe = Buffer.from([0x82, 10, 0, 1, 0, 5, 0x66, 0x6c, 0x6f, 0x6f, 0x64, 0])
  const mqtt = await stopReading(mport, connect, subscribe)

  const pub = net.connect(port, '127.0.0.1')
  await new Promise<void>((r) => pub.once('connect', () => r()))
  pub.write('CONNECT {"verbose":false}\r\n')
  const payload = Buffer.alloc(16 * 1024, 0x61)
  const frame = Buffer.concat([Buffer.from(`PUB flood ${payload.length}\r\n`), payload, Buffer.from('\r\n')])
  const burst = Buffer.concat(Array.from({ length: 64 }, () => frame)) // 1 MiB
  let stop = false
  void (async () => {
    for (let i = 0; i < 200 && !stop; i++) {
      if (!pub.write(burst)) await new Promise((r) => pub.once('drain', r))
    }
  })()
  // Both readers are closed as slow consumers; a paused client socket only sees its close once
  // it reads again, so it resumes after the log says so.
  for (let i = 0; i < 400 && (p.output().match(/Slow Consumer Detected/g) ?? []).length < 2; i++) await new Promise((r) => setTimeout(r, 50))
  stop = true
  pub.destroy()
  t.match(p.output(), /cid:\d+ Slow Consumer Detected: MaxPending of 2097152 Exceeded/, 'the NATS reader is a slow consumer')
  t.match(p.output(), /mid:\d+ \("slow"\) Slow Consumer Detected: MaxPending of 2097152 Exceeded/, 'the MQTT reader is a slow consumer')
  for (const r of [nats, mqtt]) {
    r.sock.on('error', () => {})
    r.sock.on('data', () => {})
    r.sock.resume()
  }
  const timeout = new Promise<string>((r) => setTimeout(() => r('not closed within 10 s'), 10_000))
  t.equal(await Promise.race([Promise.all([nats.closed, mqtt.closed]).then(() => 'closed'), timeout]), 'closed', 'both connections closed by the server')

  // Still serving: a fresh NATS client gets PONG.
  const c = net.connect(port, '127.0.0.1')
  let got = ''
  c.on('data', (d) => (got += d))
  c.write('CONNECT {}\r\nPING\r\n')
  for (let i = 0; i < 100 && !got.includes('PONG'); i++) await new Promise((r) => setTimeout(r, 20))
  t.match(got, /PONG/, 'the server still answers')
  c.destroy()
  t.equal(p.proc.exitCode, null, 'the server is still running')
})
