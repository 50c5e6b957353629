// Conformance checks on the hand-written paths (frame.ts): SUBSCRIBE parsed without
// mqtt-packet, and the small packets sprig frames itself (CONNACK, SUBACK, UNSUBACK, PUBACK,
// PUBREC, PUBREL, PUBCOMP, PINGRESP). Each case cites the statement it checks (3.1.1 numbers
// unless marked 5.0); the bytes are compared with what mqtt-packet's generator makes.

import t, { type Test } from 'tap'
import { generate, type Packet } from 'mqtt-packet'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { messages, mqttClient, RawMqtt, sleep } from './helpers/mqtt.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: true })
})
t.teardown(() => b?.stop())

async function raw(t: Test, v: 4 | 5): Promise<RawMqtt> {
  const c = await RawMqtt.connect(b.mqttPort, v)
  t.teardown(() => c.close())
  return c
}

/** The raw bytes the server sends on `c` while `act` runs (plus a short settle). */
async function bytesOf(c: RawMqtt, act: () => void, ms = 150): Promise<number[]> {
  const got: Buffer[] = []
  const on = (d: Buffer): void => void got.push(d)
  c.sock.on('data', on)
  act()
  await sleep(ms)
  c.sock.off('data', on)
  return [...Buffer.concat(got)]
}

const gen = (p: Packet, v: 4 | 5): number[] => [...generate(p, { protocolVersion: v })]

t.test('SUBACK: one return code per filter, in order [MQTT-3.9.3-1], same packet id [MQTT-3.8.4-2]', async (t) => {
  for (const v of [4, 5] as const) {
    const c = await raw(t, v)
    const subscriptions = [
      { topic: 'cf/a', qos: 0 },
      { topic: 'cf/+/b', qos: 1 },
      { topic: 'cf/#', qos: 2 },
      { topic: 'cf/#/x', qos: 1 }, // invalid filter: failure for this one only
    ]
    const got = await bytesOf(c, () => c.send({ cmd: 'subscribe', messageId: 0x1234, subscriptions } as Packet))
    const fail = v === 5 ? 0x8f : 0x80
    t.same(got, gen({ cmd: 'suback', messageId: 0x1234, granted: [0, 1, 2, fail] } as Packet, v), `v${v}: bytes as mqtt-packet frames them`)
  }
})

t.test('SUBSCRIBE options: reserved bits set, QoS 3 or Retain Handling 3 close the connection [MQTT-3.8.3-4] (5.0: [MQTT-3.8.3-5])', async (t) => {
  // Fixed header 0x82, packet id 1, (5.0: no properties), topic "a", then the options byte.
  const frame = (v: 4 | 5, opts: number): Uint8Array => new Uint8Array(v === 5 ? [0x82, 7, 0, 1, 0, 0, 1, 0x61, opts] : [0x82, 6, 0, 1, 0, 1, 0x61, opts])
  const cases: [4 | 5, number, string][] = [
    [4, 0x04, 'v3.1.1: bit 2 is reserved'],
    [4, 0x80, 'v3.1.1: bit 7 is reserved'],
    [4, 0x03, 'QoS 3'],
    [5, 0x03, 'QoS 3'],
    [5, 0xc0, 'v5: bits 6-7 are reserved'],
    [5, 0x30, 'v5: Retain Handling 3'],
  ]
  for (const [v, opts, name] of cases) {
    const c = await raw(t, v)
    c.send(frame(v, opts))
    t.ok(await c.waitClosed(), name)
  }
})

t.test('SUBSCRIBE without a topic filter is a protocol violation [MQTT-3.8.3-3]; a cut filter too', async (t) => {
  const cases: [4 | 5, number[], string][] = [
    [4, [0x82, 2, 0, 1], 'v3.1.1: no payload'],
    [5, [0x82, 3, 0, 1, 0], 'v5: no payload'],
    [4, [0x82, 5, 0, 1, 0, 5, 0x61], 'v3.1.1: filter length past the packet'],
    [4, [0x82, 5, 0, 1, 0, 1, 0x61], 'v3.1.1: no options byte'],
    [4, [0xa2, 2, 0, 1], 'v3.1.1: UNSUBSCRIBE without a filter [MQTT-3.10.3-2]'],
    [5, [0xa2, 3, 0, 1, 0], 'v5: UNSUBSCRIBE without a filter [MQTT-3.10.3-2]'],
  ]
  for (const [v, bytes, name] of cases) {
    const c = await raw(t, v)
    c.send(new Uint8Array(bytes))
    t.ok(await c.waitClosed(), name)
  }
})

t.test('a v5 SUBSCRIBE with properties still works (mqtt-packet parses that shape)', async (t) => {
  const c = await raw(t, 5)
  c.send({ cmd: 'subscribe', messageId: 3, properties: { subscriptionIdentifier: 9 }, subscriptions: [{ topic: 'cp/x', qos: 1, nl: false, rap: true, rh: 0 }] } as Packet)
  t.match(await c.next('suback'), { messageId: 3, granted: [1] })
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('cp/x', 'v', { qos: 1 })
  t.match(await c.next('publish'), { topic: 'cp/x', properties: { subscriptionIdentifier: 9 } }, 'its Subscription Identifier comes back [MQTT-3.3.4-3] (5.0)')
})

t.test('SUBSCRIBE options in 5.0 are read from the options byte: No Local, Retain As Published, Retain Handling', async (t) => {
  const c = await raw(t, 5)
  // topic "co/x", options: QoS 1 | No Local (4) | RAP (8) | Retain Handling 2 (0x20)
  c.send(new Uint8Array([0x82, 10, 0, 5, 0, 0, 4, ...Buffer.from('co/x'), 0x01 | 0x04 | 0x08 | 0x20]))
  t.match(await c.next('suback'), { messageId: 5, granted: [1] })
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('co/x', 'kept', { qos: 1, retain: true })
  t.match(await c.next('publish'), { topic: 'co/x', retain: true }, 'Retain As Published keeps the flag on a live message [MQTT-3.3.1-13] (5.0)')
  // Its own publish is not sent back (No Local) [MQTT-3.8.3-3] (5.0).
  c.send({ cmd: 'publish', topic: 'co/x', payload: Buffer.from('own'), qos: 0, dup: false, retain: false } as Packet)
  t.equal(await c.next('publish', 300), undefined, 'No Local: not its own message')
  // A new subscription with Retain Handling 2 gets no retained message [MQTT-3.3.1-11] (5.0).
  const c2 = await raw(t, 5)
  c2.send(new Uint8Array([0x82, 10, 0, 6, 0, 0, 4, ...Buffer.from('co/x'), 0x01 | 0x20]))
  t.match(await c2.next('suback'), { messageId: 6, granted: [1] })
  t.equal(await c2.next('publish', 300), undefined, 'Retain Handling 2: no retained message on subscribe')
  await pub.publishAsync('co/x', '', { qos: 1, retain: true })
})

t.test('UNSUBACK: 3.1.1 carries the packet id only [MQTT-3.10.4-4]; 5.0 one reason code per filter', async (t) => {
  for (const v of [4, 5] as const) {
    const c = await raw(t, v)
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'cu/a', qos: 0 }] } as Packet)
    await c.next('suback')
    const got = await bytesOf(c, () => c.send({ cmd: 'unsubscribe', messageId: 0x0102, unsubscriptions: ['cu/a', 'cu/none'] } as Packet))
    const want = v === 5 ? gen({ cmd: 'unsuback', messageId: 0x0102, granted: [0x00, 0x11] } as Packet, 5) : [0xb0, 2, 1, 2]
    t.same(got, want, `v${v}`)
  }
})

t.test('PINGRESP for PINGREQ [MQTT-3.12.4-1]; 3.1.1 CONNACK bytes [MQTT-3.2.2-1]', async (t) => {
  const c = await raw(t, 4)
  t.same(await bytesOf(c, () => c.send(new Uint8Array([0xc0, 0]))), [0xd0, 0])
  const fresh = await RawMqtt.open(b.mqttPort, 4)
  t.teardown(() => fresh.close())
  const got = await bytesOf(fresh, () => fresh.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'cc' } as Packet))
  t.same(got, [0x20, 2, 0, 0], 'clean session: session present 0, accepted')
})

t.test('QoS 2 in: a resent PUBLISH before PUBREL is acknowledged, not delivered again; after PUBCOMP the id is free for a new message [MQTT-4.3.3-2]', async (t) => {
  const sub = await mqttClient(t, b.mqttUrl)
  await sub.subscribeAsync('cq/x', { qos: 0 })
  const got = messages(sub, 3, 1000)
  const c = await raw(t, 4)
  const pub = (payload: string, dup: boolean): Packet => ({ cmd: 'publish', topic: 'cq/x', payload: Buffer.from(payload), qos: 2, messageId: 7, dup, retain: false }) as Packet
  t.same(await bytesOf(c, () => c.send(pub('one', false))), [0x50, 2, 0, 7], 'PUBREC')
  t.same(await bytesOf(c, () => c.send(pub('one', true))), [0x50, 2, 0, 7], 'PUBREC again for the resent PUBLISH')
  t.same(await bytesOf(c, () => c.send({ cmd: 'pubrel', messageId: 7 } as Packet)), [0x70, 2, 0, 7], 'PUBCOMP')
  t.same(await bytesOf(c, () => c.send(pub('two', false))), [0x50, 2, 0, 7], 'the same id again is a new message')
  c.send({ cmd: 'pubrel', messageId: 7 } as Packet)
  t.same((await got).map((m) => m.payload), ['one', 'two'], 'each delivered once')
})

t.test('QoS 2 out: PUBREL with the PUBLISH packet id after PUBREC [MQTT-4.3.3-1]; PUBREL for an unknown id gets PUBCOMP 0x92 (5.0)', async (t) => {
  const c = await raw(t, 5)
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'cr/x', qos: 2 }] } as Packet)
  await c.next('suback')
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('cr/x', 'm', { qos: 2 })
  const p = (await c.next('publish')) as { messageId: number }
  const id = p.messageId
  t.same(await bytesOf(c, () => c.send({ cmd: 'pubrec', messageId: id } as Packet)), [0x62, 2, id >> 8, id & 0xff], 'PUBREL, flags 0010 [MQTT-3.6.1-1]')
  c.send({ cmd: 'pubcomp', messageId: id } as Packet)
  const unknown = await bytesOf(c, () => c.send({ cmd: 'pubrel', messageId: 999 } as Packet))
  t.same(unknown, gen({ cmd: 'pubcomp', messageId: 999, reasonCode: 0x92 } as Packet, 5), 'Packet Identifier not found')
})

t.test('CONNECT parsed by hand: reserved flag set [MQTT-3.1.2-3], will QoS or retain without the will flag [MQTT-3.1.2-13] [MQTT-3.1.2-15] close the connection', async (t) => {
  // "MQTT", level 4, flags, keepalive 0, client id "c"
  const connect = (flags: number): Uint8Array => new Uint8Array([0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, flags, 0, 0, 0, 1, 0x63])
  for (const [flags, name] of [[0x03, 'reserved bit 0'], [0x0a, 'will QoS 1 without will flag'], [0x22, 'will retain without will flag']] as const) {
    const c = await RawMqtt.open(b.mqttPort, 4)
    t.teardown(() => c.close())
    c.send(connect(flags))
    t.ok(await c.waitClosed(), name)
    t.equal(c.packets.length, 0, `${name}: no CONNACK`)
  }
  const ok = await RawMqtt.open(b.mqttPort, 4)
  t.teardown(() => ok.close())
  ok.send(connect(0x02))
  t.match(await ok.next('connack'), { returnCode: 0 }, 'the same CONNECT with clean session only is accepted')
  // A cut client id: the frame says 13 bytes but the id length says 5.
  const cut = await RawMqtt.open(b.mqttPort, 4)
  t.teardown(() => cut.close())
  cut.send(new Uint8Array([0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 0, 0, 5, 0x63]))
  t.ok(await cut.waitClosed(), 'client id length past the packet: closed')
})

t.test('CONNECT with a user name and password, a will, or MQTT 5 properties all connect (hand or mqtt-packet parse)', async (t) => {
  const own = await startBroker({ mqtt: true, authorization: { user: 'dev', password: 's3cret', timeout: 2000 } })
  t.teardown(() => own.stop())
  const base = { cmd: 'connect', protocolId: 'MQTT', clean: true, keepalive: 30, clientId: 'cu', username: 'dev', password: Buffer.from('s3cret') }
  const shapes: [string, 4 | 5, Record<string, unknown>][] = [
    ['3.1.1 user+password', 4, {}],
    ['5.0 user+password', 5, {}],
    ['3.1.1 with a will', 4, { will: { topic: 'w/x', payload: Buffer.from('bye'), qos: 1, retain: false } }],
    ['5.0 with properties', 5, { properties: { sessionExpiryInterval: 0, receiveMaximum: 10 } }],
  ]
  for (const [name, v, extra] of shapes) {
    const c = await RawMqtt.open(own.mqttPort, v)
    t.teardown(() => c.close())
    c.send({ ...base, protocolVersion: v, ...extra } as Packet)
    t.match(await c.next('connack'), v === 5 ? { reasonCode: 0 } : { returnCode: 0 }, name)
  }
  const bad = await RawMqtt.open(own.mqttPort, 4)
  t.teardown(() => bad.close())
  bad.send({ ...base, protocolVersion: 4, password: Buffer.from('wrong') } as Packet)
  t.match(await bad.next('connack'), { returnCode: 4 }, 'a wrong password: CONNACK 0x04 [MQTT-3.2.2-5]')
})
