// An MQTT PUBLISH's payload is lent to the router as a range of the read, as a NATS PUB's is
// (adapters/mqtt/frame.ts readPublish, handlers/publish.ts onPublishIn: no view and no packet
// object per message). In one process, with the runtime's turns run by hand (helpers/lend.ts):
// PUBLISHes of MQTT 3.1.1 and 5.0 at QoS 0, 1 and 2, some retained, of every size around the
// short-copy threshold, cut across reads at several widths into ONE reused read buffer (a
// Uint8Array, and a Buffer as runtimes hand over), scribbled over after every read. Every kind
// of consumer gets the bytes that were published: NATS subscribers, MQTT QoS 0 and QoS 1
// (queued behind a full window), the uplink's frames, the retained store (a late subscriber,
// and each kept payload an array of its own), and the router's byte counts. A PUBLISH read
// while the password check runs is held as its own copy.

import t from 'tap'
import { Buffer } from 'node:buffer'
import { generate, parser as mqttParser, type Packet } from 'mqtt-packet'
import { MqttConn } from '../adapters/mqtt/conn.ts'
import { startMqtt } from '../adapters/mqtt/index.ts'
import { mqttState } from '../adapters/mqtt/state.ts'
import { body, COPIES, feedReused, KINDS, latin1, mqttPayloads, natsFrames, recWire, rig, withRangeCopy, type Rec } from './helpers/lend.ts'

const SIZES = [0, 1, 15, 16, 31, 32, 33, 64, 200, 1000, 3000]

interface Pub {
  topic: string
  qos: 0 | 1 | 2
  retain: boolean
  payload: Uint8Array
}

function publishes(): Pub[] {
  const out: Pub[] = []
  let k = 0
  for (const n of SIZES) {
    // The same topic twice (the topic memo's path), another, then a retained one per size.
    out.push({ topic: 'up/a', qos: 0, retain: false, payload: body(n, k++) })
    out.push({ topic: 'up/a', qos: 1, retain: false, payload: body(n, k++) })
    out.push({ topic: 'up/b/c', qos: 2, retain: false, payload: body(n, k++) })
    if (n > 0) out.push({ topic: `up/r/${n}`, qos: 1, retain: true, payload: body(n, k++) })
  }
  return out
}

function stream(pubs: Pub[], version: 4 | 5): Uint8Array {
  let pid = 0
  const out: Uint8Array[] = []
  for (const p of pubs) {
    const messageId = p.qos > 0 ? ++pid : undefined
    out.push(generate({ cmd: 'publish', topic: p.topic, payload: Buffer.from(p.payload), qos: p.qos, retain: p.retain, dup: false, messageId }, { protocolVersion: version }))
    // QoS 2: the release right behind it (the server reads in order), so the window stays open.
    if (p.qos === 2) out.push(generate({ cmd: 'pubrel', messageId }, { protocolVersion: version }))
  }
  return Buffer.concat(out)
}

function mqttPublisher(r: ReturnType<typeof rig>, version: 4 | 5): { c: MqttConn; rec: Rec } {
  const rec = recWire(9000 + version)
  const c = new MqttConn(r.srv, r.srv.admit(), rec.wire)
  c.data(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: 0, clientId: `pub${version}` }))
  r.settle()
  rec.writes.length = 0
  return { c, rec }
}

/** Payloads of the PUBLISHes a client got (QoS 1 and 2 acknowledged). */
function received(c: MqttConn, rec: Rec, settle: () => void, version: 4 | 5 = 4): Record<string, string> {
  const got: Record<string, string> = {}
  const p = mqttParser({ protocolVersion: version })
  p.on('packet', (pk: Packet) => {
    if (pk.cmd === 'publish') got[pk.topic] = latin1(pk.payload as Buffer)
  })
  for (const w of rec.writes) p.parse(Buffer.from(w))
  settle()
  void c
  return got
}

for (const { kind, alloc } of KINDS)
  for (const version of [4, 5] as const)
    for (const { how, copy } of COPIES)
    t.test(`MQTT ${version === 4 ? '3.1.1' : '5.0'} PUBLISH read into a reused ${kind}, copied out with ${how}: every consumer gets the published bytes`, (t) => withRangeCopy(copy, () => {
      const pubs = publishes()
      const all = stream(pubs, version)
      const want = pubs.map((p) => latin1(p.payload))
      for (const width of [1, 5, 29, 64, 700, all.length]) {
        const r = rig(2)
        startMqtt(r.srv)
        const nats = r.nats('CONNECT {"verbose":false,"headers":true}\r\nSUB up.> 1\r\n')
        const q0 = r.mqtt('q0', 0)
        const q1 = r.mqtt('q1', 1)
        const pub = mqttPublisher(r, version)
        const before = { ...r.srv.router.traffic }
        feedReused(pub.c, all, width, alloc)
        r.settle()
        const label = `reads of ${width} bytes`
        t.equal(pub.c.done, false, `${label}: the publisher is still connected`)
        t.same(natsFrames(Buffer.concat(nats.rec.writes)).map((f) => f.payload), want, `${label}: NATS subscriber`)
        t.same(mqttPayloads(q0.c, q0.rec, r.settle), want, `${label}: MQTT QoS 0`)
        // QoS 0 messages go out at once, the QoS 1 and 2 ones behind the window: each in order.
        const g1 = mqttPayloads(q1.c, q1.rec, r.settle)
        const hi = new Set(pubs.filter((p) => p.qos > 0 && p.payload.length > 0).map((p) => latin1(p.payload)))
        t.same([...g1].sort(), [...want].sort(), `${label}: MQTT QoS 1 subscriber (a window of 2): every message once`)
        t.same(g1.filter((x) => hi.has(x)), want.filter((x) => hi.has(x)), `${label}: MQTT QoS 1 subscriber: those at QoS 1 in order`)
        t.same(natsFrames(Buffer.concat(r.hub.writes)).map((f) => f.payload), want, `${label}: the uplink's frames`)
        const size = pubs.reduce((a, p) => a + p.payload.length, 0)
        t.equal(r.srv.router.traffic.in_msgs - before.in_msgs, pubs.length, `${label}: messages counted`)
        const hdrs = r.srv.router.traffic.in_bytes - before.in_bytes - size
        t.ok(hdrs >= 0, `${label}: payload bytes counted (${hdrs} bytes of QoS/retain headers besides)`)
        const kept = [...mqttState(r.srv).retained.byTopic.values()]
        const retained = pubs.filter((p) => p.retain)
        t.equal(kept.length, retained.length, `${label}: every retained message kept`)
        t.ok(kept.every((k) => k.payload.buffer.byteLength === k.payload.length), `${label}: each kept payload is an array of its own, not a view of the read`)
        const late = r.mqtt(`late${width}`, 0)
        late.c.data(generate({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'up/r/#', qos: 0 }] }))
        r.settle()
        const got = received(late.c, late.rec, r.settle)
        t.same(retained.map((p) => got[p.topic]), retained.map((p) => latin1(p.payload)), `${label}: a late subscriber gets the retained payloads as published`)
      }
    }))

t.test('a PUBLISH read while the password check runs is held as its own copy', async (t) => {
  // The bcrypt check is asynchronous (an engine whose answer the test gives); the PUBLISH that
  // came in the same read as CONNECT waits, and the read buffer is scribbled over meanwhile.
  const HASH = '$2a$04$' + 'x'.repeat(53)
  for (const { kind, alloc } of KINDS) {
    const r = rig(2, { authorization: { users: [{ user: 'u', password: HASH }, { user: 'n', password: 'plain' }] } } as never)
    let answer: ((ok: boolean) => void) | null = null
    r.srv.bcrypt = { parallel: 1, compare: () => new Promise<boolean>((res) => (answer = res)) }
    const nats = r.nats('CONNECT {"verbose":false,"user":"n","pass":"plain"}\r\nSUB up.> 1\r\n')
    const payload = body(300, 7)
    const connect = generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'held', username: 'u', password: Buffer.from(`p-${kind}`) }) // a password of its own: no cached answer
    const publish = generate({ cmd: 'publish', topic: 'up/held', payload: Buffer.from(payload), qos: 0, retain: false, dup: false })
    const rec = recWire(9100)
    const c = new MqttConn(r.srv, r.srv.admit(), rec.wire)
    const read = alloc(connect.length + publish.length)
    read.set(connect)
    read.set(publish, connect.length)
    c.data(read)
    read.fill(0xee)
    r.settle()
    t.equal(natsFrames(Buffer.concat(nats.rec.writes)).length, 0, `${kind}: nothing routed before the check is done`)
    t.ok(answer !== null, `${kind}: the check is pending`)
    answer!(true)
    await new Promise((res) => setImmediate(res))
    r.settle()
    t.equal(c.done, false, `${kind}: the client is in`)
    t.same(natsFrames(Buffer.concat(nats.rec.writes)).map((f) => f.payload), [latin1(payload)], `${kind}: the held PUBLISH goes out as published`)
  }
})
