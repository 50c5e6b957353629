// Event-loop lag, measured the portable way (Node, Bun and Deno alike): a timer that asks to
// run every INTERVAL ms and records how late it ran. Shown in /varz as sprig.event_loop over
// the last minute, so an operator (and the soak test) can see whether anything blocks the
// loop. One timer callback per 20 ms costs next to nothing.

import type { Server } from '../src/server.ts'

const INTERVAL = 20
const SAMPLES = 3000 // one minute of them
/** Upper edges (ms) of the cumulative histogram: a client can diff two readings for any period. */
const EDGES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]

export function watchEventLoop(srv: Server): { stop(): void } {
  const lags = new Float64Array(SAMPLES)
  const counts = new Array<number>(EDGES.length + 1).fill(0)
  let n = 0
  let worst = 0
  let last = performance.now()
  const timer = setInterval(() => {
    const now = performance.now()
    const lag = Math.max(0, now - last - INTERVAL)
    last = now
    lags[n++ % SAMPLES] = lag
    if (lag > worst) worst = lag
    let b = 0
    while (b < EDGES.length && lag > EDGES[b]!) b++
    counts[b]!++
  }, INTERVAL)
  ;(timer as { unref?: () => void }).unref?.()
  srv.status.set('event_loop', () => {
    const k = Math.min(n, SAMPLES)
    const sorted = lags.slice(0, k).sort()
    const at = (q: number): number => (k === 0 ? 0 : Math.round(sorted[Math.min(k - 1, Math.floor(q * k))]! * 10) / 10)
    const histogram: Record<string, number> = {}
    EDGES.forEach((e, i) => (histogram[`le_${e}`] = counts[i]!))
    histogram.over = counts[EDGES.length]!
    return {
      window_ms: k * INTERVAL,
      lag_p50_ms: at(0.5),
      lag_p99_ms: at(0.99),
      lag_max_ms: at(1),
      lag_max_since_start_ms: Math.round(worst * 10) / 10,
      // samples since start by lag (ms): le_N counts those over the previous edge and <= N
      lag_histogram: histogram,
    }
  })
  return { stop: () => clearInterval(timer) }
}
