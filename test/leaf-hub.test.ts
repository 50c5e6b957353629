// The uplink against one real nats-server hub: edge (MQTT and NATS) to cloud and back,
// request/reply both ways, hub queue groups, status, interest propagation, and what the hub
// sees on its leafnode port (a real CONNECT, LS+, LMSG/HMSG).

import t from 'tap'
import { headers, type NatsConnection } from '@nats-io/transport-node'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { haveHub, hubInterest, leafUp, startHub, until, type Hub } from './helpers/hub.ts'
import { mqttClient, messages, natsClient, sleep } from './helpers/mqtt.ts'

if (haveHub(t)) {
  let hub: Hub
  let b: TestBroker
  t.before(async () => {
    hub = await startHub()
    b = await startBroker({ mqtt: true, server_name: 'gw-test', leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [{ ...remoteDefaults(), urls: [hub.leafUrl] }] } })
    await leafUp(b)
  })
  t.teardown(async () => {
    await b?.stop()
    await hub?.close()
  })

  const cloud = (t: Parameters<typeof natsClient>[0]): Promise<NatsConnection> => natsClient(t, hub.url)
  const edge = (t: Parameters<typeof natsClient>[0]): Promise<NatsConnection> => natsClient(t, b.url)

  t.test('MQTT publish at the edge reaches a NATS subscriber on the hub', async (t) => {
    const nc = await cloud(t)
    const sub = nc.subscribe('sensors.t1.temp', { max: 1 })
    await nc.flush()
    await hubInterest(b, 'sensors.t1.temp')
    const dev = await mqttClient(t, b.mqttUrl)
    await dev.publishAsync('sensors/t1/temp', '21.5', { qos: 1 })
    for await (const m of sub) {
      t.equal(m.string(), '21.5')
      t.equal(m.headers?.get('Nmqtt-Pub'), '1', 'headers travel (HMSG): the QoS header arrives')
    }
  })

  t.test('NATS publish on the hub reaches an MQTT subscriber at the edge', async (t) => {
    const dev = await mqttClient(t, b.mqttUrl)
    await dev.subscribeAsync('cmd/t1/+', { qos: 1 })
    const nc = await cloud(t)
    const got = messages(dev, 1, 5000)
    // The edge's LS+ travels to the hub asynchronously: publish until the first one lands.
    let n = 0
    const timer = setInterval(() => nc.publish('cmd.t1.reboot', `now${n++}`), 50)
    const [m] = await got
    clearInterval(timer)
    t.equal(m?.topic, 'cmd/t1/reboot')
    t.match(m?.payload, /^now\d+$/)
  })

  t.test('a hub request() answered by an edge NATS service', async (t) => {
    const en = await edge(t)
    en.subscribe('svc.time', { callback: (_e, m) => void m.respond(`edge:${m.string()}`) })
    await en.flush()
    const nc = await cloud(t)
    const r = await retryRequest(nc, 'svc.time', 'q')
    t.equal(r, 'edge:q')
  })

  t.test('a hub request() answered by an MQTT 5 device (Response Topic)', async (t) => {
    const dev = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
    dev.on('message', (_topic, payload, pk) => {
      const rt = pk.properties?.responseTopic
      if (rt) dev.publish(rt, `dev:${payload}`, { qos: 1 })
    })
    await dev.subscribeAsync('svc/dev1/ping', { qos: 1 })
    const nc = await cloud(t)
    t.equal(await retryRequest(nc, 'svc.dev1.ping', 'x'), 'dev:x')
  })

  t.test('an edge request() answered by a hub service', async (t) => {
    const nc = await cloud(t)
    nc.subscribe('cloud.echo', { callback: (_e, m) => void m.respond(`cloud:${m.string()}`) })
    await nc.flush()
    await hubInterest(b, 'cloud.echo')
    const en = await edge(t)
    const r = await en.request('cloud.echo', 'hi', { timeout: 3000 })
    t.equal(r.string(), 'cloud:hi', 'the reply comes back down through the link')
    const h = headers()
    h.set('X-Trace', 'abc')
    const r2 = await en.request('cloud.echo', 'h', { timeout: 3000, headers: h })
    t.equal(r2.string(), 'cloud:h')
  })

  t.test('hub queue-group members each get edge messages exactly once', async (t) => {
    const nc1 = await cloud(t)
    const nc2 = await cloud(t)
    const got: string[] = []
    for (const nc of [nc1, nc2]) nc.subscribe('work.jobs', { queue: 'workers', callback: (_e, m) => void got.push(m.string()) })
    await nc1.flush()
    await nc2.flush()
    await until(() => b.uplink!.remotes[0]!.link!.hubKeys.get('work.jobs workers')?.weight === 2, 5000, 'queue weight 2')
    const en = await edge(t)
    for (let i = 0; i < 100; i++) en.publish('work.jobs', String(i))
    await en.flush()
    await until(() => got.length >= 100, 5000, '100 jobs')
    await sleep(200)
    t.equal(got.length, 100, 'each message delivered to one member only')
    t.same([...new Set(got)].sort((a, b) => +a - +b), Array.from({ length: 100 }, (_, i) => String(i)), 'every message once')
  })

  t.test('an edge queue member takes edge messages; the hub group is not served twice', async (t) => {
    const en = await edge(t)
    const local: string[] = []
    en.subscribe('work.local', { queue: 'workers', callback: (_e, m) => void local.push(m.string()) })
    const nc = await cloud(t)
    const remote: string[] = []
    nc.subscribe('work.local', { queue: 'workers', callback: (_e, m) => void remote.push(m.string()) })
    await nc.flush()
    await en.flush()
    await until(() => b.uplink!.remotes[0]!.link!.hubKeys.has('work.local workers'), 5000, 'hub queue interest')
    for (let i = 0; i < 20; i++) en.publish('work.local', String(i))
    await en.flush()
    await until(() => local.length >= 20, 3000, 'local members')
    await sleep(200)
    t.equal(local.length, 20, 'local members take edge messages (nats-server prefers local members)')
    t.equal(remote.length, 0, 'the hub group gets none of them')
  })

  t.test('status: $SPRIG.leafz answers with the connected hub', async (t) => {
    const en = await edge(t)
    const r = await en.request('$SPRIG.leafz', '', { timeout: 2000 })
    const s = r.json<{ leafnodes: number; leafs: { name: string; state: string; url: string; is_spoke: boolean; hub_interest: number; reconnects: number }[] }>()
    t.equal(s.leafnodes, 1)
    t.equal(s.leafs[0]!.name, hub.name, 'hub server name')
    t.equal(s.leafs[0]!.state, 'connected')
    t.equal(s.leafs[0]!.url, hub.leafUrl)
    t.equal(s.leafs[0]!.is_spoke, true)
    t.ok(s.leafs[0]!.hub_interest > 0, 'counts the hub interest')
    t.same(b.uplink!.status().leafs[0]!.name, hub.name, 'uplink.status() is the same object')
    t.ok(b.logs.some((l) => /Leafnode remote 1: connected to hub "hub\d+"/.test(l)), 'the connect is logged at info')
  })

  t.test('interest: unsubscribing at the edge withdraws it at the hub', async (t) => {
    const en = await edge(t)
    const nc = await cloud(t)
    const sub = en.subscribe('temp.interest', { callback: (_e, m) => void m.respond('ok') })
    await en.flush()
    t.equal(await retryRequest(nc, 'temp.interest', 'x'), 'ok', 'the hub reaches the edge subscriber')
    sub.unsubscribe()
    await en.flush()
    let noResponders = false
    for (let i = 0; i < 50 && !noResponders; i++) {
      try {
        await nc.request('temp.interest', 'x', { timeout: 500 })
        await sleep(20)
      } catch (e) {
        noResponders = /no responders|503/i.test(`${(e as Error).message} ${(e as { code?: string }).code}`)
      }
    }
    t.ok(noResponders, 'after LS- the hub has no responders for it')
  })
}

function remoteDefaults() {
  return {
    no_randomize: false, deny_imports: [], deny_exports: [], allow_exports: [], allow_imports: [], map: [],
    buffer_subjects: [], buffer_max_msgs: 100_000, buffer_max_bytes: 16 << 20, buffer_policy: 'drop_oldest' as const, buffer_hold: 10_000,
  }
}

/** A request from the hub, retried until the edge's interest has reached the hub. */
async function retryRequest(nc: NatsConnection, subject: string, data: string): Promise<string> {
  for (let i = 0; ; i++) {
    try {
      return (await nc.request(subject, data, { timeout: 500 })).string()
    } catch (e) {
      if (i > 20) throw e
      await sleep(50)
    }
  }
}
