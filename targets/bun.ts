// Bun: Bun.listen for the plain NATS and MQTT listeners and for those that speak TLS from the
// first byte (the MQTT TLS port, NATS handshake_first), with Bun's own TLS; SPRIG_NET=node puts
// all of them on node:net (+ node:tls). NATS's plaintext-then-TLS listeners, the WebSocket and
// HTTPS listeners and the uplink's dial stay on node:net + node:tls. Bun.listen costs less CPU
// per message and less memory per socket than Bun's node:net (docs/benchmarks.md): an idle
// TLS connection about half.
// Bun.listen's write() may take only part of the data and returns how much it took, so each
// socket keeps the unwritten rest here until Bun calls drain().

import process from 'node:process'
import { Buffer } from 'node:buffer'
import { EMPTY, useRangeCopy } from '../src/bytes.ts'
import type { Conn, PeerTls, Wire } from '../src/host.ts'
import { bunJsc } from './lazy.ts'
import { listenNet, releaseRead, useReadRelease } from './net.ts'
import { bunLibc, libcOnce, pageOutAfter, pageOutExecutable } from './pageout.ts'
import { afterAccept, afterClose, END_GRACE_MS, listenError, plainAddress, standardHost, type Accept, type Guard, type GuardedAccept, type Listener, type Runtime } from './runtime.ts'
import { libraryReason, onTlsReload, peerRefusal, peerTlsFrom, type ServerTls } from './tls.ts'

export interface BunSocket {
  write(data: Uint8Array): number
  end(): void
  terminate(): void
  setNoDelay?(on: boolean): void
  pause?(): void
  resume?(): void
  readonly remoteAddress: string
  readonly remotePort: number
  data: BunWire
  // TLS sockets only (Bun.listen with `tls`).
  readonly authorized?: boolean
  getPeerCertificate?(): import('node:tls').PeerCertificate | undefined
  getTLSVersion?(): string | null
}

declare const Bun: {
  version: string
  main: string
  listen(o: unknown): { port: number; stop(closeActive?: boolean): void }
}

/**
 * Bun.listen's socket callbacks, one set for every socket (exported for the fake-socket test).
 * An accept from guardAccept brings its Guard: the wire then guards its Conn itself (no
 * GuardedConn per connection).
 */
export function bunHandlers(accept: Accept, count: (delta: number) => void, secure?: ServerTls) {
  const guard = (accept as GuardedAccept).guard ?? null
  // Bun has taken what was waiting: the rest goes, and then the connection may write again.
  const drain = (s: BunSocket): void => {
    const w = s.data
    if (!w.writeRest()) return
    if (w.closing) return s.end()
    const c = w.conn
    if (c === null) return
    if (guard === null) return c.drained()
    if (w.failed) return
    try {
      c.drained()
    } catch (e) {
      w.fail(guard, 'drained', e)
    }
  }
  // TLS sockets only: what the connection wrote before the handshake was over goes out once
  // it is (NATS's INFO with handshake_first), as after a drain.
  const tls = secure === undefined ? {} : {
    handshake(s: BunSocket, ok: boolean, err: (Error & { code?: string }) | null) {
      if (settleHandshake(s, ok, err)) drain(s)
    },
  }
  const handlers = {
    ...tls,
    open(s: BunSocket) {
      count(1)
      afterAccept()
      // With TLS, Bun calls open() at accept, before the handshake.
      const w = secure === undefined ? new BunWire(s) : new BunTlsWire(s, secure)
      s.data = w
      s.setNoDelay?.(true)
      w.conn = guard === null ? accept(w) : guard.accept(w)
      // The handshake counts only for a socket let in: one turned away (descriptors short) is
      // logged once per episode by the guard, not once each as a failed handshake.
      if (w instanceof BunTlsWire && w.conn !== null) w.timer = setTimeout(handshakeTimeout, w.st.timeout, w)
    },
    data(s: BunSocket, d: Uint8Array) {
      const w = s.data
      const c = w.conn
      if (c === null) return
      if (guard === null) {
        c.data(d)
        return releaseRead(d)
      }
      if (w.failed) return
      try {
        c.data(d)
      } catch (e) {
        w.fail(guard, 'data', e)
      }
      releaseRead(d)
    },
    drain,
    close(s: BunSocket, err?: Error) {
      count(-1)
      afterClose()
      const w = s.data
      if (secure !== undefined) closedInHandshake(w as BunTlsWire)
      const c = w.conn
      w.conn = null
      if (c === null) return
      const why = w.error ?? err?.message
      if (guard === null) c.closed(why)
      else guard.closed(w, c, why)
    },
    // 'close' follows; the adapter logs the reason with the peer.
    error(s: BunSocket, err: Error) {
      if (s.data && s.data.error === null) s.data.error = err.message
    },
  }
  // Every listener's `data` is the same code: one of them stands for all (keepFromTopTier).
  dataHandler ??= handlers.data
  return handlers
}

/** A listener's `data` handler, once one was made: on the path of every read (keepFromTopTier). */
let dataHandler: Function | null = null

function listenBun(host: string, port: number, accept: Accept): Promise<Listener> {
  let open = 0
  try {
    const l = Bun.listen({ hostname: host, port, socket: bunHandlers(accept, (d) => (open += d)) })
    return Promise.resolve({ port: l.port, close: () => l.stop(false), open: () => open })
  } catch (e) {
    return Promise.reject(listenError(host, port, e))
  }
}

/**
 * A listener that speaks TLS from the first byte, on Bun.listen's own TLS: the MQTT TLS port
 * and NATS with handshake_first (NATS's plaintext INFO before the upgrade needs node:tls). The
 * certificate is asked for but not enforced by the library: the check is the one node:tls
 * listeners use (tls.ts peerRefusal), so refusals read alike. Bun builds the TLS context when
 * it listens, so a reload that changes the certificate, key or CA listens again on the same
 * port (connections already up stay; verify, map and the CRL are read per handshake anyway).
 */
function listenBunTls(host: string, port: number, accept: Accept, st: ServerTls): Promise<Listener> {
  let open = 0
  const socket = bunHandlers(accept, (d) => (open += d), st)
  const listen = (at: number, tls: BunTlsOptions) => Bun.listen({ hostname: host, port: at, tls, socket })
  let tls = bunTlsOptions(st)
  let l: ReturnType<typeof listen>
  try {
    l = listen(port, tls)
  } catch (e) {
    return Promise.reject(listenError(host, port, e))
  }
  const bound = l.port
  onTlsReload(st, () => {
    const next = bunTlsOptions(st)
    l.stop(false)
    try {
      l = listen(bound, next)
      tls = next
    } catch (e) {
      // The port is free for a moment between the two: should anything take it, or Bun refuse
      // the new files, listen with the old ones again rather than not at all.
      st.refused(`TLS listener on ${host}:${bound}: cannot listen with the reloaded certificate: ${(e as Error).message}`)
      try {
        l = listen(bound, tls)
      } catch (e2) {
        st.refused(`TLS listener on ${host}:${bound}: closed, cannot listen again: ${(e2 as Error).message}`)
      }
    }
  })
  return Promise.resolve({ port: bound, close: () => l.stop(false), open: () => open })
}

interface BunTlsOptions {
  cert: unknown
  key: unknown
  ca?: unknown
  requestCert: boolean
  rejectUnauthorized: false
}

function bunTlsOptions(st: ServerTls): BunTlsOptions {
  const o = st.serverOptions
  return { cert: o.cert, key: o.key, ...(o.ca !== undefined ? { ca: o.ca } : {}), requestCert: st.verify, rejectUnauthorized: false }
}

/**
 * The handshake is over (ok) or failed: true when the client may go on (its certificate, if
 * any, is in `tls`); otherwise it is refused with the reason, logged, and closed.
 */
function settleHandshake(s: BunSocket, ok: boolean, err: (Error & { code?: string }) | null): boolean {
  const w = s.data as BunTlsWire
  if (w.timer === null) return false // turned away at accept, already refused, or a second call
  clearTimeout(w.timer)
  w.timer = null
  const st = w.st
  let why: string | null
  try {
    const cert = ok ? s.getPeerCertificate?.() : undefined
    why = !ok ? (err ? libraryReason(err) : 'TLS handshake failed') : st.verify ? peerRefusal(st, cert, s.authorized === true, err) : null
    if (why === null) w.tls = peerTlsFrom(cert, s.authorized === true, s.getTLSVersion?.() ?? '', st.map)
  } catch (e) {
    why = `cannot read the client certificate: ${(e as Error).message}`
  }
  if (why === null) return true
  refuseTls(w, why)
  return false
}

function refuseTls(w: BunTlsWire, why: string): void {
  if (w.timer !== null) clearTimeout(w.timer)
  w.timer = null
  w.st.refused(`${w.remoteAddress}:${w.remotePort} - TLS handshake error: ${why}`)
  w.destroy() // close() tells the connection
}

function handshakeTimeout(w: BunTlsWire): void {
  if (w.timer !== null) refuseTls(w, 'TLS handshake timeout')
}

/** Closed with the handshake still going and no word from Bun about it: logged as node:tls listeners do. */
function closedInHandshake(w: BunTlsWire): void {
  if (w.timer !== null) refuseTls(w, 'connection closed during the TLS handshake')
}

/** Bytes Bun has not taken yet: made when a write is cut short, dropped once all is sent. */
interface Backlog {
  /** Oldest first from `head`. */
  readonly chunks: Uint8Array[]
  /** Index of the first unsent chunk (no shift(): a slow reader may queue many). */
  head: number
  /** Bytes in `chunks` from `head`: buffered() is asked per write while blocked. */
  held: number
}

// BunWire.bits: the peer's port above two flags.
const CLOSING = 1
const FAILED = 2
const PORT_SHIFT = 2

/** The first error of each socket that had one (rare: kept beside the wires, not in a field of each). */
const errors = new WeakMap<object, string>()

/**
 * BunWire's getters, on a prototype of their own. JSC sizes an object whose constructor sets
 * fewer than six fields by adding the accessors of its class's prototype ("properties it may
 * shadow"): with these getters on BunWire itself, its four fields took 64 bytes, here 48
 * (Bun 1.4.5, checked with Bun.generateHeapSnapshot()).
 */
abstract class WireGetters {
  declare readonly s: BunSocket
  protected declare bits: number

  get remoteAddress(): string {
    return plainAddress(this.s.remoteAddress)
  }

  get remotePort(): number {
    return this.bits >>> PORT_SHIFT
  }

  /** end() was called: the socket ends once the rest is written. */
  get closing(): boolean {
    return (this.bits & CLOSING) !== 0
  }

  /** The Conn threw (the guard closed the socket): nothing more reaches it but closed(). */
  get failed(): boolean {
    return (this.bits & FAILED) !== 0
  }

  /** The first socket error, handed to Conn.closed() as the reason; null: none. */
  get error(): string | null {
    return errors.get(this) ?? null
  }

  set error(why: string | null) {
    if (why === null) errors.delete(this)
    else errors.set(this, why)
  }
}

/**
 * A Bun socket as the adapters see it. A class, so an idle connection costs one small object
 * (methods on the prototype, no closures). Four fields, JSC's 48-byte size class: the
 * unwritten rest exists only while Bun is behind, the peer's address is read from Bun's
 * socket (which keeps it once read), its port and two flags share one number, a socket error
 * is kept aside (`errors`), and the guard is the listener's, in the handlers (no GuardedConn
 * per connection).
 */
export class BunWire extends WireGetters implements Wire {
  conn: Conn | null = null
  private backlog: Backlog | null = null
  /** The remote port << PORT_SHIFT | CLOSING | FAILED. */
  protected override bits: number

  constructor(override readonly s: BunSocket) {
    super()
    // Read once now: Bun's socket keeps the address from then on, also after it closed (the
    // log lines and /connz?state=closed need it then); the port it does not keep.
    void s.remoteAddress
    this.bits = (s.remotePort & 0xffff) << PORT_SHIFT
  }

  fail(guard: Guard, where: string, e: unknown): void {
    this.bits |= FAILED
    guard.failed(this, where, e)
  }

  /** Holds every write until writeRest() (a TLS socket before its handshake: Bun drops them). */
  protected hold(): void {
    this.backlog = { chunks: [], head: 0, held: 0 }
  }

  write(d: Uint8Array): boolean {
    const b = this.backlog
    if (b !== null) {
      b.chunks.push(d)
      b.held += d.length
      return false
    }
    const n = this.s.write(d)
    if (n >= d.length) return true
    const r = n > 0 ? d.subarray(n) : d
    this.backlog = { chunks: [r], head: 0, held: r.length }
    return false
  }

  /** Bun.listen copies nothing it did not send: with no rest, the writer may reuse its buffer. */
  idle(): boolean {
    return this.backlog === null
  }

  end(): void {
    this.bits |= CLOSING
    if (this.backlog === null) this.s.end()
    setTimeout(terminate, END_GRACE_MS, this.s).unref()
  }

  buffered(): number {
    return this.backlog === null ? 0 : this.backlog.held
  }

  destroy(): void {
    this.s.terminate()
  }

  pause(): void {
    this.s.pause?.()
  }

  resume(): void {
    this.s.resume?.()
  }

  /** Writes the queued rest; true once nothing is left. */
  writeRest(): boolean {
    const b = this.backlog
    if (b === null) return true
    const rest = b.chunks
    while (b.head < rest.length) {
      const d = rest[b.head]!
      const n = this.s.write(d)
      if (n < d.length) {
        if (n > 0) {
          rest[b.head] = d.subarray(n)
          b.held -= n
        }
        return false
      }
      b.held -= d.length
      rest[b.head++] = EMPTY // let the sent chunk go before the rest is done
    }
    this.backlog = null
    return true
  }
}

/**
 * A socket of a TLS listener: its writes wait for the handshake, which must end within the
 * listener's timeout; then `tls` says what the client's certificate says.
 */
class BunTlsWire extends BunWire {
  tls: PeerTls | undefined = undefined
  /** The handshake's deadline, set once the socket is let in; null when there is none (turned away) or it is over. */
  timer: ReturnType<typeof setTimeout> | null = null
  constructor(
    s: BunSocket,
    readonly st: ServerTls,
  ) {
    super(s)
    this.hold()
  }
}

function terminate(s: BunSocket): void {
  s.terminate()
}

/** Buffer's copy() takes a range of any Uint8Array natively: no view made (src/bytes.ts rangeCopy). */
const bufferCopy = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number

export function bunRangeCopy(b: Uint8Array, p: number, src: Uint8Array, at: number, n: number): number {
  return p + bufferCopy.call(src, b, p, at, at + n)
}

/**
 * How long Bun's allocator (mimalloc) keeps freed, unused memory before handing it back to
 * the kernel. Bun's default (100 ms in Bun 1.4.5) is shorter than the time between two of
 * JSC's collections under load (~0.4 s), and Bun gives every socket read a new buffer (up to
 * 512 KiB) that only a collection frees: so under a flood most reads land on pages handed
 * back since the last collection and fault each of them in again. At 1 KiB messages through
 * the uplink that churn took about 40% of the gateway's CPU (docs/benchmarks.md, 2026-12-03
 * 18:00). With one second, what a collection frees is reused by the reads that follow it,
 * and still goes back to the kernel a second after a burst ends.
 */
const PURGE_DELAY_MS = '1000'

/**
 * mimalloc reads its options from the environment once, as the process starts, so on Bun
 * sprig starts itself again at once with MIMALLOC_PURGE_DELAY set: execve, so the process id
 * (systemd's main PID), open files and arguments stay. An operator's own
 * MIMALLOC_PURGE_DELAY is left alone (100 gives Bun's default back), and so is a Bun
 * without process.execve. Returns only when nothing was done (or execve failed).
 */
export function tuneAllocator(): void {
  if (process.env.MIMALLOC_PURGE_DELAY !== undefined) return
  const p = process as typeof process & { execve?: (file: string, args: string[], env: Record<string, string | undefined>) => never }
  if (typeof p.execve !== 'function') return
  // A compiled binary takes its arguments straight after argv[0]; `bun [flags] sprig.js …`
  // needs its flags and the script again (a script that imports the bundle is started again
  // whole). `bun -e`, with no script to start again, is left as it is.
  const compiled = Bun.main.startsWith('/$bunfs/')
  if (!compiled && process.argv[1] !== Bun.main) return
  const rest = process.argv.slice(2)
  const args = compiled ? [process.argv0, ...rest] : [process.argv0, ...process.execArgv, Bun.main, ...rest]
  try {
    p.execve(process.execPath, args, { ...process.env, MIMALLOC_PURGE_DELAY: PURGE_DELAY_MS })
  } catch {
    // Not fatal: sprig runs as well with the default, only with more CPU under a flood.
  }
}

const libc = libcOnce(bunLibc)

/**
 * JavaScriptCore compiles code that keeps running hot with its top tier (FTL), whose compiler
 * is ~4–5 MB of Bun's executable. After an accept burst Bun.shrink() drops compiled code and
 * sprig pages the executable's code out (targets/runtime.ts, pageout.ts); with thousands of
 * idle devices the housekeeping tick alone then ran hot enough to be compiled by FTL again
 * within seconds, which paged its compiler back in: ~3–4 MB of RSS that an idle gateway kept
 * for a loop that runs once a second (docs/benchmarks.md, 2026-12-07 16:50), and their pings
 * did the same to the read path within minutes (2026-12-07 19:00, 21:45). The tier below (DFG)
 * compiles these as well for that. With `fns` go this module's part of every read (a
 * PINGREQ's whole path, with the adapter's entry and the queue's direct write in `fns`);
 * `apart`: functions never inlined into those, so that busy code behind them still reaches
 * the top tier. A Bun without `noFTL` is left as it is.
 */
function keepFromTopTier(fns: readonly Function[], apart: readonly Function[] = []): void {
  try {
    const jsc = bunJsc()
    const readPath = [BunWire.prototype.write, releaseRead, standardHost.now, ...(dataHandler === null ? [] : [dataHandler])]
    for (const f of [...fns, ...readPath]) jsc.noFTL(f)
    for (const f of apart) jsc.noInline(f)
  } catch {
    // Not fatal: the code only costs more memory once compiled by FTL.
  }
}

/** A function, not a constant: this module is also loaded (but not called) under Node and Deno. */
export function bun(): Runtime {
  const viaNode = process.env.SPRIG_NET === 'node'
  useRangeCopy(bunRangeCopy)
  // Bun's node:net (TLS listeners, the uplink, SPRIG_NET=node) hands a new buffer per read too.
  useReadRelease(releaseRead)
  const after = pageOutAfter(process.env.SPRIG_PAGEOUT)
  return {
    name: `bun ${Bun.version}${viaNode ? ' (node:net)' : ''}`,
    host: standardHost,
    listen: viaNode ? listenNet : listenBun,
    ...(viaNode ? {} : { listenTls: listenBunTls }),
    ...(after !== null ? { pageOut: { after, run: () => pageOutExecutable(libc) } } : {}),
    keepFromTopTier,
  }
}
