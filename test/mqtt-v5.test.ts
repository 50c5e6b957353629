// MQTT 5 features: Topic Aliases, Message Expiry, Subscription Identifiers, Retain As
// Published, Will Delay Interval, Server Keep Alive. Spec numbers are 5.0's.

import t, { type Test } from 'tap'
import { headers, type NatsConnection } from '@nats-io/transport-node'
import type { IConnackPacket, IDisconnectPacket, IPublishPacket, ISubackPacket, Packet } from 'mqtt-packet'
import { mqttState } from '../adapters/mqtt/index.ts'
import { pendingWillIds } from '../adapters/mqtt/services.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { natsClient, RawMqtt, sleep } from './helpers/mqtt.ts'

let b: TestBroker
let port: number

t.before(async () => {
  b = await startBroker({ mqtt: true })
  port = b.mqttPort
})
t.teardown(() => b?.stop())

const nats = (t: Test, url = b.url): Promise<NatsConnection> => natsClient(t, url)

async function raw(t: Test, extra: Record<string, unknown> = {}, p = port): Promise<RawMqtt> {
  const c = await RawMqtt.connect(p, 5, extra)
  t.teardown(() => c.close())
  return c
}

function pub(topic: string, payload: string, more: Partial<IPublishPacket> = {}): Packet {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, dup: false, retain: false, ...more } as Packet
}

async function subscribe(c: RawMqtt, subscriptions: { topic: string; qos: 0 | 1 | 2; rap?: boolean }[], properties?: Record<string, unknown>): Promise<ISubackPacket> {
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions, ...(properties ? { properties } : {}) } as Packet)
  return (await c.next('suback')) as ISubackPacket
}

const td = new TextDecoder()

// --- Topic Aliases ----------------------------------------------------------------------------

t.test('CONNACK offers Topic Alias Maximum (mqtt.topic_alias_maximum)', async (t) => {
  const c = await RawMqtt.open(port, 5)
  t.teardown(() => c.close())
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'ta' } as Packet)
  const ack = (await c.next('connack')) as IConnackPacket
  t.equal(ack.properties?.topicAliasMaximum, 64)
  t.equal(ack.properties?.subscriptionIdentifiersAvailable, true)
})

t.test('a client alias sets a topic, then stands for it [MQTT-3.3.2-12]', async (t) => {
  const nc = await nats(t)
  const got: string[] = []
  nc.subscribe('ta.one', { callback: (_e, m) => void got.push(m.string()) })
  await nc.flush()
  const c = await raw(t)
  c.send(pub('ta/one', 'set', { properties: { topicAlias: 3 } }))
  c.send(pub('', 'use', { properties: { topicAlias: 3 } }))
  c.send(pub('', 'use-qos1', { qos: 1, messageId: 5, properties: { topicAlias: 3 } }))
  t.ok(await c.next('puback'))
  await nc.flush()
  for (let i = 0; i < 50 && got.length < 3; i++) await sleep(20)
  t.same(got, ['set', 'use', 'use-qos1'])

  // A new topic for the same alias replaces it.
  const got2: string[] = []
  nc.subscribe('ta.two', { callback: (_e, m) => void got2.push(m.string()) })
  await nc.flush()
  c.send(pub('ta/two', 'x', { properties: { topicAlias: 3 } }))
  c.send(pub('', 'y', { properties: { topicAlias: 3 } }))
  for (let i = 0; i < 50 && got2.length < 2; i++) await sleep(20)
  t.same(got2, ['x', 'y'])
})

t.test('aliases do not carry over to another connection [MQTT-3.3.2-7]; unknown ones are a protocol error', async (t) => {
  const c = await raw(t)
  c.send(pub('', 'x', { properties: { topicAlias: 3 } }))
  t.equal(((await c.next('disconnect')) as IDisconnectPacket)?.reasonCode, 0x82)
  t.ok(await c.waitClosed())
})

t.test('alias 0 [MQTT-3.3.2-8] and above the maximum [MQTT-3.3.2-9]: DISCONNECT 0x94', async (t) => {
  for (const alias of [0, 65]) {
    const c = await raw(t)
    // mqtt-packet refuses to write alias 0, so the bytes are built by hand for that one.
    if (alias === 0) {
      c.send(Buffer.from([0x30, 8, 0, 1, 0x61, 3, 0x23, 0, 0, 0x78])) // topic "a", Topic Alias 0, payload "x"
    } else c.send(pub('a', 'x', { properties: { topicAlias: alias } }))
    t.equal(((await c.next('disconnect')) as IDisconnectPacket)?.reasonCode, 0x94, `alias ${alias}`)
  }
})

// --- Message Expiry ---------------------------------------------------------------------------

t.test('Message Expiry crosses to NATS as Nmqtt-Expiry, and back', async (t) => {
  const nc = await nats(t)
  const seen = new Promise<string | undefined>((r) => nc.subscribe('mx.a', { max: 1, callback: (_e, m) => r(m.headers?.get('Nmqtt-Expiry')) }))
  await nc.flush()
  const c = await raw(t)
  c.send(pub('mx/a', 'x', { properties: { messageExpiryInterval: 30 } }))
  t.equal(await seen, '30')

  const s = await raw(t)
  await subscribe(s, [{ topic: 'mx/b', qos: 1 }])
  const h = headers()
  h.set('Nmqtt-Expiry', '45')
  nc.publish('mx.b', 'y', { headers: h })
  const p = (await s.next('publish')) as IPublishPacket
  t.equal(p.properties?.messageExpiryInterval, 45, 'a live delivery carries the interval as received')
})

t.test('an expired message in a parked session is not delivered [MQTT-3.3.2-5]; others get the remaining interval [MQTT-3.3.2-6]', async (t) => {
  const opts = { clientId: 'mx-park', clean: false, properties: { sessionExpiryInterval: 60 } }
  const s = await RawMqtt.connect(port, 5, opts)
  await subscribe(s, [{ topic: 'mx/park/+', qos: 1 }])
  s.close()
  await sleep(100)
  const c = await raw(t)
  c.send(pub('mx/park/short', 'gone', { qos: 1, messageId: 1, properties: { messageExpiryInterval: 1 } }))
  c.send(pub('mx/park/long', 'kept', { qos: 1, messageId: 2, properties: { messageExpiryInterval: 30 } }))
  c.send(pub('mx/park/none', 'plain', { qos: 1, messageId: 3 }))
  await c.next('puback')
  await sleep(2100)
  const back = await raw(t, opts)
  await back.until(() => back.packets.filter((p) => p.cmd === 'publish').length >= 2)
  await sleep(200)
  const pubs = back.packets.filter((p) => p.cmd === 'publish') as IPublishPacket[]
  t.same(pubs.map((p) => p.topic), ['mx/park/long', 'mx/park/none'])
  const left = pubs[0]!.properties?.messageExpiryInterval ?? 0
  t.ok(left >= 27 && left <= 28, `remaining interval ${left} (30 minus the ~2 s it waited)`)
  t.equal(pubs[1]!.properties?.messageExpiryInterval, undefined, 'no expiry: none sent')
  for (const p of pubs) back.send({ cmd: 'puback', messageId: p.messageId! } as Packet)
})

t.test('an expired retained message is not delivered and is deleted; a live one has its remaining interval', async (t) => {
  const c = await raw(t)
  c.send(pub('mx/ret/short', 'gone', { retain: true, properties: { messageExpiryInterval: 1 } }))
  c.send(pub('mx/ret/long', 'kept', { retain: true, properties: { messageExpiryInterval: 30, contentType: 'text/plain' } }))
  await sleep(2100)
  const s = await raw(t)
  await subscribe(s, [{ topic: 'mx/ret/+', qos: 0 }])
  await s.until(() => s.packets.some((p) => p.cmd === 'publish'))
  await sleep(200)
  const pubs = s.packets.filter((p) => p.cmd === 'publish') as IPublishPacket[]
  t.same(pubs.map((p) => p.topic), ['mx/ret/long'])
  const left = pubs[0]!.properties?.messageExpiryInterval ?? 0
  t.ok(left >= 27 && left <= 28, `remaining ${left}`)
  t.equal(pubs[0]!.properties?.contentType, 'text/plain', 'retained messages keep their properties')
  t.notOk(mqttState(b.srv).retained.byTopic.has('mx/ret/short'), 'the expired one is gone from the store')
})

t.test('a message waiting for the in-flight window expires there too [MQTT-3.3.2-5]', async (t) => {
  const s = await raw(t, { properties: { receiveMaximum: 1 } })
  await subscribe(s, [{ topic: 'mx/win', qos: 1 }])
  const c = await raw(t)
  c.send(pub('mx/win', 'first', { qos: 1, messageId: 1 }))
  c.send(pub('mx/win', 'second', { qos: 1, messageId: 2, properties: { messageExpiryInterval: 1 } }))
  c.send(pub('mx/win', 'third', { qos: 1, messageId: 3 }))
  const first = (await s.next('publish')) as IPublishPacket
  t.equal(first.payload.toString(), 'first')
  await sleep(2100)
  s.send({ cmd: 'puback', messageId: first.messageId! } as Packet)
  const next = (await s.next('publish')) as IPublishPacket
  t.equal(next.payload.toString(), 'third', 'the expired second is skipped')
})

// --- Subscription Identifiers -----------------------------------------------------------------

t.test('Subscription Identifiers come back with the messages they match [MQTT-3.3.4-3]', async (t) => {
  const s = await raw(t)
  await subscribe(s, [{ topic: 'si/+', qos: 0 }], { subscriptionIdentifier: 7 })
  await subscribe(s, [{ topic: 'si/#', qos: 0 }], { subscriptionIdentifier: 300 })
  await subscribe(s, [{ topic: 'si/x', qos: 0 }])
  const nc = await nats(t)
  nc.publish('si.x', 'm')
  await s.until(() => s.packets.filter((p) => p.cmd === 'publish').length >= 3)
  const ids = (s.packets.filter((p) => p.cmd === 'publish') as IPublishPacket[]).map((p) => p.properties?.subscriptionIdentifier ?? null)
  t.same(ids.sort(), [300, 7, null].sort(), 'one copy per subscription, each with its own identifier [MQTT-3.3.4-5]')

  // Retained messages sent on subscribe carry it too.
  const c = await raw(t)
  c.send(pub('si/ret', 'r', { retain: true }))
  await sleep(50)
  const s2 = await raw(t)
  await subscribe(s2, [{ topic: 'si/ret', qos: 0 }], { subscriptionIdentifier: 42 })
  const r = (await s2.next('publish')) as IPublishPacket
  t.equal(r.properties?.subscriptionIdentifier, 42)
})

t.test('Subscription Identifier 0 is a protocol error', async (t) => {
  const s = await raw(t)
  // mqtt-packet will not write 0: SUBSCRIBE id 1, properties [0x0b, 0x00], filter "a" QoS 0.
  s.send(Buffer.from([0x82, 9, 0, 1, 2, 0x0b, 0, 0, 1, 0x61, 0]))
  t.equal(((await s.next('disconnect')) as IDisconnectPacket | undefined)?.reasonCode ?? 0x82, 0x82)
  t.ok(await s.waitClosed())
})

// --- Retain As Published ----------------------------------------------------------------------

t.test('Retain As Published keeps the retain flag [MQTT-3.3.1-13]; without it the flag is 0 [MQTT-3.3.1-12]', async (t) => {
  const rap = await raw(t)
  await subscribe(rap, [{ topic: 'rap/a', qos: 1, rap: true }])
  const plain = await raw(t)
  await subscribe(plain, [{ topic: 'rap/a', qos: 1 }])
  const c = await raw(t)
  c.send(pub('rap/a', 'r', { retain: true }))
  c.send(pub('rap/a', 'n'))
  await rap.until(() => rap.packets.filter((p) => p.cmd === 'publish').length >= 2)
  await plain.until(() => plain.packets.filter((p) => p.cmd === 'publish').length >= 2)
  const flags = (x: RawMqtt): [string, boolean][] => (x.packets.filter((p) => p.cmd === 'publish') as IPublishPacket[]).map((p) => [p.payload.toString(), p.retain])
  t.same(flags(rap), [['r', true], ['n', false]])
  t.same(flags(plain), [['r', false], ['n', false]])
  c.send(pub('rap/a', '', { retain: true }))
})

// --- Will Delay Interval ----------------------------------------------------------------------

t.test('a will with a Will Delay Interval waits, then is published', async (t) => {
  const nc = await nats(t)
  const got: number[] = []
  nc.subscribe('wd.a', { callback: () => void got.push(Date.now()) })
  await nc.flush()
  const c = await RawMqtt.connect(port, 5, {
    clientId: 'wd-a',
    clean: false,
    properties: { sessionExpiryInterval: 30 },
    will: { topic: 'wd/a', payload: Buffer.from('bye'), qos: 0, retain: false, properties: { willDelayInterval: 1 } },
  })
  const closed = Date.now()
  c.close()
  await sleep(300)
  t.same(got, [], 'not yet')
  t.same(pendingWillIds(mqttState(b.srv)), ['wd-a'])
  await sleep(2000)
  t.equal(got.length, 1, 'published after the delay')
  t.ok(got[0]! - closed >= 900, `after ${got[0]! - closed} ms`)
})

t.test('a reconnect within the Will Delay Interval cancels the will [MQTT-3.1.3-9]', async (t) => {
  const nc = await nats(t)
  const got: string[] = []
  nc.subscribe('wd.b', { callback: (_e, m) => void got.push(m.string()) })
  await nc.flush()
  const opts = {
    clientId: 'wd-b',
    clean: false,
    properties: { sessionExpiryInterval: 30 },
    will: { topic: 'wd/b', payload: Buffer.from('bye'), qos: 0, retain: false, properties: { willDelayInterval: 1 } },
  }
  const c = await RawMqtt.connect(port, 5, opts)
  c.close()
  await sleep(200)
  const again = await raw(t, { clientId: 'wd-b', clean: false, properties: { sessionExpiryInterval: 30 } })
  t.ok(again)
  await sleep(1800)
  t.same(got, [])
})

t.test('the will goes when the session ends, if that is before the delay', async (t) => {
  const nc = await nats(t)
  const got: string[] = []
  nc.subscribe('wd.c', { callback: (_e, m) => void got.push(m.string()) })
  await nc.flush()
  const c = await RawMqtt.connect(port, 5, {
    clientId: 'wd-c',
    will: { topic: 'wd/c', payload: Buffer.from('bye'), qos: 0, retain: false, properties: { willDelayInterval: 60 } },
  })
  c.close() // Session Expiry 0: the session ends now
  for (let i = 0; i < 50 && got.length === 0; i++) await sleep(20)
  t.same(got, ['bye'])
})

// --- Server Keep Alive ------------------------------------------------------------------------

t.test('Server Keep Alive caps an MQTT 5 keepalive above mqtt.max_keepalive [MQTT-3.2.2-21]', async (t) => {
  const own = await startBroker({ mqtt: { max_keepalive: 1000 } })
  t.teardown(() => own.stop())
  const open = async (keepalive: number, v: 4 | 5): Promise<[RawMqtt, IConnackPacket]> => {
    const c = await RawMqtt.open(own.mqttPort, v)
    t.teardown(() => c.close())
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, keepalive, clientId: `ka-${keepalive}-${v}` } as Packet)
    return [c, (await c.next('connack')) as IConnackPacket]
  }
  const [big, ack] = await open(60, 5)
  t.equal(ack.properties?.serverKeepAlive, 1)
  const [zero, ack0] = await open(0, 5)
  t.equal(ack0.properties?.serverKeepAlive, 1, 'no keepalive asked: told the maximum')
  const [, ackOk] = await open(1, 5)
  t.equal(ackOk.properties?.serverKeepAlive, undefined, 'within the maximum: its own value [MQTT-3.2.2-22]')
  // The server holds the client to it: silence for 1.5 s closes the connection.
  t.ok(await big.waitClosed(3500), 'closed after 1.5 x the Server Keep Alive')
  t.ok(await zero.waitClosed(3500))
  const [v4] = await open(60, 4)
  await sleep(1800)
  t.notOk(v4.closed, 'a 3.1.1 client cannot be told, and keeps its own keepalive')
  void td
})

t.test('a Clean Start reconnect ends the old session: a will waiting for it goes at once', async (t) => {
  const nc = await nats(t)
  const got: string[] = []
  nc.subscribe('wd.d', { callback: (_e, m) => void got.push(m.string()) })
  await nc.flush()
  const c = await RawMqtt.connect(port, 5, {
    clientId: 'wd-d',
    clean: false,
    properties: { sessionExpiryInterval: 30 },
    will: { topic: 'wd/d', payload: Buffer.from('bye'), qos: 0, retain: false, properties: { willDelayInterval: 60 } },
  })
  c.close()
  await sleep(200)
  t.same(got, [])
  await raw(t, { clientId: 'wd-d', clean: true })
  for (let i = 0; i < 50 && got.length === 0; i++) await sleep(20)
  t.same(got, ['bye'])
})
