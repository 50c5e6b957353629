// The WebSocket listener (nats-server's `websocket` block): NATS on any path, MQTT on /mqtt.
// node:net accepts (node:tls on top, as every TLS listener: tls.ts), this file reads the HTTP
// upgrade request itself (bounded, with the handshake timeout) and checks it the way
// nats-server does; `ws` then completes the upgrade and does all framing (masking, reserved
// bits, control frames, UTF-8 in text frames, fragmentation, permessage-deflate, maxPayload),
// closing a bad connection with the RFC 6455 code. Each WebSocket becomes a Wire, so the NATS
// and MQTT adapters run unchanged. Not node:http: its `upgrade` event differs between Node,
// Bun and Deno, while node:net behaves the same on all three (docs/runtimes.md).

import { nodeHttp } from './lazy.ts'
import net from 'node:net'
import type tls from 'node:tls'
import type { WebSocket, WebSocketServer } from 'ws'
import type { Conn, PeerTls, Wire } from '../src/host.ts'
import type { WebsocketOptions } from '../src/options.ts'
import type { Server } from '../src/server.ts'
import { acceptFailed, afterAccept, afterClose, END_GRACE_MS, listenError, plainAddress, type Accept, type Listener } from './runtime.ts'
import { upgradeSocket, type ServerTls } from './tls.ts'

/** Largest upgrade request head (request line and headers); browsers with cookies stay well under. */
const MAX_HEAD = 16 * 1024
/**
 * A WebSocket message may hold several protocol lines or packets (nats.js batches up to 32 KB
 * of small ones with a big one): a message may exceed max_payload by this much before `ws`
 * closes it with 1009. Within it, the adapters' own limits answer as on TCP (-ERR, DISCONNECT).
 */
const MESSAGE_SLACK = 64 * 1024
/** nats-server's path for MQTT over WebSocket (a prefix, as there). */
const MQTT_PATH = '/mqtt'
/** The subprotocols MQTT clients offer: `mqtt` (3.1.1 and 5.0), `mqttv3.1` (3.1). */
const MQTT_PROTOCOLS = ['mqtt', 'mqttv3.1']

export interface WsAccept {
  nats: Accept
  /** null: mqtt.enabled is false, /mqtt is refused. */
  mqtt: Accept | null
}

/** What /varz shows under sprig.websocket. */
interface WsCounters {
  nats: number
  mqtt: number
  refused_handshakes: number
}

export async function listenWebsocket(srv: Server, o: WebsocketOptions, host: string, accept: WsAccept, secure?: ServerTls): Promise<Listener> {
  // Loaded only when a websocket block is configured: an idle broker without one never pays for it.
  fastUnmask()
  const { WebSocketServer } = await import('ws')
  const o2 = srv.opts
  const wss: WebSocketServer = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    maxPayload: o2.max_payload + o2.max_control_line + MESSAGE_SLACK,
    // nats-server: no context takeover either way (no window kept per connection), fast level.
    perMessageDeflate: o.compression ? { serverNoContextTakeover: true, clientNoContextTakeover: true, zlibDeflateOptions: { level: 1 }, threshold: 64 } : false,
    handleProtocols: (offered: Set<string>, req: { url?: string }) => {
      if (!isMqtt(req.url ?? '/')) return offered.values().next().value ?? false
      return MQTT_PROTOCOLS.find((p) => offered.has(p)) ?? false
    },
  })
  const counters: WsCounters = { nats: 0, mqtt: 0, refused_handshakes: 0 }
  const origins = allowedOrigins(o.allowed_origins)
  const log = srv.log
  const sockets = new Set<net.Socket>()

  const refuse = (s: net.Socket, peer: string, status: number, reason: string): void => {
    counters.refused_handshakes++
    log.error(`${peer} - websocket handshake error: ${reason}`)
    const text = STATUS_TEXT[status] ?? 'Error'
    s.end(`HTTP/1.1 ${status} ${text}\r\nsec-websocket-version: 13\r\ncontent-type: text/plain\r\ncontent-length: ${text.length + 1}\r\nconnection: close\r\n\r\n${text}\n`)
    setTimeout(() => s.destroy(), END_GRACE_MS).unref()
  }

  // The request head has arrived on `s` (plain or TLS): check it, then let `ws` upgrade.
  const upgrade = (s: net.Socket, raw: net.Socket, peer: string, req: Head, rest: Buffer, timer: ReturnType<typeof setTimeout>, info?: PeerTls): void => {
    const mqtt = isMqtt(req.url)
    if (req.method !== 'GET') return refuse(s, peer, 405, 'request method must be GET')
    if (!req.headers.host) return refuse(s, peer, 400, "'Host' missing in request")
    if (!tokens(req.headers.upgrade).includes('websocket')) return refuse(s, peer, 400, "invalid value for header 'Upgrade'")
    if (!tokens(req.headers.connection).includes('upgrade')) return refuse(s, peer, 400, "invalid value for header 'Connection'")
    if (!req.headers['sec-websocket-key']) return refuse(s, peer, 400, 'key missing')
    if (!tokens(req.headers['sec-websocket-version']).includes('13')) return refuse(s, peer, 400, 'invalid version')
    const bad = checkOrigin(o.same_origin, origins, req, secure !== undefined)
    if (bad !== null) return refuse(s, peer, 403, `origin not allowed: ${bad}`)
    if (mqtt && accept.mqtt === null) return refuse(s, peer, 404, 'MQTT is not enabled (mqtt.enabled: false)')
    const offered = req.headers['sec-websocket-protocol']
    if (mqtt && offered !== undefined && !tokens(offered).some((p) => MQTT_PROTOCOLS.includes(p))) {
      return refuse(s, peer, 400, `${MQTT_PATH} needs the WebSocket subprotocol "mqtt", offered ${JSON.stringify(offered)}`)
    }
    const fake = { method: req.method, url: req.url, headers: req.headers } as unknown as import('node:http').IncomingMessage
    wss.handleUpgrade(fake, s, rest, (ws: WebSocket) => {
      clearTimeout(timer)
      open(ws, s, raw, mqtt, info)
      s.resume() // paused by readHead; `ws` reads from here on
    })
  }

  const open = (ws: WebSocket, s: net.Socket, raw: net.Socket, mqtt: boolean, info?: PeerTls): void => {
    const wire = new WsWire(ws, s, plainAddress(raw.remoteAddress), raw.remotePort ?? 0, info)
    // First, even for a refused connection: an 'error' without a listener would throw.
    ws.on('error', (e: Error) => {
      // A protocol violation: `ws` has sent the close frame with its code (1002, 1007, 1009).
      wire.error ??= `websocket: ${e.message}`
    })
    const conn = (mqtt ? accept.mqtt! : accept.nats)(wire)
    if (!conn) return
    wire.conn = conn
    const kind = mqtt ? 'mqtt' : 'nats'
    counters[kind]++
    ws.on('message', (data: Buffer) => wire.conn?.data(data))
    ws.on('close', () => {
      counters[kind]--
      const c = wire.conn
      wire.conn = null
      c?.closed(wire.error ?? undefined)
    })
    s.on('drain', () => wire.conn?.drained())
  }

  const server = net.createServer({ noDelay: true }, (sock) => {
    sockets.add(sock)
    afterAccept()
    const peer = `${plainAddress(sock.remoteAddress)}:${sock.remotePort ?? 0} - ws`
    sock.on('close', () => {
      sockets.delete(sock)
      afterClose()
    })
    sock.on('error', (e) => log.debug(() => `${peer}: ${e.message}`))
    // nats-server's handshake_timeout: from accept to the upgrade, TLS handshake included.
    const timer = setTimeout(() => {
      counters.refused_handshakes++
      log.error(`${peer} - websocket handshake error: handshake timeout`)
      sock.destroy()
    }, o.handshake_timeout)
    sock.on('close', () => clearTimeout(timer))
    if (!secure) return readHead(sock, MAX_HEAD, (req, rest) => upgrade(sock, sock, peer, req, rest, timer), (why) => refuse(sock, peer, why.status, why.reason))
    upgradeSocket(sock, secure, peer, (ts: tls.TLSSocket, info: PeerTls) => {
      ts.on('error', (e) => log.debug(() => `${peer}: ${e.message}`))
      readHead(ts, MAX_HEAD, (req, rest) => upgrade(ts, sock, peer, req, rest, timer, info), (why) => refuse(ts, peer, why.status, why.reason))
    }, loggedByTls)
  })
  srv.status.set('websocket', () => ({ port: lport, tls: secure !== undefined, ...counters }))
  let lport = 0
  return new Promise((resolve, reject) => {
    const failed = (e: Error): void => reject(listenError(host, o.port, e))
    server.once('error', failed)
    server.listen({ host, port: o.port }, () => {
      server.removeListener('error', failed)
      server.on('error', acceptFailed)
      lport = (server.address() as net.AddressInfo).port
      resolve({ port: lport, close: () => server.close(), open: () => sockets.size })
    })
  })
}

/**
 * `ws` unmasks every client frame (browsers always mask) with, unless its native helper is
 * there, a loop over single bytes: under a 1 KiB flood from one client that loop was a quarter
 * of sprig's CPU on Node (docs/benchmarks.md). `ws` takes `websocketMask`/`websocketUnmask`
 * from node:http when a runtime provides them (none of ours does: Node 20, Bun 1.4, Deno 2.9),
 * so word-wise versions are installed there before `ws` loads. A native addon (bufferutil)
 * would not reach the compiled binaries or Deno.
 */
function fastUnmask(): void {
  const h = nodeHttp() as unknown as { websocketMask?: unknown; websocketUnmask?: unknown }
  if (h.websocketUnmask !== undefined || h.websocketMask !== undefined) return
  try {
    h.websocketMask = maskInto
    h.websocketUnmask = unmask
  } catch {
    // A frozen module object: `ws` keeps its own loop.
  }
}

/** `ws`'s mask(): `length` bytes of `source` masked into `output` at `offset`. */
function maskInto(source: Uint8Array, mask: Uint8Array, output: Uint8Array, offset: number, length: number): void {
  for (let i = 0; i < length; i++) output[offset + i] = source[i]! ^ mask[i & 3]!
}

const MASK4 = new Uint8Array(4)
const MASK32 = new Uint32Array(MASK4.buffer)

/** Unmasks `b` in place, four bytes at a time between an unaligned head and tail. */
export function unmask(b: Uint8Array, mask: Uint8Array): void {
  const n = b.length
  const head = Math.min(n, (4 - (b.byteOffset & 3)) & 3)
  let i = 0
  for (; i < head; i++) b[i] ^= mask[i & 3]!
  const words = (n - head) >>> 2
  if (words > 0) {
    // The key as it lines up with the aligned words, in the platform's byte order.
    for (let k = 0; k < 4; k++) MASK4[k] = mask[(head + k) & 3]!
    const m = MASK32[0]!
    const w = new Uint32Array(b.buffer, b.byteOffset + head, words)
    // Eight words a step: Node 20's V8 runs the plain loop at 0.37 ns a byte, this at 0.14
    // (Bun 0.10 → 0.05, Deno 0.13 either way; docs/benchmarks.md).
    const e = words & ~7
    let j = 0
    for (; j < e; j += 8) {
      w[j]! ^= m
      w[j + 1]! ^= m
      w[j + 2]! ^= m
      w[j + 3]! ^= m
      w[j + 4]! ^= m
      w[j + 5]! ^= m
      w[j + 6]! ^= m
      w[j + 7]! ^= m
    }
    for (; j < words; j++) w[j]! ^= m
    i = head + words * 4
  }
  for (; i < n; i++) b[i] ^= mask[i & 3]!
}

/** A failed TLS handshake: tls.ts has logged the reason and destroyed the socket. */
function loggedByTls(): void {}

function isMqtt(url: string): boolean {
  return url.startsWith(MQTT_PATH)
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 405: 'Method Not Allowed', 431: 'Request Header Fields Too Large' }

/** An HTTP request head: method, target, headers by lower-case name (repeats joined by ", "). */
interface Head {
  method: string
  url: string
  headers: Record<string, string>
}

/**
 * Reads an HTTP/1.1 request head from `s`, at most `max` bytes, then stops reading from it
 * (the rest, the first frames, is handed on with the head). Anything that is not a request
 * head is refused with a status.
 */
function readHead(s: net.Socket, max: number, done: (h: Head, rest: Buffer) => void, bad: (why: { status: number; reason: string }) => void): void {
  let buf: Buffer = Buffer.alloc(0)
  const onData = (d: Buffer): void => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d])
    const end = buf.indexOf('\r\n\r\n')
    if (end < 0) {
      if (buf.length > max) finish(() => bad({ status: 431, reason: `request head over ${max} bytes` }))
      return
    }
    if (end > max) return finish(() => bad({ status: 431, reason: `request head over ${max} bytes` }))
    const head = parseHead(buf.subarray(0, end).toString('latin1'))
    const rest = buf.subarray(end + 4)
    finish(() => (head ? done(head, rest) : bad({ status: 400, reason: 'not an HTTP request' })))
  }
  const finish = (then: () => void): void => {
    s.removeListener('data', onData)
    s.pause()
    then()
  }
  s.on('data', onData)
}

function parseHead(text: string): Head | null {
  const lines = text.split('\r\n')
  const m = /^([A-Z]{1,16}) (\S{1,8192}) HTTP\/1\.[01]$/.exec(lines[0]!)
  if (!m) return null
  const headers: Record<string, string> = Object.create(null)
  for (let i = 1; i < lines.length; i++) {
    const h = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(lines[i]!)
    if (!h) return null
    const k = h[1]!.toLowerCase()
    headers[k] = headers[k] === undefined ? h[2]! : `${headers[k]}, ${h[2]!}`
  }
  return { method: m[1]!, url: m[2]!, headers }
}

/** A comma-separated header's tokens, trimmed and lower-cased. */
function tokens(v: string | undefined): string[] {
  return v === undefined ? [] : v.split(',').map((t) => t.trim().toLowerCase())
}

interface Origin {
  scheme: string
  host: string
  port: string
}

/** host and port of `scheme://host[:port]`, the port filled in from the scheme; null if not a URL. */
function originOf(url: string): Origin | null {
  try {
    const u = new URL(url)
    const scheme = u.protocol.slice(0, -1)
    return { scheme, host: u.hostname.toLowerCase(), port: u.port || (scheme === 'https' ? '443' : '80') }
  } catch {
    return null
  }
}

function allowedOrigins(list: string[]): Origin[] {
  return list.map(originOf).filter((x): x is Origin => x !== null)
}

/**
 * nats-server's origin check: no Origin header (not a browser) passes; with same_origin the
 * Origin's host and port must be the request's Host (its port defaulting by whether this
 * listener has TLS); with allowed_origins it must be one of them, scheme, host and port.
 * Returns why it fails, or null.
 */
function checkOrigin(same: boolean, allowed: Origin[], req: Head, secure: boolean): string | null {
  if (!same && allowed.length === 0) return null
  const origin = req.headers.origin ?? req.headers['sec-websocket-origin']
  if (origin === undefined || origin === '') return null
  const o = originOf(origin)
  if (o === null) return `bad origin ${JSON.stringify(origin.slice(0, 200))}`
  if (same) {
    const h = originOf(`${secure ? 'https' : 'http'}://${req.headers.host}`)
    if (h === null || h.host !== o.host || h.port !== o.port) return 'not same origin'
  }
  if (allowed.length > 0 && !allowed.some((a) => a.scheme === o.scheme && a.host === o.host && a.port === o.port)) return 'not in the allowed list'
  return null
}

const BINARY = { binary: true } as const

/*
 * Outbound frames are built here, not by `ws` (which still does the handshake, all parsing,
 * control frames and permessage-deflate). ws.send() writes a header buffer and the batch
 * corked: Bun's node:net joins the two with a copy into a fresh buffer, and the socket holds
 * the batch, so the Outbound cannot reuse its buffer and grows a new one per batch (both
 * together a third of sprig's CPU under a 1 KiB NATS flood over WebSocket on Bun,
 * docs/benchmarks.md). Here a batch of up to 64 KiB is copied behind its header into one
 * buffer used again and again (one write, warm memory, nothing of the Outbound's held); a
 * bigger one goes as its header and then itself, not copied at all (a second write is
 * nothing against copying that much).
 */

/** Largest frame with a 16-bit length: bigger batches are not copied. */
const COPY_MAX = 4 + 0xffff
/**
 * The buffer frames up to COPY_MAX are copied into, shared by every connection: a write
 * that leaves the socket holding nothing (the runtime wrote or copied it all at once) frees
 * it for the next frame; one the socket still holds is let go, and a new one made.
 */
let scratch: Buffer | null = null

/** Bytes of an unmasked frame holding n bytes: the 2, 4 or 10-byte header and the payload. */
export function frameSize(n: number): number {
  return (n < 126 ? 2 : n < 0x10000 ? 4 : 10) + n
}

/** Writes the header of an unmasked binary frame (FIN, opcode 2) of n bytes at the start of `f`; returns its length. */
export function binaryHeader(n: number, f: Buffer): number {
  f[0] = 0x82
  if (n < 126) {
    f[1] = n
    return 2
  }
  if (n < 0x10000) {
    f[1] = 126
    f[2] = n >>> 8
    f[3] = n & 0xff
    return 4
  }
  f[1] = 127
  f.writeUInt32BE(Math.floor(n / 0x100000000), 2)
  f.writeUInt32BE(n >>> 0, 6)
  return 10
}

/** A WebSocket as the adapters see it: binary messages out, any message's bytes in. */
class WsWire implements Wire {
  conn: Conn | null = null
  readonly websocket = true as const
  /** The first error (a protocol violation), handed to Conn.closed() as the reason. */
  error: string | null = null
  /** permessage-deflate was negotiated: `ws` compresses and frames (and may hold the data a while). */
  private readonly deflate: boolean
  /** The last batch itself went to the socket (not a copy): the Outbound may reuse its buffer once the socket has written it. */
  private handed = false

  constructor(
    readonly ws: WebSocket,
    readonly sock: net.Socket,
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly tls?: PeerTls,
  ) {
    this.deflate = ws.extensions !== ''
  }

  write(d: Uint8Array): boolean {
    const ws = this.ws
    if (this.deflate) ws.send(d, BINARY)
    // Framed here (see binaryHeader). Nothing after our close frame, as `ws` would drop it too;
    // `ws` writes its own control frames (pong, close) straight to the socket as well, so
    // the order on the wire is the order of the calls.
    else if (ws.readyState === 1) {
      const s = this.sock
      const n = d.length
      const size = frameSize(n)
      this.handed = size > COPY_MAX
      if (this.handed) {
        const h = Buffer.allocUnsafe(size - n)
        binaryHeader(n, h)
        s.write(h)
        return s.write(d)
      }
      // The shared buffer on plain TCP only: as net.ts, writableLength is not relied on to
      // say that a TLS socket is done with the plaintext.
      const plain = this.tls === undefined
      const f = plain ? (scratch ?? Buffer.allocUnsafe(COPY_MAX)) : Buffer.allocUnsafe(size)
      if (plain) scratch = null
      f.set(d, binaryHeader(n, f))
      const took = s.write(size === f.length ? f : f.subarray(0, size))
      if (plain && s.writableLength === 0) scratch = f
      return took
    }
    return !this.sock.writableNeedDrain
  }

  buffered(): number {
    return this.ws.bufferedAmount
  }

  idle(): boolean {
    // Frames up to 64 KiB are copies: the Outbound may write its next batch into the same
    // buffer (per batch, growing a new one was a quarter of sprig's CPU under a 1 KiB flood).
    // A bigger batch, once the socket has written it, and not with TLS (as net.ts). Not with
    // permessage-deflate, which may hold the data until it has compressed it.
    if (this.handed) return this.tls === undefined && this.sock.writableLength === 0
    return !this.deflate
  }

  end(): void {
    // The close frame goes after everything queued; a peer that never answers it is cut off.
    this.ws.close(1000)
    setTimeout(terminate, END_GRACE_MS, this.ws).unref()
  }

  destroy(): void {
    this.ws.terminate()
  }

  pause(): void {
    this.ws.pause()
  }

  resume(): void {
    this.ws.resume()
  }
}

function terminate(ws: WebSocket): void {
  ws.terminate()
}
