// Every row of the topic ⇄ subject table (docs/mqtt.md "Topics ⇄ subjects", vectors in
// test/mqtt-topic.test.ts), end to end with real clients: MQTT.js publishes and a nats.js
// subscriber sees the subject; nats.js publishes and an MQTT.js subscriber sees the topic.
// Rows with no MQTT form are skipped for MQTT subscribers and counted; topics MQTT may not
// publish to are refused.

import t, { type Test } from 'tap'
import { headers, type NatsConnection } from '@nats-io/transport-node'
import type { MqttClient } from 'mqtt'
import { mqttState } from '../adapters/mqtt/index.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { messages, mqttClient, natsClient, RawMqtt, sleep } from './helpers/mqtt.ts'
import { exchange } from './helpers/raw.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: true })
})
t.teardown(() => b?.stop())

const nats = (t: Test): Promise<NatsConnection> => natsClient(t, b.url)

/** NATS subjects seen (with payloads) on `pattern` until n arrive or ms pass. */
async function natsSees(nc: NatsConnection, pattern: string, n: number, act: () => Promise<unknown>, ms = 1500, queue?: string): Promise<[string, string][]> {
  const sub = nc.subscribe(pattern, { ...(queue ? { queue } : {}) })
  await nc.flush()
  const got: [string, string][] = []
  const done = (async () => {
    for await (const m of sub) {
      got.push([m.subject, m.string()])
      if (got.length >= n) break
    }
  })()
  await act()
  await Promise.race([done, sleep(ms)])
  sub.unsubscribe()
  return got
}

/** Topics an MQTT client subscribed to `filter` receives while `act` runs. */
async function mqttSees(c: MqttClient, filter: string, n: number, act: () => Promise<unknown> | void, ms = 1500): Promise<[string, string][]> {
  await c.subscribeAsync(filter, { qos: 1 })
  const got = messages(c, n, ms)
  await act()
  const out = (await got).map((m) => [m.topic, m.payload] as [string, string])
  await c.unsubscribeAsync(filter)
  return out
}

// Topic names: the same message both ways.
const names: { rule: string; topic: string; subject: string }[] = [
  { rule: '`/` ⇄ `.`', topic: 'sensors/t1/temp', subject: 'sensors.t1.temp' },
  { rule: 'empty level ⇄ token `/`', topic: '/foo/bar', subject: '/.foo.bar' },
  { rule: 'trailing empty level', topic: 'foo/bar/', subject: 'foo.bar./' },
  { rule: 'empty level in the middle', topic: 'foo//bar', subject: 'foo./.bar' },
  { rule: 'two empty levels', topic: '/', subject: '/./' },
  { rule: '`.` inside a level ⇄ `//`', topic: 'foo.bar/baz', subject: 'foo//bar.baz' },
  { rule: 'UTF-8 passes unchanged', topic: 'capteurs/température', subject: 'capteurs.température' },
  { rule: '`$` topic', topic: '$SYS/x', subject: '$SYS.x' },
]

for (const row of names) {
  t.test(`${row.rule}: ${row.topic} ⇄ ${row.subject}`, async (t) => {
    const nc = await nats(t)
    const mq = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
    const payload = `p-${row.topic}`
    const seen = await natsSees(nc, row.subject, 1, () => mq.publishAsync(row.topic, payload, { qos: 1 }))
    t.same(seen, [[row.subject, payload]], 'MQTT publish → NATS subscriber sees the subject, payload unchanged')
    const sub = await mqttClient(t, b.mqttUrl)
    const got = await mqttSees(sub, row.topic, 1, () => nc.publish(row.subject, payload))
    t.same(got, [[row.topic, payload]], 'NATS publish → MQTT subscriber sees the topic')
  })
}

t.test('`$` topics: not matched by filters that start with a wildcard [MQTT-4.7.2-1]', async (t) => {
  const nc = await nats(t)
  const sub = await mqttClient(t, b.mqttUrl)
  t.same(await mqttSees(sub, '#', 1, () => nc.publish('$SYS.y', 'x'), 500), [], '# does not see $SYS/y')
  t.same(await mqttSees(sub, '+/y', 1, () => nc.publish('$SYS.y', 'x'), 500), [], '+/y does not see $SYS/y')
  t.same(await mqttSees(sub, '$SYS/#', 1, () => nc.publish('$SYS.y', 'x')), [['$SYS/y', 'x']], '$SYS/# does')
})

// Filters: an MQTT subscription and the NATS subscription of the same form see the same messages.
const filters: { rule: string; filter: string; pattern: string; topics: string[]; misses: string[] }[] = [
  { rule: '`+` ⇄ `*`', filter: 'fp/+/+', pattern: 'fp.*.*', topics: ['fp/a/b', 'fp/c/d'], misses: ['fp/a', 'fp/a/b/c'] },
  { rule: '`#` ⇄ `>`; `a/#` also matches `a`', filter: 'fh/#', pattern: 'fh.>', topics: ['fh', 'fh/a', 'fh/a/b'], misses: ['fhx/a'] },
]

for (const row of filters) {
  t.test(`filter ${row.filter} ⇄ ${row.pattern} (${row.rule})`, async (t) => {
    const nc = await nats(t)
    const sub = await mqttClient(t, b.mqttUrl)
    const all = [...row.topics, ...row.misses]
    const subjects = all.map((x) => x.replaceAll('/', '.'))
    const got = await mqttSees(sub, row.filter, row.topics.length + 1, () => {
      for (const s of subjects) nc.publish(s, s)
    }, 800)
    t.same(got.map(([topic]) => topic).sort(), [...row.topics].sort(), 'NATS publishes → the MQTT filter sees exactly the matching topics')
    const pub = await mqttClient(t, b.mqttUrl)
    // NATS `fh.>` does not match `fh` itself: the MQTT filter's second subject does (topic.ts).
    const want = row.topics.filter((x) => x.replaceAll('/', '.') !== row.pattern.slice(0, -2)).map((x) => x.replaceAll('/', '.'))
    const seen = await natsSees(nc, row.pattern, want.length + 1, async () => {
      for (const x of all) await pub.publishAsync(x, x, { qos: 1 })
    }, 800)
    t.same(seen.map(([s]) => s).sort(), want.sort(), 'MQTT publishes → the NATS pattern sees the matching subjects')
  })
}

t.test('filter # ⇄ > : everything not starting with $', async (t) => {
  const nc = await nats(t)
  const sub = await mqttClient(t, b.mqttUrl)
  const got = await mqttSees(sub, '#', 2, () => {
    nc.publish('fall.x', '1')
    nc.publish('$fall.x', '2')
    nc.publish('fall', '3')
  }, 800)
  t.same(got.map(([x]) => x).sort(), ['fall', 'fall/x'])
})

t.test('filter $share/g/a/+ ⇄ a.* in queue group g: MQTT and NATS members share one stream', async (t) => {
  const nc = await nats(t)
  const m1 = await mqttClient(t, b.mqttUrl)
  await m1.subscribeAsync('$share/g/sh/+', { qos: 1 })
  const mGot = messages(m1, 40, 1500)
  const natsGot = natsSees(nc, 'sh.*', 40, async () => {
    const pub = await mqttClient(t, b.mqttUrl)
    for (let i = 0; i < 20; i++) await pub.publishAsync(`sh/${i}`, String(i), { qos: 1 })
    for (let i = 20; i < 40; i++) nc.publish(`sh.${i}`, String(i))
  }, 1500, 'g')
  const [m, n] = await Promise.all([mGot, natsGot])
  const all = [...m.map((x) => x.payload), ...n.map(([, p]) => p)].map(Number).sort((a, b) => a - b)
  t.same(all, Array.from({ length: 40 }, (_, i) => i), 'each of 40 messages to exactly one member')
  t.ok(m.length > 0 && n.length > 0, `both kinds of member got some (MQTT ${m.length}, NATS ${n.length})`)
})

t.test('topics MQTT may not publish to are refused: a/+, a/*, a b [MQTT-3.3.2-2]', async (t) => {
  const nc = await nats(t)
  for (const topic of ['rf/+', 'rf/*', 'rf b']) {
    const seen = await natsSees(nc, '>', 1, async () => {
      const c = await RawMqtt.connect(b.mqttPort, 5)
      t.teardown(() => c.close())
      c.send({ cmd: 'publish', topic, payload: Buffer.from('x'), qos: 0, dup: false, retain: false })
      const d = await c.next('disconnect')
      t.equal((d as { reasonCode?: number } | undefined)?.reasonCode, 0x90, `${JSON.stringify(topic)}: DISCONNECT 0x90 Topic Name invalid`)
    }, 300)
    t.same(seen.filter(([s]) => s.startsWith('rf')), [], `${JSON.stringify(topic)}: nothing reaches NATS`)
  }
})

t.test('subjects with no MQTT form are not delivered to MQTT, and are counted: a/b.c, a..b, a.*', async (t) => {
  const st = mqttState(b.srv)
  const sub = await mqttClient(t, b.mqttUrl)
  // Raw NATS, non-pedantic: a client library would refuse the last two subjects itself.
  // `nm..b` matches no subscription at all (an empty token matches nothing, as in
  // nats-server); the other two reach the MQTT subscription and are skipped there.
  for (const [subject, counted] of [['nm/b.c', 1], ['nm..b', 0], ['nm.*', 1]] as const) {
    const before = st.counters.unmappable_subjects
    const got = await mqttSees(sub, '#', 1, async () => {
      await exchange(b.port, [`CONNECT {"verbose":false,"pedantic":false}\r\nPUB ${subject} 1\r\nx\r\nPING\r\n`], 200)
    }, 500)
    t.same(got, [], `${subject}: not delivered (not mangled into another topic)`)
    t.equal(st.counters.unmappable_subjects - before, counted, `${subject}: counted ${counted}`)
  }
})
