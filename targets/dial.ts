// Outgoing connections for the uplink, on node:net / node:tls (the same on Node, Bun and
// Deno). A dialled wire is a NetWire; with TLS configured it can upgrade in place after the
// hub's plaintext INFO (`startTls`), or it handshakes before any protocol byte (TLS-first).

import net from 'node:net'
import type tls from 'node:tls'
import { nodeTls } from './lazy.ts'
import type { Conn, Dial } from '../src/host.ts'
import { TLS_DEFAULTS, type TlsOptions } from '../src/options.ts'
import { deliverRead, NetWire } from './net.ts'
import { peerTlsOf, tlsClientOptions } from './tls.ts'

/** How long a TCP connect (and a TLS-first handshake) may take. */
const CONNECT_TIMEOUT_MS = 2000

class DialWire extends NetWire {
  constructor(
    sock: net.Socket,
    private readonly servername: string,
    private readonly opts: TlsOptions | null,
  ) {
    super(sock)
  }

  startTls(done: (err: string | null) => void): void {
    let options: tls.ConnectionOptions
    try {
      options = tlsClientOptions(this.opts ?? TLS_DEFAULTS, this.servername)
    } catch (e) {
      return done((e as Error).message)
    }
    const raw = this.sock
    raw.removeListener('data', onData)
    raw.removeListener('drain', onDrain)
    const t = nodeTls().connect({ ...options, socket: raw })
    t.setNoDelay?.(true)
    let settled = false
    const ms = this.opts?.timeout ?? 2000
    const timer = setTimeout(() => fail(`no TLS handshake within ${ms} ms`), ms)
    const fail = (why: string): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      done(why)
    }
    t.once('error', (e) => fail(e.message))
    t.once('secureConnect', () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      wireUp(this, t)
      this.tls = peerTlsOf(t)
      done(null)
    })
  }
}

const CONN = Symbol('conn')
type Wired = (net.Socket | tls.TLSSocket) & { [CONN]?: { conn: Conn | null; closed: boolean; error?: string } }

function onData(this: Wired, d: Uint8Array): void {
  deliverRead(this[CONN]?.conn, d)
}

function onDrain(this: Wired): void {
  this[CONN]?.conn?.drained()
}

function onClose(this: Wired): void {
  const c = this[CONN]
  if (!c || c.closed) return
  c.closed = true
  c.conn?.closed(c.error)
}

/** Keeps the first socket error (a TLS alert such as "certificate required") for closed(). */
function onError(this: Wired, e: Error): void {
  const c = this[CONN]
  if (c && c.error === undefined) c.error = e.message
}

/** Routes a socket's events to the wire's Conn (a TLS socket takes over from the raw one). */
function wireUp(wire: DialWire, sock: net.Socket | tls.TLSSocket): void {
  const prev = (wire.sock as Wired)[CONN]
  const state = prev ?? { conn: null, closed: false }
  ;(sock as Wired)[CONN] = state
  wire.sock = sock
  sock.on('data', onData)
  sock.on('drain', onDrain)
  sock.on('close', onClose)
  sock.on('error', onError) // 'close' follows
}

/** The Dial the uplink uses on every runtime. */
export const dialNet: Dial = (to, open, failed) => {
  const first = to.tls?.handshake_first === true
  let done = false
  const fail = (why: string): void => {
    if (done) return
    done = true
    clearTimeout(timer)
    sock.destroy()
    failed(why)
  }
  let sock: net.Socket
  if (first) {
    let options: tls.ConnectionOptions
    try {
      options = tlsClientOptions(to.tls!, to.host)
    } catch (e) {
      queueMicrotask(() => failed((e as Error).message))
      return
    }
    sock = nodeTls().connect({ ...options, port: to.port, host: to.host })
  } else {
    sock = net.connect({ port: to.port, host: to.host, noDelay: true })
  }
  const timer = setTimeout(() => fail(`no connection within ${CONNECT_TIMEOUT_MS} ms`), CONNECT_TIMEOUT_MS)
  sock.once('error', (e: NodeJS.ErrnoException) => fail(e.code === 'ECONNREFUSED' ? 'connection refused' : e.message))
  sock.once(first ? 'secureConnect' : 'connect', () => {
    if (done) return
    done = true
    clearTimeout(timer)
    const wire = new DialWire(sock, to.host, to.tls)
    wireUp(wire, sock)
    if (first) wire.tls = peerTlsOf(sock as tls.TLSSocket)
    ;(sock as Wired)[CONN]!.conn = open(wire)
  })
}
