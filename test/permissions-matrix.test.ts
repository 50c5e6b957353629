// The permission matrix with real clients: allowed/denied × publish/subscribe × NATS
// (nats.js) / MQTT (MQTT.js) × exact/wildcard rules and subscriptions. Each row checks what
// is delivered AND what is not: denied messages are published before a marker, and the
// marker's arrival proves they had their chance. MQTT's refusal codes are checked with a raw
// client (SUBACK 0x80 / 0x87, MQTT 5 PUBACK/PUBREC 0x87).

import t, { type Test } from 'tap'
import type { NatsConnection } from '@nats-io/transport-node'
import { connect as mqttConnect, type MqttClient } from 'mqtt'
import type { Packet } from 'mqtt-packet'
import { validateOptions } from '../src/config.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { mqttClient, natsClient, natsUntil, RawMqtt } from './helpers/mqtt.ts'

const CONFIG = validateOptions({
  authorization: {
    users: [
      {
        user: 'dev',
        password: 'dev',
        permissions: {
          publish: { allow: ['up.>'], deny: ['up.secret', 'up.*.hidden'] },
          subscribe: { allow: ['down.>', 'down'], deny: ['down.secret', 'down.*.private'] },
        },
      },
      { user: 'admin', password: 'admin' },
    ],
  },
})

const DENIED_PUBS = ['up.secret', 'up.x.hidden', 'other.x']
const DENIED_DOWN = ['down.secret', 'down.x.private', 'other.y']

/** Topics an MQTT client receives until `marker` arrives (or 3 s pass). */
function mqttUntil(c: MqttClient, marker: string): Promise<string[]> {
  const got: string[] = []
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(got), 3000)
    c.on('message', (topic) => {
      got.push(topic)
      if (topic === marker) {
        clearTimeout(timer)
        resolve(got)
      }
    })
  })
}

const rc = (p: Packet | undefined): number | undefined => (p as { reasonCode?: number } | undefined)?.reasonCode

/** SUBACK codes per filter (MQTT.js reports a refused filter as an error carrying the SUBACK). */
function granted(c: MqttClient, topics: Record<string, { qos: 0 | 1 | 2 }>): Promise<number[]> {
  return new Promise((resolve) => {
    c.subscribe(topics, (err, g) => {
      if (err) resolve(((err as unknown as { packet: { granted: number[] } }).packet.granted))
      else resolve((g ?? []).map((x) => x.qos))
    })
  })
}

const topic = (s: string): string => s.replace(/\./g, '/')

async function broker(t: Test): Promise<TestBroker> {
  const b = await startBroker({ mqtt: true, authorization: CONFIG.authorization })
  t.teardown(() => b.stop())
  return b
}

const nats = (t: Test, b: TestBroker, user: string): Promise<NatsConnection> => natsClient(t, b.url, { user, pass: user })

t.test('NATS client: publish allowed (wildcard rule) and denied (exact, wildcard, outside allow)', async (t) => {
  const b = await broker(t)
  const admin = await nats(t, b, 'admin')
  const dev = await nats(t, b, 'dev')
  const watcher = await mqttClient(t, b.mqttUrl, { username: 'admin', password: 'admin' })
  await watcher.subscribeAsync(['up/#', 'other/#'])
  const seenNats = natsUntil(admin, '>', 'up.done')
  const seenMqtt = mqttUntil(watcher, 'up/done')
  await admin.flush()
  for (const s of ['up.a', ...DENIED_PUBS, 'up.done']) dev.publish(s, 'x')
  await dev.flush()
  t.same(await seenNats, ['up.a', 'up.done'], 'a NATS subscriber gets only the allowed publishes')
  t.same(await seenMqtt, ['up/a', 'up/done'], 'so does an MQTT subscriber')
  t.equal(dev.isClosed(), false, 'the connection stays')
})

t.test('NATS client: subscribe exact/wildcard, allowed/denied; deny holds at delivery', async (t) => {
  const b = await broker(t)
  const admin = await nats(t, b, 'admin')
  const dev = await nats(t, b, 'dev')
  const exact = natsUntil(dev, 'down.a', 'down.a')
  const exactDenied = natsUntil(dev, 'down.secret', 'never')
  const wild = natsUntil(dev, 'down.>', 'down.done')
  const wildDenied = natsUntil(dev, 'other.>', 'never')
  await dev.flush()
  for (const s of ['down.a', ...DENIED_DOWN, 'down.b', 'down.done']) admin.publish(s, 'x')
  await admin.flush()
  t.same(await exact, ['down.a'], 'exact allowed: delivered')
  t.same(await wild, ['down.a', 'down.b', 'down.done'], 'wildcard allowed: delivered, except what deny rules cover')
  t.same(await exactDenied, [], 'exact denied: nothing')
  t.same(await wildDenied, [], 'wildcard outside allow: nothing')
  t.equal(dev.isClosed(), false, 'the connection stays')
})

t.test('MQTT client: publish allowed and denied, at QoS 0 and 1', async (t) => {
  const b = await broker(t)
  const admin = await nats(t, b, 'admin')
  const dev = await mqttClient(t, b.mqttUrl, { username: 'dev', password: 'dev' })
  const seen = natsUntil(admin, '>', 'up.done')
  await admin.flush()
  for (const s of ['up.a', ...DENIED_PUBS]) {
    await dev.publishAsync(topic(s), 'x', { qos: 0 })
    await dev.publishAsync(topic(s), 'x', { qos: 1 }) // 3.1.1: acknowledged, dropped
  }
  await dev.publishAsync('up/done', 'x', { qos: 1 })
  t.same(await seen, ['up.a', 'up.a', 'up.done'], 'only the allowed publishes are routed')
  t.equal(dev.connected, true, 'the connection stays')
})

t.test('MQTT client: subscribe exact/wildcard, allowed/denied; deny holds at delivery', async (t) => {
  const b = await broker(t)
  const admin = await nats(t, b, 'admin')
  const exactDev = await mqttClient(t, b.mqttUrl, { username: 'dev', password: 'dev' })
  const wildDev = await mqttClient(t, b.mqttUrl, { username: 'dev', password: 'dev', protocolVersion: 5 })
  const g1 = await granted(exactDev, { 'down/a': { qos: 1 }, 'down/secret': { qos: 1 } })
  t.same(g1, [1, 128], '3.1.1 SUBACK: granted, failure 0x80')
  const g2 = await granted(wildDev, { 'down/#': { qos: 0 }, 'other/#': { qos: 0 }, '+/secret': { qos: 0 } })
  t.same(g2, [0, 135, 135], 'MQTT 5 SUBACK: granted, then 0x87 Not authorized for filters reaching outside the allow rules')
  const exact = mqttUntil(exactDev, 'down/a')
  const wild = mqttUntil(wildDev, 'down/done')
  for (const s of ['down.a', ...DENIED_DOWN, 'down.b', 'down', 'down.done']) admin.publish(s, 'x')
  await admin.flush()
  t.same(await exact, ['down/a'], 'exact allowed: delivered (exact denied: nothing)')
  t.same(await wild, ['down/a', 'down/b', 'down', 'down/done'], 'wildcard: allowed subjects only; nothing from other/# or +/secret')
})

t.test('MQTT: refusal codes on the wire, and retained messages a deny covers stay hidden', async (t) => {
  const b = await broker(t)
  const admin = await mqttClient(t, b.mqttUrl, { username: 'admin', password: 'admin' })
  await admin.publishAsync('down/secret', 'r', { qos: 1, retain: true })
  await admin.publishAsync('down/ok', 'r', { qos: 1, retain: true })
  const v5 = await RawMqtt.connect(b.mqttPort, 5, { username: 'dev', password: Buffer.from('dev') })
  t.teardown(() => v5.close())
  v5.send({ cmd: 'publish', topic: 'up/secret', payload: Buffer.from('x'), qos: 1, messageId: 1, dup: false, retain: false } as Packet)
  t.equal(rc(await v5.next('puback')), 0x87, 'MQTT 5 QoS 1 denied: PUBACK 0x87')
  v5.send({ cmd: 'publish', topic: 'up/secret', payload: Buffer.from('x'), qos: 2, messageId: 2, dup: false, retain: false } as Packet)
  t.equal(rc(await v5.next('pubrec')), 0x87, 'MQTT 5 QoS 2 denied: PUBREC 0x87')
  v5.send({ cmd: 'publish', topic: 'up/ok', payload: Buffer.from('x'), qos: 1, messageId: 3, dup: false, retain: false } as Packet)
  const ok = await v5.next('puback')
  t.equal(rc(ok) ?? 0, 0, 'allowed: PUBACK success')
  v5.send({ cmd: 'subscribe', messageId: 4, subscriptions: [{ topic: 'down/#', qos: 1 }, { topic: 'down/secret', qos: 0 }] } as Packet)
  const suback = (await v5.next('suback')) as { granted: number[] } | undefined
  t.same(suback?.granted, [1, 0x87], 'SUBACK per filter')
  await v5.until(() => v5.packets.filter((p) => p.cmd === 'publish').length >= 1, 1000)
  await new Promise((r) => setTimeout(r, 200))
  const retained = v5.packets.filter((p) => p.cmd === 'publish').map((p) => (p as { topic: string }).topic)
  t.same(retained, ['down/ok'], 'the retained down/secret is not sent to down/#')
  t.equal(v5.closed, false, 'connection stays')
  const v4 = await RawMqtt.connect(b.mqttPort, 4, { username: 'dev', password: Buffer.from('dev') })
  t.teardown(() => v4.close())
  v4.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'other/x', qos: 0 }] } as Packet)
  t.same(((await v4.next('suback')) as { granted: number[] } | undefined)?.granted, [0x80], '3.1.1 SUBACK 0x80')
  t.ok(b.logs.some((l) => l.includes('Publish Violation - User "dev", Subject "up.secret"')), 'MQTT violations logged with the mapped subject')
})

t.test('a will the user may not publish is refused at CONNECT', async (t) => {
  const b = await broker(t)
  const c = await RawMqtt.open(b.mqttPort, 5)
  t.teardown(() => c.close())
  c.send({
    cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'w1',
    username: 'dev', password: Buffer.from('dev'), will: { topic: 'other/will', payload: Buffer.from('x'), qos: 0, retain: false },
  } as Packet)
  t.equal(rc(await c.next('connack')), 0x87, 'CONNACK 0x87 Not authorized')
  t.equal(await c.waitClosed(), true)
})

t.test('allow_responses: an MQTT 5 responder may answer the request it got, once', async (t) => {
  const auth = validateOptions({
    authorization: {
      users: [
        { user: 'svc', password: 'svc', permissions: { subscribe: ['svc.>'], allow_responses: true } },
        { user: 'admin', password: 'admin' },
      ],
    },
  }).authorization
  const b = await startBroker({ mqtt: true, authorization: auth })
  t.teardown(() => b.stop())
  const admin = await nats(t, b, 'admin')
  const svc = await RawMqtt.connect(b.mqttPort, 5, { username: 'svc', password: Buffer.from('svc') })
  t.teardown(() => svc.close())
  svc.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'svc/echo', qos: 0 }] } as Packet)
  await svc.next('suback')
  const reply = admin.request('svc.echo', 'ping', { timeout: 3000 })
  const req = (await svc.next('publish')) as { properties?: { responseTopic?: string } } | undefined
  const rt = req?.properties?.responseTopic ?? ''
  t.match(rt, /^_INBOX\//, 'the request carries a Response Topic')
  svc.send({ cmd: 'publish', topic: rt, payload: Buffer.from('pong'), qos: 1, messageId: 2, dup: false, retain: false } as Packet)
  t.equal(rc(await svc.next('puback')) ?? 0, 0, 'the reply is allowed')
  t.equal((await reply).string(), 'pong', 'and reaches the requester')
  svc.send({ cmd: 'publish', topic: rt, payload: Buffer.from('again'), qos: 1, messageId: 3, dup: false, retain: false } as Packet)
  t.equal(rc(await svc.next('puback')), 0x87, 'a second reply is refused (max 1)')
  svc.send({ cmd: 'publish', topic: 'svc/other', payload: Buffer.from('x'), qos: 1, messageId: 4, dup: false, retain: false } as Packet)
  t.equal(rc(await svc.next('puback')), 0x87, 'anything else is refused: allow_responses without a publish list allows only replies')
})

t.test('a parked persistent session queues only what its user may read (deny at delivery)', async (t) => {
  const b = await broker(t)
  const admin = await nats(t, b, 'admin')
  const opts = { username: 'dev', password: 'dev', clientId: 'parked-dev', clean: false }
  const first = await mqttClient(t, b.mqttUrl, opts)
  t.same(await granted(first, { 'down/#': { qos: 1 } }), [1])
  await first.endAsync()
  // Away: a header-less NATS publish is QoS 1, so the parked session queues what it may read.
  for (const s of ['down.a', ...DENIED_DOWN, 'down.b', 'down.done']) admin.publish(s, 'x')
  await admin.flush()
  // The queue is sent right after CONNACK: listen before connecting.
  const back = mqttConnect(b.mqttUrl, { ...opts, reconnectPeriod: 0 })
  t.teardown(() => back.end(true))
  t.same(await mqttUntil(back, 'down/done'), ['down/a', 'down/b', 'down/done'], 'the denied subjects were never queued')
})
