// Two remotes at once (two clouds), each with its own filters; nothing is relayed from one hub
// to the other through the gateway.

import t from 'tap'
import { REMOTE_DEFAULTS } from '../src/options.ts'
import { startBroker } from './helpers/broker.ts'
import { haveHub, hubInterest, leafUp, startHub } from './helpers/hub.ts'
import { natsClient, sleep } from './helpers/mqtt.ts'

if (haveHub(t)) {
  t.test('two clouds, each with its own export filter', async (t) => {
    const a = await startHub({ name: 'cloudA' })
    const c = await startHub({ name: 'cloudB' })
    t.teardown(() => Promise.all([a.close(), c.close()]))
    const b = await startBroker({
      leafnodes: {
        reconnect: 100,
        reconnect_max: 1000,
        remotes: [
          { ...REMOTE_DEFAULTS, urls: [a.leafUrl], allow_exports: ['telemetry.>'] },
          { ...REMOTE_DEFAULTS, urls: [c.leafUrl], allow_exports: ['alarms.>'] },
        ],
      },
    })
    t.teardown(() => b.stop())
    await leafUp(b, 10_000, 0)
    await leafUp(b, 10_000, 1)
    t.same(b.uplink!.status().leafs.map((l) => l.name), ['cloudA', 'cloudB'], 'both remotes in the status')

    const na = await natsClient(t, a.url)
    const nc = await natsClient(t, c.url)
    const gotA: string[] = []
    const gotC: string[] = []
    na.subscribe('>', { callback: (_e, m) => void gotA.push(m.subject) })
    nc.subscribe('>', { callback: (_e, m) => void gotC.push(m.subject) })
    await na.flush()
    await nc.flush()
    await hubInterest(b, '>', 5000, 0)
    await hubInterest(b, '>', 5000, 1)

    const en = await natsClient(t, b.url)
    en.publish('telemetry.t', '1')
    en.publish('alarms.a', '2')
    en.publish('logs.l', '3')
    await en.flush()
    // A cloud A publish the edge listens to must not reach cloud B through the gateway.
    const local: string[] = []
    en.subscribe('from.a', { callback: (_e, m) => void local.push(m.subject) })
    await en.flush()
    for (let i = 0; i < 20 && local.length === 0; i++) {
      na.publish('from.a', 'x')
      await sleep(50)
    }
    t.ok(local.length > 0, 'cloud A reaches the edge')
    await sleep(300)
    t.same(gotA.filter((s) => !s.startsWith('from.')), ['telemetry.t'], 'cloud A gets only its exports')
    t.same(gotC, ['alarms.a'], 'cloud B gets only its exports, and nothing relayed from cloud A')
  })
}
