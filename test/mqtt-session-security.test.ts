// Who may have a persistent MQTT session, and how many there may be. A session belongs to the
// identity that made it: another user with the same client id gets a clean session (the old
// one ends), and a session is only ever resumed under the permissions in force, also after a
// reload that narrowed them while it was parked (issue 13, points 1 and 2). mqtt.max_sessions
// and mqtt.max_sessions_bytes bound parked sessions (issue 9, point 8).

import t, { type Test } from 'tap'
import type { IConnackPacket, IPublishPacket } from 'mqtt-packet'
import mqtt, { type IClientOptions } from 'mqtt'
import { mqttState } from '../adapters/mqtt/index.ts'
import type { Options, UserConfig } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { RawMqtt, messages, mqttClient, natsClient, sleep } from './helpers/mqtt.ts'

/** What reloadConfig does with re-read options: every check first, then every step. */
function reload(b: TestBroker, users: UserConfig[]): string[] {
  const next: Options = { ...b.srv.opts, authorization: { timeout: 2000, users } }
  const steps = b.reloaders.map((f) => f(next))
  return steps.flatMap((s) => s())
}

/** Connects raw with a persistent session; returns the client and its CONNACK. */
async function rawConnect(port: number, v: 4 | 5, extra: Record<string, unknown>): Promise<[RawMqtt, IConnackPacket]> {
  const c = await RawMqtt.open(port, v)
  const session = v === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {}
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: false, keepalive: 0, clientId: 'x', ...session, ...extra } as never)
  return [c, (await c.next('connack')) as IConnackPacket]
}

const publishes = (c: RawMqtt): IPublishPacket[] => c.packets.filter((p) => p.cmd === 'publish') as IPublishPacket[]

/** An MQTT.js client and everything it receives, from its CONNACK on (queued messages too). */
async function collecting(t: Test, url: string, opts: IClientOptions): Promise<string[]> {
  const got: string[] = []
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  t.teardown(() => c.endAsync(true))
  c.on('message', (topic, payload) => got.push(`${topic}=${payload.toString()}`))
  await new Promise((resolve, reject) => c.once('connect', resolve).once('error', reject))
  return got
}

const USERS: UserConfig[] = [
  { user: 'admin', password: 'admin' },
  { user: 'sens', password: 'sens', permissions: { subscribe: { allow: ['sensors.>'] }, publish: { allow: ['sensors.>'] } } },
]

t.test('13.1: another user with the same client id gets a clean session, nothing of the parked one', async (t) => {
  const b = await startBroker({ mqtt: true, authorization: { timeout: 2000, users: USERS } })
  t.teardown(() => b.stop())
  const admin = await mqttClient(t, b.mqttUrl, { clientId: 'admin-console', clean: false, username: 'admin', password: 'admin' })
  await admin.subscribeAsync('admin/#', { qos: 1 })
  await admin.endAsync()
  const nc = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
  nc.publish('admin.q1', 'queued for admin')
  await nc.flush()
  t.ok(mqttState(b.srv).sessions.has('admin-console'), 'admin parked a session')

  const [sens, ack] = await rawConnect(b.mqttPort, 4, { clientId: 'admin-console', username: 'sens', password: Buffer.from('sens') })
  t.teardown(() => sens.close())
  t.equal(ack.returnCode, 0, 'sens is let in')
  t.equal(ack.sessionPresent, false, 'Session Present 0: a clean session')
  nc.publish('admin.live', 'later admin message')
  await nc.flush()
  sens.send({ cmd: 'pingreq' })
  await sens.next('pingresp')
  await sleep(200)
  t.same(publishes(sens), [], 'neither the queued admin/q1 nor a later admin/* message reaches sens')
  t.notOk(mqttState(b.srv).sessions.has('admin-console'), 'the old session is gone')
  t.ok(b.logs.some((l) => l.includes('mqtt session "admin-console" of User "admin" ended: client id taken by User "sens"')), 'logged with client id and both users')
  t.equal(mqttState(b.srv).counters.sessions_foreign, 1, 'counted')

  // admin coming back finds no session either: it ended, it was not handed to sens.
  sens.close()
  await sleep(100)
  const [again, ack2] = await rawConnect(b.mqttPort, 4, { clientId: 'admin-console', username: 'admin', password: Buffer.from('admin') })
  t.teardown(() => again.close())
  t.equal(ack2.sessionPresent, false, "sens's own (empty) session is not admin's either")
})

t.test('13.1: a live session taken over by another user closes the old connection and starts clean', async (t) => {
  const b = await startBroker({ mqtt: true, authorization: { timeout: 2000, users: USERS } })
  t.teardown(() => b.stop())
  const [admin] = await rawConnect(b.mqttPort, 5, { clientId: 'admin-live', username: 'admin', password: Buffer.from('admin') })
  t.teardown(() => admin.close())
  admin.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'admin/#', qos: 1 }] })
  await admin.next('suback')
  const [sens, ack] = await rawConnect(b.mqttPort, 5, { clientId: 'admin-live', username: 'sens', password: Buffer.from('sens') })
  t.teardown(() => sens.close())
  t.equal(ack.reasonCode, 0)
  t.equal(ack.sessionPresent, false, 'Session Present 0')
  t.match(await admin.next('disconnect'), { reasonCode: 0x8e }, 'the old connection is told: Session Taken Over [MQTT-3.1.4-2]')
  t.ok(await admin.waitClosed(), 'and closed')
  const nc = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
  nc.publish('admin.x', 'for admin only')
  await nc.flush()
  sens.send({ cmd: 'pingreq' })
  await sens.next('pingresp')
  await sleep(200)
  t.same(publishes(sens), [], 'admin/* is not delivered to sens')
  t.ok(b.logs.some((l) => l.includes('mqtt session "admin-live" of User "admin" ended: client id taken by User "sens"')))

  // The same identity still takes its own session over, with its subscriptions.
  const [s1] = await rawConnect(b.mqttPort, 4, { clientId: 'sens-1', username: 'sens', password: Buffer.from('sens') })
  s1.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sensors/#', qos: 1 }] })
  await s1.next('suback')
  s1.close()
  await sleep(100)
  nc.publish('sensors.t', 'queued')
  await nc.flush()
  const [s2, ack2] = await rawConnect(b.mqttPort, 4, { clientId: 'sens-1', username: 'sens', password: Buffer.from('sens') })
  t.teardown(() => s2.close())
  t.equal(ack2.sessionPresent, true, 'same user: session present')
  t.equal(((await s2.next('publish')) as IPublishPacket | undefined)?.payload.toString(), 'queued', 'and its queued message')
})

t.test("13.1: the ended session's delayed will is sent, as at any session end", async (t) => {
  const b = await startBroker({ mqtt: true, authorization: { timeout: 2000, users: USERS } })
  t.teardown(() => b.stop())
  const nc = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
  const sub = nc.subscribe('admin.will')
  await nc.flush()
  const will = { topic: 'admin/will', payload: Buffer.from('admin gone'), qos: 0, retain: false, properties: { willDelayInterval: 60 } }
  const [admin] = await rawConnect(b.mqttPort, 5, { clientId: 'will-owner', username: 'admin', password: Buffer.from('admin'), will })
  admin.close() // abrupt: the will waits for its delay or the session's end
  await sleep(100)
  const got: string[] = []
  void (async () => {
    for await (const m of sub) got.push(m.string())
  })()
  const [sens, ack] = await rawConnect(b.mqttPort, 5, { clientId: 'will-owner', username: 'sens', password: Buffer.from('sens') })
  t.teardown(() => sens.close())
  t.equal(ack.sessionPresent, false)
  await nc.flush()
  await sleep(200)
  t.same(got, ['admin gone'], "admin's session ended, so its will went now")
})

t.test('13.2: a reload narrows parked sessions: filters, queued messages and delivery checks', async (t) => {
  const v1: UserConfig[] = [
    { user: 'admin', password: 'admin' },
    { user: 'dev', password: 'dev', permissions: { subscribe: { allow: ['sensors.>', 'other.>'] } } },
    { user: 'wide', password: 'wide', permissions: { subscribe: { allow: ['>'] } } },
    { user: 'gone', password: 'gone' },
  ]
  const b = await startBroker({ mqtt: true, authorization: { timeout: 2000, users: v1 } })
  t.teardown(() => b.stop())
  const dev = await mqttClient(t, b.mqttUrl, { clientId: 'dev-1', clean: false, username: 'dev', password: 'dev' })
  await dev.subscribeAsync(['sensors/#', 'other/#'], { qos: 1 })
  await dev.endAsync()
  const wide = await mqttClient(t, b.mqttUrl, { clientId: 'wide-1', clean: false, username: 'wide', password: 'wide' })
  await wide.subscribeAsync('data/#', { qos: 1 })
  await wide.endAsync()
  const gone = await mqttClient(t, b.mqttUrl, { clientId: 'gone-1', clean: false, username: 'gone', password: 'gone' })
  await gone.subscribeAsync('#', { qos: 1 })
  await gone.endAsync()
  const [goneLive] = await rawConnect(b.mqttPort, 4, { clientId: 'gone-live', username: 'gone', password: Buffer.from('gone') })
  t.teardown(() => goneLive.close())
  goneLive.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 1 }] })
  await goneLive.next('suback')
  const nc = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
  nc.publish('sensors.q1', 'before')
  nc.publish('other.q1', 'before')
  nc.publish('data.secret.q1', 'before')
  nc.publish('data.ok.q1', 'before')
  await nc.flush()

  const v2: UserConfig[] = [
    { user: 'admin', password: 'admin' },
    { user: 'dev', password: 'dev', permissions: { subscribe: { allow: ['other.>'] } } },
    { user: 'wide', password: 'wide', permissions: { subscribe: { allow: ['>'], deny: ['data.secret.>'] } } },
  ]
  t.same(reload(b, v2), ['authorization'])
  const st = mqttState(b.srv)
  t.notOk(st.sessions.has('gone-1'), "a removed user's parked session ends")
  t.ok(b.logs.some((l) => l.includes('mqtt session "gone-1" ended: User "gone" no longer exists')))
  t.ok(await goneLive.waitClosed(), "a removed user's live connection is closed")
  t.notOk(st.sessions.has('gone-live'), 'and its session is not kept')
  t.ok(b.logs.some((l) => l.includes('mqtt session "dev-1": removed sub "sensors/#" for User "dev" - not authorized')))
  t.equal(st.counters.revoked_msgs, 2, 'sensors/q1 and data/secret/q1 dropped from the queues')

  nc.publish('sensors.q2', 'after, parked')
  nc.publish('other.q2', 'after, parked')
  nc.publish('data.secret.q2', 'after, parked')
  nc.publish('data.ok.q2', 'after, parked')
  await nc.flush()

  const devGot = await collecting(t, b.mqttUrl, { clientId: 'dev-1', clean: false, username: 'dev', password: 'dev' })
  const wideGot = await collecting(t, b.mqttUrl, { clientId: 'wide-1', clean: false, username: 'wide', password: 'wide' })
  await sleep(300)
  nc.publish('sensors.live', 'live')
  nc.publish('other.live', 'live')
  nc.publish('data.secret.live', 'live')
  nc.publish('data.ok.live', 'live')
  await nc.flush()
  await sleep(300)
  t.same(devGot.sort(), ['other/live=live', 'other/q1=before', 'other/q2=after, parked'], 'dev: nothing of sensors/#, queued or live')
  t.same(wideGot.sort(), ['data/ok/live=live', 'data/ok/q1=before', 'data/ok/q2=after, parked'], 'wide: data/# kept, its denied part filtered')
})

t.test('a resumed session is checked against the permissions in force when it resumes', async (t) => {
  // The options change here without the reload step (so without the parked sessions' check
  // at reload): only the check at resume stands between the old session and the client.
  const users: UserConfig[] = [
    { user: 'admin', password: 'admin' },
    { user: 'dev', password: 'dev', permissions: { subscribe: { allow: ['sensors.>', 'other.>'] } } },
  ]
  const b = await startBroker({ mqtt: true, authorization: { timeout: 2000, users } })
  t.teardown(() => b.stop())
  const [d1] = await rawConnect(b.mqttPort, 4, { clientId: 'dev-r', username: 'dev', password: Buffer.from('dev') })
  d1.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'sensors/#', qos: 1 }, { topic: 'other/#', qos: 1 }] })
  await d1.next('suback')
  d1.close()
  await sleep(100)
  const nc = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
  nc.publish('sensors.q', 'q')
  nc.publish('other.q', 'q')
  await nc.flush()
  b.srv.opts = { ...b.srv.opts, authorization: { timeout: 2000, users: [users[0]!, { user: 'dev', password: 'dev', permissions: { subscribe: { allow: ['other.>'] } } }] } }
  const [d2, ack] = await rawConnect(b.mqttPort, 4, { clientId: 'dev-r', username: 'dev', password: Buffer.from('dev') })
  t.teardown(() => d2.close())
  t.equal(ack.sessionPresent, true)
  nc.publish('sensors.live', 'live')
  nc.publish('other.live', 'live')
  await nc.flush()
  d2.send({ cmd: 'pingreq' })
  await d2.next('pingresp')
  await sleep(200)
  t.same(publishes(d2).map((p) => p.topic).sort(), ['other/live', 'other/q'], 'sensors/# gone at resume, queued and live')
})

t.test('max_sessions: the oldest parked session makes room for a new one', async (t) => {
  const b = await startBroker({ mqtt: { max_sessions: 2 } })
  t.teardown(() => b.stop())
  for (const id of ['old-1', 'old-2']) {
    const [c] = await rawConnect(b.mqttPort, 4, { clientId: id })
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: `${id}/x`, qos: 1 }] })
    await c.next('suback')
    c.close()
    await sleep(100)
  }
  const st = mqttState(b.srv)
  t.same([...st.sessions.keys()], ['old-1', 'old-2'])
  const [n, ack] = await rawConnect(b.mqttPort, 4, { clientId: 'new-1' })
  t.teardown(() => n.close())
  t.equal(ack.returnCode, 0, 'the new persistent session is accepted')
  t.same([...st.sessions.keys()], ['old-2'], 'the oldest parked session expired early')
  t.equal(st.counters.sessions_evicted, 1)
  t.ok(b.logs.some((l) => l.includes('mqtt session "old-1" of User "" expired early: mqtt.max_sessions (2) reached')))
  const [o1, ack1] = await rawConnect(b.mqttPort, 4, { clientId: 'old-2' })
  t.teardown(() => o1.close())
  t.equal(ack1.sessionPresent, true, 'the younger one is still there, and resuming it needs no room')
})

t.test('max_sessions: with every session live, a new persistent one is refused (0x97 / 0x03)', async (t) => {
  const b = await startBroker({ mqtt: { max_sessions: 2 } })
  t.teardown(() => b.stop())
  const [a] = await rawConnect(b.mqttPort, 4, { clientId: 'live-a' })
  t.teardown(() => a.close())
  const [c] = await rawConnect(b.mqttPort, 5, { clientId: 'live-b' })
  t.teardown(() => c.close())
  const [v5, ack5] = await rawConnect(b.mqttPort, 5, { clientId: 'third-5' })
  t.teardown(() => v5.close())
  t.equal(ack5.reasonCode, 0x97, 'MQTT 5: Quota exceeded')
  t.ok(await v5.waitClosed())
  const [v4, ack4] = await rawConnect(b.mqttPort, 4, { clientId: 'third-4' })
  t.teardown(() => v4.close())
  t.equal(ack4.returnCode, 0x03, '3.1.1: Server unavailable')
  t.ok(await v4.waitClosed())
  t.equal(mqttState(b.srv).counters.sessions_refused, 2)
  t.ok(b.logs.some((l) => l.includes('maximum sessions (2) reached (mqtt.max_sessions)')))
  const [clean, ackc] = await rawConnect(b.mqttPort, 4, { clientId: 'clean-1', clean: true })
  t.teardown(() => clean.close())
  t.equal(ackc.returnCode, 0, 'a clean session needs no room')
  const [again, acka] = await rawConnect(b.mqttPort, 4, { clientId: 'live-a' })
  t.teardown(() => again.close())
  t.equal(acka.returnCode, 0, 'taking over a live session of ones own needs no room either')
  t.equal(acka.sessionPresent, true)
})

t.test('max_sessions_bytes bounds the offline queues of all parked sessions together', async (t) => {
  const b = await startBroker({ mqtt: { max_sessions_bytes: 1000 } })
  t.teardown(() => b.stop())
  for (const id of ['bytes-1', 'bytes-2']) {
    const [c] = await rawConnect(b.mqttPort, 4, { clientId: id })
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'bulk/#', qos: 1 }] })
    await c.next('suback')
    c.close()
    await sleep(100)
  }
  const nc = await natsClient(t, b.url)
  for (let i = 0; i < 4; i++) nc.publish(`bulk.m${i}`, 'x'.repeat(300))
  await nc.flush()
  const st = mqttState(b.srv)
  t.equal(st.parkedBytes, 900, 'three 300-byte messages fit, the rest is dropped')
  t.equal(st.counters.offline_dropped, 5)
  const status = b.srv.status.get('mqtt')!() as Record<string, number>
  t.match(status, { sessions_parked: 2, sessions_bytes: 900, offline_dropped: 5 }, 'in /varz')
  const [c, ack] = await rawConnect(b.mqttPort, 4, { clientId: 'bytes-1' })
  t.teardown(() => c.close())
  t.ok(ack.sessionPresent)
  t.equal(st.parkedBytes, 300, 'a resumed session takes its bytes along')
  await c.until(() => publishes(c).length >= 2)
  t.same(publishes(c).map((p) => p.topic), ['bulk/m0', 'bulk/m1'])
})

t.test('MQTT.js: a client reusing an id under another user sees only its own traffic', async (t) => {
  const b = await startBroker({ mqtt: true, authorization: { timeout: 2000, users: USERS } })
  t.teardown(() => b.stop())
  const admin = await mqttClient(t, b.mqttUrl, { clientId: 'shared-id', clean: false, username: 'admin', password: 'admin' })
  await admin.subscribeAsync('admin/#', { qos: 1 })
  await admin.endAsync()
  const pub = await mqttClient(t, b.mqttUrl, { username: 'admin', password: 'admin' })
  await pub.publishAsync('admin/q1', 'secret', { qos: 1 })
  const sens = await mqttClient(t, b.mqttUrl, { clientId: 'shared-id', clean: false, username: 'sens', password: 'sens' })
  const got = messages(sens, 1, 500)
  await pub.publishAsync('admin/q2', 'secret too', { qos: 1 })
  t.same(await got, [], 'nothing from admin/')
})
