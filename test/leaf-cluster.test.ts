// The uplink against a 3-node nats-server cluster: failover to another node when the one
// sprig is attached to dies (URLs learnt from the hub's INFO), interest restored, nothing
// duplicated; and two gateways on one cluster: commands fan out, telemetry goes up, no loops.

import t from 'tap'
import { connect } from '@nats-io/transport-node'
import { REMOTE_DEFAULTS } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { haveHub, leafUp, startCluster, until, type Cluster } from './helpers/hub.ts'
import { messages, mqttClient, natsClient, sleep } from './helpers/mqtt.ts'

async function gateway(c: Cluster, i: number, name: string): Promise<TestBroker> {
  return startBroker({
    server_name: name,
    mqtt: true,
    leafnodes: { reconnect: 100, reconnect_max: 1000, remotes: [{ ...REMOTE_DEFAULTS, urls: [c.leafUrls[i]!], no_randomize: true }] },
  })
}

if (haveHub(t)) {
  let c: Cluster
  t.before(async () => {
    c = await startCluster(3)
  })
  t.teardown(() => c?.close())

  t.test('kill the attached node: sprig reattaches to another, interest restored, no duplicates', async (t) => {
    const b = await gateway(c, 0, 'gw-failover')
    t.teardown(() => b.stop())
    await leafUp(b)
    const r = b.uplink!.remotes[0]!
    await until(() => r.urls.length === 3, 5000, 'the other nodes\' leafnode URLs from INFO')
    t.equal(r.urls.length, 3, 'learnt every node\'s leafnode URL')

    // Cloud side on n3 (never killed).
    const cloud = await natsClient(t, c.urls[2]!)
    const got: string[] = []
    cloud.subscribe('telemetry.>', { callback: (_e, m) => void got.push(m.string()) })
    await cloud.flush()
    const dev = await mqttClient(t, b.mqttUrl)
    await dev.subscribeAsync('cmd/#', { qos: 0 })
    await until(() => r.link?.hubKeys.has('telemetry.>') === true, 5000, 'hub interest')

    const attached = c.hubs.find((h) => h.leafUrl === r.status().url)!
    t.ok(attached, `attached to ${attached?.name}`)
    const killedAt = Date.now()
    await attached.kill()
    await until(() => r.state === 'connected' && r.status().url !== attached.leafUrl, 10_000, 'reattach')
    const took = Date.now() - killedAt
    t.ok(took < 5000, `reattached to ${r.status().url} in ${took} ms`)
    t.equal(r.reconnects, 1)

    // Interest restored both ways.
    await until(() => r.link?.hubKeys.has('telemetry.>') === true, 5000, 'hub interest after failover')
    const en = await natsClient(t, b.url)
    for (let i = 0; i < 100; i++) en.publish('telemetry.gw.t', String(i))
    await en.flush()
    await until(() => got.length >= 100, 5000, '100 at the cloud')
    const cmds = messages(dev, 1, 5000)
    let n = 0
    const timer = setInterval(() => cloud.publish('cmd.gw.reboot', String(n++)), 50)
    const [cmd] = await cmds
    clearInterval(timer)
    t.equal(cmd?.topic, 'cmd/gw/reboot', 'a cloud command reaches the device after failover')
    await sleep(300)
    t.same(got, Array.from({ length: 100 }, (_, i) => String(i)), 'telemetry after failover: all, in order, once')
    await attached.restart()
  })

  t.test('two gateways on one cluster: commands fan out, telemetry goes up, nothing loops', async (t) => {
    const g1 = await gateway(c, 0, 'gw1')
    const g2 = await gateway(c, 1, 'gw2')
    t.teardown(() => Promise.all([g1.stop(), g2.stop()]))
    await leafUp(g1)
    await leafUp(g2)
    const cloud = await connect({ servers: c.urls[2]! })
    t.teardown(() => cloud.close())
    const up: string[] = []
    cloud.subscribe('telemetry.>', { callback: (_e, m) => void up.push(`${m.subject}=${m.string()}`) })
    await cloud.flush()
    const d1 = await mqttClient(t, g1.mqttUrl)
    const d2 = await mqttClient(t, g2.mqttUrl)
    // Each gateway also listens to all telemetry locally, which would echo if anything looped.
    const l1 = await natsClient(t, g1.url)
    const seen1: string[] = []
    l1.subscribe('telemetry.>', { callback: (_e, m) => void seen1.push(m.subject) })
    await l1.flush()
    await d1.subscribeAsync('cmd/all', { qos: 1 })
    await d2.subscribeAsync('cmd/all', { qos: 1 })
    for (const g of [g1, g2]) await until(() => g.uplink!.remotes[0]!.link?.hubKeys.has('telemetry.>') === true, 5000, 'cloud interest at the gateway')
    // Wait until both gateways' cmd interest reached the cloud's node: probe with a request to each.
    await until(() => g2.uplink!.remotes[0]!.link?.hubKeys.has('telemetry.>') === true, 5000, 'gw1 interest seen by gw2')
    await sleep(500)
    const r1 = messages(d1, 2, 3000)
    const r2 = messages(d2, 2, 3000)
    cloud.publish('cmd.all', 'go')
    await cloud.flush()
    const [m1, m2] = await Promise.all([r1, r2])
    t.same(m1.map((m) => m.payload), ['go'], 'gateway 1 devices get the command once')
    t.same(m2.map((m) => m.payload), ['go'], 'gateway 2 devices get the command once')

    await d1.publishAsync('telemetry/gw1/temp', '1', { qos: 0 })
    await d2.publishAsync('telemetry/gw2/temp', '2', { qos: 0 })
    await until(() => up.length >= 2, 5000, 'both gateways\' telemetry at the cloud')
    await sleep(500)
    t.same(up.sort(), ['telemetry.gw1.temp=1', 'telemetry.gw2.temp=2'], 'each gateway\'s telemetry reaches the cloud once')
    t.same(seen1.sort(), ['telemetry.gw1.temp', 'telemetry.gw2.temp'], 'gateway 1 sees its own once and gateway 2\'s once: no loop')
    for (const g of [g1, g2]) t.equal(g.uplink!.remotes[0]!.state, 'connected', 'no loop-detected disconnects')
  })
}
