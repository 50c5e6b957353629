// What an idle MQTT connection keeps is made on first use (QoS 1/2 bookkeeping, the buffer of
// a cut packet, the outbound buffer) and subscriptions all share one shape. These tests make
// a connection idle first and then use each piece, so a lazily made piece that was wrong (or
// never made) shows; and keepalive, which has no timer per connection, still closes silent
// clients among many at 1.5× their keepalive.

import t from 'tap'
import { Buffer } from 'node:buffer'
import { generate, parser as newParser, type Packet } from 'mqtt-packet'
import { MqttConn } from '../adapters/mqtt/conn.ts'
import { filterEntries } from '../adapters/mqtt/filters.ts'
import type { Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { defaults } from '../src/options.ts'
import { Server } from '../src/server.ts'

interface Client {
  conn: MqttConn
  /** Packets the server sent, decoded. */
  got: Packet[]
  ended: boolean
  /** The wire refuses more (write() returns false) while set. */
  block?: boolean
  send(p: Packet | Uint8Array, step?: number): void
}

function rig() {
  let now = 1000
  // defer() runs later, as on a real host (the outbound queue flushes then, never inside a write).
  const queue: (() => void)[] = []
  const host = { now: () => now, defer: (fn: () => void) => void queue.push(fn), every: () => ({ cancel: () => {} }) }
  const srv = new Server({ ...defaults, port: 4222, max_payload: 1024 * 1024 }, host, createLogger({ level: 'error', sink: () => {} }))
  const run = (): void => {
    while (queue.length) queue.shift()!()
  }
  const open = (clientId: string, opts: { keepalive?: number; clean?: boolean; version?: 4 | 5; properties?: Record<string, unknown> } = {}): Client => {
    const version = opts.version ?? 4
    const p = newParser({ protocolVersion: version })
    const c: Client = {
      conn: null as unknown as MqttConn,
      got: [],
      ended: false,
      send(pk, step = 0) {
        const b = pk instanceof Uint8Array ? pk : generate(pk, { protocolVersion: version })
        if (step <= 0) c.conn.data(b)
        else for (let i = 0; i < b.length; i += step) c.conn.data(b.subarray(i, i + step))
        run()
      },
    }
    p.on('packet', (pk: Packet) => void c.got.push(pk))
    p.on('error', (e: Error) => void c.got.push({ cmd: 'error: ' + e.message } as unknown as Packet))
    const w: Wire = {
      write: (d) => {
        p.parse(Buffer.from(d))
        return c.block !== true
      },
      buffered: () => 0,
      end: () => void (c.ended = true),
      destroy: () => void (c.ended = true),
      remoteAddress: '127.0.0.1',
      remotePort: 1,
    }
    c.conn = new MqttConn(srv, srv.admit(), w)
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: opts.clean ?? true, keepalive: opts.keepalive ?? 0, clientId, ...(opts.properties ? { properties: opts.properties } : {}) } as Packet)
    return c
  }
  return { srv, open, run, advance: (ms: number) => void (now += ms) }
}

const sub = (topic: string, qos: 0 | 1 | 2, messageId = 1, properties?: Record<string, unknown>): Packet =>
  ({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos }], ...(properties ? { properties } : {}) }) as Packet
const pub = (topic: string, payload: Buffer, qos: 0 | 1 | 2, messageId?: number): Packet =>
  ({ cmd: 'publish', topic, payload, qos, dup: false, retain: false, ...(messageId ? { messageId } : {}) }) as Packet
const last = (c: Client, cmd: string): Packet | undefined => c.got.filter((p) => p.cmd === cmd).at(-1)
/** The private state of a connection an idle device must not pay for. */
const lazy = (c: Client) => c.conn as unknown as { flow: unknown; cut: { buf: Uint8Array } | null; rare: unknown; topics: unknown; out: { buf: Uint8Array; len: number } }

t.test('an idle subscribed connection holds no QoS state, no packet buffer and no outbound bytes', async (t) => {
  const r = rig()
  const dev = r.open('dev')
  dev.send(sub('d/1', 1))
  t.equal(last(dev, 'suback')?.cmd, 'suback')
  const s = lazy(dev)
  t.equal(s.flow, null, 'no QoS 1/2 bookkeeping before the first QoS 1/2 message')
  t.equal(s.cut, null, 'no buffer for a cut packet')
  t.equal(s.rare, null, 'no will, session expiry, MQTT 5 limits or aliases: no object for them')
  t.equal(s.topics, null, 'no publisher state before the first PUBLISH')
  t.equal(s.out.buf.length, 0, 'the outbound buffer was given back after the SUBACK')
  t.equal(dev.conn.held, 0)
})

// JSC (Bun) rounds each object up to a size class: for a class instance ≤ 6 fields 64 bytes,
// ≤ 8: 80, ≤ 12: 112, ≤ 18: 160, ≤ 26: 224, ≤ 30: 256, ≤ 38: 320 (measured on Bun 1.4.5 with
// Bun.generateHeapSnapshot; V8 costs 8 bytes a field too). An idle device pays for every field
// of its connection, so what only some need lives in objects made on first use.
t.test('an idle subscribed connection stays in its size class', async (t) => {
  const r = rig()
  for (const version of [4, 5] as const) {
    const dev = r.open(`fields-${version}`, { version, keepalive: 60 })
    dev.send(sub('d/1', 1))
    const n = Object.keys(dev.conn).length
    t.ok(n <= 18, `MQTT ${version === 5 ? "5" : "3.1.1"}: ${n} fields on the connection (≤ 18: 160 bytes on JSC)`)
  }
})

t.test('once connected, no login state is kept; the queue counts what is sent', async (t) => {
  const r = rig()
  const dev = r.open('quiet')
  const c = dev.conn as unknown as { pending: unknown; more: unknown }
  t.ok(dev.conn.connected, 'connected')
  t.equal(c.pending, null, 'the connect deadline and the held operations are gone after CONNACK')
  t.equal(c.more, null, 'no credentials presented, no allow_responses: nothing more kept')
  t.notOk(dev.conn.done)
  dev.send(sub('q/1', 0))
  const pubr = r.open('pubr')
  pubr.send(pub('q/1', Buffer.from('hello'), 0))
  pubr.send(pub('q/1', Buffer.from('hi'), 0))
  t.equal(dev.conn.out_msgs, 2, 'out_msgs')
  t.equal(dev.conn.out_bytes, 7, 'out_bytes')
  const info = dev.conn.describe()
  t.match(info, { out_msgs: 2, out_bytes: 7, in_msgs: 0 })
  t.match(pubr.conn.describe(), { in_msgs: 2, in_bytes: 7, out_msgs: 0 })
  t.equal(dev.conn.version, 4)
  dev.conn.closed('gone')
  t.ok(dev.conn.done, 'done after close')
  t.ok(dev.conn.connected, 'and still known to have been connected')
})

t.test('a subscription keeps six fields; its options survive a parked session', async (t) => {
  const r = rig()
  const keys = (c: Client): number => {
    const f = (c.conn as unknown as { subs: object | null }).subs
    t.ok(f !== null && !(f instanceof Map), 'one filter, one subscription: no Map')
    return Object.keys(f!).length
  }
  const plain = r.open('plain')
  plain.send(sub('p/1', 1))
  t.ok(keys(plain) <= 6, `${keys(plain)} fields (≤ 6: 64 bytes on JSC)`)
  const props = { sessionExpiryInterval: 600 }
  let dev = r.open('opts5', { version: 5, clean: false, properties: props })
  dev.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'o/+', qos: 1, nl: true, rap: true }], properties: { subscriptionIdentifier: 42 } } as Packet)
  t.ok(keys(dev) <= 6, `with MQTT 5 options: ${keys(dev)} fields`)
  const check = (what: string): void => {
    dev.got = []
    dev.send({ cmd: 'publish', topic: 'o/own', payload: Buffer.from('x'), qos: 0, dup: false, retain: false } as Packet)
    t.equal(last(dev, 'publish'), undefined, `${what}: No Local holds`)
    plain.send({ cmd: 'publish', topic: 'o/other', payload: Buffer.from('y'), qos: 1, messageId: 3, dup: false, retain: true } as Packet)
    const p = last(dev, 'publish') as Packet & { retain: boolean; properties?: { subscriptionIdentifier?: number | number[] } }
    t.ok(p, `${what}: another client's message arrives`)
    t.equal(p?.retain, true, `${what}: Retain As Published`)
    t.equal((p as unknown as { qos: number })?.qos, 1, `${what}: at the subscription's QoS`)
    t.same([p?.properties?.subscriptionIdentifier].flat(), [42], `${what}: the Subscription Identifier`)
  }
  check('live')
  dev.conn.closed('gone') // parked
  dev = r.open('opts5', { version: 5, clean: false, properties: props })
  check('resumed')
})

t.test('a filter its subject gives back is not kept twice, and reads back as sent', async (t) => {
  const r = rig()
  const dev = r.open('filters')
  const filters = ['d/1/cmd', 'a/+/c', 'a/#', '#', '+', '+/x', 'a//b', '/lead', 'trail/', 'ü/x', 'dot.ted/x', '$SYS/x', '$share/g/q/1']
  for (const [i, f] of filters.entries()) dev.send(sub(f, 1, i + 1))
  const entries = filterEntries(dev.conn.subs)
  t.same(entries.map(([f]) => f).sort(), [...filters].sort(), 'every filter reads back as the client sent it')
  for (const f of filters) t.ok(dev.conn.filterSubs(f)?.every((x) => x.filter === f), `${f}: its subscriptions say so too`)
  const one = r.open('one')
  one.send(sub('d/2/cmd', 1))
  t.equal((one.conn.subs as unknown as { f: string | null }).f, null, 'd/2/cmd: not kept, its subject d.2.cmd gives it back')
  t.equal(one.conn.subs && 'filter' in one.conn.subs ? one.conn.subs.filter : '', 'd/2/cmd')
  for (const f of filters) t.ok(dev.conn.unsubscribe(f), `${f}: unsubscribed by the filter`)
  t.equal(dev.conn.subs, null, 'none left')
})

t.test('an idle connection then takes and sends large frames in small reads', async (t) => {
  const r = rig()
  const dev = r.open('dev')
  dev.send(sub('big/in', 1))
  const other = r.open('other')
  other.send(sub('big/out', 0))
  // Delivered to the idle device at QoS 1: its in-flight state appears on first use.
  const inPayload = Buffer.alloc(300 * 1024, 3)
  other.send(pub('big/in', inPayload, 1, 7))
  const d = last(dev, 'publish') as Packet & { payload: Buffer; qos: number; messageId: number }
  t.ok(d && d.qos === 1 && Buffer.compare(d.payload, inPayload) === 0, 'the 300 KiB QoS 1 message arrives whole')
  t.equal(dev.conn.held, inPayload.length, 'its payload is held until PUBACK')
  dev.send({ cmd: 'puback', messageId: d.messageId })
  t.equal(dev.conn.held, 0, 'PUBACK releases it')
  t.equal(r.srv.budget.held >= 0, true)
  // The device sends a 200 KiB PUBLISH 1000 bytes at a time: its cut-packet buffer appears and goes.
  const outPayload = Buffer.alloc(200 * 1024, 5)
  dev.send(pub('big/out', outPayload, 1, 9), 1000)
  const o = last(other, 'publish') as Packet & { payload: Buffer }
  t.ok(o && Buffer.compare(o.payload, outPayload) === 0, 'the 200 KiB PUBLISH arrives whole')
  t.equal((last(dev, 'puback') as Packet & { messageId: number })?.messageId, 9)
  t.equal(lazy(dev).cut, null, 'nothing kept once the packet completed')
  t.equal(lazy(dev).out.buf.length, 0, 'no outbound buffer kept by a quiet connection')
})

t.test('QoS 2 state appears on first use, and works', async (t) => {
  const r = rig()
  const dev = r.open('dev')
  const seen: number[] = []
  r.srv.router.subscribe({ subject: 'q2', queue: null, owner: { cid: 0, echo: true, deliver: (_s, m) => void seen.push(m.payload.length) } })
  t.equal(dev.conn.qos2Count, 0)
  dev.send(pub('q2', Buffer.from('abc'), 2, 5))
  t.equal(dev.conn.qos2Count, 1, 'the id waits for PUBREL')
  t.equal((last(dev, 'pubrec') as Packet & { messageId: number })?.messageId, 5)
  dev.send({ ...(pub('q2', Buffer.from('abc'), 2, 5) as object), dup: true } as Packet)
  t.same(seen, [3], 'a resent QoS 2 PUBLISH is not routed again')
  dev.send({ cmd: 'pubrel', messageId: 5 })
  t.equal((last(dev, 'pubcomp') as Packet & { messageId: number })?.messageId, 5)
  t.equal(dev.conn.qos2Count, 0)
})

t.test('keepalive closes every silent client among many at 1.5× keepalive, and only them', async (t) => {
  const r = rig()
  const n = 300
  const clients: Client[] = []
  for (let i = 0; i < n; i++) {
    const c = r.open(`k${i}`, { keepalive: 10 })
    c.send(sub(`k/${i}`, 1))
    clients.push(c)
  }
  r.advance(14_000)
  for (let i = 0; i < n; i += 2) clients[i]!.send({ cmd: 'pingreq' }) // the even ones are alive
  r.srv.tick()
  t.equal(clients.filter((c) => c.ended).length, 0, 'none closed before 1.5× keepalive')
  r.advance(1_500) // 15.5 s since the odd ones' last packet
  r.srv.tick()
  r.run()
  t.same(clients.map((c, i) => (c.ended ? i % 2 : -1)).filter((x) => x >= 0), Array(n / 2).fill(1), 'exactly the silent half closed')
  r.advance(7_000) // 21.5 s: the even ones pinged at 14 s, 7.5 s ago
  r.srv.tick()
  t.equal(clients.filter((c) => !c.ended).length, n / 2, 'the pinging half stays open')
  r.advance(8_100)
  r.srv.tick()
  r.run()
  t.equal(clients.filter((c) => !c.ended).length, 0, 'and closes 15 s after its last PINGREQ')
})

t.test('a PINGREQ alone in a read is answered straight to the wire; anything before it keeps it in the queue, in order', async (t) => {
  const PINGREQ = new Uint8Array([0xc0, 0])
  for (const version of [4, 5] as const) {
    const r = rig()
    const dev = r.open(`ping-${version}`, { version, keepalive: 10 })
    dev.send(sub('p/1', 0))
    const out = lazy(dev).out as { buf: Uint8Array; len: number; scheduled: boolean }
    dev.got.length = 0
    r.advance(5000)
    dev.conn.data(PINGREQ) // no deferred work run: only a direct write shows
    t.same(dev.got.map((p) => p.cmd), ['pingresp'], `${version}: answered within the read`)
    t.equal(out.buf.length, 0, 'no outbound buffer made for it')
    t.notOk(out.scheduled, 'no flush scheduled')
    t.equal(dev.conn.lastIn, 6000, 'the ping counts as activity for keepalive')

    // A message queued for the device (not yet flushed) goes out first.
    dev.got.length = 0
    const pubr = r.open(`pub-${version}`)
    r.run()
    pubr.conn.data(generate(pub('p/1', Buffer.from('x'), 0)))
    dev.conn.data(PINGREQ)
    t.same(dev.got, [], 'nothing written past what is queued')
    r.run()
    t.same(dev.got.map((p) => p.cmd), ['publish', 'pingresp'], 'the PUBLISH, then the PINGRESP')

    // A PINGREQ cut over two reads takes the general path.
    dev.got.length = 0
    dev.send(PINGREQ, 1)
    t.same(dev.got.map((p) => p.cmd), ['pingresp'], 'a cut PINGREQ is answered too')

    // A wire that refuses more: the next PINGRESP waits in the queue until it drains.
    dev.got.length = 0
    dev.block = true
    dev.conn.data(PINGREQ)
    t.same(dev.got.map((p) => p.cmd), ['pingresp'], 'written; the wire now holds part of it')
    dev.block = false
    dev.conn.data(PINGREQ)
    r.run()
    t.equal(dev.got.length, 1, 'the next one waits while the wire is blocked')
    dev.conn.drained()
    r.run()
    t.same(dev.got.map((p) => p.cmd), ['pingresp', 'pingresp'], 'and goes once it drained')

    // Two PINGREQs in one read, and one with flags set, take the general path's rules.
    dev.got.length = 0
    dev.send(new Uint8Array([0xc0, 0, 0xc0, 0]))
    t.same(dev.got.map((p) => p.cmd), ['pingresp', 'pingresp'], 'two in one read: two answers')
    dev.send(new Uint8Array([0xc1, 0]))
    t.ok(dev.ended, 'a PINGREQ with a reserved flag set is malformed: the connection is closed')
    t.notOk(dev.got.some((p) => p.cmd === 'pingresp' && dev.got.indexOf(p) >= 2), 'and not answered')
  }
})

t.test('a PINGREQ before CONNECT is not answered: the connection is closed', async (t) => {
  const r = rig()
  const dev = r.open('early')
  // A fresh connection on the same server, its first read a PINGREQ.
  const got: Packet[] = []
  let ended = false
  const p = newParser({ protocolVersion: 4 })
  p.on('packet', (pk: Packet) => void got.push(pk))
  const w: Wire = { write: (d) => (p.parse(Buffer.from(d)), true), buffered: () => 0, end: () => void (ended = true), destroy: () => void (ended = true), remoteAddress: '127.0.0.1', remotePort: 2 }
  const c = new MqttConn(r.srv, r.srv.admit(), w)
  c.data(new Uint8Array([0xc0, 0]))
  r.run()
  t.notOk(got.some((k) => k.cmd === 'pingresp'), 'no PINGRESP')
  t.ok(ended, 'closed')
  t.notOk(dev.ended, 'another device is untouched')
})

t.test('subscriptions have one shape however they are made (SUBSCRIBE, MQTT 5 options, a parked session and its return)', async (t) => {
  const r = rig()
  const shapes = new Set<string>()
  const collect = (): void => r.srv.router.subs.each((s) => void shapes.add(Object.keys(s).join(',')))
  const a = r.open('a')
  a.send(sub('s/a', 1))
  a.send(sub('s/+/x/#', 0, 2)) // two router subscriptions (s.*.x.> and s.*.x)
  const b = r.open('b', { version: 5 })
  b.send(sub('s/b', 2, 1, { subscriptionIdentifier: 42 }))
  const p = r.open('p', { clean: false })
  p.send(sub('s/p', 1))
  collect()
  p.conn.closed('gone') // parked: its subscriptions move to the session
  collect()
  const p2 = r.open('p', { clean: false }) // back: they move to the new connection
  t.equal((last(p2, 'connack') as Packet & { sessionPresent: boolean })?.sessionPresent, true)
  collect()
  t.equal(shapes.size, 1, `one shape: ${[...shapes].join(' | ')}`)
  // The options still work: the MQTT 5 subscription identifier goes with its messages.
  a.send(pub('s/b', Buffer.from('x'), 0))
  t.equal((last(b, 'publish') as Packet & { properties?: { subscriptionIdentifier?: number } })?.properties?.subscriptionIdentifier, 42)
  a.send(pub('s/p', Buffer.from('y'), 1, 3))
  t.equal(String((last(p2, 'publish') as Packet & { payload: Buffer })?.payload), 'y', 'the returned session gets its messages')
})
