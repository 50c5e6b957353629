// Topic aliases from sprig to MQTT 5 clients (adapters/mqtt/aliases.ts): bounded by the
// client's Topic Alias Maximum, topic + alias the first time, empty topic + alias after, per
// connection. Checked on the wire with a raw client (bytes and parsed packets) and with
// MQTT.js 5, which resolves aliases itself. Spec numbers are 5.0's.

import t, { type Test } from 'tap'
import { headers, type NatsConnection } from '@nats-io/transport-node'
import type { IPublishPacket, ISubackPacket, Packet } from 'mqtt-packet'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { messages, mqttClient, natsClient, RawMqtt } from './helpers/mqtt.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: true })
})
t.teardown(() => b?.stop())

const nats = (t: Test): Promise<NatsConnection> => natsClient(t, b.url)

async function raw(t: Test, version: 4 | 5, extra: Record<string, unknown> = {}): Promise<RawMqtt> {
  const c = await RawMqtt.connect(b.mqttPort, version, extra)
  t.teardown(() => c.close())
  return c
}

async function subscribe(c: RawMqtt, filter: string, qos: 0 | 1): Promise<void> {
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos }] } as Packet)
  await c.next('suback')
}

/** The next n PUBLISH packets as [topic, alias, payload]; QoS 1 ones are acknowledged. */
async function publishes(c: RawMqtt, n: number): Promise<[string, number | undefined, string][]> {
  const out: [string, number | undefined, string][] = []
  for (let i = 0; i < n; i++) {
    const p = (await c.next('publish')) as IPublishPacket | undefined
    if (!p) break
    if (p.qos === 1) c.send({ cmd: 'puback', messageId: p.messageId } as Packet)
    out.push([p.topic, p.properties?.topicAlias, p.payload.toString()])
  }
  return out
}

t.test('topic + alias the first time, empty topic + alias after, at most the client maximum [MQTT-3.3.2-11]', async (t) => {
  const c = await raw(t, 5, { properties: { topicAliasMaximum: 2 } })
  await subscribe(c, 'al/#', 0)
  const nc = await nats(t)
  const h = headers()
  h.set('Nmqtt-Pub', '0')
  for (const [s, p] of [['al.a', '1'], ['al.a', '2'], ['al.b', '3'], ['al.c', '4'], ['al.a', '5'], ['al.b', '6'], ['al.c', '7']]) nc.publish(s!, p!, { headers: h })
  t.same(await publishes(c, 7), [
    ['al/a', 1, '1'],
    ['', 1, '2'],
    ['al/b', 2, '3'],
    ['al/c', undefined, '4'], // both aliases given out: the third topic goes in full
    ['', 1, '5'],
    ['', 2, '6'],
    ['al/c', undefined, '7'],
  ])
})

t.test('the bytes of an aliased PUBLISH: property length 3, Topic Alias 0x23, never 0 [MQTT-3.3.2-8]', async (t) => {
  const c = await raw(t, 5, { properties: { topicAliasMaximum: 10 } })
  await subscribe(c, 'ab/x', 1)
  const bytes: Buffer[] = []
  c.sock.on('data', (d: Buffer) => bytes.push(d))
  const nc = await nats(t)
  nc.publish('ab.x', 'p') // no Nmqtt-Pub: QoS 1
  nc.publish('ab.x', 'q')
  t.same(await publishes(c, 2), [['ab/x', 1, 'p'], ['', 1, 'q']])
  const all = Buffer.concat(bytes)
  const first = Buffer.from([0x32, 13, 0, 4, ...Buffer.from('ab/x'), 0, 1, 3, 0x23, 0, 1, ...Buffer.from('p')])
  const second = Buffer.from([0x32, 9, 0, 0, 0, 2, 3, 0x23, 0, 1, ...Buffer.from('q')])
  t.same([...all], [...first, ...second], 'QoS 1, packet ids 1 and 2, alias 1 set then used')
})

t.test('messages with properties (mqtt-packet framing) use aliases too', async (t) => {
  const c = await raw(t, 5, { properties: { topicAliasMaximum: 1 } })
  await subscribe(c, 'ap/+', 0)
  const nc = await nats(t)
  const h = headers()
  h.set('Nmqtt-Pub', '0')
  h.set('X-Unit', 'C')
  nc.publish('ap.t', 'a', { headers: h })
  nc.publish('ap.t', 'b', { headers: h })
  const p1 = (await c.next('publish')) as IPublishPacket
  const p2 = (await c.next('publish')) as IPublishPacket
  t.same([p1.topic, p1.properties?.topicAlias, p1.properties?.userProperties], ['ap/t', 1, { 'X-Unit': 'C' }])
  t.same([p2.topic, p2.properties?.topicAlias, p2.properties?.userProperties], ['', 1, { 'X-Unit': 'C' }])
})

t.test('no aliases without a Topic Alias Maximum [MQTT-3.1.2-26], nor to 3.1.1 clients', async (t) => {
  const c5 = await raw(t, 5)
  const c4 = await raw(t, 4)
  await subscribe(c5, 'an/#', 0)
  await subscribe(c4, 'an/#', 0)
  const nc = await nats(t)
  const h = headers()
  h.set('Nmqtt-Pub', '0')
  nc.publish('an.x', '1', { headers: h })
  nc.publish('an.x', '2', { headers: h })
  t.same(await publishes(c5, 2), [['an/x', undefined, '1'], ['an/x', undefined, '2']])
  t.same(await publishes(c4, 2), [['an/x', undefined, '1'], ['an/x', undefined, '2']])
})

t.test('aliases are per connection: a reconnect starts again with topic + alias [MQTT-3.3.2-7]', async (t) => {
  const id = `alias-${process.pid}`
  const opts = { clientId: id, clean: false, properties: { topicAliasMaximum: 4, sessionExpiryInterval: 60 } }
  const c1 = await raw(t, 5, opts)
  await subscribe(c1, 'ar/x', 1)
  const nc = await nats(t)
  nc.publish('ar.x', '1')
  nc.publish('ar.x', '2')
  t.same(await publishes(c1, 2), [['ar/x', 1, '1'], ['', 1, '2']])
  c1.close()
  await c1.waitClosed()
  nc.publish('ar.x', '3') // queued for the parked session
  await nc.flush()
  const c2 = await raw(t, 5, { ...opts, clean: false })
  nc.publish('ar.x', '4')
  t.same(await publishes(c2, 2), [['ar/x', 1, '3'], ['', 1, '4']], 'the queued message sets the alias anew')
})

t.test('a retained message on subscribe and live ones share the alias', async (t) => {
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('at/state', 'r', { qos: 1, retain: true })
  const c = await raw(t, 5, { properties: { topicAliasMaximum: 1 } })
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'at/state', qos: 0 }] } as Packet)
  t.same(((await c.next('suback')) as ISubackPacket).granted, [0])
  await pub.publishAsync('at/state', 'l', { qos: 0 })
  t.same(await publishes(c, 2), [['at/state', 1, 'r'], ['', 1, 'l']])
  await pub.publishAsync('at/state', '', { qos: 1, retain: true })
})

t.test('MQTT.js 5 resolves the aliases sprig sends: it sees every topic', async (t) => {
  const sub = await mqttClient(t, b.mqttUrl, { protocolVersion: 5, properties: { topicAliasMaximum: 2 } })
  await sub.subscribeAsync('am/#', { qos: 1 })
  const got = messages(sub, 8)
  const nc = await nats(t)
  const topics = ['am.a', 'am.b', 'am.c', 'am.a', 'am.b', 'am.c', 'am.a', 'am.a']
  topics.forEach((s, i) => nc.publish(s, String(i)))
  t.same((await got).map((m) => [m.topic, m.payload]), topics.map((s, i) => [s.replace('.', '/'), String(i)]))
})
