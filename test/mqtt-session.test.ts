// Persistent sessions: 3.1.1 clean session 0 and MQTT 5 Session Expiry. Subscriptions and
// unacknowledged messages survive a disconnect, messages published meanwhile are queued
// (bounded), QoS 1 and 2 flows interrupted mid-way complete after the reconnect, and
// sessions expire. Spec numbers are 3.1.1's unless a test says 5.0.

import t, { type Test } from 'tap'
import type { NatsConnection } from '@nats-io/transport-node'
import type { IConnackPacket, IPublishPacket } from 'mqtt-packet'
import { mqttState } from '../adapters/mqtt/index.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { RawMqtt, messages, mqttClient, natsClient, sleep } from './helpers/mqtt.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: true })
})
t.teardown(() => b?.stop())

const nats = (t: Test, broker = b): Promise<NatsConnection> => natsClient(t, broker.url)

/** Connects raw and returns the client with its CONNACK. */
async function rawConnect(port: number, v: 4 | 5, extra: Record<string, unknown>): Promise<[RawMqtt, IConnackPacket]> {
  const c = await RawMqtt.open(port, v)
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: false, keepalive: 0, clientId: 'x', ...extra } as never)
  return [c, (await c.next('connack')) as IConnackPacket]
}

const publishes = (c: RawMqtt): IPublishPacket[] => c.packets.filter((p) => p.cmd === 'publish') as IPublishPacket[]

t.test('clean session 0: subscriptions and queued messages survive a disconnect [MQTT-3.1.2-4] [MQTT-3.2.2-2]', async (t) => {
  const opts = { clientId: 'persist-1', clean: false }
  const c1 = await mqttClient(t, b.mqttUrl, opts)
  await c1.subscribeAsync('p1/#', { qos: 1 })
  await c1.endAsync()
  const nc = await nats(t)
  for (let i = 0; i < 3; i++) nc.publish(`p1.m${i}`, `m${i}`)
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('p1/q0', 'qos0 is not queued', { qos: 0 })
  await nc.flush()
  const [c2, ack] = await rawConnect(b.mqttPort, 4, { clientId: 'persist-1' })
  t.teardown(() => c2.close())
  t.equal(ack.sessionPresent, true, 'session present')
  await c2.until(() => publishes(c2).length >= 3)
  await sleep(100)
  t.same(publishes(c2).map((p) => [p.topic, p.payload.toString(), p.qos]), [['p1/m0', 'm0', 1], ['p1/m1', 'm1', 1], ['p1/m2', 'm2', 1]], 'in order, no re-subscribe needed')
  for (const p of publishes(c2)) c2.send({ cmd: 'puback', messageId: p.messageId })
})

t.test('clean session 1 discards the stored session [MQTT-3.1.2-6]', async (t) => {
  const c1 = await mqttClient(t, b.mqttUrl, { clientId: 'persist-2', clean: false })
  await c1.subscribeAsync('p2/x', { qos: 1 })
  await c1.endAsync()
  const [c2, ack] = await rawConnect(b.mqttPort, 4, { clientId: 'persist-2', clean: true })
  t.teardown(() => c2.close())
  t.equal(ack.sessionPresent, false)
  const nc = await nats(t)
  nc.publish('p2.x', 'x')
  await nc.flush()
  await sleep(200)
  t.same(publishes(c2), [], 'the old subscription is gone')
  t.notOk(mqttState(b.srv).sessions.has('persist-2'))
})

t.test('QoS 1 in flight at disconnect is resent with DUP [MQTT-4.4.0-1]', async (t) => {
  const [c1] = await rawConnect(b.mqttPort, 4, { clientId: 'dup-1' })
  c1.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'd1', qos: 1 }] })
  await c1.next('suback')
  const nc = await nats(t)
  nc.publish('d1', 'unacked')
  const first = (await c1.next('publish')) as IPublishPacket
  t.equal(first.dup, false)
  c1.close() // no PUBACK
  await sleep(100)
  const [c2, ack] = await rawConnect(b.mqttPort, 4, { clientId: 'dup-1' })
  t.teardown(() => c2.close())
  t.ok(ack.sessionPresent)
  const again = (await c2.next('publish')) as IPublishPacket
  t.match(again, { messageId: first.messageId, dup: true, payload: Buffer.from('unacked') }, 'same packet id, DUP set')
  c2.send({ cmd: 'puback', messageId: again.messageId })
  c2.send({ cmd: 'pingreq' })
  await c2.next('pingresp')
  t.same(publishes(c2), [], 'nothing more')
})

t.test('QoS 2 interrupted mid-flow completes once after the reconnect [MQTT-4.3.3-2] [MQTT-4.4.0-1]', async (t) => {
  const watcher = await mqttClient(t, b.mqttUrl)
  await watcher.subscribeAsync('q2/in', { qos: 2 })
  const got = messages(watcher, 2, 1000)
  // Inbound: PUBLISH, PUBREC, then the sender drops before PUBREL.
  const [p1] = await rawConnect(b.mqttPort, 4, { clientId: 'q2-pub' })
  p1.send({ cmd: 'publish', topic: 'q2/in', payload: Buffer.from('exactly once'), qos: 2, messageId: 5, dup: false, retain: false })
  await p1.next('pubrec')
  p1.close()
  await sleep(100)
  const [p2] = await rawConnect(b.mqttPort, 4, { clientId: 'q2-pub' })
  t.teardown(() => p2.close())
  p2.send({ cmd: 'publish', topic: 'q2/in', payload: Buffer.from('exactly once'), qos: 2, messageId: 5, dup: true, retain: false })
  await p2.next('pubrec')
  p2.send({ cmd: 'pubrel', messageId: 5 })
  t.equal((await p2.next('pubcomp'))?.messageId, 5)
  t.same((await got).map((m) => m.payload), ['exactly once'], 'delivered once')

  // Outbound: PUBLISH, PUBREC, PUBREL, then the receiver drops before PUBCOMP.
  const [s1] = await rawConnect(b.mqttPort, 4, { clientId: 'q2-sub' })
  s1.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'q2/out', qos: 2 }] })
  await s1.next('suback')
  await watcher.publishAsync('q2/out', 'two', { qos: 2 })
  const pub = (await s1.next('publish')) as IPublishPacket
  s1.send({ cmd: 'pubrec', messageId: pub.messageId })
  await s1.next('pubrel')
  s1.close()
  await sleep(100)
  const [s2, ack] = await rawConnect(b.mqttPort, 4, { clientId: 'q2-sub' })
  t.teardown(() => s2.close())
  t.ok(ack.sessionPresent)
  t.equal((await s2.next('pubrel'))?.messageId, pub.messageId, 'PUBREL resent, not the PUBLISH')
  s2.send({ cmd: 'pubcomp', messageId: pub.messageId })
  s2.send({ cmd: 'pingreq' })
  await s2.next('pingresp')
  t.same(publishes(s2), [])
})

t.test('the offline queue is bounded: newest dropped and counted', async (t) => {
  const small = await startBroker({ mqtt: { max_offline_msgs: 3 } })
  t.teardown(() => small.stop())
  const c1 = await mqttClient(t, small.mqttUrl, { clientId: 'bounded', clean: false })
  await c1.subscribeAsync('bq', { qos: 1 })
  await c1.endAsync()
  const nc = await nats(t, small)
  for (let i = 0; i < 5; i++) nc.publish('bq', String(i))
  await nc.flush()
  const [c2] = await rawConnect(small.mqttPort, 4, { clientId: 'bounded' })
  t.teardown(() => c2.close())
  await c2.until(() => publishes(c2).length >= 3)
  await sleep(100)
  t.same(publishes(c2).map((p) => p.payload.toString()), ['0', '1', '2'])
  t.equal(mqttState(small.srv).counters.offline_dropped, 2)
})

t.test('MQTT 5 Session Expiry: 0 keeps nothing, N seconds then gone, capped by session_expiry', async (t) => {
  const small = await startBroker({ mqtt: { session_expiry: 2000 } })
  t.teardown(() => small.stop())
  const keep = await mqttClient(t, small.mqttUrl) // keeps the housekeeping sweep company
  t.ok(keep.connected)
  const [a] = await rawConnect(small.mqttPort, 5, { clientId: 'e0', properties: { sessionExpiryInterval: 0 } })
  a.close()
  await sleep(100)
  const [, a2] = await rawConnect(small.mqttPort, 5, { clientId: 'e0' })
  t.equal(a2.sessionPresent, false, 'expiry 0: no session kept (5.0 §3.1.2.11.2)')

  const [c, ack] = await rawConnect(small.mqttPort, 5, { clientId: 'e1', clean: true, properties: { sessionExpiryInterval: 0xffffffff } })
  t.equal(ack.properties?.sessionExpiryInterval, 2, 'the server says it caps the interval')
  c.close()
  await sleep(300)
  const [c2, ack2] = await rawConnect(small.mqttPort, 5, { clientId: 'e1', properties: { sessionExpiryInterval: 1 } })
  t.equal(ack2.sessionPresent, true, 'kept within its expiry')
  c2.close()
  await sleep(2600)
  t.notOk(mqttState(small.srv).sessions.has('e1'), 'expired after 1 s (+ the 1 s sweep)')
  const [, ack3] = await rawConnect(small.mqttPort, 5, { clientId: 'e1' })
  t.equal(ack3.sessionPresent, false)
})

t.test('abandoned 3.1.1 sessions expire after session_expiry', async (t) => {
  const small = await startBroker({ mqtt: { session_expiry: 1000 } })
  t.teardown(() => small.stop())
  const keep = await mqttClient(t, small.mqttUrl)
  t.ok(keep.connected)
  const base = small.srv.router.subs.count // the adapter's own $SPRIG.mqtt.* services
  const c = await mqttClient(t, small.mqttUrl, { clientId: 'gone', clean: false })
  await c.subscribeAsync('g', { qos: 1 })
  await c.endAsync()
  t.ok(mqttState(small.srv).sessions.has('gone'))
  await sleep(2600)
  t.notOk(mqttState(small.srv).sessions.has('gone'))
  t.equal(small.srv.router.subs.count, base, 'its subscriptions left the router')
})

t.test('session takeover with clean session 0 hands the live session over', async (t) => {
  const old = await mqttClient(t, b.mqttUrl, { clientId: 'handover', clean: false })
  await old.subscribeAsync('ho', { qos: 1 })
  const [neu, ack] = await rawConnect(b.mqttPort, 4, { clientId: 'handover' })
  t.teardown(() => neu.close())
  t.equal(ack.sessionPresent, true)
  const nc = await nats(t)
  nc.publish('ho', 'to the new one')
  t.equal(((await neu.next('publish')) as IPublishPacket)?.payload.toString(), 'to the new one')
})
