// Limits, each with a clear error: Maximum Packet Size both ways, subscriptions per client,
// topic length and depth, connections. Spec numbers are 5.0's unless a test says 3.1.1.

import t, { type Test } from 'tap'
import { connect } from '@nats-io/transport-node'
import type { IConnackPacket, IDisconnectPacket, IPublishPacket, ISubackPacket, Packet } from 'mqtt-packet'
import { mqttState } from '../adapters/mqtt/index.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { RawMqtt, sleep } from './helpers/mqtt.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: { max_topic_length: 20, max_topic_levels: 3, max_subscriptions: 2 }, max_payload: 1024 })
})
t.teardown(() => b?.stop())

async function raw(t: Test, v: 4 | 5 = 5, extra: Record<string, unknown> = {}, port = b.mqttPort): Promise<RawMqtt> {
  const c = await RawMqtt.connect(port, v, extra)
  t.teardown(() => c.close())
  return c
}

const pub = (topic: string, payload: Uint8Array | string, more: Partial<IPublishPacket> = {}): Packet =>
  ({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, dup: false, retain: false, ...more }) as Packet

t.test('the server never sends a packet over the client\'s Maximum Packet Size [MQTT-3.1.2-24]: skipped as if sent [MQTT-3.1.2-25], counted', async (t) => {
  const s = await raw(t, 5, { properties: { maximumPacketSize: 100, receiveMaximum: 1 } })
  s.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'mps/a', qos: 1 }] } as Packet)
  await s.next('suback')
  const before = mqttState(b.srv).counters.oversize_drops
  const nc = await connect({ servers: b.url, reconnect: false })
  t.teardown(() => nc.close())
  nc.publish('mps.a', 'x'.repeat(200)) // QoS 1: would take the only in-flight slot
  nc.publish('mps.a', 'small')
  await nc.flush()
  const p = (await s.next('publish')) as IPublishPacket
  t.equal(p.payload.toString(), 'small', 'the oversize one is skipped, and its slot freed')
  t.equal(mqttState(b.srv).counters.oversize_drops, before + 1)
  t.notOk(s.closed)
})

t.test('CONNACK tells the client our Maximum Packet Size; a larger PUBLISH gets DISCONNECT 0x95', async (t) => {
  const c = await RawMqtt.open(b.mqttPort, 5)
  t.teardown(() => c.close())
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'mps-in' } as Packet)
  const ack = (await c.next('connack')) as IConnackPacket
  t.equal(ack.properties?.maximumPacketSize, 1024 + 64 * 1024, 'max_payload + 64 KiB for topic and properties')
  c.send(pub('mps/in', new Uint8Array(2000)))
  t.equal(((await c.next('disconnect')) as IDisconnectPacket)?.reasonCode, 0x95, 'payload over max_payload: Packet too large')
  t.ok(await c.waitClosed())
  t.ok(b.logs.some((l) => /mqtt payload of 2000 bytes over max_payload/.test(l)), 'and a log line that says why')
})

t.test('subscriptions per client (mqtt.max_subscriptions): 0x97 Quota exceeded (5.0), 0x80 (3.1.1) [MQTT-3.9.3-1]', async (t) => {
  for (const v of [4, 5] as const) {
    const c = await raw(t, v)
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'ms/1', qos: 0 }, { topic: 'ms/2', qos: 0 }, { topic: 'ms/3', qos: 0 }, { topic: 'ms/1', qos: 1 }] } as Packet)
    const s = (await c.next('suback')) as ISubackPacket
    t.same(s.granted, [0, 0, v === 5 ? 0x97 : 0x80, 1], `v${v}: the third is refused; re-subscribing an existing filter is not a new one`)
    t.notOk(c.closed)
  }
  t.ok(b.logs.some((l) => l.includes('refused: maximum subscriptions (2) exceeded')))
})

t.test('topic length (mqtt.max_topic_length) and levels (mqtt.max_topic_levels) on PUBLISH: 0x90 (5.0), close (3.1.1) [MQTT-3.3.2-2]', async (t) => {
  for (const topic of ['a'.repeat(21), 'a/b/c/d']) {
    const c5 = await raw(t, 5)
    c5.send(pub(topic, 'x'))
    t.equal(((await c5.next('disconnect')) as IDisconnectPacket)?.reasonCode, 0x90, `5.0 ${topic}`)
    const c4 = await raw(t, 4)
    c4.send(pub(topic, 'x'))
    t.ok(await c4.waitClosed(), `3.1.1 ${topic}`)
  }
  t.ok(b.logs.some((l) => l.includes('too_long (mqtt.max_topic_length is 20 bytes)')), 'the log names the limit')
  t.ok(b.logs.some((l) => l.includes('too_deep (mqtt.max_topic_levels is 3)')))
  // At the limits is fine.
  const ok = await raw(t, 5)
  ok.send(pub('a'.repeat(20), 'x', { qos: 1, messageId: 1 }))
  ok.send(pub('a/b/c', 'x', { qos: 1, messageId: 2 }))
  t.ok(await ok.next('puback'))
  t.ok(await ok.next('puback'))
})

t.test('topic limits on SUBSCRIBE (0x8F / 0x80 per filter [MQTT-3.9.3-1]) and on the will topic (CONNACK 0x90)', async (t) => {
  for (const v of [4, 5] as const) {
    const c = await raw(t, v)
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'x/'.repeat(11) + 'y', qos: 0 }, { topic: 'a/b/c/#', qos: 0 }, { topic: '$share/g/a/b/c/d', qos: 0 }, { topic: 'a/+/#', qos: 0 }] } as Packet)
    const s = (await c.next('suback')) as ISubackPacket
    const f = v === 5 ? 0x8f : 0x80
    t.same(s.granted, [f, f, f, 0], `v${v}`)
  }
  const w = await RawMqtt.open(b.mqttPort, 5)
  t.teardown(() => w.close())
  w.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'lw', will: { topic: 'a/b/c/d', payload: Buffer.from('x'), qos: 0, retain: false } } as Packet)
  t.equal(((await w.next('connack')) as IConnackPacket)?.reasonCode, 0x90)
  t.ok(await w.waitClosed())
})

t.test('connections over max_connections get a CONNACK refusal in their version, then a close', async (t) => {
  const own = await startBroker({ mqtt: true, max_connections: 1 })
  t.teardown(() => own.stop())
  const first = await raw(t, 5, {}, own.mqttPort)
  t.ok(first)
  for (const v of [4, 5] as const) {
    const c = await RawMqtt.open(own.mqttPort, v)
    t.teardown(() => c.close())
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, keepalive: 0, clientId: `over-${v}` } as Packet)
    const ack = (await c.next('connack')) as IConnackPacket
    t.equal(v === 5 ? ack.reasonCode : ack.returnCode, v === 5 ? 0x97 : 0x03, v === 5 ? 'Quota exceeded' : 'Server unavailable, then a close (3.1.1 [MQTT-3.2.2-5])')
    t.ok(await c.waitClosed())
  }
  t.ok(own.logs.some((l) => l.includes('maximum connections (1) exceeded')))
  t.notOk(first.closed, 'the admitted client is not affected')
  await sleep(10)
})
