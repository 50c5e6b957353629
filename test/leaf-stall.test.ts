// Producer backpressure on the uplink: a fast publisher whose messages go to the hub is paused
// (its socket not read) while the link's queue to the hub is over its high-water mark, so
// nothing is dropped with the link up; a hub that stops reading holds publishers up for at
// most STALL_MAX_MS, and local-only traffic is never held.

import t from 'tap'
import { spawn } from 'node:child_process'
import type { NatsConnection } from '@nats-io/transport-node'
import { startBroker } from './helpers/broker.ts'
import { fakeHub, haveHub, hubInterest, leafUp, startHub, until } from './helpers/hub.ts'
import { natsClient, sleep } from './helpers/mqtt.ts'
import { STALL_MAX_MS } from '../src/leaf/remote.ts'

const remote = (url: string) => ({
  urls: [url], no_randomize: false, deny_imports: [], deny_exports: [], allow_exports: [], allow_imports: [], map: [],
  buffer_subjects: [], buffer_max_msgs: 100_000, buffer_max_bytes: 16 << 20, buffer_policy: 'drop_oldest' as const, buffer_hold: 10_000,
})

// 50 MB: three times the store-and-forward buffer (16 MiB), so dropping instead of pausing
// would show. Not more: the hub's subscriber is nats.js in this process, which also runs the
// broker; on a busy CI machine it fell behind 200 MB and the hub cut it off as a slow consumer.
const N = 50_000
/** A 256 KiB queue to the hub (max of max_pending and 2 x max_payload) fills often even on loopback. */
const SMALL_LINK = { max_pending: 256 << 10, max_payload: 64 << 10 }
const KIB = 1024

/** Counts what a hub subscriber gets on `subject` and checks the 4-byte sequence number in front. */
function receiver(nc: NatsConnection, subject: string): { count(): number; outOfOrder(): number } {
  let n = 0
  let bad = 0
  nc.subscribe(subject, {
    callback: (_e, m) => {
      const d = m.data
      const seq = (d[0]! << 24) | (d[1]! << 16) | (d[2]! << 8) | d[3]!
      if (seq !== n) bad++
      n++
    },
  })
  return { count: () => n, outOfOrder: () => bad }
}

// The publisher runs in its own process: in this one it would share the broker's event loop
// and could never outrun it. Each payload is 1 KiB with a big-endian sequence number in front.
const PUBLISHERS = {
  nats: `import { connect } from '@nats-io/transport-node'
const [url, subject, n] = process.argv.slice(1)
const nc = await connect({ servers: url })
for (let i = 0; i < Number(n); i++) { const p = new Uint8Array(1024); new DataView(p.buffer).setUint32(0, i); nc.publish(subject, p) }
await nc.flush(); await nc.close()`,
  mqtt: `import mqtt from 'mqtt'
const [url, topic, n] = process.argv.slice(1)
const c = await mqtt.connectAsync(url)
for (let i = 0; i < Number(n); i++) { const p = Buffer.alloc(1024); p.writeUInt32BE(i, 0); c.publish(topic, p, { qos: 0 }) }
await c.endAsync()`,
}

function publishFrom(kind: keyof typeof PUBLISHERS, url: string, subject: string, n: number): Promise<number | null> {
  const p = spawn(process.execPath, ['--input-type=module', '-e', PUBLISHERS[kind], url, subject, String(n)], { cwd: process.cwd(), stdio: ['ignore', 'inherit', 'inherit'] })
  return new Promise((r) => p.on('exit', (code) => r(code)))
}

if (haveHub(t)) {
  t.test('a fast NATS publisher through the uplink loses nothing (50k x 1 KiB)', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const b = await startBroker({ ...SMALL_LINK, leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [remote(hub.leafUrl)] } })
    t.teardown(() => b.stop())
    await leafUp(b)
    const cloud = await natsClient(t, hub.url)
    const rx = receiver(cloud, 'bulk.nats')
    await cloud.flush()
    await hubInterest(b, 'bulk.nats')
    t.equal(await publishFrom('nats', b.url, 'bulk.nats', N), 0, 'the publisher process finished')
    await until(() => rx.count() >= N, 120_000, `${N} messages at the hub (got ${rx.count()})`).catch(() => {})
    const st = b.uplink!.status().leafs[0]!
    t.equal(st.dropped_msgs, 0, 'nothing dropped')
    t.equal(rx.count(), N, 'all arrived')
    t.equal(rx.outOfOrder(), 0, 'in order')
    t.equal(st.stall_timeouts, 0, 'no stall ran into its bound')
    t.comment(`publisher paused ${st.stalls} times`)
  })

  t.test('a fast MQTT QoS 0 publisher through the uplink loses nothing', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const b = await startBroker({ mqtt: true, ...SMALL_LINK, leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [remote(hub.leafUrl)] } })
    t.teardown(() => b.stop())
    await leafUp(b)
    const cloud = await natsClient(t, hub.url)
    const rx = receiver(cloud, 'bulk.mqtt')
    await cloud.flush()
    await hubInterest(b, 'bulk.mqtt')
    const n = N / 2
    t.equal(await publishFrom('mqtt', b.mqttUrl, 'bulk/mqtt', n), 0, 'the publisher process finished')
    await until(() => rx.count() >= n, 120_000, `${n} messages at the hub`).catch(() => {})
    const st = b.uplink!.status().leafs[0]!
    t.equal(st.dropped_msgs, 0, 'nothing dropped')
    t.equal(rx.count(), n, 'all arrived')
    t.equal(rx.outOfOrder(), 0, 'in order')
    t.comment(`publisher paused ${st.stalls} times`)
  })
}

t.test('a hub that reads slowly: the publisher is paused, nothing is dropped', async (t) => {
  // Reads in bursts: every 2 MiB it stops reading for 100 ms, so the link backs up again and again.
  let got = 0
  const hub = await fakeHub(t, (c) => {
    let mark = 0
    c.sock.on('data', (d: Buffer) => {
      got += d.length
      if (got - mark < 2 << 20) return
      mark = got
      c.sock.pause()
      setTimeout(() => c.sock.resume(), 100)
    })
  })
  const b = await startBroker({ ...SMALL_LINK, leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [remote(`nats://127.0.0.1:${hub.port}`)] } })
  t.teardown(() => b.stop())
  await leafUp(b)
  await hubInterest(b, 'up.>')
  const n = 30_000
  const frame = 'LMSG up.slow 1024\r\n'.length + 1024 + 2
  const before = got
  t.equal(await publishFrom('nats', b.url, 'up.slow', n), 0, 'the publisher process finished')
  await until(() => got - before >= n * frame, 60_000, 'every message at the hub').catch(() => {})
  const st = b.uplink!.status().leafs[0]!
  t.ok(st.stalls > 0, `the publisher was paused (${st.stalls} times)`)
  t.equal(st.dropped_msgs, 0, 'nothing dropped')
  t.equal(st.out_msgs, n, 'every message went up')
  t.ok(got - before >= n * frame, 'the hub received all their bytes')
  t.equal(st.stall_timeouts, 0, 'no stall ran into its bound')
})

t.test('a hub that stops reading holds a publisher for at most the bound; local-only traffic is not held', async (t) => {
  // The fake hub announces LS+ up.> and then never reads again.
  const hub = await fakeHub(t, (c) => setTimeout(() => c.sock.pause(), 50))
  // A small link queue (2 MiB: 2 x max_payload) fills quickly.
  const b = await startBroker({ max_pending: 1 << 20, leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [remote(`nats://127.0.0.1:${hub.port}`)] } })
  t.teardown(() => b.stop())
  await leafUp(b)
  await hubInterest(b, 'up.>')
  await sleep(100)

  const rxc = await natsClient(t, b.url)
  const got: { subject: string; at: number }[] = []
  rxc.subscribe('local.>', { callback: (_e, m) => void got.push({ subject: m.subject, at: Date.now() }) })
  await rxc.flush()

  const flood = await natsClient(t, b.url)
  const other = await natsClient(t, b.url)
  const big = new Uint8Array(64 * KIB)
  const start = Date.now()
  for (let i = 0; i < 800; i++) flood.publish('up.x', big) // 50 MiB: far more than the link and the sockets hold
  flood.publish('local.flood', 'after')
  void flood.flush().catch(() => {})

  // While the flooder is held, another client's local traffic flows.
  await until(() => (b.uplink!.remotes[0]!.stalls ?? 0) > 0, 5000, 'the flooding publisher to be paused')
  const sent = Date.now()
  other.publish('local.other', 'x')
  await until(() => got.some((g) => g.subject === 'local.other'), 2000, 'local.other')
  const otherLag = got.find((g) => g.subject === 'local.other')!.at - sent
  t.ok(otherLag < 1000, `a client that does not publish to the hub is not held (${otherLag} ms)`)

  // The flooder itself runs again after the bound; its local message then arrives.
  await until(() => got.some((g) => g.subject === 'local.flood'), STALL_MAX_MS + 15_000, 'the flooder\'s local message')
  const floodLag = got.find((g) => g.subject === 'local.flood')!.at - start
  const st = b.uplink!.status().leafs[0]!
  t.ok(floodLag < STALL_MAX_MS + 8000, `the flooder was held about the bound, not until the hub reads (${floodLag} ms)`)
  t.ok(st.stall_timeouts >= 1, `the stall ran into its bound (${st.stall_timeouts})`)
  t.ok(st.dropped_msgs > 0, `what the stuck link could not take was buffered and dropped, counted (${st.dropped_msgs})`)
  t.equal(st.state, 'connected', 'the link itself stays up (PING timers decide about it)')
  t.ok(b.logs.some((l) => /has not drained the link/.test(l)), 'the timeout is logged')
  t.comment(`flooder's local message after ${floodLag} ms (bound ${STALL_MAX_MS} ms)`)
})
