// NATS scenario family: the same raw-socket load for sprig and nats-server.
import { performance } from 'node:perf_hooks'
import { withConns, type Addr, type Metrics, type MetricSpec, type Scenario } from './model.ts'
import { close, connectNats, msgFrameSize, publish, startCounting, subscribe, waitUntil, type NatsConn } from './nats-conn.ts'
import { fmtCount, fmtMB, fmtPct, fmtRate, fmtUs } from './report.ts'

export interface NatsLoadOpts {
  quick: boolean
}

// Full-run sizes: ~1-2 s per scenario and round for nats-server on a small 2-core VM, a few
// seconds for a broker doing ~1M small msgs/s. --quick divides by 10 so the whole matrix stays
// well under a minute.
const COUNTS = {
  pub: { 16: 4_000_000, 1024: 800_000 },
  pubsub: { 16: 2_000_000, 1024: 400_000 },
  fanout: { 16: 600_000, 1024: 150_000 },
  reqrep: { 16: 10_000, 1024: 10_000 },
} as const

const SIZES = [16, 1024] as const

/** A subscriber that has seen no byte for this long is done (its shortfall is reported as loss). */
const IDLE_MS = 5000
/** Any single wait on the server (PONG, drain, reply) longer than this is a failure. */
const STALL_MS = 15_000
/** A request without a reply for this long fails the scenario. */
const REPLY_MS = 5000
const FANOUT = 4

function sizeLabel(n: number): string {
  return n >= 1024 ? `${n / 1024}KiB` : `${n}B`
}

// ~10k messages per PING for small payloads, fewer for big ones so at most ~2 MiB is in flight.
function pingEvery(payload: number, count: number): number {
  const frame = payload + 20
  return Math.max(1, Math.min(10_000, Math.floor((1 << 20) / frame), count))
}

const rateSpecs: MetricSpec[] = [
  { key: 'msgsPerSec', label: 'msgs/s', fmt: fmtRate, better: 'higher' },
  { key: 'mbPerSec', label: 'MB/s (payload)', fmt: fmtMB, better: 'higher' },
]


async function runPubOnly(addr: Addr, payload: number, count: number): Promise<Metrics> {
  return withConns(close, async (track) => {
    const pub = track(await connectNats(addr))
    const r = await publish(pub, { subject: 'bench.pub', payload, count, pingEvery: pingEvery(payload, count), maxAhead: 2, timeoutMs: STALL_MS })
    const secs = (r.endAt - r.startAt) / 1000
    return { msgs: count, msgsPerSec: count / secs, mbPerSec: (count * payload) / 1e6 / secs }
  })
}

/** One publisher, `nsubs` byte-counting subscribers on the same subject. */
async function runFan(addr: Addr, payload: number, count: number, nsubs: number): Promise<Metrics> {
  return withConns(close, async (track) => {
    const subject = 'bench.fan'
    const { header, frame } = msgFrameSize(subject, '1', payload)
    const subs: NatsConn[] = []
    for (let i = 0; i < nsubs; i++) {
      const s = track(await connectNats(addr))
      await subscribe(s, subject, '1')
      subs.push(s)
    }
    const counters = subs.map((s) => startCounting(s, header, frame))
    const pub = track(await connectNats(addr))
    // Done when every subscriber has everything, or one of them lost the framing.
    const allIn = (): boolean => counters.every((k) => k.frames >= count) || counters.some((k) => k.bad !== '')
    const every = pingEvery(payload, count)
    // ~4 batches (≤ ~4 MiB) ahead of the slowest subscriber at most, as the MQTT rows.
    const lag = { maxLag: 4 * every, received: () => Math.min(...counters.map((k) => k.frames)), watch: subs }
    const pubDone = publish(pub, { subject, payload, count, pingEvery: every, maxAhead: 2, timeoutMs: STALL_MS, lag })
    // If the publisher fails, close the subscribers so their wait ends now, not after IDLE_MS.
    pubDone.catch(() => subs.forEach(close))
    // Idle counts from the last byte on any connection: PONGs to the publisher are progress too.
    const [p, w] = await Promise.all([pubDone, waitUntil([...subs, pub], allIn, IDLE_MS, true)])
    const bad = counters.find((k) => k.bad)
    if (bad) throw new Error(bad.bad)
    const got = counters.map((k) => k.frames)
    const delivered = got.reduce((a, b) => a + b, 0)
    const active = counters.filter((k) => k.frames > 0)
    const first = Math.min(...active.map((k) => k.firstAt))
    const last = Math.max(...active.map((k) => k.lastAt))
    const secs = (last - first) / 1000
    const why = w === 'closed' ? `subscriber disconnected: ${subs.map((s) => s.err).filter(Boolean)[0] ?? '?'}` : `nothing received for ${IDLE_MS} ms`
    if (delivered === 0) throw new Error(`no messages delivered (${why})`)
    const notes: string[] = []
    if (w !== 'ok') notes.push(`incomplete: ${why}`)
    const errs = [...subs, pub].map((c) => c.err).filter((e) => e && e !== 'connection closed by server')
    if (errs.length) notes.push(`server said: ${errs[0]}`)
    const m: Metrics = {
      msgs: count,
      msgsPerSec: delivered / secs,
      mbPerSec: (delivered * payload) / 1e6 / secs,
      pubMsgsPerSec: count / ((p.endAt - p.startAt) / 1000),
      lost: nsubs * count - delivered,
    }
    if (nsubs > 1) {
      m.perSub = got.every((g) => g === count) ? `all ${nsubs} 100%` : got.map((g) => fmtPct(g / count)).join(' ')
      m.slowestSubPerSec = Math.min(...counters.map((k) => (k.frames ? k.frames / ((k.lastAt - k.firstAt) / 1000) : 0)))
    }
    if (notes.length) m.note = notes.join('; ')
    return m
  })
}

async function runReqRep(addr: Addr, payload: number, n: number, warm: number): Promise<Metrics> {
  return withConns(close, async (track) => {
    const body = Buffer.alloc(payload, 0x62)
    const resp = track(await connectNats(addr))
    // The responder answers each request on its reply subject, echoing the payload.
    resp.onMsg = (m) => {
      resp.sock.write(Buffer.concat([Buffer.from(`PUB ${m.reply} ${m.payload.length}\r\n`), m.payload, Buffer.from('\r\n')]))
    }
    await subscribe(resp, 'bench.req', '1')
    const req = track(await connectNats(addr))
    const inbox = `_INBOX.bench.${Math.random().toString(36).slice(2)}`
    await subscribe(req, inbox, '1')
    const frame = Buffer.concat([Buffer.from(`PUB bench.req ${inbox} ${payload}\r\n`), body, Buffer.from('\r\n')])
    const lat = new Float64Array(n)
    let gotAt = 0
    let wake: (() => void) | null = null
    // Timestamp inside the data callback, so promise scheduling isn't counted as latency.
    req.onMsg = () => {
      gotAt = performance.now()
      const w = wake
      wake = null
      w?.()
    }
    let sentAt = 0
    let failed = ''
    const watchdog = setInterval(() => {
      if (wake && (performance.now() - sentAt > REPLY_MS || req.closed || resp.closed)) {
        failed = req.err || resp.err || `no reply within ${REPLY_MS} ms`
        const w = wake
        wake = null
        w()
      }
    }, 250)
    try {
      let t0 = 0
      for (let i = 0; i < warm + n; i++) {
        if (i === warm) t0 = performance.now()
        const replied = new Promise<void>((r) => (wake = r))
        sentAt = performance.now()
        req.sock.write(frame)
        await replied
        if (failed) throw new Error(`request ${i}: ${failed}`)
        if (i >= warm) lat[i - warm] = (gotAt - sentAt) * 1000
      }
      const secs = (performance.now() - t0) / 1000
      lat.sort()
      const pct = (q: number): number => lat[Math.min(n - 1, Math.floor(q * n))]!
      const mean = lat.reduce((a, b) => a + b, 0) / n
      // CPU is per message published: a request and its reply, warm-up included.
      return { msgs: n, cpuMsgs: 2 * (warm + n), p50: pct(0.5), p99: pct(0.99), mean, rtPerSec: n / secs }
    } finally {
      clearInterval(watchdog)
    }
  })
}

export function natsScenarios(o: NatsLoadOpts): Scenario[] {
  const scale = (n: number): number => (o.quick ? Math.max(1000, Math.round(n / 10)) : n)
  const out: Scenario[] = []
  const add = (s: Omit<Scenario, 'kind'>): void => {
    out.push({ kind: 'nats', ...s })
  }
  for (const size of SIZES) {
    const c = scale(COUNTS.pub[size])
    add({
      id: `publish-only ${sizeLabel(size)}`,
      describe: `1 publisher, no subscribers, ${fmtCount(c)} msgs of ${size} B; rate until the server answered the last PING`,
      metrics: rateSpecs,
      headline: 'msgsPerSec',
      params: { payload: size, msgs: c, publishers: 1, subscribers: 0 },
      run: (a) => runPubOnly(a, size, c),
      warm: (a, f) => runPubOnly(a, size, Math.round(c * f)),
    })
  }
  for (const size of SIZES) {
    const c = scale(COUNTS.pubsub[size])
    add({
      id: `pub-sub ${sizeLabel(size)}`,
      describe: `1 publisher → 1 subscriber, ${fmtCount(c)} msgs of ${size} B, the publisher ≤ 4 PING batches ahead of the subscriber; rate at the subscriber, first to last message`,
      metrics: [
        ...rateSpecs,
        { key: 'pubMsgsPerSec', label: 'publisher msgs/s', fmt: fmtRate },
        { key: 'lost', label: 'lost msgs', fmt: fmtCount, agg: 'max' },
      ],
      headline: 'msgsPerSec',
      params: { payload: size, msgs: c, publishers: 1, subscribers: 1 },
      run: (a) => runFan(a, size, c, 1),
      warm: (a, f) => runFan(a, size, Math.round(c * f), 1),
    })
  }
  for (const size of SIZES) {
    const c = scale(COUNTS.fanout[size])
    add({
      id: `fan-out-1x${FANOUT} ${sizeLabel(size)}`,
      describe: `1 publisher → ${FANOUT} subscribers, ${fmtCount(c)} msgs of ${size} B each, the publisher ≤ 4 PING batches ahead of the slowest; delivered msgs/s summed over subscribers`,
      metrics: [
        { key: 'msgsPerSec', label: 'delivered msgs/s', fmt: fmtRate, better: 'higher' },
        { key: 'mbPerSec', label: 'delivered MB/s', fmt: fmtMB, better: 'higher' },
        { key: 'slowestSubPerSec', label: 'slowest sub msgs/s', fmt: fmtRate },
        { key: 'perSub', label: 'per-sub completion', fmt: String },
        { key: 'pubMsgsPerSec', label: 'publisher msgs/s', fmt: fmtRate },
        { key: 'lost', label: 'lost deliveries', fmt: fmtCount, agg: 'max' },
      ],
      headline: 'msgsPerSec',
      params: { payload: size, msgs: c, publishers: 1, subscribers: FANOUT },
      run: (a) => runFan(a, size, c, FANOUT),
      warm: (a, f) => runFan(a, size, Math.round(c * f), FANOUT),
    })
  }
  for (const size of SIZES) {
    const n = scale(COUNTS.reqrep[size])
    const warm = Math.max(200, Math.round(n / 10))
    add({
      id: `req-reply ${sizeLabel(size)}`,
      describe: `1 requester ↔ 1 responder, one request in flight, ${fmtCount(n)} round trips of ${size} B after ${fmtCount(warm)} warm-up`,
      metrics: [
        { key: 'p50', label: 'p50 µs', fmt: fmtUs, better: 'lower' },
        { key: 'p99', label: 'p99 µs', fmt: fmtUs, better: 'lower' },
        { key: 'mean', label: 'mean µs', fmt: fmtUs, better: 'lower' },
        { key: 'rtPerSec', label: 'round trips/s', fmt: fmtRate, better: 'higher' },
      ],
      headline: 'p50',
      params: { payload: size, roundTrips: n, warmUp: warm },
      run: (a) => runReqRep(a, size, n, warm),
    })
  }
  return out
}
