// systemd's service notification protocol (sd_notify): with `Type=notify` systemd hands the
// service a datagram socket in NOTIFY_SOCKET and waits for `READY=1`; `WatchdogSec` asks
// for `WATCHDOG=1` at least that often (WATCHDOG_USEC), and restarts a service whose pings
// stop. The pings come from a timer of the event loop, so a blocked loop stops them.
//
// The socket is AF_UNIX SOCK_DGRAM (a path, or `@name` in the abstract namespace). Node has
// no unix datagram sockets (node:dgram is UDP only), so each runtime gets there its own way
// (measured and compared in docs/runtimes.md):
//   Bun (and the compiled binary): libc's socket()/sendto() through bun:ffi;
//   Deno: the same through Deno.dlopen (needs --allow-ffi, which -A includes);
//   Node, or Deno without --allow-ffi: one `systemd-notify VAR=VALUE...` process per message,
//   spawned from a worker thread (needs NotifyAccess=all: the datagram then comes from a
//   child, not the main PID).

import process from 'node:process'
import type { Worker } from 'node:worker_threads'
import type { Logger } from '../src/log.ts'
import { nodeChildProcess, nodeWorkerThreads } from './lazy.ts'
import type { Server } from '../src/server.ts'
import type { Uplink } from '../src/leaf/index.ts'

/** Sends one notification (newline-separated `VAR=VALUE` lines); never throws, never blocks. */
export interface Notifier {
  /** How the datagrams leave: 'ffi' or 'systemd-notify'. */
  readonly via: string
  send(state: string): void
  /** CLOCK_MONOTONIC in µs, or null where it cannot be read. */
  monotonicUsec(): bigint | null
}

const AF_UNIX = 1
const SOCK_DGRAM = 2
const SOCK_NONBLOCK = 0o4000
const SOCK_CLOEXEC = 0o2000000
/** sizeof(sockaddr_un.sun_path) on Linux. */
const SUN_PATH = 108
const CLOCK_MONOTONIC = 1

/** sockaddr_un for a NOTIFY_SOCKET value, and its length; null for what Linux cannot address. */
export function sockaddr(path: string): { addr: Uint8Array; len: number } | null {
  if (path === '' || (path[0] !== '/' && path[0] !== '@')) return null // e.g. vsock:, not supported
  const name = new TextEncoder().encode(path)
  if (name.length > SUN_PATH - (path[0] === '@' ? 0 : 1)) return null
  const addr = new Uint8Array(2 + SUN_PATH)
  addr[0] = AF_UNIX // sa_family_t, little-endian (x64 and arm64)
  addr.set(name, 2)
  // Abstract: a leading NUL and no terminator; a path: NUL-terminated.
  if (path[0] === '@') {
    addr[2] = 0
    return { addr, len: 2 + name.length }
  }
  return { addr, len: 2 + name.length + 1 }
}

/**
 * The notifier for NOTIFY_SOCKET in `env`, or null when there is none (not under systemd) or
 * it cannot be reached (logged once). Removes NOTIFY_SOCKET from process.env afterwards, as
 * sd_notify's unset_environment does, so no child process talks for us.
 */
export async function openNotifier(env: NodeJS.ProcessEnv, log: Logger): Promise<Notifier | null> {
  const path = env.NOTIFY_SOCKET
  if (!path) return null
  delete process.env.NOTIFY_SOCKET
  const to = sockaddr(path)
  if (to === null) {
    log.warn(`NOTIFY_SOCKET ${JSON.stringify(path)} is not a unix socket path: no systemd notifications`)
    return null
  }
  const g = globalThis as { Bun?: unknown; Deno?: DenoFfi }
  let n: Notifier | null = null
  try {
    if (g.Bun !== undefined) n = await bunSender(to)
    else if (g.Deno !== undefined && denoFfiAllowed(g.Deno)) n = denoSender(g.Deno, to)
  } catch (e) {
    log.debug(() => `systemd notify: no FFI (${(e as Error).message}); trying systemd-notify`)
  }
  return n ?? commandSender(path, log)
}

// --- Bun: bun:ffi ---------------------------------------------------------------------------

type Send = (msg: Uint8Array) => number

function sender(via: string, send: Send, monotonicUsec: () => bigint | null): Notifier {
  const enc = new TextEncoder()
  return {
    via,
    monotonicUsec,
    send: (state) => {
      try {
        send(enc.encode(state))
      } catch {
        // a full socket buffer (EAGAIN) or a vanished systemd: the next ping tries again
      }
    },
  }
}

async function bunSender(to: { addr: Uint8Array; len: number }): Promise<Notifier | null> {
  // A computed specifier: esbuild leaves it alone, and Node and Deno never evaluate it.
  const spec = 'bun:' + 'ffi'
  const { dlopen, FFIType } = (await import(spec)) as BunFfi
  const libc = dlopen('libc.so.6', {
    socket: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
    sendto: { args: [FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.i32, FFIType.ptr, FFIType.u32], returns: FFIType.i64 },
    clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 },
  })
  const fd = libc.symbols.socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
  if (fd < 0) return null
  return sender('ffi', (m) => Number(libc.symbols.sendto(fd, m, m.length, 0, to.addr, to.len)), () => clock(libc.symbols.clock_gettime))
}

/** CLOCK_MONOTONIC through libc (Bun's and Deno's process.hrtime count from process start). */
function clock(gettime: (id: number, ts: Uint8Array) => number): bigint | null {
  const ts = new BigInt64Array(2) // struct timespec on 64-bit Linux
  if (gettime(CLOCK_MONOTONIC, new Uint8Array(ts.buffer)) !== 0) return null
  return ts[0]! * 1_000_000n + ts[1]! / 1000n
}

interface BunFfi {
  FFIType: Record<'i32' | 'ptr' | 'u64' | 'u32' | 'i64', unknown>
  dlopen(
    lib: string,
    syms: Record<string, { args: unknown[]; returns: unknown }>,
  ): { symbols: { socket(d: number, t: number, p: number): number; sendto(fd: number, m: Uint8Array, n: number, f: number, a: Uint8Array, l: number): number | bigint; clock_gettime(id: number, ts: Uint8Array): number } }
}

// --- Deno: Deno.dlopen ----------------------------------------------------------------------

interface DenoFfi {
  permissions?: { querySync?(d: { name: string }): { state: string } }
  dlopen?(
    lib: string,
    syms: Record<string, { parameters: string[]; result: string }>,
  ): { symbols: { socket(d: number, t: number, p: number): number; sendto(fd: number, m: Uint8Array, n: bigint, f: number, a: Uint8Array, l: number): number | bigint; clock_gettime(id: number, ts: Uint8Array): number } }
}

function denoFfiAllowed(d: DenoFfi): boolean {
  if (typeof d.dlopen !== 'function') return false
  try {
    return d.permissions?.querySync?.({ name: 'ffi' }).state === 'granted'
  } catch {
    return false
  }
}

function denoSender(d: DenoFfi, to: { addr: Uint8Array; len: number }): Notifier | null {
  const libc = d.dlopen!('libc.so.6', {
    socket: { parameters: ['i32', 'i32', 'i32'], result: 'i32' },
    sendto: { parameters: ['i32', 'buffer', 'usize', 'i32', 'buffer', 'u32'], result: 'isize' },
    clock_gettime: { parameters: ['i32', 'buffer'], result: 'i32' },
  })
  const fd = libc.symbols.socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
  if (fd < 0) return null
  return sender('ffi', (m) => Number(libc.symbols.sendto(fd, m, BigInt(m.length), 0, to.addr, to.len)), () => clock(libc.symbols.clock_gettime))
}

// --- anywhere else: systemd-notify ------------------------------------------------------------

/**
 * A worker thread that runs systemd-notify for each message the main thread posts. spawn()
 * blocks the calling thread until the child has exec'd: 20-40 ms per message measured on a
 * loaded 2-core VM (up to 460 ms), a stall of every connection, so the main thread only posts.
 * Its timer still decides when a ping goes out: a blocked loop posts nothing, and a ping
 * queued for more than 1 s behind slow spawns is dropped rather than sent late.
 */
const NOTIFY_WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const { spawn } = require('node:child_process')
// One child at a time, in order: systemd must see RELOADING=1 before the READY=1 after it
// (systemd-notify returns once systemd has read the message: BARRIER=1).
const queue = []
let busy = false
const next = () => {
  busy = false
  while (queue.length > 0) {
    const [at, args] = queue.shift()
    // A ping that waited behind slow spawns is dropped: a newer one follows if the loop runs.
    if (args.length === 1 && args[0] === 'WATCHDOG=1' && Date.now() - at > 1000) continue
    busy = true
    try {
      const c = spawn('systemd-notify', args, { stdio: 'ignore', env: workerData })
      c.on('error', (e) => { parentPort.postMessage(e.message); next() })
      c.on('exit', next)
    } catch (e) {
      parentPort.postMessage(e.message)
      busy = false
      continue
    }
    return
  }
}
parentPort.on('message', (m) => {
  queue.push(m)
  if (!busy) next()
})`

function commandSender(path: string, log: Logger): Notifier {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', NOTIFY_SOCKET: path }
  let failed = false
  const fail = (why: string): void => {
    if (failed) return
    failed = true
    log.warn(`systemd notify: cannot run systemd-notify (${why}): no readiness or watchdog notifications`)
  }
  let worker: Worker | null = null
  try {
    worker = new (nodeWorkerThreads().Worker)(NOTIFY_WORKER, { eval: true, execArgv: [], workerData: env })
    worker.on('message', (m: string) => fail(m))
    worker.on('error', () => (worker = null))
    worker.unref()
  } catch {
    worker = null // no worker threads here: spawn on this thread
  }
  const direct = (args: string[]): void => {
    try {
      nodeChildProcess().spawn('systemd-notify', args, { stdio: 'ignore', env }).on('error', (e) => fail(e.message)).unref()
    } catch (e) {
      fail((e as Error).message)
    }
  }
  return {
    via: 'systemd-notify',
    // Node's hrtime is CLOCK_MONOTONIC; Bun's and Deno's count from process start.
    monotonicUsec: () => (process.versions.bun === undefined && !('Deno' in globalThis) ? process.hrtime.bigint() / 1000n : null),
    send: (state) => {
      if (failed) return
      const args = state.split('\n')
      // STOPPING=1 precedes exit: sent from here, so it is on its way before the process ends.
      if (worker !== null && !state.startsWith('STOPPING=1')) worker.postMessage([Date.now(), args])
      else direct(args)
    },
  }
}

// --- the service's side of the protocol -------------------------------------------------------

/** How often STATUS= is refreshed when nothing else sends it. */
const STATUS_MS = 10_000

export interface Systemd {
  /** READY=1 (after start, and after a reload) with the current STATUS. */
  ready(): void
  /** RELOADING=1 with MONOTONIC_USEC (systemd ≥ 253 wants it to order the reload). */
  reloading(): void
  /** STOPPING=1; the timers stop. */
  stopping(why?: string): void
  /** STATUS= now (e.g. when lame duck starts). */
  status(prefix?: string): void
}

/**
 * Talks to systemd for a started broker: READY=1 at once (the listeners are up; the uplink
 * is not waited for), WATCHDOG=1 every WATCHDOG_USEC/2 when systemd asks for it (and
 * WATCHDOG_PID, when set, names this process), STATUS= every 10 s (with a ping when there is a
 * watchdog). Null without NOTIFY_SOCKET.
 */
export async function startSystemd(srv: Server, uplink: Uplink | null, env: NodeJS.ProcessEnv, log: Logger): Promise<Systemd | null> {
  const wusec = Number(env.WATCHDOG_USEC)
  const wpid = env.WATCHDOG_PID
  const n = await openNotifier(env, log)
  if (n === null) return null
  delete process.env.WATCHDOG_USEC
  delete process.env.WATCHDOG_PID
  let phase = 'Ready'
  const line = (): string => `STATUS=${phase}: ${summary(srv, uplink)}`
  const timers: ReturnType<typeof setInterval>[] = []
  const watchdog = Number.isFinite(wusec) && wusec > 0 && (wpid === undefined || wpid === '' || Number(wpid) === process.pid)
  // STATUS= rides on every STATUS_MS-th ping (one datagram, one systemd-notify on Node), or
  // has its own timer without a watchdog.
  if (watchdog) {
    const ms = Math.max(1, Math.floor(wusec / 2000))
    let last = performance.now()
    timers.push(
      setInterval(() => {
        const now = performance.now()
        if (now - last < STATUS_MS) return n.send('WATCHDOG=1')
        last = now
        n.send(`WATCHDOG=1\n${line()}`)
      }, ms),
    )
    log.debug(() => `systemd watchdog: WATCHDOG=1 every ${ms} ms`)
  } else {
    timers.push(setInterval(() => n.send(line()), STATUS_MS))
  }
  for (const t of timers) (t as { unref?(): void }).unref?.()
  log.info(`systemd notify via ${n.via}${watchdog ? `, watchdog every ${Math.floor(wusec / 2000)} ms` : ''}`)
  const sd: Systemd = {
    ready: () => {
      phase = 'Ready'
      n.send(`READY=1\n${line()}`)
    },
    reloading: () => {
      phase = 'Reloading'
      const us = n.monotonicUsec()
      n.send(`RELOADING=1\n${us === null ? '' : `MONOTONIC_USEC=${us}\n`}${line()}`)
    },
    stopping: (why = 'Stopping') => {
      for (const t of timers) clearInterval(t)
      phase = why
      n.send(`STOPPING=1\n${line()}`)
    },
    status: (prefix) => {
      if (prefix !== undefined) phase = prefix
      n.send(line())
    },
  }
  sd.ready()
  return sd
}

/** One line for STATUS=: connections by protocol and the uplink's state. */
export function summary(srv: Server, uplink: Uplink | null): string {
  const by = new Map<string, number>()
  for (const s of srv.sessions.values()) by.set(s.kind, (by.get(s.kind) ?? 0) + 1)
  const kinds = [...by].map(([k, v]) => `${k} ${v}`).join(', ')
  let up = 'no uplink'
  if (uplink !== null) {
    const st = uplink.status()
    up = `uplink ${st.leafnodes}/${st.leafs.length} connected`
  }
  return `${srv.sessions.size} connections${kinds ? ` (${kinds})` : ''}, ${up}`
}
