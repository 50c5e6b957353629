// End to end with the real NATS client (nats.js v3, @nats-io/transport-node) against sprig
// running in this process: what an application sees when it uses sprig as its NATS server.

import t, { type Test } from 'tap'
import { connect, createInbox, errors, headers, RequestError, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { exchange } from './helpers/raw.ts'
import { natsClient } from './helpers/mqtt.ts'

const enc = new TextEncoder()
const MiB = 1024 * 1024

let b: TestBroker

t.before(async () => {
  b = await startBroker()
})
t.teardown(async () => {
  await b?.stop()
})

/** A client connection that the test closes when it ends. */
const client = (t: Test, opts: Parameters<typeof connect>[0] = {}): Promise<NatsConnection> => natsClient(t, b.url, opts)

/** Collects up to `n` messages (or until `ms` passes) from a subscription. */
async function collect(sub: Subscription, n: number, ms = 3000): Promise<Msg[]> {
  const got: Msg[] = []
  const timer = setTimeout(() => sub.unsubscribe(), ms)
  for await (const m of sub) {
    got.push(m)
    if (got.length >= n) break
  }
  clearTimeout(timer)
  return got
}

/** Messages a subscription has already received, without waiting. */
function sink(sub: Subscription): { msgs: Msg[]; done: Promise<void> } {
  const msgs: Msg[] = []
  const done = (async () => {
    for await (const m of sub) msgs.push(m)
  })()
  return { msgs, done }
}

const subjects = (ms: Msg[]): string[] => ms.map((m) => m.subject)

t.test('publish and subscribe', async (t) => {
  const sub = await client(t)
  const pub = await client(t)
  const s = sub.subscribe('e2e.hello')
  await sub.flush()
  pub.publish('e2e.hello', 'world')
  pub.publish('e2e.hello', enc.encode('bytes'))
  pub.publish('e2e.hello')
  const got = await collect(s, 3)
  t.same(got.map((m) => m.string()), ['world', 'bytes', ''])
  t.same(subjects(got), ['e2e.hello', 'e2e.hello', 'e2e.hello'])
  t.equal(got[0]!.reply, '', 'no reply subject')
})

t.test('wildcards', async (t) => {
  const sub = await client(t)
  const pub = await client(t)
  const star = sink(sub.subscribe('w.*.temp'))
  const gt = sink(sub.subscribe('w.>'))
  const mid = sink(sub.subscribe('w.*.*'))
  await sub.flush()
  for (const s of ['w', 'w.a', 'w.a.temp', 'w.b.temp', 'w.a.hum', 'w.a.b.temp', 'x.a.temp']) pub.publish(s, s)
  await pub.flush()
  await sub.flush()
  t.same(subjects(star.msgs), ['w.a.temp', 'w.b.temp'], '* matches exactly one token')
  t.same(subjects(gt.msgs), ['w.a', 'w.a.temp', 'w.b.temp', 'w.a.hum', 'w.a.b.temp'], '> matches one or more tokens, not the parent')
  t.notOk(gt.msgs.some((m) => m.subject === 'w'), '"w.>" does not match "w"')
  t.same(subjects(mid.msgs), ['w.a.temp', 'w.b.temp', 'w.a.hum'])
  const top = sink(sub.subscribe('>'))
  await sub.flush()
  pub.publish('anything.at.all')
  pub.publish('one')
  await pub.flush()
  await sub.flush()
  t.same(subjects(top.msgs), ['anything.at.all', 'one'], 'a lone > matches everything')
})

t.test('queue groups', async (t) => {
  t.test('each message to exactly one member, spread evenly', async (t) => {
    const members = [await client(t), await client(t), await client(t)]
    const pub = await client(t)
    const sinks = members.map((nc) => sink(nc.subscribe('q.work', { queue: 'workers' })))
    for (const nc of members) await nc.flush()
    for (let i = 0; i < 300; i++) pub.publish('q.work', String(i))
    await pub.flush()
    for (const nc of members) await nc.flush()
    const counts = sinks.map((s) => s.msgs.length)
    t.equal(counts.reduce((a, n) => a + n, 0), 300, `300 delivered in all (${counts.join('/')})`)
    const seen = new Set(sinks.flatMap((s) => s.msgs.map((m) => m.string())))
    t.equal(seen.size, 300, 'no message delivered twice')
    // Random choice: 100 expected each, standard deviation about 8; 50 is six of them away.
    for (const [i, n] of counts.entries()) t.ok(n >= 50, `member ${i} got ${n} (roughly a third)`)
  })

  t.test('plain and queue subscribers on the same subject', async (t) => {
    const nc = await client(t)
    const pub = await client(t)
    const plain = sink(nc.subscribe('q.mixed'))
    const qa = sink(nc.subscribe('q.mixed', { queue: 'a' }))
    const qa2 = sink(nc.subscribe('q.mixed', { queue: 'a' }))
    const qb = sink(nc.subscribe('q.mixed', { queue: 'b' }))
    await nc.flush()
    for (let i = 0; i < 100; i++) pub.publish('q.mixed', String(i))
    await pub.flush()
    await nc.flush()
    t.equal(plain.msgs.length, 100, 'the plain subscriber gets every message')
    t.equal(qa.msgs.length + qa2.msgs.length, 100, 'group a gets each message once')
    t.equal(qb.msgs.length, 100, 'group b (one member) gets every message')
    t.same(plain.msgs.map((m) => m.string()), Array.from({ length: 100 }, (_, i) => String(i)), 'in order')
  })

  t.test('a queue group across wildcard subscriptions', async (t) => {
    const a = await client(t)
    const c = await client(t)
    const sa = sink(a.subscribe('qw.*', { queue: 'g' }))
    const sc = sink(c.subscribe('qw.*', { queue: 'g' }))
    await a.flush()
    await c.flush()
    for (let i = 0; i < 50; i++) a.publish(`qw.${i}`)
    await a.flush()
    await c.flush()
    t.equal(sa.msgs.length + sc.msgs.length, 50)
  })
})

t.test('request and reply', async (t) => {
  const svc = await client(t)
  const req = await client(t)
  const s = svc.subscribe('svc.echo')
  void (async () => {
    for await (const m of s) m.respond(`echo:${m.string()}`)
  })()
  await svc.flush()
  const r = await req.request('svc.echo', 'ping', { timeout: 2000 })
  t.equal(r.string(), 'echo:ping')
  const many = await Promise.all(Array.from({ length: 50 }, (_, i) => req.request('svc.echo', String(i), { timeout: 2000 })))
  t.same(many.map((m) => m.string()), Array.from({ length: 50 }, (_, i) => `echo:${i}`), 'concurrent requests get their own replies')
  // Old-style request: a dedicated inbox.
  const r2 = await req.request('svc.echo', 'x', { timeout: 2000, noMux: true })
  t.equal(r2.string(), 'echo:x')
  // A reply subject set by hand.
  const inbox = createInbox()
  const replies = req.subscribe(inbox, { max: 1 })
  req.publish('svc.echo', 'manual', { reply: inbox })
  const got = await collect(replies, 1)
  t.equal(got[0]?.string(), 'echo:manual')
})

t.test('headers', async (t) => {
  const sub = await client(t)
  const pub = await client(t)
  const s = sub.subscribe('hdr.test')
  await sub.flush()
  const h = headers()
  h.append('X-Multi', 'one')
  h.append('X-Multi', 'two')
  h.append('X-Multi', 'three')
  h.set('X-Single', 'value with spaces')
  h.set('Content-Type', 'application/json')
  pub.publish('hdr.test', '{"a":1}', { headers: h })
  pub.publish('hdr.test', '', { headers: h }) // headers only
  const [m1, m2] = await collect(s, 2)
  t.ok(m1?.headers, 'headers arrive')
  t.same(m1!.headers!.values('X-Multi'), ['one', 'two', 'three'], 'multi-value header keeps every value, in order')
  t.equal(m1!.headers!.get('X-Single'), 'value with spaces')
  t.equal(m1!.headers!.get('Content-Type'), 'application/json')
  t.equal(m1!.string(), '{"a":1}')
  const all = (x: MsgHdrs): [string, string[]][] => x.keys().map((k) => [k, x.values(k)])
  t.same(all(m1!.headers!), all(h), 'every header and value round-trips (the raw HMSG below checks bytes)')
  t.equal(m2!.data.length, 0, 'empty payload with headers')
  t.same(m2!.headers!.values('X-Multi'), ['one', 'two', 'three'])

  // On the wire: the HMSG carries the header block byte for byte.
  const block = 'NATS/1.0\r\nA: 1\r\nA: 2\r\nb-lower: x\r\n\r\n'
  const r = await exchange(b.port, [
    'CONNECT {"verbose":false,"headers":true}\r\nSUB hdr.raw 1\r\n',
    `HPUB hdr.raw ${block.length} ${block.length + 5}\r\n${block}hello\r\nPING\r\n`,
  ])
  t.equal(r.out, `HMSG hdr.raw 1 ${block.length} ${block.length + 5}\r\n${block}hello\r\nPONG\r\n`)

  // A subscriber that did not ask for headers gets the payload only.
  const r2 = await exchange(b.port, [
    'CONNECT {"verbose":false,"headers":false}\r\nSUB hdr.plain 1\r\nPING\r\n',
    `PING\r\n`,
  ])
  t.equal(r2.out, 'PONG\r\nPONG\r\n')
  const plain = exchange(b.port, ['CONNECT {"verbose":false}\r\nSUB hdr.plain 1\r\n'], 400)
  await new Promise((r) => setTimeout(r, 100))
  pub.publish('hdr.plain', 'body', { headers: h })
  await pub.flush()
  t.equal((await plain).out, 'MSG hdr.plain 1 4\r\nbody\r\n')
})

t.test('no responders', async (t) => {
  const nc = await client(t)
  const err = await nc.request('nobody.home', 'x', { timeout: 2000 }).then(
    () => null,
    (e: unknown) => e,
  )
  t.type(err, errors.RequestError, 'request rejects with a RequestError')
  t.ok((err as RequestError).isNoResponders(), 'whose cause is no responders (503), not a timeout')
  t.type((err as Error).cause, errors.NoRespondersError)
  // The old-style request gets the same answer.
  const err2 = await nc.request('nobody.home', 'x', { timeout: 2000, noMux: true }).then(
    () => null,
    (e: unknown) => e,
  )
  t.ok(err2 instanceof errors.RequestError && err2.isNoResponders(), 'noMux request: no responders too')
  // Once someone listens, the request succeeds.
  const svc = await client(t)
  const s = svc.subscribe('nobody.home', { max: 1 })
  void (async () => {
    for await (const m of s) m.respond('here')
  })()
  await svc.flush()
  t.equal((await nc.request('nobody.home', 'x', { timeout: 2000 })).string(), 'here')
})

t.test('publishes nobody receives: acknowledged, counted, then delivered once someone subscribes', async (t) => {
  const traffic = b.srv.router.traffic
  const before = { msgs: traffic.in_msgs, bytes: traffic.in_bytes }
  // verbose: +OK for CONNECT and each PUB, though no message is built for nobody.
  const frames = 'PUB quiet.x 2\r\nhi\r\n'.repeat(5)
  const r = await exchange(b.port, [`CONNECT {"verbose":true}\r\n${frames}`, 'PUB quiet.x 3\r\nab', 'c\r\nPING\r\n'])
  t.equal(r.out, '+OK\r\n'.repeat(7) + 'PONG\r\n')
  t.notOk(r.closed)
  t.equal(traffic.in_msgs - before.msgs, 6, 'in_msgs counts them')
  t.equal(traffic.in_bytes - before.bytes, 13, 'in_bytes counts them')
  // The same subject, now with a subscriber on the same connection (echo on): delivered.
  const s = await exchange(b.port, [`CONNECT {"verbose":false}\r\n${frames}SUB quiet.x 1\r\n${frames}PING\r\n`])
  t.equal(s.out, 'MSG quiet.x 1 2\r\nhi\r\n'.repeat(5) + 'PONG\r\n', 'only what was published after SUB')
  // HPUB to nobody, and a no-responders request to nobody, still answered.
  const h = await exchange(b.port, ['CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\nSUB _INBOX.q 9\r\nHPUB quiet.y _INBOX.q 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPUB quiet.y _INBOX.q 2\r\nhi\r\nPING\r\n'])
  t.equal(h.out, 'HMSG _INBOX.q 9 16 16\r\nNATS/1.0 503\r\n\r\n\r\n'.repeat(2) + 'PONG\r\n', 'no responders for each')
})

t.test('flush round-trips', async (t) => {
  const nc = await client(t)
  for (let i = 0; i < 5; i++) await nc.flush()
  const rtt = await nc.rtt()
  t.ok(rtt >= 0 && rtt < 1000, `rtt ${rtt} ms`)
})

t.test('drain', async (t) => {
  t.test('a subscription: every message published before the drain arrives', async (t) => {
    const nc = await client(t)
    const s = nc.subscribe('drain.sub')
    const got = sink(s)
    await nc.flush()
    for (let i = 0; i < 1000; i++) nc.publish('drain.sub', String(i))
    await s.drain()
    await got.done
    t.equal(got.msgs.length, 1000)
    t.same(got.msgs.map((m) => m.string()), Array.from({ length: 1000 }, (_, i) => String(i)), 'in order')
    t.ok(s.isClosed(), 'subscription closed')
    t.notOk(nc.isClosed(), 'connection stays open')
    nc.publish('drain.sub', 'late')
    await nc.flush()
    t.equal(got.msgs.length, 1000, 'nothing after the drain')
  })

  t.test('a subscription fed by another connection', async (t) => {
    const nc = await client(t)
    const pub = await client(t)
    const s = nc.subscribe('drain.other')
    const got = sink(s)
    await nc.flush()
    for (let i = 0; i < 1000; i++) pub.publish('drain.other', String(i))
    await pub.flush()
    await s.drain()
    await got.done
    t.equal(got.msgs.length, 1000)
  })

  t.test('the connection', async (t) => {
    const nc = await client(t)
    const pub = await client(t)
    const a = sink(nc.subscribe('drain.conn.a'))
    const q = sink(nc.subscribe('drain.conn.q', { queue: 'g' }))
    await nc.flush()
    for (let i = 0; i < 1000; i++) {
      pub.publish('drain.conn.a', String(i))
      pub.publish('drain.conn.q', String(i))
    }
    await pub.flush()
    const closed = nc.closed()
    await nc.drain()
    t.equal(await closed, undefined, 'closed without error')
    await Promise.all([a.done, q.done])
    t.equal(a.msgs.length, 1000, 'plain subscription got all 1000')
    t.equal(q.msgs.length, 1000, 'queue subscription got all 1000')
    t.ok(nc.isClosed())
    // A connection draining with its own publishes still queued.
    const nc2 = await client(t)
    const own = sink(nc2.subscribe('drain.own'))
    await nc2.flush()
    for (let i = 0; i < 1000; i++) nc2.publish('drain.own', String(i))
    await nc2.drain()
    await own.done
    t.equal(own.msgs.length, 1000, 'own publishes before drain all arrive')
  })
})

t.test('max_payload', async (t) => {
  t.test('a payload of exactly max_payload arrives intact', async (t) => {
    const sub = await client(t)
    const pub = await client(t)
    t.equal(pub.info?.max_payload, MiB)
    const s = sub.subscribe('big.one')
    await sub.flush()
    const data = new Uint8Array(MiB)
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 8)) & 0xff
    pub.publish('big.one', data)
    const [m] = await collect(s, 1, 5000)
    t.equal(m?.data.length, MiB)
    t.ok(m && Buffer.compare(Buffer.from(m.data), Buffer.from(data)) === 0, 'same bytes')
    t.notOk(pub.isClosed(), 'publisher still connected')
  })

  t.test('one byte more is refused by nats.js before it is sent', async (t) => {
    const nc = await client(t)
    t.throws(() => nc.publish('big.two', new Uint8Array(MiB + 1)), errors.InvalidArgumentError)
    // headers count towards the limit as well
    const h = headers()
    h.set('X', 'y')
    t.throws(() => nc.publish('big.two', new Uint8Array(MiB), { headers: h }), errors.InvalidArgumentError)
    await nc.flush()
    t.notOk(nc.isClosed())
  })

  t.test('raw socket: -ERR Maximum Payload Violation, then closed', async (t) => {
    const r = await exchange(b.port, ['CONNECT {"verbose":false}\r\n', `PUB big.raw ${MiB + 1}\r\n`], 500)
    t.equal(r.out, "-ERR 'Maximum Payload Violation'\r\n")
    t.ok(r.closed, 'connection closed')
    const h = await exchange(b.port, ['CONNECT {"verbose":false,"headers":true}\r\n', `HPUB big.raw 10 ${MiB + 1}\r\n`], 500)
    t.equal(h.out, "-ERR 'Maximum Payload Violation'\r\n", 'HPUB too')
    t.ok(h.closed)
    const ok = await exchange(b.port, [`CONNECT {"verbose":false}\r\nPUB big.raw ${MiB}\r\n`, new Uint8Array(MiB), '\r\nPING\r\n'], 500)
    t.equal(ok.out, 'PONG\r\n', 'exactly max_payload is fine on a raw socket')
    t.notOk(ok.closed)
  })
})

t.test('1000 subscriptions on one connection', async (t) => {
  const nc = await client(t)
  const pub = await client(t)
  const got = new Map<string, string[]>()
  const subs: Subscription[] = []
  for (let i = 0; i < 1000; i++) {
    const subj = `many.${i}`
    got.set(subj, [])
    subs.push(nc.subscribe(subj, { callback: (_e, m) => void got.get(m.subject)!.push(m.string()) }))
  }
  await nc.flush()
  for (let i = 0; i < 1000; i++) pub.publish(`many.${i}`, `m${i}`)
  await pub.flush()
  await nc.flush()
  let right = 0
  for (let i = 0; i < 1000; i++) if (JSON.stringify(got.get(`many.${i}`)) === JSON.stringify([`m${i}`])) right++
  t.equal(right, 1000, 'each subscription got exactly its own message')
  for (const s of subs) s.unsubscribe()
  await nc.flush()
  pub.publish('many.1', 'after')
  await pub.flush()
  await nc.flush()
  t.same(got.get('many.1'), ['m1'], 'unsubscribed: nothing more')
})

t.test('echo', async (t) => {
  const echo = await client(t)
  const quiet = await client(t, { noEcho: true })
  const other = await client(t)
  const e = sink(echo.subscribe('echo.t'))
  const q = sink(quiet.subscribe('echo.t'))
  const qq = sink(quiet.subscribe('echo.q', { queue: 'g' }))
  await echo.flush()
  await quiet.flush()
  echo.publish('echo.t', 'from-echo')
  quiet.publish('echo.t', 'from-quiet')
  other.publish('echo.t', 'from-other')
  quiet.publish('echo.q', 'own-queue')
  await echo.flush()
  await quiet.flush()
  await other.flush()
  await echo.flush()
  await quiet.flush()
  t.same(e.msgs.map((m) => m.string()).sort(), ['from-echo', 'from-other', 'from-quiet'], 'echo on: own messages come back')
  t.same(q.msgs.map((m) => m.string()).sort(), ['from-echo', 'from-other'], 'noEcho: own messages do not')
  t.same(qq.msgs.length, 0, 'noEcho applies to queue subscriptions too')
})

t.test('auto-unsubscribe and unsubscribe', async (t) => {
  const nc = await client(t)
  const pub = await client(t)
  const s = nc.subscribe('auto.max', { max: 3 })
  const got = sink(s)
  await nc.flush()
  for (let i = 0; i < 10; i++) pub.publish('auto.max', String(i))
  await pub.flush()
  await got.done
  t.same(got.msgs.map((m) => m.string()), ['0', '1', '2'], 'max 3: three messages, then closed')
  t.ok(s.isClosed())

  // The server enforces max too (UNSUB sid max on the wire).
  const r = await exchange(b.port, ['CONNECT {"verbose":false}\r\nSUB auto.raw 7\r\nUNSUB 7 2\r\n', 'PUB auto.raw 1\r\na\r\nPUB auto.raw 1\r\nb\r\nPUB auto.raw 1\r\nc\r\nPING\r\n'])
  t.equal(r.out, 'MSG auto.raw 7 1\r\na\r\nMSG auto.raw 7 1\r\nb\r\nPONG\r\n')
  // UNSUB with a max already reached removes at once.
  const r2 = await exchange(b.port, ['CONNECT {"verbose":false}\r\nSUB auto.r2 1\r\nPUB auto.r2 1\r\na\r\nPUB auto.r2 1\r\nb\r\n', 'UNSUB 1 1\r\nPUB auto.r2 1\r\nc\r\nPING\r\n'])
  t.equal(r2.out, 'MSG auto.r2 1 1\r\na\r\nMSG auto.r2 1 1\r\nb\r\nPONG\r\n')

  const u = nc.subscribe('unsub.t')
  const ug = sink(u)
  await nc.flush()
  pub.publish('unsub.t', 'before')
  await pub.flush()
  await nc.flush()
  u.unsubscribe()
  await nc.flush()
  pub.publish('unsub.t', 'after')
  await pub.flush()
  await nc.flush()
  await ug.done
  t.same(ug.msgs.map((m) => m.string()), ['before'])
  t.equal(u.getReceived(), 1)
})

t.test('several connections', async (t) => {
  const conns = await Promise.all(Array.from({ length: 10 }, () => client(t)))
  const sinks = conns.map((nc) => sink(nc.subscribe('multi.>')))
  await Promise.all(conns.map((nc) => nc.flush()))
  conns.forEach((nc, i) => nc.publish(`multi.${i}`, String(i)))
  await Promise.all(conns.map((nc) => nc.flush()))
  await Promise.all(conns.map((nc) => nc.flush()))
  for (const [i, s] of sinks.entries()) {
    t.same(s.msgs.map((m) => m.string()).sort(), Array.from({ length: 10 }, (_, k) => String(k)).sort(), `connection ${i} saw all ten`)
  }
  const ids = new Set(conns.map((nc) => nc.info?.client_id))
  t.equal(ids.size, 10, 'distinct client ids')
  await Promise.all(conns.map((nc) => nc.close()))
  await waitFor(() => ![...b.srv.sessions.values()].some((s) => ids.has(s.cid)), 2000)
  t.pass('closed connections leave the server')
})

t.test('INFO', async (t) => {
  const nc = await client(t)
  const info = nc.info!
  t.ok(info, 'nc.info is set')
  t.type(info.client_id, 'number')
  t.ok(info.client_id > 0)
  t.ok(b.srv.sessions.has(info.client_id), 'client_id is the server connection id')
  t.equal(info.client_ip, '127.0.0.1')
  t.equal(info.headers, true)
  t.equal(info.max_payload, MiB)
  t.equal(info.proto, 1)
  t.equal(info.server_id, b.srv.id)
  t.match(info.server_id, /^N[A-Z2-7]{55}$/)
  t.equal(info.port, b.port, 'the real port, not 0')
  t.equal(info.host, '127.0.0.1')
  t.type(info.version, 'string')
  t.notOk(info.auth_required)
  const other = await client(t)
  t.not(other.info!.client_id, info.client_id, 'each connection its own id')
})

async function waitFor(cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 10))
  }
}
