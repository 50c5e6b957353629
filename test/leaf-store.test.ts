// Store-and-forward: while the hub is down, edge publishes on subjects the hub had interest in
// wait in a bounded buffer and go up in order, once, when the link is back and the hub's
// interest is known again. Over the bound the oldest (or, by policy, the newest) are dropped
// and counted.

import t, { type Test } from 'tap'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import type { RemoteOptions } from '../src/options.ts'
import { REMOTE_DEFAULTS } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { haveHub, hubInterest, leafUp, startHub, until, type Hub } from './helpers/hub.ts'
import { natsClient, sleep } from './helpers/mqtt.ts'

async function setup(t: Test, remote: Partial<RemoteOptions> = {}): Promise<{ hub: Hub; b: TestBroker; cloud: NatsConnection; got: string[] }> {
  const hub = await startHub()
  const b = await startBroker({ leafnodes: { reconnect: 100, reconnect_max: 500, remotes: [{ ...REMOTE_DEFAULTS, urls: [hub.leafUrl], ...remote }] } })
  t.teardown(async () => {
    await b.stop()
    await hub.close()
  })
  await leafUp(b)
  // The cloud subscriber reconnects on its own when the hub comes back.
  const cloud = await connect({ servers: hub.url, reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 100 })
  t.teardown(() => cloud.close())
  const got: string[] = []
  cloud.subscribe('telemetry.>', { callback: (_e, m) => void got.push(m.string()) })
  await cloud.flush()
  await hubInterest(b, 'telemetry.>')
  return { hub, b, cloud, got }
}

if (haveHub(t)) {
  t.test('hub down: 10,000 edge messages arrive in order, once, after it comes back', async (t) => {
    const { hub, b, got } = await setup(t)
    const r = b.uplink!.remotes[0]!
    await hub.stop()
    await until(() => r.state !== 'connected', 5000, 'the link to drop')
    t.ok(b.logs.some((l) => /Leafnode remote 1: disconnected from hub/.test(l)), 'the drop is logged')
    const en = await natsClient(t, b.url)
    for (let i = 0; i < 10_000; i++) en.publish('telemetry.gw.temp', String(i))
    await en.flush()
    t.equal(r.buffer.length, 10_000, 'all 10,000 wait in the buffer')
    en.publish('other.subject', 'x') // no hub interest when it dropped: not buffered
    await en.flush()
    t.equal(r.buffer.length, 10_000, 'a subject the hub had no interest in is not buffered')
    await hub.restart()
    await until(() => got.length >= 10_000, 20_000, '10,000 messages at the hub')
    await sleep(300)
    t.equal(got.length, 10_000, 'nothing duplicated')
    t.same(got, Array.from({ length: 10_000 }, (_, i) => String(i)), 'all of them, in publish order')
    t.equal(r.buffer.length, 0, 'buffer empty')
    t.equal(r.buffer.dropped, 0, 'none dropped')
    t.equal(r.reconnects, 1, 'one reconnect counted')
  })

  t.test('over the bound, the oldest are dropped and counted', async (t) => {
    const { hub, b, got } = await setup(t, { buffer_max_msgs: 1000 })
    const r = b.uplink!.remotes[0]!
    await hub.stop()
    await until(() => r.state !== 'connected', 5000, 'the link to drop')
    const en = await natsClient(t, b.url)
    for (let i = 0; i < 1500; i++) en.publish('telemetry.gw.temp', String(i))
    await en.flush()
    t.equal(r.buffer.length, 1000)
    t.equal(r.buffer.dropped, 500, 'the count says how many were dropped')
    const st = b.uplink!.status().leafs[0]!
    t.equal(st.buffered_msgs, 1000, 'status: buffered')
    t.equal(st.dropped_msgs, 500, 'status: dropped')
    await hub.restart()
    await until(() => got.length >= 1000, 15_000, '1000 messages at the hub')
    await sleep(200)
    t.same(got, Array.from({ length: 1000 }, (_, i) => String(i + 500)), 'the newest 1000 arrive, in order')
  })

  t.test('drop_newest keeps the first ones; a byte bound applies too', async (t) => {
    const { hub, b, got } = await setup(t, { buffer_max_bytes: 100 * 40, buffer_policy: 'drop_newest' })
    const r = b.uplink!.remotes[0]!
    await hub.stop()
    await until(() => r.state !== 'connected', 5000, 'the link to drop')
    const en = await natsClient(t, b.url)
    // "telemetry.gw.temp" (17) + 23-byte payload = 40 bytes each: 100 fit.
    for (let i = 0; i < 150; i++) en.publish('telemetry.gw.temp', String(i).padStart(23, '0'))
    await en.flush()
    t.equal(r.buffer.length, 100)
    t.equal(r.buffer.dropped, 50)
    await hub.restart()
    await until(() => got.length >= 100, 15_000, '100 messages at the hub')
    t.same(got.map(Number), Array.from({ length: 100 }, (_, i) => i), 'the first 100 arrive')
  })

  t.test('buffer_subjects: buffered even without known hub interest', async (t) => {
    const hub = await startHub()
    const b = await startBroker({ leafnodes: { reconnect: 100, reconnect_max: 500, remotes: [{ ...REMOTE_DEFAULTS, urls: [hub.leafUrl], buffer_subjects: ['alarms.>'] }] } })
    t.teardown(async () => {
      await b.stop()
      await hub.close()
    })
    await leafUp(b)
    const r = b.uplink!.remotes[0]!
    await hub.stop()
    await until(() => r.state !== 'connected', 5000, 'the link to drop')
    const en = await natsClient(t, b.url)
    en.publish('alarms.fire', 'A')
    en.publish('telemetry.x', 'not listed')
    await en.flush()
    t.equal(r.buffer.length, 1, 'only the listed subject waits')
    await hub.restart()
    const cloud = await connect({ servers: hub.url })
    t.teardown(() => cloud.close())
    const sub = cloud.subscribe('alarms.>', { max: 1, timeout: 10_000 })
    try {
      for await (const m of sub) t.equal(m.string(), 'A', 'delivered once the hub shows interest (within buffer_hold)')
    } catch (e) {
      // Flaked once in CI under load (not reproduced): say what the uplink saw, for the next time.
      const s = r.status()
      const seen = { state: r.state, hub_interest: s.hub_interest, buffered: s.buffered_msgs, unconfirmed: s.unconfirmed_msgs, expired: s.expired_msgs, reconnects: s.reconnects, last_error: s.last_error }
      t.fail(`not delivered (${(e as Error).message}); uplink ${JSON.stringify(seen)}\nbroker log:\n${b.logs.filter((l) => /Leafnode|hub/i.test(l)).slice(-20).join('\n')}\nhub log:\n${hub.output().slice(-1500)}`)
    }
  })
}
