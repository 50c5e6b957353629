// A raw WebSocket client as a stream, so the load generator's NATS and MQTT clients
// (nats-conn.ts, mqtt-conn.ts) run unchanged over WebSocket: `dial(addr)` gives them a
// net.Socket, or this when `addr.ws` is set. The upgrade is written by hand; outgoing bytes go
// in binary frames of at most FRAME bytes (nats.js batches ~32 KB per message), masked as a
// browser masks them (a non-zero key: `ws` skips unmasking for a zero one, which would flatter
// sprig); the publishers write the same batch buffer again and again, so the masked frames of
// the last buffer written are kept and reused. Incoming frames are unwrapped with the payloads
// of one read pushed as one chunk. Cheap, and the same for every server, so the servers are
// what is measured.
import net from 'node:net'
import tls from 'node:tls'
import { Duplex } from 'node:stream'
import type { Addr } from './model.ts'

/** Largest frame the client sends: nats.js sends up to ~32 KB per WebSocket message. */
export const FRAME = 32 * 1024
const MAX_HEAD = 16 * 1024
/** One key for every frame: servers cannot tell it from a random one. */
const MASK = [0x5a, 0xc3, 0x96, 0x3c] as const

/** `chunk` as masked client frames of at most FRAME bytes, in one buffer. */
function frames(chunk: Buffer): Buffer {
  let size = 0
  for (let off = 0; off < chunk.length; off += FRAME) {
    const n = Math.min(FRAME, chunk.length - off)
    size += (n < 126 ? 6 : 8) + n
  }
  const out = Buffer.allocUnsafe(size)
  let o = 0
  for (let off = 0; off < chunk.length; off += FRAME) {
    const n = Math.min(FRAME, chunk.length - off)
    out[o++] = 0x82
    if (n < 126) out[o++] = 0x80 | n
    else {
      out[o++] = 0x80 | 126
      out.writeUInt16BE(n, o)
      o += 2
    }
    for (const m of MASK) out[o++] = m
    for (let i = 0; i < n; i++) out[o + i] = chunk[off + i]! ^ MASK[i & 3]!
    o += n
  }
  return out
}

/** A TCP socket, a TLS one when `addr.tls` says so, or a WebSocket stream over TCP when `addr.ws` does. */
export function dial(addr: Addr): net.Socket {
  if (addr.tls) return tls.connect({ host: addr.host, port: addr.port, servername: 'localhost', ...addr.tls })
  if (!addr.ws) return net.connect({ host: addr.host, port: addr.port })
  return new WsStream(addr) as unknown as net.Socket
}

class WsStream extends Duplex {
  private sock: net.Socket
  private upgraded = false
  private waiting: (() => void) | null = null
  private head = Buffer.alloc(0)
  /** Unconsumed bytes of an incomplete frame header. */
  private pend = Buffer.alloc(0)
  /** Payload bytes still to come in the current frame, and whether it is a data frame. */
  private left = 0
  private data = true
  /** The last chunk written and its frames (publishers write the same batch over and over). */
  private lastIn: Buffer | null = null
  private lastOut: Buffer | null = null

  constructor(addr: Addr) {
    super({ allowHalfOpen: false })
    const ws = addr.ws!
    this.sock = net.connect({ host: addr.host, port: addr.port })
    this.sock.setNoDelay(true)
    this.sock.on('data', (d: Buffer) => (this.upgraded ? this.unframe(d) : this.onHead(d)))
    this.sock.on('error', (e) => this.destroy(e))
    this.sock.on('close', () => this.destroy())
    this.sock.write(
      `GET ${ws.path} HTTP/1.1\r\nHost: ${addr.host}:${addr.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${ws.protocol ? `Sec-WebSocket-Protocol: ${ws.protocol}\r\n` : ''}\r\n`,
    )
  }

  setNoDelay(): this {
    return this
  }

  private onHead(d: Buffer): void {
    this.head = Buffer.concat([this.head, d])
    const end = this.head.indexOf('\r\n\r\n')
    if (end < 0) {
      if (this.head.length > MAX_HEAD) this.destroy(new Error('websocket: no upgrade response'))
      return
    }
    const status = this.head.toString('latin1', 0, this.head.indexOf('\r\n'))
    if (!/^HTTP\/1\.1 101/.test(status)) return void this.destroy(new Error(`websocket upgrade refused: ${status}`))
    this.upgraded = true
    const rest = this.head.subarray(end + 4)
    this.head = Buffer.alloc(0)
    const w = this.waiting
    this.waiting = null
    w?.()
    if (rest.length) this.unframe(rest)
  }

  /** Strips frame headers; the data frames' payloads of this read become one chunk. */
  private unframe(d: Buffer): void {
    let b = this.pend.length ? Buffer.concat([this.pend, d]) : d
    this.pend = Buffer.alloc(0)
    const out: Buffer[] = []
    let i = 0
    while (i < b.length) {
      if (this.left > 0) {
        const n = Math.min(this.left, b.length - i)
        if (this.data) out.push(b.subarray(i, i + n))
        this.left -= n
        i += n
        continue
      }
      if (b.length - i < 2) break
      const op = b[i]! & 0x0f
      let len = b[i + 1]! & 0x7f
      let h = 2
      if (len === 126) {
        if (b.length - i < 4) break
        len = b.readUInt16BE(i + 2)
        h = 4
      } else if (len === 127) {
        if (b.length - i < 10) break
        len = Number(b.readBigUInt64BE(i + 2))
        h = 10
      }
      i += h
      if (op === 0x8) return void this.destroy()
      // Binary, text and continuation frames carry the stream; pings and pongs are skipped.
      this.data = op <= 2
      this.left = len
    }
    if (i < b.length) this.pend = Buffer.from(b.subarray(i))
    if (out.length === 1) this.push(out[0])
    else if (out.length > 1) this.push(Buffer.concat(out))
    b = Buffer.alloc(0)
  }

  override _read(): void {}

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (!this.upgraded) {
      this.waiting = () => this._write(chunk, _enc, cb)
      return
    }
    if (chunk !== this.lastIn) {
      this.lastOut = frames(chunk)
      // Only big buffers are written again; small ones (CONNECT, SUB, acks) are not kept.
      this.lastIn = chunk.length >= FRAME ? chunk : null
    }
    if (this.sock.write(this.lastOut!)) cb()
    else this.sock.once('drain', () => cb())
  }

  override _final(cb: () => void): void {
    this.sock.end()
    cb()
  }

  override _destroy(e: Error | null, cb: (e: Error | null) => void): void {
    this.sock.destroy()
    cb(e)
  }
}
