// The process's own figures for /varz, /metrics and the heartbeat: resident memory, cores,
// CPU time and CPU percent over the interval since the previous reading (nats-server's
// varz `cpu`). Read through Server.proc so src/ never touches `process`.

import os from 'node:os'
import process from 'node:process'
import type { ProcessStats } from '../src/server.ts'

/** Readings closer together than this keep the last percentage (a burst of requests cannot make it noise). */
const MIN_WINDOW_MS = 1000

export function processStats(): () => ProcessStats {
  const cores = os.cpus().length
  let lastCpu = cpuSeconds()
  let lastAt = performance.now()
  let pct = 0
  return () => {
    const cpu = cpuSeconds()
    const at = performance.now()
    if (at - lastAt >= MIN_WINDOW_MS) {
      pct = Math.round(((cpu - lastCpu) / ((at - lastAt) / 1000)) * 1000) / 10
      lastCpu = cpu
      lastAt = at
    }
    return { mem: process.memoryUsage.rss(), cores, cpu_seconds: cpu, cpu: pct }
  }
}

/** "Quiet" (before a shrink or a page-out): the process used under this share of one core. */
const QUIET_CPU = 0.25

/** Whether CPU time went from `fromSecs` to `toSecs` (cpuSeconds) in under QUIET_CPU of `ms`. */
export const quietOver = (fromSecs: number, toSecs: number, ms: number): boolean => (toSecs - fromSecs) * 1000 < QUIET_CPU * Math.max(1, ms)

/** The process's CPU time (user + system) in seconds. */
export function cpuSeconds(): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}
