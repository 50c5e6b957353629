// MQTT SUBSCRIBE/PUBLISH on the one subject space: MQTT clients with each other, with NATS
// clients in both directions (rows of the topic table), QoS 0/1/2 flows, the in-flight
// window, slow consumers, and the real mosquitto command-line clients.

import { spawn } from 'node:child_process'
import t, { type Test } from 'tap'
import { connect, headers, type NatsConnection } from '@nats-io/transport-node'
import type { IDisconnectPacket, IPublishPacket, ISubackPacket, IUnsubackPacket, Packet } from 'mqtt-packet'
import { mqttState } from '../adapters/mqtt/index.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { RawMqtt, messages, mqttClient, sleep, natsClient } from './helpers/mqtt.ts'
import { havePeer } from './helpers/peers.ts'

let b: TestBroker
let port: number

t.before(async () => {
  b = await startBroker({ mqtt: true })
  port = b.mqttPort
})
t.teardown(() => b?.stop())

const nats = (t: Test): Promise<NatsConnection> => natsClient(t, b.url)

const td = new TextDecoder()

// [MQTT topic, NATS subject]: the main rows of the mapping table (adapters/mqtt/topic.ts).
const ROWS: [string, string][] = [
  ['sensors/t1/temp', 'sensors.t1.temp'],
  ['/foo/bar', '/.foo.bar'],
  ['foo/bar/', 'foo.bar./'],
  ['foo//bar', 'foo./.bar'],
  ['foo.bar/baz', 'foo//bar.baz'],
  ['192.168.1.7/status', '192//168//1//7.status'],
  ['capteurs/température', 'capteurs.température'],
  ['$SYS/x', '$SYS.x'],
]

t.test('SUBACK grants the requested QoS; invalid filters fail [MQTT-3.8.4-1] [MQTT-3.9.3-1]', async (t) => {
  for (const v of [4, 5] as const) {
    const c = await RawMqtt.connect(port, v)
    t.teardown(() => c.close())
    c.send({
      cmd: 'subscribe',
      messageId: 7,
      subscriptions: [
        { topic: 'a/b', qos: 0 },
        { topic: 'a/+', qos: 1 },
        { topic: 'a/#', qos: 2 },
        { topic: 'a/#/b', qos: 1 }, // `#` not last [MQTT-4.7.1-1]
        { topic: 'a/b+', qos: 1 }, // `+` not a whole level [MQTT-4.7.1-2]
        { topic: '$share/g/a', qos: 1 },
        { topic: '$share//a', qos: 1 }, // empty share name [MQTT-4.8.2-1]
      ],
    })
    const s = (await c.next('suback')) as ISubackPacket
    t.equal(s.messageId, 7, 'same packet id [MQTT-3.8.4-2]')
    const fail = v === 5 ? 0x8f : 0x80
    t.same(s.granted, [0, 1, 2, fail, fail, 1, fail], `v${v}: one code per filter, in order [MQTT-3.9.3-1]`)
  }
})

t.test('x/# becomes two router subscriptions and matches x itself (§4.7.1.2)', async (t) => {
  // A broker of its own, so no other test's subscriptions come and go meanwhile.
  const own = await startBroker({ mqtt: true })
  t.teardown(() => own.stop())
  const c = await mqttClient(t, own.mqttUrl)
  const base = own.srv.router.subs.count // the adapter's own $SPRIG.mqtt.* services
  await c.subscribeAsync('home/#', { qos: 0 })
  t.equal(own.srv.router.subs.count, base + 2)
  const got = messages(c, 3)
  await c.publishAsync('home', '1')
  await c.publishAsync('home/kitchen', '2')
  await c.publishAsync('home/kitchen/temp', '3')
  await c.publishAsync('homer', 'no')
  t.same((await got).map((m) => m.topic), ['home', 'home/kitchen', 'home/kitchen/temp'])
  await c.unsubscribeAsync('home/#')
  t.equal(own.srv.router.subs.count, base, 'UNSUBSCRIBE removes both')
})

t.test('UNSUBSCRIBE stops delivery; UNSUBACK [MQTT-3.10.4-4] (5.0 reason codes, §3.11.3)', async (t) => {
  const c = await RawMqtt.connect(port, 5)
  t.teardown(() => c.close())
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'u/1', qos: 0 }] })
  await c.next('suback')
  c.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: ['u/1', 'never/subscribed'] })
  const u = (await c.next('unsuback')) as IUnsubackPacket
  t.equal(u.messageId, 2)
  t.same(u.granted, [0x00, 0x11], 'success, no subscription existed')
  c.send({ cmd: 'publish', topic: 'u/1', payload: Buffer.from('x'), qos: 0, dup: false, retain: false })
  c.send({ cmd: 'pingreq' })
  await c.next('pingresp')
  t.notOk(c.packets.some((p) => p.cmd === 'publish'), 'nothing after UNSUBACK')
  const c4 = await RawMqtt.connect(port, 4)
  t.teardown(() => c4.close())
  c4.send({ cmd: 'unsubscribe', messageId: 9, unsubscriptions: ['nope'] })
  t.equal((await c4.next('unsuback'))?.messageId, 9, '3.1.1: UNSUBACK even when nothing matched [MQTT-3.10.4-5]')
})

t.test('the same filter again replaces the subscription [MQTT-3.8.4-3]', async (t) => {
  const c = await mqttClient(t, b.mqttUrl)
  await c.subscribeAsync('r/x', { qos: 1 })
  await c.subscribeAsync('r/x', { qos: 0 })
  const got = messages(c, 2, 500)
  await c.publishAsync('r/x', 'once', { qos: 1 })
  t.same((await got).map((m) => [m.payload, m.qos]), [['once', 0]], 'one copy, at the new QoS')
})

t.test('PUBLISH QoS 0/1/2 between MQTT clients; delivered QoS = min(sub, pub) ([MQTT-3.8.4-8] in 5.0)', async (t) => {
  for (const v of [4, 5] as const) {
    const sub = await mqttClient(t, b.mqttUrl, { protocolVersion: v })
    const pub = await mqttClient(t, b.mqttUrl, { protocolVersion: v })
    await sub.subscribeAsync({ 'q/0': { qos: 0 }, 'q/1': { qos: 1 }, 'q/2': { qos: 2 } })
    const got = messages(sub, 9)
    for (const topic of ['q/0', 'q/1', 'q/2']) for (const qos of [0, 1, 2] as const) await pub.publishAsync(topic, `${qos}`, { qos })
    const seen = (await got).map((m) => `${m.topic}:${m.payload}@${m.qos}`).sort()
    t.same(seen, ['q/0:0@0', 'q/0:1@0', 'q/0:2@0', 'q/1:0@0', 'q/1:1@1', 'q/1:2@1', 'q/2:0@0', 'q/2:1@1', 'q/2:2@2'], `v${v}`)
  }
})

t.test('QoS 1: PUBACK with the packet id [MQTT-4.3.2-2]; QoS 2: PUBREC, PUBREL, PUBCOMP, once [MQTT-4.3.3-2]', async (t) => {
  const sub = await mqttClient(t, b.mqttUrl)
  await sub.subscribeAsync('flow/#', { qos: 2 })
  const got = messages(sub, 3, 1000)
  const c = await RawMqtt.connect(port, 4)
  t.teardown(() => c.close())
  c.send({ cmd: 'publish', topic: 'flow/1', payload: Buffer.from('one'), qos: 1, messageId: 11, dup: false, retain: false })
  t.equal((await c.next('puback'))?.messageId, 11)
  c.send({ cmd: 'publish', topic: 'flow/2', payload: Buffer.from('two'), qos: 2, messageId: 12, dup: false, retain: false })
  t.equal((await c.next('pubrec'))?.messageId, 12)
  // Resent before PUBREL (DUP): acknowledged again, not delivered again.
  c.send({ cmd: 'publish', topic: 'flow/2', payload: Buffer.from('two'), qos: 2, messageId: 12, dup: true, retain: false })
  t.equal((await c.next('pubrec'))?.messageId, 12)
  c.send({ cmd: 'pubrel', messageId: 12 })
  t.equal((await c.next('pubcomp'))?.messageId, 12)
  // After PUBCOMP the id is free for a new message (§4.3.3).
  c.send({ cmd: 'publish', topic: 'flow/3', payload: Buffer.from('three'), qos: 2, messageId: 12, dup: false, retain: false })
  await c.next('pubrec')
  c.send({ cmd: 'pubrel', messageId: 12 })
  await c.next('pubcomp')
  t.same((await got).map((m) => m.payload), ['one', 'two', 'three'], 'each delivered once')
})

t.test('QoS 2 outbound: PUBLISH, PUBREC -> PUBREL, PUBCOMP [MQTT-4.3.3-1]', async (t) => {
  const c = await RawMqtt.connect(port, 4)
  t.teardown(() => c.close())
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'out2', qos: 2 }] })
  await c.next('suback')
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('out2', 'x', { qos: 2 })
  const p = (await c.next('publish')) as IPublishPacket
  t.equal(p.qos, 2)
  t.ok(p.messageId! > 0, 'a packet id ([MQTT-2.2.1-4] in 5.0)')
  c.send({ cmd: 'pubrec', messageId: p.messageId })
  t.equal((await c.next('pubrel'))?.messageId, p.messageId)
  c.send({ cmd: 'pubcomp', messageId: p.messageId })
  c.send({ cmd: 'pingreq' })
  await c.next('pingresp')
  t.notOk(c.closed)
})

t.test('PUBLISH to a wildcard topic: 3.1.1 closes, 5.0 DISCONNECT 0x90 [MQTT-3.3.2-2]', async (t) => {
  for (const topic of ['a/+', 'a/#', '#']) {
    const c4 = await RawMqtt.connect(port, 4)
    c4.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 0, dup: false, retain: false })
    t.ok(await c4.waitClosed(), `3.1.1 ${topic}`)
    const c5 = await RawMqtt.connect(port, 5)
    c5.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 0, dup: false, retain: false })
    t.equal(((await c5.next('disconnect')) as IDisconnectPacket)?.reasonCode, 0x90, `5.0 ${topic}: Topic Name invalid`)
    t.ok(await c5.waitClosed())
  }
  const alias = await RawMqtt.connect(port, 5)
  alias.send({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, dup: false, retain: false, properties: { topicAlias: 65 } })
  t.equal(((await alias.next('disconnect')) as IDisconnectPacket)?.reasonCode, 0x94, 'topic alias over our maximum 64 [MQTT-3.3.2-9]')
})

t.test('$ topics are not matched by filters starting with a wildcard [MQTT-4.7.2-1]', async (t) => {
  const wild = await mqttClient(t, b.mqttUrl)
  const sys = await mqttClient(t, b.mqttUrl)
  await wild.subscribeAsync(['#', '+/x'])
  await sys.subscribeAsync('$SYS/#')
  const w = messages(wild, 2, 800)
  const s = messages(sys, 1)
  await sys.publishAsync('$SYS/x', 'sys')
  await sys.publishAsync('plain/x', 'plain')
  t.same((await s).map((m) => m.topic), ['$SYS/x'])
  t.same((await w).map((m) => m.topic), ['plain/x', 'plain/x'], 'only the plain topic, once per filter')
})

t.test('MQTT publish -> NATS subscriber on the mapped subject, with Nmqtt-Pub', async (t) => {
  const nc = await nats(t)
  const c = await mqttClient(t, b.mqttUrl)
  for (const [topic, subject] of ROWS) {
    const sub = nc.subscribe(subject, { max: 1 })
    await nc.flush()
    const payload = Buffer.from([0, 1, 2, 255, 0x0d, 0x0a])
    await c.publishAsync(topic, payload, { qos: 1 })
    for await (const m of sub) {
      t.same(Buffer.from(m.data), payload, `${topic} -> ${subject}: payload unchanged`)
      t.equal(m.headers?.get('Nmqtt-Pub'), '1', 'QoS travels in Nmqtt-Pub')
    }
  }
  // NATS wildcards see MQTT traffic too.
  const all = nc.subscribe('sensors.>', { max: 1 })
  await nc.flush()
  await c.publishAsync('sensors/t9/rh', '40', { qos: 0 })
  for await (const m of all) {
    t.equal(m.subject, 'sensors.t9.rh')
    t.equal(m.headers?.get('Nmqtt-Pub'), '0')
  }
})

t.test('NATS publish -> MQTT subscriber, topic mapped back', async (t) => {
  const nc = await nats(t)
  for (const v of [4, 5] as const) {
    const c = await mqttClient(t, b.mqttUrl, { protocolVersion: v })
    await c.subscribeAsync(ROWS.map(([topic]) => topic), { qos: 1 })
    const got = messages(c, ROWS.length)
    for (const [, subject] of ROWS) nc.publish(subject, subject)
    await nc.flush()
    const seen = (await got).map((m) => [m.topic, m.payload])
    t.same(seen.sort(), ROWS.map(([topic, subject]) => [topic, subject]).sort(), `v${v}: every row`)
  }
})

t.test('QoS of NATS publishes: header-less -> 1; Nmqtt-Pub honoured', async (t) => {
  const nc = await nats(t)
  const c = await mqttClient(t, b.mqttUrl)
  await c.subscribeAsync('nq/#', { qos: 2 })
  const got = messages(c, 3)
  nc.publish('nq.plain', 'p')
  const h0 = headers()
  h0.set('Nmqtt-Pub', '0')
  nc.publish('nq.h0', 'z', { headers: h0 })
  const other = headers()
  other.set('X-Other', 'y')
  nc.publish('nq.other', 'o', { headers: other })
  const byTopic = Object.fromEntries((await got).map((m) => [m.topic, m.qos]))
  t.same(byTopic, { 'nq/plain': 1, 'nq/h0': 0, 'nq/other': 1 }, 'no Nmqtt-Pub: QoS 1 (the documented default)')
})

t.test('a NATS subject with no MQTT form is skipped and counted', async (t) => {
  const nc = await nats(t)
  const c = await mqttClient(t, b.mqttUrl)
  await c.subscribeAsync('odd/#')
  const got = messages(c, 1)
  const before = mqttState(b.srv).counters.unmappable_subjects
  nc.publish('odd.a/b', 'mangled') // a lone `/` inside a token has no topic form
  nc.publish('odd.fine', 'ok')
  t.same((await got).map((m) => [m.topic, m.payload]), [['odd/fine', 'ok']])
  t.equal(mqttState(b.srv).counters.unmappable_subjects - before, 1)
})

t.test('MQTT 5 No Local: not its own publishes ([MQTT-3.8.3-3] in 5.0)', async (t) => {
  const c = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  await c.subscribeAsync('nl/x', { qos: 0, nl: true })
  await c.subscribeAsync('nl/y', { qos: 0 })
  const got = messages(c, 1, 800)
  await c.publishAsync('nl/x', 'mine')
  await c.publishAsync('nl/y', 'echoed')
  t.same((await got).map((m) => m.topic), ['nl/y'])
})

t.test('shared subscriptions: MQTT and NATS members of a group share one stream', async (t) => {
  const nc = await nats(t)
  const m1 = await mqttClient(t, b.mqttUrl)
  const m2 = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  await m1.subscribeAsync('$share/workers/jobs/#', { qos: 0 })
  await m2.subscribeAsync('$share/workers/jobs/#', { qos: 0 })
  let natsGot = 0
  const count = (): void => {
    natsGot++
  }
  nc.subscribe('jobs.>', { queue: 'workers', callback: count })
  await nc.flush()
  let mqttGot = 0
  m1.on('message', () => mqttGot++)
  m2.on('message', () => mqttGot++)
  for (let i = 0; i < 60; i++) nc.publish(`jobs.${i}`, String(i))
  await nc.flush()
  await sleep(500)
  t.equal(natsGot + mqttGot, 60, 'each message to exactly one member')
  t.ok(natsGot > 0 && mqttGot > 0, `both kinds got some (nats ${natsGot}, mqtt ${mqttGot})`)
})

t.test('in-flight window: at most Receive Maximum unacknowledged QoS 1 messages', async (t) => {
  const c = await RawMqtt.connect(port, 5, { properties: { receiveMaximum: 2 } })
  t.teardown(() => c.close())
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'win', qos: 1 }] })
  await c.next('suback')
  const nc = await nats(t)
  for (let i = 0; i < 5; i++) nc.publish('win', String(i))
  await nc.flush()
  await c.until(() => c.packets.filter((p) => p.cmd === 'publish').length >= 2)
  await sleep(200)
  const first = c.packets.filter((p) => p.cmd === 'publish') as IPublishPacket[]
  t.equal(first.length, 2, 'two in flight')
  t.not(first[0]!.messageId, first[1]!.messageId, 'distinct packet ids ([MQTT-2.2.1-4] in 5.0)')
  c.send({ cmd: 'puback', messageId: first[0]!.messageId })
  await c.until(() => c.packets.filter((p) => p.cmd === 'publish').length >= 3)
  await sleep(200)
  const all = c.packets.filter((p) => p.cmd === 'publish') as IPublishPacket[]
  t.same(all.map((p) => p.payload.toString()), ['0', '1', '2'], 'one PUBACK lets one more out, in order')
})

t.test('slow consumer: unacknowledged messages over max_pending close the connection and count', async (t) => {
  const small = await startBroker({ mqtt: true, max_payload: 1024, max_pending: 64 * 1024 })
  t.teardown(() => small.stop())
  const c = await RawMqtt.connect(small.mqttPort, 5, { properties: { receiveMaximum: 1 } })
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'flood', qos: 1 }] })
  await c.next('suback')
  const nc = await connect({ servers: small.url, reconnect: false })
  t.teardown(() => nc.close())
  const before = small.srv.counters.slow_consumers
  for (let i = 0; i < 100; i++) nc.publish('flood', new Uint8Array(1000))
  await nc.flush()
  t.ok(await c.waitClosed(), 'closed')
  t.equal(small.srv.counters.slow_consumers - before, 1, 'counted')
  t.ok(small.logs.some((l) => l.includes('Slow Consumer Detected')), 'logged')
  // The publisher is not affected.
  const rtt = await nc.rtt()
  t.ok(rtt >= 0)
})

t.test('mosquitto_sub receives what a NATS client publishes', async (t) => {
  if (!havePeer(t, 'mosquitto_sub', 'mosquitto-clients')) return
  const p = spawn('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(port), '-t', 'mosq/+/out', '-q', '1', '-C', '1', '-v', '-V', 'mqttv311'])
  let out = ''
  p.stdout.on('data', (d) => (out += d))
  const exited = new Promise<number | null>((r) => p.once('exit', r))
  t.teardown(() => p.kill())
  const nc = await nats(t)
  // Publish until the subscriber is there (its SUBSCRIBE races with us).
  for (let i = 0; i < 50 && out === ''; i++) {
    nc.publish('mosq.dev1.out', 'hello from nats')
    await sleep(100)
  }
  t.equal(await exited, 0)
  t.equal(out, 'mosq/dev1/out hello from nats\n')
})

t.test('mosquitto_pub reaches a NATS subscriber', async (t) => {
  if (!havePeer(t, 'mosquitto_pub', 'mosquitto-clients')) return
  const nc = await nats(t)
  const sub = nc.subscribe('mosq.dev2.in', { max: 1 })
  await nc.flush()
  // Not spawnSync: the broker runs in this process and must keep serving meanwhile.
  const p = spawn('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '-t', 'mosq/dev2/in', '-m', 'hello from mosquitto', '-q', '1', '-V', '5'])
  let err = ''
  p.stderr.on('data', (d) => (err += d))
  t.teardown(() => p.kill())
  t.equal(await new Promise((r) => p.once('exit', r)), 0, err)
  for await (const m of sub) {
    t.equal(td.decode(m.data), 'hello from mosquitto')
    t.equal(m.headers?.get('Nmqtt-Pub'), '1')
  }
})

t.test('MQTT 5 user properties and content type cross to NATS headers and back', async (t) => {
  const nc = await nats(t)
  const pub = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  const sub5 = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  const sub4 = await mqttClient(t, b.mqttUrl, { protocolVersion: 4 })
  await sub5.subscribeAsync('props/#', { qos: 1 })
  await sub4.subscribeAsync('props/#', { qos: 1 })
  const ns = nc.subscribe('props.m', { max: 1 })
  await nc.flush()
  const got5 = new Promise<Record<string, unknown> | undefined>((r) => sub5.once('message', (_t, _p, pk) => r(pk.properties as Record<string, unknown>)))
  const got4 = messages(sub4, 1)
  await pub.publishAsync('props/m', 'x', {
    qos: 1,
    properties: { userProperties: { unit: 'C', tag: ['a', 'b'], 'bad:name': 'skipped' }, contentType: 'text/plain', payloadFormatIndicator: true },
  })
  for await (const m of ns) {
    t.equal(m.headers?.get('Nmqtt-Pub'), '1')
    t.equal(m.headers?.get('unit'), 'C', 'user property -> header')
    t.same(m.headers?.values('tag'), ['a', 'b'], 'repeated, in order')
    t.equal(m.headers?.get('Nmqtt-Content-Type'), 'text/plain')
    t.equal(m.headers?.get('Nmqtt-Format'), '1')
    t.notOk(m.headers?.has('bad:name'), 'a name NATS cannot carry is left out')
  }
  t.match(await got5, { userProperties: { unit: 'C', tag: ['a', 'b'] }, contentType: 'text/plain', payloadFormatIndicator: true }, 'MQTT 5 -> MQTT 5 keeps them')
  t.same((await got4).map((m) => m.payload), ['x'], '3.1.1 subscribers get the message without them')

  // NATS headers -> user properties for an MQTT 5 subscriber.
  const gotN = new Promise<Record<string, unknown> | undefined>((r) => sub5.once('message', (_t, _p, pk) => r(pk.properties as Record<string, unknown>)))
  const h = headers()
  h.set('X-Trace', 'abc')
  nc.publish('props.n', 'y', { headers: h })
  const p = await gotN
  t.same(p?.userProperties, { 'X-Trace': 'abc' })
})
