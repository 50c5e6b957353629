// Event-loop lag, measured the portable way (Node, Bun and Deno alike): a timer that asks to
// run every so often and records how late it ran. Shown in /varz as sprig.event_loop over
// the last minute, so an operator (and the soak test) can see whether anything blocks the
// loop.
//
// Every 20 ms while messages flow, so any block of 20 ms or more under load is seen; once
// none has flowed for 5 s, every second. An idle gateway otherwise spent three quarters of
// its CPU on this timer (0.28 s a minute against 0.07, docs/benchmarks.md).

import type { Server } from '../src/server.ts'

export interface LagOptions {
  /** The interval while messages flow (ms). */
  fastMs: number
  /** The interval once none flowed for idleAfterMs (ms). */
  slowMs: number
  idleAfterMs: number
}

const DEFAULTS: LagOptions = { fastMs: 20, slowMs: 1000, idleAfterMs: 5000 }
/** What the figures cover (ms), and the samples kept for it at the fast interval. */
const WINDOW_MS = 60_000
/** Upper edges (ms) of the cumulative histogram: a client can diff two readings for any period. */
const EDGES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]

export function watchEventLoop(srv: Server, o: LagOptions = DEFAULTS): { stop(): void } {
  const samples = Math.ceil(WINDOW_MS / o.fastMs)
  const lags = new Float64Array(samples)
  /** When each sample was taken, for the window. */
  const ats = new Float64Array(samples)
  const counts = new Array<number>(EDGES.length + 1).fill(0)
  const traffic = srv.router.traffic
  let n = 0
  let worst = 0
  let last = performance.now()
  let interval = o.fastMs
  let seen = -1
  let flowedAt = last
  let timer: ReturnType<typeof setTimeout> | null = null
  const schedule = (): void => {
    timer = setTimeout(sample, interval)
    ;(timer as { unref?: () => void }).unref?.()
  }
  const sample = (): void => {
    const now = performance.now()
    const lag = Math.max(0, now - last - interval)
    last = now
    const i = n++ % samples
    lags[i] = lag
    ats[i] = now
    if (lag > worst) worst = lag
    let b = 0
    while (b < EDGES.length && lag > EDGES[b]!) b++
    counts[b]!++
    const moved = traffic.in_msgs + traffic.out_msgs
    if (moved !== seen) {
      seen = moved
      flowedAt = now
    }
    interval = now - flowedAt < o.idleAfterMs ? o.fastMs : o.slowMs
    schedule()
  }
  schedule()
  srv.status.set('event_loop', () => {
    // The samples of the last minute, newest first.
    const now = performance.now()
    const k = Math.min(n, samples)
    const recent: number[] = []
    let from = now
    for (let j = 1; j <= k; j++) {
      const i = (n - j) % samples
      if (now - ats[i]! > WINDOW_MS) break
      recent.push(lags[i]!)
      from = ats[i]!
    }
    const sorted = recent.sort((a, b) => a - b)
    const m = sorted.length
    const at = (q: number): number => (m === 0 ? 0 : Math.round(sorted[Math.min(m - 1, Math.floor(q * m))]! * 10) / 10)
    const histogram: Record<string, number> = {}
    EDGES.forEach((e, i) => (histogram[`le_${e}`] = counts[i]!))
    histogram.over = counts[EDGES.length]!
    return {
      window_ms: Math.round(now - from),
      sample_ms: interval,
      lag_p50_ms: at(0.5),
      lag_p99_ms: at(0.99),
      lag_max_ms: at(1),
      lag_max_since_start_ms: Math.round(worst * 10) / 10,
      // samples since start by lag (ms): le_N counts those over the previous edge and <= N
      lag_histogram: histogram,
    }
  })
  return {
    stop: () => {
      if (timer !== null) clearTimeout(timer)
      timer = null
    },
  }
}
