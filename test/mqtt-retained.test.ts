// Retained messages: kept per topic in memory (bounded), delivered on subscribe with the
// retain flag, replaced and deleted as MQTT says, visible across reconnects.
// Spec numbers are 3.1.1's unless a test says 5.0.

import t from 'tap'
import type { IPublishPacket } from 'mqtt-packet'
import { mqttState } from '../adapters/mqtt/index.ts'
import { matchRetained, newRetainedStore, retain } from '../adapters/mqtt/retained.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { RawMqtt, messages, mqttClient } from './helpers/mqtt.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: true })
})
t.teardown(() => b?.stop())

t.test('a new subscriber gets the retained message with the retain flag [MQTT-3.3.1-6]', async (t) => {
  const pub = await mqttClient(t, b.mqttUrl)
  const live = await mqttClient(t, b.mqttUrl)
  await live.subscribeAsync('ret/a')
  const liveGot = messages(live, 1)
  await pub.publishAsync('ret/a', 'state-1', { qos: 1, retain: true })
  const l = await liveGot
  t.same(l.map((m) => [m.payload, m.retain]), [['state-1', false]], 'established subscribers get retain 0 [MQTT-3.3.1-9]')
  for (const v of [4, 5] as const) {
    const late = await mqttClient(t, b.mqttUrl, { protocolVersion: v })
    const got = messages(late, 1)
    await late.subscribeAsync('ret/a', { qos: 1 })
    t.same((await got).map((m) => [m.topic, m.payload, m.retain, m.qos]), [['ret/a', 'state-1', true, 1]], `v${v}`)
  }
})

t.test('a new retained message replaces the old one [MQTT-3.3.1-5]; an empty one deletes it [MQTT-3.3.1-10] [MQTT-3.3.1-11]', async (t) => {
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('ret/b', 'v1', { qos: 1, retain: true })
  await pub.publishAsync('ret/b', 'v2', { qos: 1, retain: true })
  const s1 = await mqttClient(t, b.mqttUrl)
  const got1 = messages(s1, 2, 500)
  await s1.subscribeAsync('ret/b')
  t.same((await got1).map((m) => m.payload), ['v2'])
  await pub.publishAsync('ret/b', '', { qos: 1, retain: true })
  const s2 = await mqttClient(t, b.mqttUrl)
  const got2 = messages(s2, 1, 500)
  await s2.subscribeAsync('ret/b')
  t.same(await got2, [], 'deleted')
  t.notOk(mqttState(b.srv).retained.byTopic.has('ret/b'), 'and not stored')
})

t.test('wildcard subscriptions get every matching retained message, but # no $ topics [MQTT-4.7.2-1]', async (t) => {
  const pub = await mqttClient(t, b.mqttUrl)
  for (const topic of ['wr/1', 'wr/2/x', 'wr', '$SYS/wr']) await pub.publishAsync(topic, topic, { qos: 0, retain: true })
  const c = await mqttClient(t, b.mqttUrl)
  const got = messages(c, 3)
  await c.subscribeAsync('wr/#')
  t.same((await got).map((m) => m.topic).sort(), ['wr', 'wr/1', 'wr/2/x'])
  const all = await mqttClient(t, b.mqttUrl)
  const gotAll = messages(all, 100, 500)
  await all.subscribeAsync('#')
  t.notOk((await gotAll).some((m) => m.topic.startsWith('$')), 'no $ topics for #')
  const sys = await mqttClient(t, b.mqttUrl)
  const gotSys = messages(sys, 1)
  await sys.subscribeAsync('$SYS/#')
  t.same((await gotSys).map((m) => m.topic), ['$SYS/wr'])
})

t.test('retained delivery QoS is min(stored, granted) ([MQTT-3.8.4-8] in 5.0)', async (t) => {
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('rq/1', 'one', { qos: 1, retain: true })
  await pub.publishAsync('rq/0', 'zero', { qos: 0, retain: true })
  const c = await RawMqtt.connect(b.mqttPort, 4)
  t.teardown(() => c.close())
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'rq/+', qos: 2 }] })
  await c.next('suback')
  await c.until(() => c.packets.filter((p) => p.cmd === 'publish').length >= 2)
  const byTopic = Object.fromEntries((c.packets.filter((p) => p.cmd === 'publish') as IPublishPacket[]).map((p) => [p.topic, [p.qos, p.retain]]))
  t.same(byTopic, { 'rq/1': [1, true], 'rq/0': [0, true] })
  // SUBACK came first [MQTT-3.8.4-1]: next('suback') above took it before any PUBLISH was read.
})

t.test('retained across reconnects', async (t) => {
  const pub = await mqttClient(t, b.mqttUrl, { clientId: 'device-7' })
  await pub.publishAsync('dev/7/online', 'yes', { qos: 1, retain: true })
  await pub.endAsync()
  const sub = await mqttClient(t, b.mqttUrl, { clientId: 'device-7' })
  const got = messages(sub, 1)
  await sub.subscribeAsync('dev/+/online')
  t.same((await got).map((m) => m.payload), ['yes'])
})

t.test('MQTT 5 Retain Handling: 1 only for a new subscription, 2 never (5.0 §3.8.3.1)', async (t) => {
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('rh/x', 'r', { qos: 0, retain: true })
  const c = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  const got = messages(c, 5, 600)
  await c.subscribeAsync('rh/x', { qos: 0, rh: 1 })
  await c.subscribeAsync('rh/x', { qos: 0, rh: 1 }) // exists now: nothing
  await c.subscribeAsync('rh/+', { qos: 0, rh: 2 }) // never
  t.same((await got).map((m) => m.topic), ['rh/x'], 'once')
})

t.test('the store is bounded by count and bytes; a new topic over a bound is refused', async (t) => {
  const st = newRetainedStore(2, 100)
  t.ok(retain(st, 'a', 'a', new Uint8Array(10), 0))
  t.ok(retain(st, 'b', 'b', new Uint8Array(10), 1))
  t.notOk(retain(st, 'c', 'c', new Uint8Array(10), 0), 'third topic: refused (count)')
  t.equal(st.refused, 1)
  t.ok(retain(st, 'a', 'a', new Uint8Array(20), 0), 'replacing a kept topic works')
  t.notOk(retain(st, 'b', 'b', new Uint8Array(200), 0), 'a replacement over the byte bound is refused')
  t.equal(st.bytes, 1 + 20 + 1 + 10)
  t.ok(retain(st, 'a', 'a', new Uint8Array(0), 0), 'empty deletes')
  t.ok(retain(st, 'c', 'c', new Uint8Array(10), 0), 'room again')
  t.same(matchRetained(st, ['>']).map((r) => r.topic).sort(), ['b', 'c'])
  const payload = new Uint8Array([1, 2, 3])
  retain(st, 'b', 'b', payload, 0)
  payload[0] = 9
  t.equal(st.byTopic.get('b')!.payload[0], 1, 'the payload is copied')

  const small = await startBroker({ mqtt: { retained_max_msgs: 1 } })
  t.teardown(() => small.stop())
  const pub = await mqttClient(t, small.mqttUrl)
  await pub.publishAsync('one', '1', { qos: 1, retain: true })
  await pub.publishAsync('two', '2', { qos: 1, retain: true })
  t.same([...mqttState(small.srv).retained.byTopic.keys()], ['one'])
  t.equal(mqttState(small.srv).retained.refused, 1, 'counted')
})
