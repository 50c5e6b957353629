// Listener on node:net, the API all three runtimes share. Node and Deno use it; Bun has a
// native listener (bun.ts) but can fall back to this one. TLS listeners are always this one:
// the accepted plain socket is upgraded with node:tls (tls.ts).

import net from 'node:net'
import type tls from 'node:tls'
import type { Conn, PeerTls, Wire } from '../src/host.ts'
import type { Accept, Listener } from './runtime.ts'
import { acceptFailed, afterAccept, afterClose, END_GRACE_MS, listenError, plainAddress } from './runtime.ts'
import { upgradeSocket, type ServerTls } from './tls.ts'

export function listenNet(host: string, port: number, accept: Accept, secure?: ServerTls): Promise<Listener> {
  const sockets = new Set<net.Socket>()
  // One set of listeners for all sockets (`this` is the socket, plain or TLS), not closures
  // per socket. After a TLS upgrade both sockets may report 'close': the first one counts.
  function onClose(this: net.Socket): void {
    const wire = (this as WiredSocket)[WIRE]
    if (sockets.delete(wire.raw)) afterClose()
    const c = wire.conn
    wire.conn = null
    c?.closed(wire.error ?? undefined)
  }
  // A plain listener on Node reads into the shared buffer: sockets must not start reading
  // before it is in place.
  const staticReads = shared !== null && secure === undefined
  const server = net.createServer({ noDelay: true, pauseOnConnect: staticReads }, (sock) => {
    sockets.add(sock)
    afterAccept()
    const wire = new NetWire(sock)
    ;(sock as WiredSocket)[WIRE] = wire
    sock.on('error', onError) // 'close' follows and tells the connection, with this reason
    sock.on('close', onClose)
    // With TLS, the plain socket's bytes belong to the handshake: no 'data' listener on it.
    // TLS first: what the connection writes waits for the handshake, which starts only once the
    // socket is let in (one turned away while descriptors are short is logged once per
    // episode by the guard, not once each as a failed handshake).
    if (secure?.mode === 'first') wire.held = []
    else if (secure?.mode === 'after-info') wire.upgradeAfter = { st: secure, onClose }
    const conn = accept(wire)
    if (!conn) return
    wire.conn = conn
    if (secure?.mode === 'first') return startTls(wire, secure, onClose)
    if (secure?.mode === 'mixed') {
      wire.mixed = { st: secure, onClose }
      sock.on('data', sniff)
      sock.on('drain', onDrain)
      return
    }
    if (secure) return
    sock.on('drain', onDrain)
    if (staticReads && readIntoShared(sock)) return
    sock.on('data', onData)
    if (staticReads) sock.resume()
  })
  return new Promise((resolve, reject) => {
    const failed = (e: Error): void => reject(listenError(host, port, e))
    server.once('error', failed)
    server.listen({ host, port }, () => {
      // From now on an error is a failed accept (EMFILE ...): logged, never fatal.
      server.removeListener('error', failed)
      server.on('error', acceptFailed)
      const addr = server.address() as net.AddressInfo
      resolve({
        port: addr.port,
        close: () => server.close(),
        open: () => sockets.size,
      })
    })
  })
}

/**
 * Hands a read's memory back as soon as the connection has read it. Bun (Bun.listen and its
 * node:net) and Deno's node:net copy every socket read into a new buffer (Bun up to 512 KiB,
 * Deno up to 64 KiB) that, left alone, only a garbage collection frees: under a flood ~100 MB
 * of reads lie between two collections, and on Bun mimalloc has handed most of their pages
 * back by then, so each new read faults fresh pages in and the copy into them misses the
 * cache. A Conn may not keep the bytes past data() (src/host.ts: the adapters copy what they
 * keep, as Deno's native listener, which reuses one read buffer, already requires), so
 * transfer(0) detaches the buffer and frees its memory at once, and the next read reuses the
 * same warm memory. Only a buffer that holds this read alone (test/read-release.test.ts checks
 * that each runtime hands every read a buffer of its own); never an error of its own.
 */
export function releaseRead(d: Uint8Array): void {
  const b = d.buffer as ArrayBuffer & { transfer?: (n: number) => ArrayBuffer }
  if (d.byteOffset !== 0 || d.byteLength !== b.byteLength || typeof b.transfer !== 'function') return
  try {
    b.transfer(0)
  } catch {
    // Not detachable (a runtime's own memory): left to the collector, as before.
  }
}

/**
 * Called with each read once its connection has read it (null: nothing done). Bun and Deno
 * set it to releaseRead. Node leaves it unset: Node 20 has no transfer(); its plain
 * listener reads into one shared buffer instead (useSharedReads).
 */
let afterRead: ((d: Uint8Array) => void) | null = null

export function useReadRelease(f: ((d: Uint8Array) => void) | null): void {
  afterRead = f
}

/** Hands a read to the connection, then to afterRead (listener and dialled sockets alike). */
export function deliverRead(conn: Conn | null | undefined, d: Uint8Array): void {
  conn?.data(d)
  if (afterRead !== null) afterRead(d)
}

/**
 * Node: every plain accepted socket reads into one buffer that all of them share (what
 * node:net's documented `onread` option does for a socket it creates; accepted sockets cannot
 * be given the option, so the two fields it sets are set on them the same way). Node's default
 * allocates a new 64 KiB buffer per read that only a collection frees: under a flood that is
 * most of the page faults and about half of the CPU the reads cost (docs/benchmarks.md,
 * 2026-12-05 17:00). One buffer serves every socket because each read is handed over,
 * synchronously, before the next one starts, and a Conn may not keep the bytes past data()
 * (src/host.ts).
 */
let shared: { buffer: Uint8Array; kBuffer: symbol; kBufferCb: symbol } | null = null

/**
 * Turns the shared read buffer on (Node's target). Finds the socket's two fields by making an
 * unconnected socket with `onread` and looking for the values given; false, and reads stay
 * as they are, if this Node does not have them.
 */
export function useSharedReads(size: number): boolean {
  const buffer = new Uint8Array(size)
  const probe = new net.Socket({ onread: { buffer, callback: onSharedRead } } as net.SocketConstructorOpts)
  const fields = probe as unknown as Record<symbol, unknown>
  const own = Object.getOwnPropertySymbols(probe)
  const kBuffer = own.find((k) => fields[k] === buffer)
  const kBufferCb = own.find((k) => fields[k] === onSharedRead)
  probe.destroy()
  shared = kBuffer !== undefined && kBufferCb !== undefined ? { buffer, kBuffer, kBufferCb } : null
  return shared !== null
}

/** Points a paused accepted socket's reads at the shared buffer and starts reading. */
function readIntoShared(sock: net.Socket): boolean {
  const s = shared!
  const handle = (sock as unknown as { _handle?: { useUserBuffer?: (b: Uint8Array) => void } })._handle
  if (typeof handle?.useUserBuffer !== 'function') return false
  const fields = sock as unknown as Record<symbol, unknown>
  fields[s.kBuffer] = s.buffer
  fields[s.kBufferCb] = onSharedRead
  handle.useUserBuffer(s.buffer)
  sock.resume()
  return true
}

/**
 * node:net calls it with the socket as `this` for each read into the shared buffer. Not
 * deliverRead: a hook that frees reads must never see the shared buffer.
 */
function onSharedRead(this: net.Socket, n: number, buf: Uint8Array): void {
  ;(this as WiredSocket)[WIRE].conn?.data(buf.subarray(0, n))
}

const WIRE = Symbol('wire')
type WiredSocket = net.Socket & { [WIRE]: NetWire }

/** A socket as the adapters see it; methods on the prototype, so nothing per socket but the object. */
export class NetWire implements Wire {
  conn: Conn | null = null
  readonly remoteAddress: string
  readonly remotePort: number
  /** The accepted (or dialled) plain socket; `sock` is the TLS socket over it once upgraded. */
  readonly raw: net.Socket
  tls?: PeerTls
  /** Listener side, NATS's way: the next write (INFO) goes out in plaintext, then TLS starts. */
  upgradeAfter: { st: ServerTls; onClose: (this: net.Socket) => void } | null = null
  /** allow_non_tls: until the client's first bytes say whether it starts TLS. */
  mixed: { st: ServerTls; onClose: (this: net.Socket) => void } | null = null
  /** While a listener-side TLS handshake runs, writes wait here (null otherwise). */
  held: Uint8Array[] | null = null
  /** The first socket error (e.g. "read ECONNRESET"), handed to Conn.closed() as the reason. */
  error: string | null = null

  // Not readonly: a dialled wire swaps in its TLS socket after STARTTLS-style upgrades (dial.ts).
  constructor(public sock: net.Socket) {
    this.raw = sock
    this.remoteAddress = plainAddress(sock.remoteAddress)
    this.remotePort = sock.remotePort ?? 0
  }

  write(d: Uint8Array): boolean {
    if (this.held !== null) {
      this.held.push(d)
      return true
    }
    const up = this.upgradeAfter
    if (up !== null) {
      this.upgradeAfter = null
      this.held = []
      this.raw.write(d, (err) => (err ? this.raw.destroy() : startTls(this, up.st, up.onClose)))
      return true
    }
    return this.sock.write(d)
  }

  buffered(): number {
    if (this.held === null) return this.sock.writableLength
    let n = 0
    for (const d of this.held) n += d.length
    return n
  }

  idle(): boolean {
    // Plain TCP only: node:net has handed a write to the kernel when nothing is left queued.
    return this.tls === undefined && this.held === null && this.upgradeAfter === null && this.sock.writableLength === 0
  }

  end(): void {
    if (this.held !== null) {
      // Nothing can be sent before the handshake is over; an adapter ends a wire this early
      // only to refuse it.
      this.destroy()
      return
    }
    this.sock.end()
    setTimeout(destroySocket, END_GRACE_MS, this.sock).unref()
  }

  destroy(): void {
    this.sock.destroy()
    if (this.sock !== this.raw) this.raw.destroy()
  }

  pause(): void {
    this.sock.pause()
  }

  resume(): void {
    this.sock.resume()
  }
}

/**
 * Upgrades an accepted wire to TLS (server side). Its writes wait until the handshake is
 * over, then go to the TLS socket, which feeds the same Conn from then on. On a failure
 * tls.ts logs the reason and destroys the sockets; their 'close' tells the Conn.
 */
function startTls(wire: NetWire, st: ServerTls, onClose: (this: net.Socket) => void): void {
  wire.held ??= []
  upgradeSocket(wire.raw, st, `${wire.remoteAddress}:${wire.remotePort}`, (ts: tls.TLSSocket, info: PeerTls) => {
    const held = wire.held ?? []
    wire.held = null
    wire.sock = ts
    wire.tls = info
    ;(ts as unknown as WiredSocket)[WIRE] = wire
    ts.on('error', onError)
    ts.on('close', onClose)
    ts.on('data', onData)
    ts.on('drain', onDrain)
    for (const d of held) ts.write(d)
    if (ts.destroyed) onClose.call(ts)
  }, loggedByTls)
}

/** A failed handshake: tls.ts has logged the reason and destroyed the sockets. */
function loggedByTls(): void {}

function destroySocket(sock: net.Socket): void {
  sock.destroy()
}

/** Keeps the first error for the close that follows (the adapter logs it with the peer). */
function onError(this: net.Socket, e: Error): void {
  const wire = (this as WiredSocket)[WIRE]
  wire.error ??= e.message
}

// `?.`: after a TLS upgrade the plain socket's 'close' may come before the TLS socket's last events.
function onData(this: net.Socket, d: Uint8Array): void {
  deliverRead((this as WiredSocket)[WIRE].conn, d)
}

/**
 * allow_non_tls: the first bytes a client sends after INFO decide. A TLS ClientHello (a
 * handshake record, 0x16) is put back and the socket upgrades (node:tls reads what was put
 * back); anything else is the plaintext protocol.
 */
function sniff(this: net.Socket, d: Buffer): void {
  const wire = (this as WiredSocket)[WIRE]
  this.removeListener('data', sniff)
  const m = wire.mixed!
  wire.mixed = null
  if (d.length > 0 && d[0] === 0x16) {
    this.removeListener('drain', onDrain)
    this.pause()
    this.unshift(d)
    startTls(wire, m.st, m.onClose)
    return
  }
  this.on('data', onData)
  deliverRead(wire.conn, d)
}

function onDrain(this: net.Socket): void {
  ;(this as WiredSocket)[WIRE].conn?.drained()
}
