// A NATS publish's payload is lent to the router as a range of the read (src/msg.ts: no view
// is made unless someone asks for `payload`), and the read buffer is reused by the next read.
// In one process, with the runtime's turns run by hand (as test/gateway-turn.test.ts): PUB and
// HPUB of every size around the short-copy threshold, with and without a reply, cut across
// reads at several widths into ONE reused read buffer, which is then scribbled over before
// anything is flushed. Every kind of consumer gets the bytes that were published: NATS
// subscribers (with and without headers, a queue group), MQTT QoS 0, MQTT QoS 1 behind a
// full in-flight window (queued: its own copy), the uplink to a hub (plain and with a hub
// queue group), a message held while the link is down, and the router's byte counts. Then
// the same through a real uplink to a nats-server hub (a plain and a queue subscriber there).

import t from 'tap'
import { Buffer } from 'node:buffer'
import { generate, parser as mqttParser, type Packet } from 'mqtt-packet'
import { mqttState } from '../adapters/mqtt/state.ts'
import { startMqtt } from '../adapters/mqtt/index.ts'
import { useRangeCopy } from '../src/bytes.ts'
import { Msg, newMsg, putPayload } from '../src/msg.ts'
import { bunRangeCopy } from '../targets/bun.ts'
import { REMOTE_DEFAULTS } from '../src/options.ts'
import { startBroker } from './helpers/broker.ts'
import { haveHub, hubInterest, leafUp, startHub, until } from './helpers/hub.ts'
import { body, COPIES, feedReused, KINDS, latin1, mqttPayloads, natsFrames, rig, withRangeCopy, type Rec } from './helpers/lend.ts'
import { natsClient } from './helpers/mqtt.ts'
import { exchange } from './helpers/raw.ts'

const enc = new TextEncoder()

/** One published message, as the publisher sent it. */
interface Pub {
  subject: string
  reply: string
  hdr: Uint8Array | null
  payload: Uint8Array
}

const SIZES = [0, 1, 15, 16, 31, 32, 33, 64, 200, 1000, 3000]

function messages(): Pub[] {
  const out: Pub[] = []
  let k = 0
  for (const n of SIZES) {
    // The same subject twice in a row (the parser's repeated-subject path), then another one.
    out.push({ subject: 'up.a', reply: '', hdr: null, payload: body(n, k++) })
    out.push({ subject: 'up.a', reply: '', hdr: null, payload: body(n, k++) })
    out.push({ subject: 'up.b.c', reply: 'up.reply.1', hdr: null, payload: body(n, k++) })
    out.push({ subject: 'up.h', reply: '', hdr: enc.encode(`NATS/1.0\r\nk: v${k}\r\n\r\n`), payload: body(n, k++) })
    out.push({ subject: 'up.h', reply: 'up.reply.2', hdr: enc.encode('NATS/1.0\r\nx: y\r\n\r\n'), payload: body(n, k++) })
  }
  return out
}

function stream(msgs: Pub[]): Uint8Array {
  const parts: Uint8Array[] = []
  for (const m of msgs) {
    const r = m.reply === '' ? '' : ` ${m.reply}`
    if (m.hdr === null) parts.push(enc.encode(`PUB ${m.subject}${r} ${m.payload.length}\r\n`))
    else parts.push(enc.encode(`HPUB ${m.subject}${r} ${m.hdr.length} ${m.hdr.length + m.payload.length}\r\n`), m.hdr)
    parts.push(m.payload, enc.encode('\r\n'))
  }
  return Buffer.concat(parts)
}

const plain = (msgs: Pub[]): string[] => msgs.map((m) => latin1(m.payload))

for (const { kind, alloc } of KINDS)
for (const { how, copy } of COPIES)
t.test(`every consumer gets the published bytes, the read buffer (a ${kind}) reused and scribbled over before the flush, copied out with ${how}`, (t) => withRangeCopy(copy, () => {
  const msgs = messages()
  const all = stream(msgs)
  for (const width of [1, 5, 29, 64, 700, all.length]) {
    const r = rig(2)
    const withHdrs = r.nats('CONNECT {"verbose":false,"headers":true}\r\nSUB up.> 1\r\n')
    const noHdrs = r.nats('CONNECT {"verbose":false}\r\nSUB up.> 1\r\n')
    const queue = r.nats('CONNECT {"verbose":false,"headers":true}\r\nSUB up.> g 1\r\n')
    const q0 = r.mqtt('q0', 0)
    const q1 = r.mqtt('q1', 1)
    const pub = r.nats('CONNECT {"verbose":false,"headers":true}\r\n')
    const before = { ...r.srv.router.traffic }
    feedReused(pub.c, all, width, alloc)
    r.settle()
    const label = `reads of ${width} bytes`
    const nats = (rec: Rec) => natsFrames(Buffer.concat(rec.writes))
    t.same(nats(withHdrs.rec).map((f) => [f.hdr, f.payload]), msgs.map((m) => [m.hdr ? latin1(m.hdr) : null, latin1(m.payload)]), `${label}: NATS subscriber with headers`)
    t.same(nats(noHdrs.rec).map((f) => [f.hdr, f.payload]), msgs.map((m) => [null, latin1(m.payload)]), `${label}: NATS subscriber without headers (payload only)`)
    t.same(nats(queue.rec).map((f) => f.payload), plain(msgs), `${label}: NATS queue group member`)
    t.same(mqttPayloads(q0.c, q0.rec, r.settle), plain(msgs), `${label}: MQTT QoS 0`)
    t.same(mqttPayloads(q1.c, q1.rec, r.settle), plain(msgs), `${label}: MQTT QoS 1, most of it queued behind a window of 2`)
    const up = natsFrames(Buffer.concat(r.hub.writes))
    t.same(up.map((f) => [f.hdr, f.payload]), msgs.map((m) => [m.hdr ? latin1(m.hdr) : null, latin1(m.payload)]), `${label}: the uplink's frames`)
    t.ok(up.every((f) => / hq \d+$| hq \d+ \d+$/.test(f.line)), `${label}: each frame also serves the hub's queue group`)
    const size = msgs.reduce((a, m) => a + m.payload.length + (m.hdr?.length ?? 0), 0)
    const tr = r.srv.router.traffic
    t.equal(tr.in_msgs - before.in_msgs, msgs.length, `${label}: messages counted`)
    t.equal(tr.in_bytes - before.in_bytes, size, `${label}: bytes counted (headers and payload)`)
    t.equal(tr.out_bytes - before.out_bytes, 5 * size, `${label}: bytes out counted, five local subscribers`)
  }
}))

for (const { kind, alloc } of KINDS)
t.test(`a message held while the link is down is its own copy (read into a ${kind}): the hub gets it as published`, async (t) => {
  const r = rig(1024)
  const pub = r.nats('CONNECT {"verbose":false,"headers":true}\r\n')
  r.dropLink()
  const msgs = messages().slice(0, 20)
  const all = stream(msgs)
  const read = alloc(all.length)
  read.set(all)
  pub.c.data(read)
  read.fill(0xee)
  r.settle()
  t.equal(r.remote.status().buffered_msgs, msgs.length, 'held while down')
  r.relink()
  const up = natsFrames(Buffer.concat(r.hub.writes))
  t.same(up.map((f) => [f.hdr, f.payload]), msgs.map((m) => [m.hdr ? latin1(m.hdr) : null, latin1(m.payload)]), 'the hub gets every held message as published')
})

for (const { kind, alloc } of KINDS)
t.test(`a retained message set from NATS (read into a ${kind}) is its own copy, not a view of the read`, async (t) => {
  const r = rig(1024)
  startMqtt(r.srv) // the MQTT listener's start: the retain services
  const pub = r.nats('CONNECT {"verbose":false,"headers":true}\r\n')
  const hdr = enc.encode('NATS/1.0\r\nNmqtt-Retain: 1\r\n\r\n')
  const frames: Uint8Array[] = []
  const want: (string | undefined)[] = []
  for (const n of SIZES) {
    const b = body(n, n)
    want.push(n === 0 ? undefined : latin1(b)) // an empty payload deletes
    frames.push(enc.encode(`HPUB up.ret.s${n} ${hdr.length} ${hdr.length + n}\r\n`), hdr, b, enc.encode('\r\n'))
  }
  const all = Buffer.concat(frames)
  // With the header hook (retainFromHeader) and with the retain service's subject.
  const svc = enc.encode(`PUB $SPRIG.mqtt.retain.up.ret.svc 5\r\nhello\r\n`)
  const read = alloc(all.length + svc.length)
  read.set(all)
  read.set(svc, all.length)
  pub.c.data(read)
  read.fill(0xee)
  r.settle()
  const sub = r.mqtt('late', 0)
  const got: Record<string, string> = {}
  const p = mqttParser({ protocolVersion: 4 })
  p.on('packet', (pk: Packet) => {
    if (pk.cmd === 'publish') got[pk.topic] = latin1(pk.payload as Buffer)
  })
  sub.c.data(generate({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'up/ret/#', qos: 0 }] }))
  r.settle()
  for (const w of sub.rec.writes) p.parse(Buffer.from(w))
  t.same(SIZES.map((n) => got[`up/ret/s${n}`]), want, 'every retained payload as published')
  t.equal(got['up/ret/svc'], 'hello', 'set through the retain service')
  const kept = [...mqttState(r.srv).retained.byTopic.values()]
  t.equal(kept.length, SIZES.length, 'all kept (the empty payload deletes: none for size 0)')
  for (const rm of kept) t.equal(rm.payload.buffer.byteLength, rm.payload.length, `${rm.topic}: the kept payload holds only its own bytes, not the read`)
})

t.test('Msg: a lent range, the view made on demand and shared, replaced by the next lend', async (t) => {
  const m = newMsg()
  t.ok(m instanceof Msg)
  t.equal(m.payload.length, 0, 'a fresh Msg: empty payload')
  const buf = enc.encode('xxhello worldyy')
  m.lend(buf, 2, 11)
  t.equal(m.size, 11)
  const v = m.payload
  t.equal(latin1(v), 'hello world', 'the view is the lent range')
  t.equal(v.buffer, buf.buffer, 'a view, not a copy')
  t.equal(m.payload, v, 'asked again: the same view')
  m.lend(buf, 0, 2)
  t.equal(latin1(m.payload), 'xx', 'the next lend: a new view')
  const own = enc.encode('own')
  m.payload = own
  t.equal(m.payload, own, 'assigned: that array')
  t.same([m.src, m.at, m.size], [own, 0, 3], 'and its range')
  // putPayload: short (byte copy from the range) and long (through the view, or through the
  // runtime's range copy where the target sets one: Bun's), from a plain array and a Buffer.
  for (const [how, copy] of [['a view', null], ['Bun\'s range copy', bunRangeCopy]] as const) {
    useRangeCopy(copy)
    for (const n of [0, 1, 31, 32, 33, 64, 500, 4000])
      for (const kind of ['Uint8Array', 'Buffer']) {
        const plainSrc = body(n + 10, n)
        const src = kind === 'Buffer' ? Buffer.from(plainSrc) : plainSrc
        m.lend(src, 7, n)
        const out = new Uint8Array(n + 4).fill(0xaa)
        t.equal(putPayload(out, 2, m), n + 2, `${how}, ${n} bytes of a ${kind}: the offset after it`)
        t.same([...out.subarray(2, n + 2)], [...plainSrc.subarray(7, 7 + n)], `${how}, ${n} bytes of a ${kind}: the payload`)
        t.same([out[0], out[1], out[n + 2], out[n + 3]], [0xaa, 0xaa, 0xaa, 0xaa], `${how}, ${n} bytes of a ${kind}: nothing outside`)
      }
  }
  // A fan-out: the first deliveries copy from the range, then one view serves the rest.
  useRangeCopy(bunRangeCopy)
  const wide = body(300, 3)
  m.lend(wide, 5, 200)
  for (let i = 0; i < 20; i++) {
    const out = new Uint8Array(202)
    t.equal(putPayload(out, 1, m), 201)
    if (i === 7) t.equal(m.view, null, 'eight deliveries copied from the range, no view')
    if (i === 8) t.ok(m.view !== null, 'the ninth made the view')
    t.same([...out.subarray(1, 201)], [...wide.subarray(5, 205)], `fan-out delivery ${i + 1}`)
  }
  m.lend(wide, 0, 100)
  t.equal(m.copies, 0, 'lend() starts the count again')
  useRangeCopy(null)
  const w = m.with({ subject: 'new.s', reply: 'r' })
  t.same([w.subject, latin1(w.subjectBytes), w.reply, latin1(w.replyBytes), latin1(w.payload)], ['new.s', 'new.s', 'r', 'r', latin1(m.payload)], 'with(): fields replaced, the same payload')
  t.ok(w instanceof Msg)
})

t.test('through the uplink to a real nats-server hub: the same bytes at a plain and a queue subscriber there', async (t) => {
  if (!haveHub(t)) return
  const hub = await startHub()
  t.teardown(() => hub.close())
  const b = await startBroker({ leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [{ ...REMOTE_DEFAULTS, urls: [hub.leafUrl] }] } })
  t.teardown(() => b.stop())
  await leafUp(b)
  const nc = await natsClient(t, hub.url)
  const msgs = messages().filter((m) => m.payload.length <= 1000)
  const got: Record<string, [string | null, string][]> = { plain: [], queue: [] }
  const hdrOf = (h: { get(k: string): string } | undefined): string | null => (h ? `${h.get('k')}|${h.get('x')}` : null)
  nc.subscribe('up.>', { callback: (_e, m) => void got.plain!.push([hdrOf(m.headers), latin1(m.data)]) })
  nc.subscribe('up.>', { queue: 'hq', callback: (_e, m) => void got.queue!.push([hdrOf(m.headers), latin1(m.data)]) })
  await nc.flush()
  await hubInterest(b, 'up.>')
  await until(() => b.uplink?.remotes[0]?.link?.hubKeys.has('up.> hq') === true, 5000, 'the hub queue group')
  // A raw publisher whose stream arrives in many small reads (a write every 2 ms).
  const all = Buffer.concat([enc.encode('CONNECT {"verbose":false,"headers":true}\r\n'), stream(msgs)])
  const parts: Uint8Array[] = []
  for (let i = 0; i < all.length; i += 97) parts.push(all.subarray(i, i + 97))
  await exchange(b.port, parts, 200, 2)
  await until(() => got.plain!.length >= msgs.length && got.queue!.length >= msgs.length, 5000, 'every message at the hub')
  const want = msgs.map((m): [string | null, string] => {
    if (m.hdr === null) return [null, latin1(m.payload)]
    const fields = new Map(latin1(m.hdr).split('\r\n').slice(1).filter((l) => l !== '').map((l) => l.split(': ') as [string, string]))
    return [`${fields.get('k') ?? ''}|${fields.get('x') ?? ''}`, latin1(m.payload)]
  })
  t.same(got.plain, want, 'the plain subscriber on the hub: every payload and header, in order')
  t.same(got.queue, want, 'the hub queue group member: the same')
})
