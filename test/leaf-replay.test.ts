// The uplink after an outage, against a real nats-server hub: an unpaced backlog does not hold
// back new messages (replay_order "interleave": they go ahead of it, each in order; "strict":
// behind it), and with the store off, messages sent straight to a live link are kept until the
// hub confirms them, so a hub killed mid-stream loses none of them (resends counted).

import t, { type Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { connect } from '@nats-io/transport-node'
import { REMOTE_DEFAULTS, type RemoteOptions } from '../src/options.ts'
import { startBroker } from './helpers/broker.ts'
import { haveHub, hubInterest, leafUp, startHub, until } from './helpers/hub.ts'
import { natsClient, sleep } from './helpers/mqtt.ts'

const MB = 1024 * 1024
const BACKLOG = 40_000
const PAD = 'x'.repeat(400)
const LIVE = 20
/**
 * The uplink's pace through the throttling proxy: a slow link (the 16 MB backlog takes ~4 s).
 * The OS socket buffers between sprig and the proxy hold a few MB of backlog that live messages
 * cannot overtake, as on a real uplink.
 */
const LINK_BYTES_PER_S = 4 * MB

/**
 * A TCP proxy to the hub's leafnode port that lets the spoke's bytes through at `rate` bytes per
 * second (a cellular uplink), reading no more while 64 KiB wait. The hub's side goes straight.
 */
async function slowLink(t: Test, hubPort: number, rate: number): Promise<number> {
  const server = net.createServer((c) => {
    const up = net.connect(hubPort, '127.0.0.1')
    const queue: Buffer[] = []
    let queued = 0
    const tick = setInterval(() => {
      let budget = (rate * 10) / 1000
      while (budget > 0 && queue.length > 0) {
        const head = queue[0]!
        const n = Math.min(head.length, budget)
        up.write(head.subarray(0, n))
        budget -= n
        queued -= n
        if (n === head.length) queue.shift()
        else queue[0] = head.subarray(n)
      }
      if (queued < 64 * 1024) c.resume()
    }, 10)
    c.on('data', (d) => {
      queue.push(d)
      queued += d.length
      if (queued >= 64 * 1024) c.pause()
    })
    up.on('data', (d) => c.write(d))
    const end = (): void => {
      clearInterval(tick)
      c.destroy()
      up.destroy()
    }
    c.on('close', end)
    up.on('close', end)
    c.on('error', () => {})
    up.on('error', () => {})
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => server.close())
  return (server.address() as net.AddressInfo).port
}

async function replay(t: Test, disk: boolean, order: RemoteOptions['replay_order']): Promise<void> {
  const hub = await startHub()
  t.teardown(() => hub.close())
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-replay-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const port = await slowLink(t, hub.leafPort, LINK_BYTES_PER_S)
  const remote = { ...REMOTE_DEFAULTS, urls: [`nats://127.0.0.1:${port}`], buffer_subjects: ['t.>'], buffer_max_msgs: 1_000_000, buffer_max_bytes: 256 * MB, replay_order: order }
  const b = await startBroker({
    ...(disk ? { store: { dir, sync_interval: 1000, max_bytes: 512 * MB } } : {}),
    leafnodes: { reconnect: 100, reconnect_max: 300, remotes: [remote] },
  })
  t.teardown(() => b.stop())
  await leafUp(b)
  const r = b.uplink!.remotes[0]!
  // The spoke must not learn the hub's own leafnode URL (INFO) and go around the proxy.
  r.onUrls = () => {}
  r.urls = r.urls.slice(0, 1)
  await hub.stop()
  await until(() => r.state !== 'connected', 5000, 'the link to drop')
  const en = await natsClient(t, b.url)
  for (let i = 0; i < BACKLOG; i++) {
    en.publish('t.backlog', `${i} ${PAD}`)
    if (i % 5_000 === 4_999) await en.flush()
  }
  await en.flush()
  t.equal(r.buffer.unsent, BACKLOG, `a backlog of ${BACKLOG} messages`)

  await hub.restart()
  const cloud = await connect({ servers: hub.url })
  t.teardown(() => cloud.close())
  const got: string[] = []
  let backlogSeen = 0
  let backlogDone = 0
  let firstAt = 0
  /** Backlog messages that had arrived when each live message did. */
  const before: number[] = []
  cloud.subscribe('t.>', {
    callback: (_e, m) => {
      if (m.subject === 't.live') before.push(backlogSeen)
      else backlogSeen++
      if (backlogSeen === BACKLOG) backlogDone = Date.now()
      if (backlogSeen === 1) firstAt = Date.now()
      got.push(m.string().split(' ')[0]!)
    },
  })
  await cloud.flush()
  // The replay starts once the link is up with the hub's interest; new messages from then on.
  await hubInterest(b, 't.>')
  await until(() => r.state === 'connected', 10_000, 'the link to be up')
  const t0 = Date.now()
  for (let i = 0; i < LIVE; i++) {
    en.publish('t.live', `live${i}`)
    await sleep(5)
  }
  await en.flush()
  await until(() => before.length === LIVE, 60_000, 'the live messages')
  const liveMs = Date.now() - t0
  await until(() => got.length >= BACKLOG + LIVE, 60_000, 'the backlog and the live messages')
  await sleep(200)
  const live = got.filter((x) => x.startsWith('live'))
  t.same(live, Array.from({ length: LIVE }, (_, i) => `live${i}`), 'every live message, in order, once', { before })
  const back = got.filter((x) => !x.startsWith('live'))
  t.equal(back.length, BACKLOG, 'the whole backlog, once')
  let disorder = 0
  for (let i = 0; i < back.length; i++) if (back[i] !== String(i)) disorder++
  t.equal(disorder, 0, 'the backlog in order')
  t.comment(
    `${disk ? 'disk' : 'memory'}, ${order}: backlog messages at the hub before live message 1: ${before[0]}, before the last: ${before[LIVE - 1]} ` +
      `(of ${BACKLOG}); all live messages in ${liveMs} ms, the backlog in ${backlogDone - t0} ms, first backlog message ${firstAt - t0} ms`,
  )
  if (order === 'strict') {
    t.ok(before.every((n) => n === BACKLOG), 'strict: every live message after the whole backlog')
  } else {
    t.ok(before[0]! < BACKLOG / 2, `the first live message went ahead of most of the backlog (${before[0]} of ${BACKLOG} before it)`)
    t.ok(before[LIVE - 1]! < BACKLOG, `the last live message too (${before[LIVE - 1]} of ${BACKLOG} before it)`)
    t.ok(liveMs < (backlogDone - t0) / 2, `the live messages were all there in ${liveMs} ms, the backlog took ${backlogDone - t0} ms`)
  }
  await until(() => r.buffer.length === 0, 10_000, 'everything confirmed')
  t.equal(r.buffer.resent, 0, 'nothing resent (no link loss)')
}

if (haveHub(t)) {
  t.test('memory buffer, interleave: live messages go ahead of an unpaced backlog', (t) => replay(t, false, 'interleave'))
  t.test('disk spool, interleave: live messages go ahead of an unpaced backlog', (t) => replay(t, true, 'interleave'))
  t.test('memory buffer, strict: live messages wait behind the backlog', (t) => replay(t, false, 'strict'))

  t.test('store off: a hub killed mid-stream loses nothing sent while the link was up; resends counted', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const b = await startBroker({ leafnodes: { reconnect: 100, reconnect_max: 300, remotes: [{ ...REMOTE_DEFAULTS, urls: [hub.leafUrl], buffer_subjects: ['t.>'] }] } })
    t.teardown(() => b.stop())
    await leafUp(b)
    const r = b.uplink!.remotes[0]!
    const cloud = await connect({ servers: hub.url, reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 50 })
    t.teardown(() => cloud.close())
    const got: number[] = []
    cloud.subscribe('t.>', { callback: (_e, m) => void got.push(Number(m.string())) })
    await cloud.flush()
    await hubInterest(b, 't.>')
    const en = await natsClient(t, b.url)
    // Publish in bursts until the hub is killed (SIGKILL: whatever it had not processed is gone).
    let killed = false
    let published = 0
    const pub = (async () => {
      while (!killed) {
        for (let k = 0; k < 200; k++) en.publish('t.n', String(published++))
        await sleep(1)
      }
      await en.flush()
    })()
    await until(() => got.length >= 20_000, 20_000, '20,000 messages at the hub')
    await hub.kill()
    killed = true
    await pub
    const upAtKill = published
    await until(() => r.state !== 'connected', 5000, 'the link to drop')
    await sleep(300)
    await hub.restart()
    await until(() => new Set(got).size >= upAtKill, 30_000, `all ${upAtKill} published messages at the hub`).catch(() => {})
    await sleep(300)
    const have = new Set(got)
    let missing = 0
    for (let i = 0; i < upAtKill; i++) if (!have.has(i)) missing++
    const st = r.status()
    const dups = got.length - have.size
    t.comment(`${upAtKill} published, ${got.length} arrivals, ${dups} duplicates, resent_msgs ${st.resent_msgs}, unkept_msgs ${st.unkept_msgs}`)
    t.equal(missing, 0, `every one of the ${upAtKill} messages reached the hub subscriber`)
    t.ok(st.resent_msgs > 0, 'the unconfirmed window was sent again (resent_msgs)')
    t.ok(dups <= st.resent_msgs, 'duplicates only from the resent window')
    t.equal(st.unkept_msgs, 0, 'every message sent was kept until confirmed')
    await until(() => r.buffer.length === 0, 10_000, 'everything confirmed')
  })
}
