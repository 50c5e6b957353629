// Will messages: published when a connection ends without DISCONNECT (socket drop,
// keepalive timeout, protocol error, takeover), never after a clean DISCONNECT.

import t, { type Test } from 'tap'
import type { NatsConnection } from '@nats-io/transport-node'
import type { IConnackPacket } from 'mqtt-packet'
import { mqttState } from '../adapters/mqtt/index.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { RawMqtt, messages, mqttClient, sleep, natsClient } from './helpers/mqtt.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: true })
})
t.teardown(() => b?.stop())

const nats = (t: Test): Promise<NatsConnection> => natsClient(t, b.url)

const will = (topic: string, payload: string, extra: Record<string, unknown> = {}) => ({
  will: { topic, payload: Buffer.from(payload), qos: 1 as const, retain: false, ...extra },
})

t.test('abrupt close publishes the will to MQTT and NATS subscribers [MQTT-3.1.2-8]', async (t) => {
  for (const v of [4, 5] as const) {
    const watcher = await mqttClient(t, b.mqttUrl)
    await watcher.subscribeAsync(`will/${v}/+`, { qos: 1 })
    const nc = await nats(t)
    const ns = nc.subscribe(`will.${v}.dev`, { max: 1 })
    await nc.flush()
    const got = messages(watcher, 1)
    const c = await RawMqtt.connect(b.mqttPort, v, will(`will/${v}/dev`, 'gone'))
    c.close() // no DISCONNECT
    t.same((await got).map((m) => [m.topic, m.payload, m.qos]), [[`will/${v}/dev`, 'gone', 1]], `v${v}: MQTT`)
    for await (const m of ns) t.equal(m.headers?.get('Nmqtt-Pub'), '1', `v${v}: NATS, with the will QoS`)
  }
})

t.test('no will after a clean DISCONNECT [MQTT-3.1.2-10] [MQTT-3.14.4-3]', async (t) => {
  const watcher = await mqttClient(t, b.mqttUrl)
  await watcher.subscribeAsync('will/clean')
  const got = messages(watcher, 1, 600)
  const before = mqttState(b.srv).counters.wills
  const c = await RawMqtt.connect(b.mqttPort, 4, will('will/clean', 'should not appear'))
  c.send({ cmd: 'disconnect' })
  await c.waitClosed()
  t.same(await got, [])
  t.equal(mqttState(b.srv).counters.wills, before)
})

t.test('MQTT 5 DISCONNECT 0x04 (with will message) publishes it', async (t) => {
  const watcher = await mqttClient(t, b.mqttUrl)
  await watcher.subscribeAsync('will/x04')
  const got = messages(watcher, 1)
  const c = await RawMqtt.connect(b.mqttPort, 5, will('will/x04', 'asked for'))
  c.send({ cmd: 'disconnect', reasonCode: 0x04 })
  t.same((await got).map((m) => m.payload), ['asked for'])
})

t.test('keepalive timeout and protocol errors publish the will', async (t) => {
  const watcher = await mqttClient(t, b.mqttUrl)
  await watcher.subscribeAsync('will/why/+')
  const got = messages(watcher, 2, 5000)
  const quiet = await RawMqtt.connect(b.mqttPort, 4, { keepalive: 1, ...will('will/why/keepalive', 'timeout') })
  const bad = await RawMqtt.connect(b.mqttPort, 4, will('will/why/protocol', 'error'))
  bad.send(new Uint8Array([0, 0]))
  t.same((await got).map((m) => m.topic).sort(), ['will/why/keepalive', 'will/why/protocol'])
  quiet.close()
})

t.test('session takeover publishes the old connection\'s will', async (t) => {
  const watcher = await mqttClient(t, b.mqttUrl)
  await watcher.subscribeAsync('will/takeover')
  const got = messages(watcher, 1)
  const old = await RawMqtt.connect(b.mqttPort, 4, { clientId: 'tk', ...will('will/takeover', 'replaced') })
  const neu = await RawMqtt.connect(b.mqttPort, 4, { clientId: 'tk' })
  t.teardown(() => neu.close())
  t.ok(await old.waitClosed())
  t.same((await got).map((m) => m.payload), ['replaced'])
})

t.test('a will with retain is kept as a retained message [MQTT-3.1.2-17]', async (t) => {
  const c = await RawMqtt.connect(b.mqttPort, 4, will('will/status', 'offline', { retain: true }))
  c.close()
  await sleep(200)
  const late = await mqttClient(t, b.mqttUrl)
  const got = messages(late, 1)
  await late.subscribeAsync('will/status')
  t.same((await got).map((m) => [m.payload, m.retain]), [['offline', true]])
})

t.test('a will topic with wildcards is refused at CONNECT', async (t) => {
  for (const v of [4, 5] as const) {
    const c = await RawMqtt.open(b.mqttPort, v)
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, keepalive: 0, clientId: 'w', ...will('will/#', 'x') })
    if (v === 5) t.equal(((await c.next('connack')) as IConnackPacket)?.reasonCode, 0x90, '5.0: CONNACK Topic Name invalid')
    t.ok(await c.waitClosed(), `v${v}: closed`)
  }
})
