// MQTT scenario family: the same raw-socket MQTT 3.1.1 load for sprig and mosquitto.
import { performance } from 'node:perf_hooks'
import { withConns, type Addr, type Metrics, type MetricSpec, type Scenario } from './model.ts'
import { closeMqtt, connectMqtt, sendPing, publishQos0, publishQos1, startCounting, subscribeMqtt, type MqttConn } from './mqtt-conn.ts'
import { waitUntil } from './nats-conn.ts'
import { procCpuSeconds, procStatusBytes, sleep } from './proc.ts'
import { fmtCount, fmtMB, fmtPct, fmtRate } from './report.ts'

export interface MqttLoadOpts {
  quick: boolean
  /** Idle connections for the memory-per-connection scenario. */
  conns: number
  /** Seconds of keepalive pings after the idle reading (0: none), then a reading again. */
  idlePings?: number
}

/** With --idle-pings: each idle connection sends a PINGREQ this often, as a device with a 30 s keepalive does. */
export const IDLE_PING_EVERY_MS = 30_000

// Full-run sizes: ~2-5 s per scenario and round for mosquitto on a small 2-core VM (it manages
// ~50-100k msgs/s there: one send() per outgoing packet), ~1 s for a broker 3× faster.
const COUNTS = {
  qos0: { 16: 400_000, 1024: 200_000 },
  qos1: { 16: 150_000, 1024: 100_000 },
  fanout: { 16: 100_000, 1024: 60_000 },
} as const

const SIZES = [16, 1024] as const
const FANOUT = 4
/** Unacknowledged QoS 1 PUBLISHes the publisher keeps in flight. */
export const QOS1_WINDOW = 100
/** Connections opened concurrently by the idle-connection scenario. */
const OPENERS = 16
/**
 * Settle before reading RSS, with no client sending: longer than sprig on Bun takes to hand a
 * connection burst's garbage back (the burst's end, 250 ms; half a second of quiet before
 * Bun.shrink(), targets/runtime.ts; then seconds while the allocators return what it freed,
 * MIMALLOC_PURGE_DELAY in targets/bun.ts among them), so it is not counted as the
 * connections' memory. 3 s until 2026-12-06, when the shrink came at the first quiet check
 * (docs/benchmarks.md, 2026-12-06 23:20).
 */
const IDLE_SETTLE_MS = 8000
const IDLE_MS = 5000
const STALL_MS = 15_000

/** Targets from the MQTT adapter's brief, shown in the header and the summary. */
export const MQTT_TARGETS = 'QoS 0 ≥ 3× mosquitto, QoS 1 ≥ 1.5× mosquitto, ≤ 4 KB RSS per idle connection for the first 1,000, ≤ 2 KB at 10,000'

function sizeLabel(n: number): string {
  return n >= 1024 ? `${n / 1024}KiB` : `${n}B`
}

/** QoS 0 batch: ~10k small messages, fewer big ones so a batch stays ≤ ~1 MiB. */
function batchOf(payload: number, count: number): number {
  return Math.max(1, Math.min(10_000, Math.floor((1 << 20) / (payload + 20)), count))
}

/** The slowest subscriber may trail the publisher by this many messages (~4 batches). */
function maxLag(payload: number, count: number, qos: number): number {
  return qos ? Math.max(4 * QOS1_WINDOW, Math.min(10_000, Math.floor((4 << 20) / (payload + 20)))) : 4 * batchOf(payload, count)
}

export function flowControlNote(): string {
  return (
    `QoS 0: batches of ≤10k msgs (≤1 MiB) per write, each ending in a PINGREQ, ≤2 PINGRESPs outstanding, ` +
    `and the publisher never more than 4 batches ahead of the slowest subscriber; ` +
    `QoS 1: ${QOS1_WINDOW} unacked PUBLISHes in flight, ≤max(400, 4 MiB) msgs ahead of the subscriber, which PUBACKs every msg (one write per read)`
  )
}


/** One publisher at `qos`, `nsubs` frame-counting subscribers at the same QoS on one topic. */
async function runFan(addr: Addr, payload: number, count: number, nsubs: number, qos: 0 | 1): Promise<Metrics> {
  return withConns(closeMqtt, async (track) => {
    const topic = `bench/fan/q${qos}`
    const subs: MqttConn[] = []
    for (let i = 0; i < nsubs; i++) {
      const s = track(await connectMqtt(addr))
      await subscribeMqtt(s, topic, qos)
      subs.push(s)
    }
    const counters = subs.map((s) => startCounting(s, topic, payload, qos))
    const pub = track(await connectMqtt(addr))
    const allIn = (): boolean => counters.every((k) => k.frames >= count) || counters.some((k) => k.bad !== '')
    const opts = {
      topic,
      payload,
      count,
      batch: batchOf(payload, count),
      maxAhead: 2,
      window: QOS1_WINDOW,
      maxLag: maxLag(payload, count, qos),
      received: () => {
        let m = Infinity
        for (const k of counters) m = Math.min(m, k.bad ? Infinity : k.frames)
        return m
      },
      watch: subs,
      timeoutMs: STALL_MS,
    }
    const reads0 = subs.reduce((a, s) => a + s.reads, 0)
    const pubDone = qos ? publishQos1(pub, opts) : publishQos0(pub, opts)
    pubDone.catch(() => subs.forEach((s) => s.sock.destroy()))
    const [p, w] = await Promise.all([pubDone, waitUntil([...subs, pub], allIn, IDLE_MS, true)])
    const bad = counters.find((k) => k.bad)
    if (bad) throw new Error(bad.bad)
    const got = counters.map((k) => k.frames)
    const delivered = got.reduce((a, b) => a + b, 0)
    const active = counters.filter((k) => k.frames > 0)
    const secs = (Math.max(...active.map((k) => k.lastAt)) - Math.min(...active.map((k) => k.firstAt))) / 1000
    const why = w === 'closed' ? `subscriber disconnected: ${subs.map((s) => s.err).filter(Boolean)[0] ?? '?'}` : `nothing received for ${IDLE_MS} ms`
    if (delivered === 0) throw new Error(`no messages delivered (${why})`)
    const notes: string[] = []
    if (w !== 'ok') notes.push(`incomplete: ${why}`)
    const errs = [...subs, pub].map((c) => c.err).filter((e) => e && e !== 'connection closed by server')
    if (errs.length) notes.push(`error: ${errs[0]}`)
    const m: Metrics = {
      msgs: count,
      msgsPerSec: delivered / secs,
      mbPerSec: (delivered * payload) / 1e6 / secs,
      pubMsgsPerSec: count / ((p.endAt - p.startAt) / 1000),
      lost: nsubs * count - delivered,
      msgsPerRead: delivered / Math.max(1, subs.reduce((a, s) => a + s.reads, 0) - reads0),
    }
    if (nsubs > 1) {
      m.perSub = got.every((g) => g === count) ? `all ${nsubs} 100%` : got.map((g) => fmtPct(g / count)).join(' ')
      m.slowestSubPerSec = Math.min(...counters.map((k) => (k.frames ? k.frames / ((k.lastAt - k.firstAt) / 1000) : 0)))
    }
    if (notes.length) m.note = notes.join('; ')
    return m
  })
}

/**
 * Opens `n` clean-session connections, each subscribed at QoS 1 to its own topic, `OPENERS` at
 * a time, and reads the server's VmRSS before and after (each after IDLE_SETTLE_MS at rest); then
 * closes them and opens `n` again. The first batch shows what a fresh server grows by (with
 * one-time costs: code the JIT compiles, heap the runtime grows and keeps); the second what
 * connections cost once the server has held that many before (memory is reused).
 */
async function runIdle(addr: Addr, n: number, pingSecs = 0): Promise<Metrics> {
  if (!addr.pid) throw new Error('server pid unknown: cannot read its RSS')
  const pid = addr.pid
  const conns: MqttConn[] = []
  // With pings, a control: the same server beside it, with the warm-up connection only, read at
  // the same moments. What it grows by over those minutes is the runtime's own (its collector and
  // compilers coming back from the disk after a page-out), not the devices'.
  const control = pingSecs > 0 && addr.twin ? await addr.twin() : null
  try {
    // A warm-up connection, so one-time costs (first accept, lazily built tables) aren't per-connection.
    for (const a of control ? [addr, control] : [addr]) {
      const warm = await connectMqtt(a)
      await subscribeMqtt(warm, 'bench/idle/warm', 1)
      closeMqtt(warm)
    }
    await sleep(IDLE_SETTLE_MS)
    const before = procStatusBytes(pid, 'VmRSS')
    const anonBefore = procStatusBytes(pid, 'RssAnon')
    const controlBefore = control ? procStatusBytes(control.pid, 'VmRSS') : NaN
    const t0 = performance.now()
    const cpu0 = procCpuSeconds(pid)
    await openIdle(addr, n, conns, 'a')
    const openSecs = (performance.now() - t0) / 1000
    // What a fleet reconnecting at once costs the server: accept, CONNECT, SUBSCRIBE, PINGREQ.
    const openCpu = procCpuSeconds(pid) - cpu0
    await sleep(IDLE_SETTLE_MS)
    const after = procStatusBytes(pid, 'VmRSS')
    const anonAfter = procStatusBytes(pid, 'RssAnon')
    const pinging = pingSecs > 0 ? await pingIdle(conns, pingSecs) : 0
    const pinged = pingSecs > 0 ? procStatusBytes(pid, 'VmRSS') : NaN
    const anonPinged = pingSecs > 0 ? procStatusBytes(pid, 'RssAnon') : NaN
    const controlGrew = control ? procStatusBytes(control.pid, 'VmRSS') - controlBefore : NaN
    for (const c of conns) closeMqtt(c)
    conns.length = 0
    await sleep(IDLE_SETTLE_MS)
    const closed = procStatusBytes(pid, 'VmRSS')
    await openIdle(addr, n, conns, 'b')
    await sleep(IDLE_SETTLE_MS)
    const again = procStatusBytes(pid, 'VmRSS')
    return {
      conns: n,
      kbPerConn: (after - before) / 1024 / n,
      kbAnonPerConn: (anonAfter - anonBefore) / 1024 / n,
      kbPerConnAgain: (again - closed) / 1024 / n,
      ...(pingSecs > 0 ? { kbPerConnPinging: (pinged - before) / 1024 / n, kbAnonPerConnPinging: (anonPinged - anonBefore) / 1024 / n, pingsPerSec: pinging } : {}),
      ...(control ? { kbPerConnPingingNet: (pinged - before - controlGrew) / 1024 / n, controlGrewMiB: controlGrew / 2 ** 20 } : {}),
      rssBefore: before / 2 ** 20,
      rssAfter: after / 2 ** 20,
      rssClosed: closed / 2 ** 20,
      connsPerSec: n / openSecs,
      cpuUsPerConn: (openCpu * 1e6) / n,
    }
  } finally {
    for (const c of conns) c.sock.destroy()
    await control?.stop()
  }
}

/**
 * Idle devices are not silent: each pings at its keepalive. For `secs`, every connection sends a
 * PINGREQ every IDLE_PING_EVERY_MS, spread evenly; the answers are checked. On Bun this is what
 * gets the read path compiled by the top tier again after the burst's page-out (minutes
 * later, at these rates), so the reading after it is the one a fleet lives with. Returns the
 * pings per second sent.
 */
async function pingIdle(conns: MqttConn[], secs: number): Promise<number> {
  const n = conns.length
  const gap = IDLE_PING_EVERY_MS / n
  const t0 = performance.now()
  let sent = 0
  while (performance.now() - t0 < secs * 1000) {
    const due = Math.floor((performance.now() - t0) / gap)
    for (; sent < due; sent++) sendPing(conns[sent % n]!)
    await sleep(50)
  }
  await sleep(1000)
  const answered = conns.reduce((a, c) => a + c.pingResps, 0) - n // the n of openIdle's check
  if (answered < sent) throw new Error(`${sent - answered} of ${sent} keepalive PINGREQs unanswered: ${conns.map((c) => c.err).find(Boolean) ?? 'timeout'}`)
  return sent / secs
}

/** Opens n idle subscribed connections into `conns` and checks that each answers PINGREQ. */
async function openIdle(addr: Addr, n: number, conns: MqttConn[], tag: string): Promise<void> {
  let next = 0
  const opener = async (): Promise<void> => {
    while (next < n) {
      const i = next++
      const c = await connectMqtt(addr, 10_000, `sprig-bench-idle-${process.pid}-${tag}${i}`)
      conns.push(c)
      await subscribeMqtt(c, `bench/idle/${i}`, 1)
    }
  }
  await Promise.all(Array.from({ length: Math.min(OPENERS, n) }, opener))
  // Every connection answers a PINGREQ: the server still has them all. One wait with a
  // moving index, not one per connection (every socket event re-checks every wait).
  for (const c of conns) sendPing(c)
  let idx = 0
  await waitUntil([], () => {
    while (idx < conns.length && conns[idx]!.pingResps >= 1) idx++
    return idx === conns.length || conns[idx]!.err !== ''
  }, 10_000)
  const dead = conns.filter((c) => c.pingResps < 1).length
  if (dead) throw new Error(`${dead} of ${n} idle connections did not answer PINGREQ: ${conns.map((c) => c.err).find(Boolean) ?? 'timeout'}`)
}

export function mqttScenarios(o: MqttLoadOpts): Scenario[] {
  const scale = (n: number): number => (o.quick ? Math.max(1000, Math.round(n / 10)) : n)
  const out: Scenario[] = []
  const add = (s: Omit<Scenario, 'kind'>): void => {
    out.push({ kind: 'mqtt', ...s })
  }
  const rateSpecs: MetricSpec[] = [
    { key: 'msgsPerSec', label: 'msgs/s', fmt: fmtRate, better: 'higher' },
    { key: 'mbPerSec', label: 'MB/s (payload)', fmt: fmtMB, better: 'higher' },
    { key: 'pubMsgsPerSec', label: 'publisher msgs/s', fmt: fmtRate },
    { key: 'lost', label: 'lost msgs', fmt: fmtCount, agg: 'max' },
    { key: 'msgsPerRead', label: 'msgs per subscriber read', fmt: (v) => v.toFixed(1) },
  ]
  // First, while the server is fresh: memory is the cleanest before any buffers have grown.
  add({
    id: `mqtt-idle-conns ${o.conns}`,
    describe: `${fmtCount(o.conns)} clean-session connections, each SUBSCRIBEd at QoS 1 to bench/idle/<i>, ${OPENERS} opened at a time; server VmRSS before/after, each after ${IDLE_SETTLE_MS / 1000} s at rest;${o.idlePings ? ` then ${o.idlePings} s of keepalive pings, one per connection every ${IDLE_PING_EVERY_MS / 1000} s, and VmRSS again, with a control server's beside it (the same server with no devices, read at the same moments);` : ''} then closed and ${fmtCount(o.conns)} opened again (2nd batch)`,
    metrics: [
      { key: 'kbPerConn', label: 'KB RSS per idle conn', fmt: (v) => v.toFixed(1), better: 'lower' },
      // The rest is file-backed: the server's own executable paged in. On Bun the first
      // connections page in megabytes of its optimizing compiler (FTL), once (docs/benchmarks.md).
      { key: 'kbAnonPerConn', label: 'of which anonymous (KB)', fmt: (v) => v.toFixed(1) },
      // No ratio: mosquitto's second batch is ~0 KB, which makes any ratio meaningless.
      { key: 'kbPerConnAgain', label: 'KB RSS per idle conn, 2nd batch', fmt: (v) => v.toFixed(1) },
      ...(o.idlePings
        ? [
            { key: 'kbPerConnPinging', label: `KB RSS per idle conn after ${o.idlePings} s of pings`, fmt: (v: number) => v.toFixed(1), better: 'lower' as const },
            { key: 'kbAnonPerConnPinging', label: 'of which anonymous, after pings (KB)', fmt: (v: number) => v.toFixed(1) },
            { key: 'pingsPerSec', label: 'keepalive PINGREQs /s', fmt: (v: number) => v.toFixed(0) },
            // A control server (Addr.twin) with no devices, read at the same moments: its growth
            // is the runtime's own over those minutes, taken out here.
            { key: 'kbPerConnPingingNet', label: 'the same, less a control server\'s growth (KB)', fmt: (v: number) => v.toFixed(1), better: 'lower' as const },
            { key: 'controlGrewMiB', label: 'control server grew by (MiB)', fmt: (v: number) => v.toFixed(1) },
          ]
        : []),
      { key: 'rssBefore', label: 'RSS before (MiB)', fmt: fmtMB },
      { key: 'rssAfter', label: 'RSS with conns (MiB)', fmt: fmtMB },
      { key: 'rssClosed', label: 'RSS after close (MiB)', fmt: fmtMB },
      { key: 'connsPerSec', label: 'conns+SUBACK /s', fmt: fmtRate, better: 'higher' },
      { key: 'cpuUsPerConn', label: 'server CPU µs per conn opened', fmt: (v) => v.toFixed(0), better: 'lower' },
    ],
    headline: 'kbPerConn',
    // Issue 15: ≤ 4 KB each for the first 1,000 connections of a fresh server, ≤ 2 KB at 10,000.
    target: o.conns >= 10_000 ? { max: 2, text: '≤ 2 KB' } : { max: 4, text: '≤ 4 KB' },
    params: { conns: o.conns, openers: OPENERS, ...(o.idlePings ? { idlePings: o.idlePings, pingEveryMs: IDLE_PING_EVERY_MS } : {}) },
    run: (a) => runIdle(a, o.conns, o.idlePings),
  })
  for (const size of SIZES) {
    const c = scale(COUNTS.qos0[size])
    add({
      id: `mqtt-qos0 ${sizeLabel(size)}`,
      describe: `1 publisher → 1 subscriber at QoS 0, ${fmtCount(c)} msgs of ${size} B; rate at the subscriber, first to last message`,
      metrics: rateSpecs,
      headline: 'msgsPerSec',
      target: { ratio: 3, text: '≥ 3×' },
      params: { payload: size, msgs: c, qos: 0, publishers: 1, subscribers: 1, batch: batchOf(size, c), maxLag: maxLag(size, c, 0) },
      run: (a) => runFan(a, size, c, 1, 0),
      warm: (a, f) => runFan(a, size, Math.round(c * f), 1, 0),
    })
  }
  for (const size of SIZES) {
    const c = scale(COUNTS.qos1[size])
    add({
      id: `mqtt-qos1 ${sizeLabel(size)}`,
      describe: `1 publisher (${QOS1_WINDOW} unacked) → 1 subscriber at QoS 1 (PUBACKs every msg), ${fmtCount(c)} msgs of ${size} B; rate at the subscriber`,
      metrics: rateSpecs,
      headline: 'msgsPerSec',
      target: { ratio: 1.5, text: '≥ 1.5×' },
      params: { payload: size, msgs: c, qos: 1, publishers: 1, subscribers: 1, window: QOS1_WINDOW, maxLag: maxLag(size, c, 1) },
      run: (a) => runFan(a, size, c, 1, 1),
      warm: (a, f) => runFan(a, size, Math.round(c * f), 1, 1),
    })
  }
  for (const size of SIZES) {
    const c = scale(COUNTS.fanout[size])
    add({
      id: `mqtt-fan-out-1x${FANOUT} ${sizeLabel(size)}`,
      describe: `1 publisher → ${FANOUT} subscribers at QoS 0, ${fmtCount(c)} msgs of ${size} B each; delivered msgs/s summed over subscribers`,
      metrics: [
        { key: 'msgsPerSec', label: 'delivered msgs/s', fmt: fmtRate, better: 'higher' },
        { key: 'mbPerSec', label: 'delivered MB/s', fmt: fmtMB, better: 'higher' },
        { key: 'slowestSubPerSec', label: 'slowest sub msgs/s', fmt: fmtRate },
        { key: 'perSub', label: 'per-sub completion', fmt: String },
        { key: 'pubMsgsPerSec', label: 'publisher msgs/s', fmt: fmtRate },
        { key: 'lost', label: 'lost deliveries', fmt: fmtCount, agg: 'max' },
        { key: 'msgsPerRead', label: 'msgs per subscriber read', fmt: (v) => v.toFixed(1) },
      ],
      headline: 'msgsPerSec',
      target: { ratio: 3, text: '≥ 3×' },
      params: { payload: size, msgs: c, qos: 0, publishers: 1, subscribers: FANOUT, batch: batchOf(size, c), maxLag: maxLag(size, c, 0) },
      run: (a) => runFan(a, size, c, FANOUT, 0),
      warm: (a, f) => runFan(a, size, Math.round(c * f), FANOUT, 0),
    })
  }
  return out
}
