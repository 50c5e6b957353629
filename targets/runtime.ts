// What each runtime module provides, and the few helpers they share.

import type { PageOutResult } from './pageout.ts'
import type { ServerTls } from './tls.ts'
import { readdirSync, readFileSync } from 'node:fs'
import type { Conn, Dial, Host, Wire } from '../src/host.ts'
import { nodeV8, nodeVm } from './lazy.ts'
import { cpuSeconds, quietOver } from './proc.ts'
import type { Logger } from '../src/log.ts'

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
  /** Plain listeners (NATS and MQTT). */
  listen(host: string, port: number, accept: Accept): Promise<Listener>
  /**
   * Bun: listeners that speak TLS from the first byte (`st.mode` 'first') on the runtime's own
   * TLS. Elsewhere, and for NATS's plaintext-then-TLS, TLS listeners are node:net + node:tls.
   */
  readonly listenTls?: (host: string, port: number, accept: Accept, st: ServerTls) => Promise<Listener>
  /** Bun and Deno: hand start-up's code pages back once quiet, from `after` ms on (targets/pageout.ts). */
  readonly pageOut?: { readonly after: number; run(): PageOutResult }
  /** Deno: glibc's free memory back to the system at a quiet burst's end (Bun shrinks itself). */
  readonly trim?: () => PageOutResult
  /**
   * Bun: never compile `fns` with the optimizing top tier (JavaScriptCore's FTL). For code that
   * runs often but cheaply, where the lower optimizing tier (DFG) does as well. `apart`: never
   * inlined, so they tier up on their own when called from those.
   */
  readonly keepFromTopTier?: (fns: readonly Function[], apart?: readonly Function[]) => void
}

/**
 * Timers and microtasks exist under these names on Node, Bun and Deno alike. now() is the
 * monotonic clock (performance.now(), anchored at the process's start time so it reads like
 * epoch ms): deadlines and timeouts must not move when the wall clock is set or jumps.
 * The wall clock is only for display (/varz `now`, /connz times).
 */
// Read once: timeOrigin is a getter, and now() runs for every read and flush.
const ORIGIN = performance.timeOrigin

export const standardHost: Host = {
  now: () => ORIGIN + performance.now(),
  wall: () => Date.now(),
  defer: (fn) => queueMicrotask(fn),
  soon: (fn) => setImmediate(fn),
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
/**
 * Node: keep V8's young generation at its starting size. V8 doubles it under a burst
 * of allocation (up to 16 MB a semi-space, 32 MB touched) and keeps it: 1,000 devices
 * connecting cost ~6 KB of RSS each on Node that way, for nothing sprig needs, since its hot
 * paths allocate little (docs/benchmarks.md). The flag is read when V8 would grow the space,
 * so setting it at start-up works (NODE_OPTIONS refuses it). Deno ignores the call (its V8
 * flags come only from --v8-flags). SPRIG_V8_YOUNG=grow keeps V8's default.
 */
export function steadyYoungGeneration(env: string | undefined): void {
  if (env === 'grow' || 'Bun' in globalThis) return
  try {
    nodeV8().setFlagsFromString('--semi-space-growth-factor=1')
  } catch {
    // not V8, or the flag is gone: V8's default applies
  }
}

function findGc(): () => void {
  const g = globalThis as { Bun?: { gc?(full: boolean): void } }
  const bun = g.Bun?.gc
  if (bun !== undefined) return () => bun(true)
  try {
    nodeV8().setFlagsFromString('--expose-gc')
    const f: unknown = nodeVm().runInNewContext('gc')
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

/** Accepts and closes since the last collection, the last one's time, and the pending check. */
let churned = 0
let lastChurn = 0
/** Accepts and closes in the current 2 s window, and when it started. */
let inWindow = 0
let windowStart = -Infinity
let gcCheck: ReturnType<typeof setTimeout> | null = null
/** A burst was collected and its end not seen yet; when it was last collected. */
let inBurst = false
let lastGc = -Infinity
/** Since when every check after the burst's end found the process quiet (0: the last did not). */
let quietFrom = 0
/** The process's CPU time when the pending check was set (s), and when (ms). */
let cpuAt = 0
let armedAt = 0
const CHURN_BURST = 100
const GC_DELAY_MS = 500
/** 100 accepts or closes within this long are a burst; slower, a trickle (collected, never shrunk). */
const BURST_WINDOW_MS = 2000
/** A burst is over once nothing was accepted or closed for this long (also how often it is watched). */
const BURST_END_MS = 250
/**
 * How long the process must stay quiet after a burst before it is shrunk: a fleet that has
 * connected and subscribed often waits a moment before it publishes, and a shrink in that
 * moment drops the compiled code its load is about to run. Longer holds cost memory: the
 * first 1,000 idle connections read ~0.5–1 KB more each at 1 s (docs/benchmarks.md, 2026-12-06
 * 23:20).
 */
const QUIET_HOLD_MS = 500
/** How long after a burst's last accept or close a busy process is waited for to go quiet. */
const QUIET_WAIT_MS = 5000

type BunMemory = { shrink?(): void }

/** Runs after the shrink at a quiet burst's end (Deno: malloc_trim; both: the executable's pages paged out). */
let afterQuietBurst: (() => void) | null = null
export function onQuietBurstEnd(fn: (() => void) | null): void {
  afterQuietBurst = fn
}

/**
 * Listeners call this per accepted socket, and `afterClose` per closed one. After a burst (a
 * fleet reconnecting after an outage, or dropping off at once), the runtime is asked for a
 * full collection half a second later (and every half second while the burst goes on), so
 * the garbage of hundreds of handshakes or closes is given back instead of sitting in the
 * heap until allocation pressure comes (an idle broker allocates almost nothing): per idle
 * MQTT connection for the first thousand, ~1 KB less RSS on Bun and ~4 KB on Deno, none on
 * Node. A trickle is collected too, every 100 accepts and closes. Once a burst (100 within
 * 2 s) is over (none for 250 ms) and the process has stayed quiet for half a second (under a
 * quarter of a core at every check: no message load; it is waited for up to 5 s, while the
 * new clients subscribe), Bun's `Bun.shrink()` also drops compiled code and returns free
 * heap and malloc memory to the system: ~2 KB less per connection (docs/benchmarks.md). The
 * code that runs again is compiled again; a busy process is never shrunk. Node and Deno have
 * no such call. Then the `onQuietBurstEnd` hook runs: on Deno glibc's free memory is
 * trimmed, and Bun's and Deno's targets page out the executable's code the burst paged in
 * (the optimizing compilers, mostly), as after start-up (targets/pageout.ts).
 */
export function afterAccept(): void {
  lastChurn = Date.now()
  churned++
  // A window of 2 s counts toward a burst; an older one starts again (a few accepts an hour
  // ago must not make today's thousand look like a trickle).
  if (lastChurn - windowStart > BURST_WINDOW_MS) {
    windowStart = lastChurn
    inWindow = 0
  }
  inWindow++
  if (gcCheck === null) armAcceptCheck(GC_DELAY_MS)
}

/** Listeners call this per closed socket that they accepted: a close counts as an accept does. */
export const afterClose: () => void = afterAccept

function armAcceptCheck(ms: number): void {
  cpuAt = cpuSeconds()
  armedAt = Date.now()
  gcCheck = setTimeout(acceptCheck, ms)
  ;(gcCheck as { unref?(): void }).unref?.()
}

function acceptCheck(): void {
  gcCheck = null
  const now = Date.now()
  if (inBurst && now - lastChurn >= BURST_END_MS) {
    // Over. Quiet for half a second (no message load): memory back to the system (this collects
    // too). Busy (the new clients' SUBSCRIBEs and first messages, or a message load): look
    // again every 250 ms, for up to 5 s after the last accept or close; a process busy that
    // long has load.
    if (quietOver(cpuAt, cpuSeconds(), now - armedAt)) {
      if (quietFrom === 0) quietFrom = armedAt
      if (now - quietFrom >= QUIET_HOLD_MS) {
        inBurst = false
        quietFrom = 0
        ;(globalThis as { Bun?: BunMemory }).Bun?.shrink?.()
        afterQuietBurst?.()
        return
      }
    } else {
      quietFrom = 0
      if (now - lastChurn >= QUIET_WAIT_MS) {
        inBurst = false
        if (churned === 0) return
      }
    }
  } else quietFrom = 0
  if (churned >= CHURN_BURST && now - lastGc >= GC_DELAY_MS) {
    if (inWindow >= CHURN_BURST) inBurst = true // else a trickle that added up
    churned = 0
    lastGc = now
    gc ??= findGc()
    gc()
  }
  // While a burst lasts, look every 250 ms: for its end, or for the next collection.
  if (inBurst) armAcceptCheck(BURST_END_MS)
}


// --- exceptions from adapter code -------------------------------------------------------------
// Adapter and core code runs inside socket, timer and file callbacks. An exception there is a
// bug of ours, never the client's fault, but it must not take the broker down with it: it is
// logged (peer and message; the stack at debug), counted, and closes only the connection it
// happened on. The guards sit where the targets hand control to that code.

/** Exceptions caught by the guards (and the process-level handlers), for /varz. */
export const internalErrors = { count: 0 }

export function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e)
}

/** Logs one caught exception: `who` names the peer or the part (e.g. "timer"). */
export function logInternal(log: Logger, who: string, where: string, e: unknown): void {
  internalErrors.count++
  log.error(`${who} - internal error in ${where}: ${errorText(e)}`)
  log.debug(() => `${who} - ${e instanceof Error && e.stack ? e.stack : errorText(e)}`)
}

/** An adapter's Conn behind a guard: an exception closes only this connection (see above). */
class GuardedConn implements Conn {
  private failed = false

  constructor(
    private readonly conn: Conn,
    private readonly wire: Wire,
    private readonly log: Logger,
  ) {}

  data(chunk: Uint8Array): void {
    if (this.failed) return
    try {
      this.conn.data(chunk)
    } catch (e) {
      this.fail('data', e)
    }
  }

  drained(): void {
    if (this.failed) return
    try {
      this.conn.drained()
    } catch (e) {
      this.fail('drained', e)
    }
  }

  closed(reason?: string): void {
    closeGuarded(this.log, this.wire, this.conn, reason)
  }

  private fail(where: string, e: unknown): void {
    this.failed = true
    failGuarded(this.log, this.wire, where, e)
  }
}

/** A guarded Conn's socket is gone: its descriptor no longer counted, the Conn's closed() guarded. */
function closeGuarded(log: Logger, wire: Wire, conn: Conn, reason: string | undefined): void {
  fds.open--
  try {
    conn.closed(reason)
  } catch (e) {
    logInternal(log, peerOf(wire), 'close', e)
  }
}

/** A guarded Conn threw: logged, and its socket destroyed (its close event then lets the adapter clean up). */
function failGuarded(log: Logger, wire: Wire, where: string, e: unknown): void {
  logInternal(log, peerOf(wire), where, e)
  log.info(`${peerOf(wire)} - closing the connection after an internal error`)
  try {
    wire.destroy()
  } catch (e2) {
    logInternal(log, peerOf(wire), 'destroy', e2)
  }
}

function peerOf(w: Wire): string {
  return `${w.remoteAddress}:${w.remotePort}`
}

/**
 * The same guard for a target that keeps it in its own per-socket object (targets/bun.ts
 * BunWire) instead of a GuardedConn per connection (48 bytes each, one per idle device): it
 * calls `accept` for the bare Conn, catches what the Conn's data() and drained() throw and
 * hands it to `failed` (then nothing more reaches that Conn but closed()), and ends with
 * `closed`. One per listener.
 */
export interface Guard {
  /** The adapter's Conn for a new socket, unguarded; null: the socket was closed (refused). */
  accept(wire: Wire): Conn | null
  /** The Conn's data() or drained() threw: logged, counted, the socket destroyed. */
  failed(wire: Wire, where: string, e: unknown): void
  /** The socket is gone: the Conn's closed(), guarded. */
  closed(wire: Wire, conn: Conn, reason?: string): void
}

/** What guardAccept returns: an Accept whose Conns are GuardedConns, and the Guard for targets that guard in place. */
export type GuardedAccept = Accept & { readonly guard?: Guard }

/**
 * An accept function whose connections are guarded; a throwing accept closes that socket.
 * While file descriptors run short (see fdsShort) a new socket is closed at once, so the
 * broker keeps the descriptors it needs for files, TLS and its uplink.
 */
export function guardAccept(accept: Accept, log: Logger): GuardedAccept {
  acceptLog = log
  const bare = (wire: Wire): Conn | null => {
    if (fdsShort()) {
      if (!fds.refusing) {
        fds.refusing = true
        fds.refused = 0
        log.warn(`Too many open files (${fds.used} in use, limit ${fds.limit}): refusing new connections until some close`)
      }
      fds.refused++
      wire.destroy()
      return null
    }
    if (fds.refusing) {
      fds.refusing = false
      log.info(`File descriptors available again: accepting connections (${fds.refused} refused meanwhile)`)
    }
    let c: Conn | null
    try {
      c = accept(wire)
    } catch (e) {
      logInternal(log, peerOf(wire), 'accept', e)
      wire.destroy()
      return null
    }
    if (c === null) return null
    fds.open++
    return c
  }
  const guard: Guard = {
    accept: bare,
    failed: (wire, where, e) => failGuarded(log, wire, where, e),
    closed: (wire, conn, reason) => closeGuarded(log, wire, conn, reason),
  }
  const wrapped = (wire: Wire): Conn | null => {
    const c = bare(wire)
    return c === null ? null : new GuardedConn(c, wire, log)
  }
  return Object.assign(wrapped, { guard })
}

// --- file descriptors ---------------------------------------------------------------------------
// When the process runs out of descriptors (EMFILE), accept() fails and the runtimes cope in
// their own ways (libuv accepts and drops the connection silently; Deno's node:net stops
// accepting for good). sprig watches its own use instead: with fewer than a reserve left it
// refuses new connections (accepted, closed at once), logged once per episode, and accepts
// again once enough have closed.

const fds = {
  /** The soft RLIMIT_NOFILE (Linux /proc/self/limits); 0 when unknown: no check. */
  limit: -1,
  /** Descriptors in use besides guarded connections, as last counted. */
  baseline: 0,
  /** Guarded connections open now. */
  open: 0,
  /** Last exact count (monotonic ms), and what it found. */
  countedAt: -Infinity,
  used: 0,
  refusing: false,
  refused: 0,
}

/** The logger of the last broker started in this process, for accept errors. */
let acceptLog: Logger | null = null

const FD_RECOUNT_MS = 250

/** Descriptors left for files, TLS and the uplink: 1/16 of the limit, at least 16. */
function fdReserve(limit: number): number {
  return Math.max(16, limit >> 4)
}

function fdsShort(): boolean {
  if (fds.limit < 0) fds.limit = readFdLimit()
  if (fds.limit === 0) return false
  const threshold = fds.limit - fdReserve(fds.limit)
  if (fds.baseline + fds.open < threshold && !fds.refusing) return false
  // Near the limit by the estimate (or in an episode): count exactly, at most every 250 ms.
  const now = performance.now()
  if (now - fds.countedAt >= FD_RECOUNT_MS) {
    fds.countedAt = now
    fds.used = countFds()
    fds.baseline = Math.max(0, fds.used - fds.open)
  }
  return fds.used >= threshold
}

function readFdLimit(): number {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
    if (m === null) return 0
    const n = Number(m[1])
    fds.baseline = countFds()
    return n
  } catch {
    return 0 // not Linux: the runtime's own handling applies
  }
}

function countFds(): number {
  try {
    return readdirSync('/proc/self/fd').length
  } catch {
    return 0
  }
}

/** A listener's accept failed (EMFILE, ENFILE, ...): logged once per episode, never thrown. */
export function acceptFailed(e: Error & { code?: string }): void {
  const log = acceptLog
  if (e.code === 'EMFILE' || e.code === 'ENFILE' || /too many open files/i.test(e.message)) {
    if (fds.refusing) return
    fds.refusing = true
    fds.refused = 0
    log?.warn(`Temporary accept error: ${e.message}; connections are refused until descriptors are free`)
    return
  }
  log?.error(`Accept error: ${e.message}`)
}

/** A Dial whose connections are guarded the same way (the uplink's link to the hub). */
export function guardDial(dial: Dial, log: Logger): Dial {
  return (to, open, failed) => {
    const where = `${to.host}:${to.port}`
    const safeFailed = (why: string): void => {
      try {
        failed(why)
      } catch (e) {
        logInternal(log, where, 'dial failure', e)
      }
    }
    const opened = (wire: Wire): Conn => {
      try {
        const c = new GuardedConn(open(wire), wire, log)
        fds.open++
        return c
      } catch (e) {
        logInternal(log, where, 'uplink connect', e)
        wire.destroy()
        queueMicrotask(() => safeFailed(`internal error: ${errorText(e)}`))
        return NO_CONN
      }
    }
    dial(to, opened, safeFailed)
  }
}

const NO_CONN: Conn = { data() {}, drained() {}, closed() {} }

/** A Host whose deferred work and timers log an exception instead of throwing it out of the loop. */
export function guardHost(host: Host, log: Logger): Host {
  // The guard made for the last function deferred: the server defers the same flush after
  // every read, so that one costs no new closure per call.
  let lastFn: (() => void) | null = null
  let lastGuard: () => void = () => {}
  // The same for the per-turn work (a few functions, each deferred once per turn).
  const soonGuards = new Map<() => void, () => void>()
  const guardSoon = (fn: () => void): (() => void) => {
    let guard = soonGuards.get(fn)
    if (guard === undefined) {
      guard = () => {
        try {
          fn()
        } catch (e) {
          logInternal(log, 'server', 'deferred work', e)
        }
      }
      // Bounded: callers pass long-lived functions; a stray closure per call must not pile up.
      if (soonGuards.size < 64) soonGuards.set(fn, guard)
    }
    return guard
  }
  const g: Host = {
    now: host.now.bind(host),
    defer: (fn) => {
      if (fn !== lastFn) {
        lastFn = fn
        lastGuard = () => {
          try {
            fn()
          } catch (e) {
            logInternal(log, 'server', 'deferred work', e)
          }
        }
      }
      host.defer(lastGuard)
    },
    soon: (fn) => (host.soon ?? host.defer)(guardSoon(fn)),
    every: (ms, fn) =>
      host.every(ms, () => {
        try {
          fn()
        } catch (e) {
          logInternal(log, 'server', 'timer', e)
        }
      }),
  }
  if (host.wall) g.wall = host.wall.bind(host)
  // The memory budget asks for collections through this (after closing slow consumers).
  if (host.collect) g.collect = host.collect.bind(host)
  return g
}
