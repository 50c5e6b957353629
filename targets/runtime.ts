// What each runtime module provides, and the few helpers they share.

import v8 from 'node:v8'
import { runInNewContext } from 'node:vm'
import type { Conn, Host, Wire } from '../src/host.ts'

export type Accept = (wire: Wire) => Conn | null

export interface Listener {
  readonly port: number
  /** Stop accepting; open connections stay. */
  close(): void
  /** Sockets accepted by this listener that are not closed yet. */
  open(): number
}

export interface Runtime {
  /** e.g. "node 20.20.2" */
  readonly name: string
  readonly host: Host
  listen(host: string, port: number, accept: Accept): Promise<Listener>
  /** The MQTT listener, when it differs from `listen` (Bun: Bun.listen, for memory per idle device). */
  listenMqtt?(host: string, port: number, accept: Accept): Promise<Listener>
}

/** Timers and microtasks exist under these names on Node, Bun and Deno alike. */
export const standardHost: Host = {
  now: () => Date.now(),
  defer: (fn) => queueMicrotask(fn),
  every: (ms, fn) => {
    const t = setInterval(fn, ms)
    return { cancel: () => clearInterval(t) }
  },
  collect: () => {
    gc ??= findGc()
    gc()
  },
}

let gc: (() => void) | null = null

/** Bun.gc, or V8's gc() (exposed at runtime on Node); a no-op where neither exists (Deno). */
function findGc(): () => void {
  const g = globalThis as { Bun?: { gc?(full: boolean): void } }
  const bun = g.Bun?.gc
  if (bun !== undefined) return () => bun(true)
  try {
    v8.setFlagsFromString('--expose-gc')
    const f: unknown = runInNewContext('gc')
    if (typeof f === 'function') return f as () => void
  } catch {
    // not offered here
  }
  return () => {}
}

/** How long a closing socket may take to flush before it is destroyed. */
export const END_GRACE_MS = 2000

/** nats-server reports IPv4 peers without the IPv6-mapped prefix. */
export function plainAddress(a: string | undefined): string {
  if (!a) return ''
  return a.startsWith('::ffff:') ? a.slice(7) : a
}

/** A one-line, human error for a listener that could not start. */
export function listenError(host: string, port: number, e: unknown): Error {
  const code = (e as { code?: string }).code
  const why =
    code === 'EADDRINUSE' ? 'address already in use'
    : code === 'EACCES' ? 'permission denied'
    : code === 'EADDRNOTAVAIL' ? 'address not available'
    : (e as Error).message
  return new Error(`cannot listen on ${host}:${port}: ${why}`)
}

/** Accepts since the last collection, and the pending check. */
let accepted = 0
let gcCheck: ReturnType<typeof setTimeout> | null = null
const ACCEPT_BURST = 100
const GC_DELAY_MS = 500

/**
 * Listeners call this per accepted socket. After a burst (a fleet reconnecting after an
 * outage), Bun is asked for one full collection half a second later, so the garbage of
 * hundreds of handshakes is given back instead of sitting in the heap until allocation
 * pressure comes (an idle broker allocates almost nothing). Measured: ~1 KB less RSS per idle
 * MQTT connection for the first thousand. At most one collection per 100 accepts and per
 * 500 ms; Node and Deno
 * expose no such call, so there it does nothing.
 */
export function afterAccept(): void {
  accepted++
  if (gcCheck !== null) return
  gcCheck = setTimeout(() => {
    gcCheck = null
    if (accepted < ACCEPT_BURST) return // a trickle: keep counting
    accepted = 0
    ;(globalThis as { Bun?: { gc?(full: boolean): void } }).Bun?.gc?.(true)
  }, GC_DELAY_MS)
  ;(gcCheck as { unref?(): void }).unref?.()
}
