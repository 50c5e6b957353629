// Retained messages from NATS: reading them with a request to $SPRIG.mqtt.retained.get and
// setting them with a publish to $SPRIG.mqtt.retain.<subject> or with the header
// `Nmqtt-Retain: 1` on an ordinary NATS publish (adapters/mqtt/services.ts).

import t, { type Test } from 'tap'
import { connect, headers, type NatsConnection } from '@nats-io/transport-node'
import { mqttState, startMqtt } from '../adapters/mqtt/index.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { messages, mqttClient, natsClient } from './helpers/mqtt.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: true })
  startMqtt(b.srv)
})
t.teardown(() => b?.stop())

const nats = (t: Test): Promise<NatsConnection> => natsClient(t, b.url)

interface Reply {
  messages?: { topic: string; subject: string; qos: number; payload: string }[]
  truncated?: boolean
  error?: string
}

async function get(nc: NatsConnection, filter: string): Promise<Reply> {
  return (await nc.request('$SPRIG.mqtt.retained.get', filter, { timeout: 2000 })).json<Reply>()
}

t.test('retained.get returns the retained messages matching an MQTT filter', async (t) => {
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('rg/a', 'A', { qos: 1, retain: true })
  await pub.publishAsync('rg/b/c', Buffer.from([0, 255]), { qos: 0, retain: true })
  await pub.publishAsync('rg', 'root', { qos: 2, retain: true })
  await pub.publishAsync('$SYS/rg', 'sys', { qos: 0, retain: true })
  const nc = await nats(t)
  const all = await get(nc, 'rg/#')
  t.same(all, {
    truncated: false,
    messages: [
      { topic: 'rg', subject: 'rg', qos: 2, payload: Buffer.from('root').toString('base64') },
      { topic: 'rg/a', subject: 'rg.a', qos: 1, payload: Buffer.from('A').toString('base64') },
      { topic: 'rg/b/c', subject: 'rg.b.c', qos: 0, payload: Buffer.from([0, 255]).toString('base64') },
    ],
  }, 'sorted by topic, payloads base64, a/# also matches a')
  t.same((await get(nc, 'rg/+')).messages?.map((m) => m.topic), ['rg/a'])
  t.notOk((await get(nc, '')).messages?.some((m) => m.topic.startsWith('$')), 'empty = #, which does not match $ topics [MQTT-4.7.2-1]')
  t.same((await get(nc, '$SYS/#')).messages?.map((m) => m.topic), ['$SYS/rg'])
  t.match(await get(nc, 'a/#/b'), { error: /invalid topic filter/ }, 'an invalid filter is an error reply [MQTT-4.7.1-1]')
})

t.test('retained.get cuts a reply that would pass max_payload', async (t) => {
  const own = await startBroker({ mqtt: true, max_payload: 4096 })
  t.teardown(() => own.stop())
  startMqtt(own.srv)
  const pub = await mqttClient(t, own.mqttUrl)
  for (let i = 0; i < 20; i++) await pub.publishAsync(`big/${i}`, 'x'.repeat(500), { qos: 0, retain: true })
  const nc = await connect({ servers: own.url, reconnect: false })
  t.teardown(() => nc.close())
  const m = await nc.request('$SPRIG.mqtt.retained.get', 'big/#', { timeout: 2000 })
  t.ok(m.data.length <= 4096)
  const r = m.json<Reply>()
  t.equal(r.truncated, true)
  t.ok(r.messages!.length > 0 && r.messages!.length < 20)
})

t.test('a NATS publish to $SPRIG.mqtt.retain.<subject> sets, replaces and deletes a retained message', async (t) => {
  const nc = await nats(t)
  const live = await mqttClient(t, b.mqttUrl)
  await live.subscribeAsync('dev/7/state', { qos: 1 })
  const liveGot = messages(live, 1)
  const h = headers()
  h.set('Nmqtt-Pub', '0')
  const ok = await nc.request('$SPRIG.mqtt.retain.dev.7.state', 'on', { timeout: 2000, headers: h })
  t.same(ok.json(), { ok: true })
  t.same((await liveGot).map((m) => [m.topic, m.payload, m.retain]), [['dev/7/state', 'on', false]], 'current subscribers get it as a normal message [MQTT-3.3.1-9]')
  const late = await mqttClient(t, b.mqttUrl)
  const got = messages(late, 1)
  await late.subscribeAsync('dev/+/state', { qos: 1 })
  t.same((await got).map((m) => [m.topic, m.payload, m.retain, m.qos]), [['dev/7/state', 'on', true, 0]], 'a new subscriber gets it retained, at its QoS (Nmqtt-Pub) [MQTT-3.3.1-6]')

  nc.publish('$SPRIG.mqtt.retain.dev.7.state', 'off') // no header: QoS 1
  await nc.flush()
  t.equal(mqttState(b.srv).retained.byTopic.get('dev/7/state')?.qos, 1)
  t.equal(Buffer.from(mqttState(b.srv).retained.byTopic.get('dev/7/state')!.payload).toString(), 'off', 'replaced [MQTT-3.3.1-5]')
  nc.publish('$SPRIG.mqtt.retain.dev.7.state', '')
  await nc.flush()
  t.notOk(mqttState(b.srv).retained.byTopic.has('dev/7/state'), 'an empty payload deletes [MQTT-3.3.1-10]')

  const bad = await nc.request('$SPRIG.mqtt.retain.a/b.c', 'x', { timeout: 2000 })
  t.match(bad.json(), { error: /has no MQTT topic form/ }, 'a subject without a topic form is refused')
  t.notOk([...mqttState(b.srv).retained.byTopic.values()].some((r) => r.subject === 'a/b.c'))
})

t.test('$SPRIG.mqtt.retain keeps the headers as properties (Nmqtt-Expiry expires it) and marks the live copy retained', async (t) => {
  const nc = await nats(t)
  const st = mqttState(b.srv)
  const h1 = headers()
  h1.set('Nmqtt-Expiry', '1')
  h1.set('X-Unit', 'C')
  nc.publish('$SPRIG.mqtt.retain.rx.a', '21.5', { headers: h1 })
  nc.publish('$SPRIG.mqtt.retain.rx.b', 'plain') // no headers: no properties, whatever came before
  await nc.flush()
  t.same(st.retained.byTopic.get('rx/a')?.props, { messageExpiryInterval: 1, userProperties: { 'X-Unit': 'C' } })
  t.equal(st.retained.byTopic.get('rx/b')?.props, undefined)

  const rap = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  await rap.subscribeAsync('rx/live', { qos: 0, rap: true })
  const got = messages(rap, 1)
  nc.publish('$SPRIG.mqtt.retain.rx.live', 'v')
  t.same((await got).map((m) => [m.topic, m.retain]), [['rx/live', true]], 'Retain As Published sees the retain flag [MQTT-3.3.1-13]')

  await new Promise((r) => setTimeout(r, 1100))
  t.same((await get(nc, 'rx/#')).messages?.map((m) => m.topic), ['rx/b', 'rx/live'], 'the expired one is gone [MQTT-3.3.2-5]')
})

t.test('a NATS publish with Nmqtt-Retain: 1 sets, replaces and deletes the retained message, and is delivered', async (t) => {
  const nc = await nats(t)
  const st = mqttState(b.srv)
  const live = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  await live.subscribeAsync('hr/dev/1', { qos: 1 })
  const natsSeen = nc.subscribe('hr.dev.1', { max: 1 })
  await nc.flush()
  const liveGot = messages(live, 1)
  const h = headers()
  h.set('Nmqtt-Retain', '1')
  h.set('Nmqtt-Pub', '0')
  h.set('X-Unit', 'C')
  nc.publish('hr.dev.1', '21.5', { headers: h })
  t.same((await liveGot).map((m) => [m.topic, m.payload, m.retain]), [['hr/dev/1', '21.5', false]], 'delivered to current subscribers as a normal message [MQTT-3.3.1-9]')
  for await (const m of natsSeen) t.equal(m.headers?.get('Nmqtt-Retain'), '1', 'NATS subscribers get it with its headers')
  t.same(st.retained.byTopic.get('hr/dev/1')?.props, { userProperties: { 'X-Unit': 'C' } }, 'kept, other headers as properties')

  const late = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  const lateGot = new Promise<{ topic: string; payload: string; qos: number; retain: boolean; unit: unknown }[]>((resolve) => {
    late.once('message', (topic, payload, pk) => resolve([{ topic, payload: payload.toString(), qos: pk.qos, retain: pk.retain, unit: pk.properties?.userProperties?.['X-Unit'] }]))
  })
  await late.subscribeAsync('hr/#', { qos: 1 })
  t.same(await lateGot, [{ topic: 'hr/dev/1', payload: '21.5', qos: 0, retain: true, unit: 'C' }], 'a new subscriber gets it retained, at its QoS, with its properties [MQTT-3.3.1-6]')

  const h2 = headers()
  h2.set('Nmqtt-Retain', '1')
  nc.publish('hr.dev.1', '22', { headers: h2 })
  await nc.flush()
  t.same((await get(nc, 'hr/#')).messages?.map((m) => [m.topic, Buffer.from(m.payload, 'base64').toString(), m.qos]), [['hr/dev/1', '22', 1]], 'replaced; no Nmqtt-Pub is QoS 1 [MQTT-3.3.1-5]')

  nc.publish('hr.dev.1', '', { headers: h2 })
  await nc.flush()
  t.same((await get(nc, 'hr/#')).messages, [], 'an empty payload deletes it [MQTT-3.3.1-10]')
})

t.test('Nmqtt-Retain only stores when it is 1; a subject with no topic form is counted, not stored', async (t) => {
  const nc = await nats(t)
  const st = mqttState(b.srv)
  const h0 = headers()
  h0.set('Nmqtt-Retain', '0')
  nc.publish('hn.a', 'x', { headers: h0 })
  const plain = headers()
  plain.set('X-Other', 'y')
  nc.publish('hn.b', 'x', { headers: plain })
  nc.publish('hn.c', 'x') // no headers at all
  const before = st.counters.unmappable_subjects
  const h1 = headers()
  h1.set('Nmqtt-Retain', '1')
  nc.publish('hn.a/b', 'x', { headers: h1 }) // a lone `/` in a token has no MQTT form
  await nc.flush()
  t.same((await get(nc, 'hn/#')).messages, [], 'nothing kept')
  t.equal(st.counters.unmappable_subjects, before + 1, 'the unmappable one is counted')
})

t.test('an MQTT publish carrying Nmqtt-Retain in a user property is not stored by the header hook', async (t) => {
  const pub = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  await pub.publishAsync('hm/x', 'v', { qos: 1, properties: { userProperties: { 'Nmqtt-Retain': '1' } } })
  const nc = await nats(t)
  t.same((await get(nc, 'hm/#')).messages, [], 'only the MQTT retain flag stores an MQTT publish [MQTT-3.3.1-5]')
})
