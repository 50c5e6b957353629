// Minimal raw MQTT 3.1.1 client for load generation over node:net (runs on Bun, Node and Deno).
// Like nats-conn.ts: not a client library, just the same cheap byte pushing against every
// server. Packets are framed by hand (the few we need are trivial); the bulk paths write
// pre-built batches and count fixed-size frames instead of parsing them.
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Addr } from './model.ts'
import { dial } from './ws-conn.ts'
import { drain, onEvent, repeatFrame, wake, waitUntil, type WaitResult } from './nats-conn.ts'
import { remainingLength } from '../helpers/varint.ts'

export const PINGREQ = Buffer.from([0xc0, 0x00])
const DISCONNECT = Buffer.from([0xe0, 0x00])
/** Keep-alive we announce: longer than any scenario, so no server ever expects our PINGREQs. */
const KEEPALIVE_S = 600

/** Counting state for a subscriber that steps over fixed-size PUBLISH frames (see `startCounting`). */
export interface MqttCounter {
  frame: number
  /** The first frame's bytes up to the packet id (QoS 1) or payload (QoS 0), as expected. */
  header: Buffer
  seen: Buffer
  /** Offset of the 2-byte packet id inside a frame, -1 for QoS 0. */
  pidOff: number
  pid: Buffer
  frames: number
  pos: number
  firstAt: number
  lastAt: number
  bad: string
}

export interface MqttConn {
  sock: net.Socket
  clientId: string
  /** CONNACK return code, -1 until it arrived. */
  connack: number
  pingsSent: number
  pingResps: number
  pubacks: number
  /** Return codes of the last SUBACK, by packet id. */
  subacks: Map<number, number[]>
  err: string
  closed: boolean
  lastData: number
  buf: Buffer
  counter: MqttCounter | null
  onPublish: ((topic: string, payload: Buffer, qos: number, pid: number) => void) | null
  nextPid: number
  /** Data events (reads) so far: how finely the server chops its output. */
  reads: number
  /** Called after every read of this connection (publishQos1 without subscribers to watch). */
  onData: (() => void) | null
}

function fail(c: MqttConn, why: string): void {
  if (!c.err) c.err = why
}

const remLen = remainingLength

function str(s: string): Buffer {
  const b = Buffer.from(s, 'utf8')
  return Buffer.concat([Buffer.from([b.length >> 8, b.length & 0xff]), b])
}

function packet(first: number, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from([first, ...remLen(body.length)]), body])
}

/** A PUBLISH frame (no retain, no dup); for QoS 1 the packet id is at `pidOff`, set to 0 here. */
export function publishFrame(topic: string, payload: number, qos: 0 | 1): { frame: Buffer; pidOff: number; header: Buffer } {
  const t = str(topic)
  const body = Buffer.concat([t, qos ? Buffer.alloc(2) : Buffer.alloc(0), Buffer.alloc(payload, 0x61)])
  const frame = packet(qos ? 0x32 : 0x30, body)
  const fixed = frame.length - body.length
  const pidOff = qos ? fixed + t.length : -1
  return { frame, pidOff, header: frame.subarray(0, qos ? pidOff : fixed + t.length) }
}

/** A clean-session MQTT 3.1.1 CONNECT. */
export function connectPacket(clientId: string, keepAliveS: number): Buffer {
  return packet(0x10, Buffer.concat([str('MQTT'), Buffer.from([4, 0x02, keepAliveS >> 8, keepAliveS & 0xff]), str(clientId)]))
}

export function subscribePacket(pid: number, topic: string, qos: number): Buffer {
  return packet(0x82, Buffer.concat([Buffer.from([pid >> 8, pid & 0xff]), str(topic), Buffer.from([qos])]))
}

function handlePacket(c: MqttConn, type: number, flags: number, b: Buffer, s: number, e: number): void {
  switch (type) {
    case 2: // CONNACK
      c.connack = e - s >= 2 ? b[s + 1]! : 255
      if (c.connack !== 0) fail(c, `CONNACK return code ${c.connack}`)
      break
    case 4: // PUBACK
      c.pubacks++
      break
    case 9: {
      // SUBACK
      const pid = b.readUInt16BE(s)
      c.subacks.set(pid, [...b.subarray(s + 2, e)])
      break
    }
    case 13: // PINGRESP
      c.pingResps++
      break
    case 3: {
      // PUBLISH
      const qos = (flags >> 1) & 3
      const tl = b.readUInt16BE(s)
      const topic = b.toString('utf8', s + 2, s + 2 + tl)
      let p = s + 2 + tl
      let pid = 0
      if (qos > 0) {
        pid = b.readUInt16BE(p)
        p += 2
      }
      const payload = b.subarray(p, e)
      if (c.onPublish) c.onPublish(topic, payload, qos, pid)
      else if (qos === 1) c.sock.write(Buffer.from([0x40, 0x02, pid >> 8, pid & 0xff]))
      break
    }
    default:
      fail(c, `unexpected MQTT packet type ${type} (first byte 0x${((type << 4) | flags).toString(16)})`)
  }
}

const NONE = Buffer.alloc(0)

// Packet parser for the low-volume paths (handshakes, PUBACKs, PINGRESPs).
function feedProto(c: MqttConn, chunk: Buffer): void {
  const b = c.buf.length ? Buffer.concat([c.buf, chunk]) : chunk
  let off = 0
  // A publisher's reads are mostly whole 3.1.1 PUBACKs: counted without the general parser.
  while (b.length - off >= 4 && b[off] === 0x40 && b[off + 1] === 0x02) {
    c.pubacks++
    off += 4
  }
  while (b.length - off >= 2) {
    let len = 0
    let mul = 1
    let i = off + 1
    let complete = false
    for (; i < b.length && i < off + 5; i++) {
      len += (b[i]! & 0x7f) * mul
      mul *= 128
      if ((b[i]! & 0x80) === 0) {
        complete = true
        i++
        break
      }
    }
    if (!complete) {
      if (i >= off + 5) {
        fail(c, 'malformed remaining length')
        c.sock.destroy()
        return
      }
      break
    }
    if (b.length - i < len) break
    handlePacket(c, b[off]! >> 4, b[off]! & 0x0f, b, i, i + len)
    off = i + len
  }
  // Copy the remainder: runtimes may reuse read buffers after the callback returns.
  c.buf = off >= b.length ? NONE : Buffer.from(b.subarray(off))
}

// Fast path for bulk subscribers: every PUBLISH frame has the same size (same topic, payload
// and QoS), so step from frame to frame. Per frame we check its first byte (0x30 / 0x32: a
// PUBLISH of the expected QoS, no dup, no retain) and its last (payload byte 'a'), which catches
// lost framing at once; the first frame's header is compared in full. For QoS 1 the packet id
// is picked up on the way and a PUBACK for every frame in the chunk is sent in one write.
function feedCount(c: MqttConn, k: MqttCounter, chunk: Buffer, now: number): void {
  if (k.bad) return
  const n = chunk.length
  const first = k.header[0]!
  let acks: Buffer | null = null
  let nacks = 0
  let i = 0
  let sawFrame = false
  while (i < n) {
    if (k.pos === 0 && chunk[i] !== first) {
      k.bad = `unexpected byte 0x${chunk[i]!.toString(16)} where a PUBLISH frame (0x${first.toString(16)}) should start after ${k.frames} frames`
      return
    }
    const take = Math.min(k.frame - k.pos, n - i)
    if (k.frames === 0 && k.pos < k.header.length) {
      k.seen = Buffer.concat([k.seen, chunk.subarray(i, i + Math.min(take, k.header.length - k.pos))])
      if (k.seen.length === k.header.length && !k.seen.equals(k.header)) {
        k.bad = `unexpected first frame header ${k.seen.toString('hex')}, want ${k.header.toString('hex')}`
        return
      }
    }
    if (k.pidOff >= 0) {
      for (let j = 0; j < 2; j++) {
        const at = k.pidOff + j
        if (at >= k.pos && at < k.pos + take) k.pid[j] = chunk[i + at - k.pos]!
      }
    }
    sawFrame = true
    k.pos += take
    i += take
    if (k.pos === k.frame) {
      if (chunk[i - 1] !== 0x61) {
        k.bad = `frame ${k.frames + 1} does not end in the payload byte: framing lost (wrong size or unexpected data)`
        return
      }
      k.pos = 0
      k.frames++
      if (k.pidOff >= 0) {
        // At most one ack per frame that ends in this chunk.
        acks ??= Buffer.allocUnsafe(4 * (Math.ceil(n / k.frame) + 1))
        acks[nacks * 4] = 0x40
        acks[nacks * 4 + 1] = 0x02
        acks[nacks * 4 + 2] = k.pid[0]!
        acks[nacks * 4 + 3] = k.pid[1]!
        nacks++
      }
    }
  }
  if (acks && nacks) c.sock.write(acks.subarray(0, nacks * 4))
  if (sawFrame) {
    if (k.firstAt === 0) k.firstAt = now
    k.lastAt = now
  }
}

let seq = 0

/** Connects, sends CONNECT (MQTT 3.1.1, clean session) and waits for CONNACK 0. */
export async function connectMqtt(addr: Addr, timeoutMs = 5000, clientId = `sprig-bench-${process.pid}-${++seq}`): Promise<MqttConn> {
  const sock = dial(addr)
  sock.setNoDelay(true)
  const c: MqttConn = {
    sock,
    clientId,
    connack: -1,
    pingsSent: 0,
    pingResps: 0,
    pubacks: 0,
    subacks: new Map(),
    err: '',
    closed: false,
    lastData: performance.now(),
    buf: NONE,
    counter: null,
    onPublish: null,
    nextPid: 1,
    reads: 0,
    onData: null,
  }
  sock.on('data', (chunk: Buffer) => {
    const now = performance.now()
    c.lastData = now
    c.reads++
    if (c.counter) feedCount(c, c.counter, chunk, now)
    else feedProto(c, chunk)
    if (c.onData) c.onData()
    else wake()
  })
  sock.on('error', (e: Error) => fail(c, e.message))
  sock.on('close', () => {
    c.closed = true
    fail(c, 'connection closed by server')
    wake()
  })
  sock.write(connectPacket(clientId, KEEPALIVE_S))
  const r = await waitUntil([c], () => c.connack >= 0 || c.err !== '', timeoutMs)
  if (r !== 'ok' || c.err) {
    sock.destroy()
    throw new Error(`MQTT CONNECT to ${addr.host}:${addr.port} failed: ${c.err || (r === 'timeout' ? `no CONNACK within ${timeoutMs} ms` : r)}`)
  }
  return c
}

function takePid(c: MqttConn): number {
  const pid = c.nextPid
  c.nextPid = pid >= 0xffff ? 1 : pid + 1
  return pid
}

/** SUBSCRIBE and wait for the SUBACK; fails unless the granted QoS is the one asked for. */
export async function subscribeMqtt(c: MqttConn, topic: string, qos: 0 | 1, timeoutMs = 10_000): Promise<void> {
  const pid = takePid(c)
  c.sock.write(subscribePacket(pid, topic, qos))
  const r = await waitUntil([c], () => c.subacks.has(pid) || c.err !== '', timeoutMs)
  if (r !== 'ok' || c.err) throw new Error(`SUBSCRIBE ${topic} not acknowledged: ${c.err || r}`)
  const codes = c.subacks.get(pid)!
  c.subacks.delete(pid)
  if (codes[0] !== qos) throw new Error(`SUBSCRIBE ${topic}: granted ${codes[0] === 0x80 ? 'failure (0x80)' : `QoS ${codes[0]}`}, asked for QoS ${qos}`)
}

/** PINGREQ without waiting; `c.pingResps` counts the answers. */
export function sendPing(c: MqttConn): void {
  c.pingsSent++
  c.sock.write(PINGREQ)
}

/** PINGREQ and wait for its PINGRESP: the server has read everything sent before it. */
export async function pingMqtt(c: MqttConn, timeoutMs = 10_000): Promise<WaitResult> {
  sendPing(c)
  const want = c.pingsSent
  return waitUntil([c], () => c.pingResps >= want || c.err !== '', timeoutMs).then((r) => (r === 'ok' && c.err ? 'closed' : r))
}

/** Switches a subscribed connection to frame counting; call after its SUBACK. */
export function startCounting(c: MqttConn, topic: string, payload: number, qos: 0 | 1): MqttCounter {
  const f = publishFrame(topic, payload, qos)
  const k: MqttCounter = { frame: f.frame.length, header: Buffer.from(f.header), seen: Buffer.alloc(0), pidOff: f.pidOff, pid: Buffer.alloc(2), frames: 0, pos: 0, firstAt: 0, lastAt: 0, bad: '' }
  c.counter = k
  return k
}

/** DISCONNECT and close. */
export function closeMqtt(c: MqttConn): void {
  c.counter = null
  if (!c.closed && c.sock.writable) c.sock.end(DISCONNECT)
  setTimeout(() => c.sock.destroy(), 1000).unref?.()
}

export interface MqttPublishOpts {
  topic: string
  payload: number
  count: number
  /** QoS 0: messages per batch (one write, ending in a PINGREQ). */
  batch: number
  /** QoS 0: PINGREQs that may be unanswered before we stop writing. */
  maxAhead: number
  /** QoS 1: PUBLISHes that may be unacknowledged. */
  window: number
  /**
   * QoS 1: free slots in the window before they are refilled (one write); default 1, an
   * eager refill after every read of PUBACKs.
   */
  refill?: number
  /** End-to-end flow control: how far the slowest subscriber may trail the publisher. */
  maxLag: number
  /** Messages the slowest subscriber has received so far (from its counter). */
  received: () => number
  /** Connections whose traffic counts as progress while waiting (the subscribers). */
  watch: MqttConn[]
  timeoutMs: number
}

async function waitLag(c: MqttConn, o: MqttPublishOpts, sent: number): Promise<void> {
  if (sent - o.received() <= o.maxLag) return
  const r = await waitUntil([c, ...o.watch], () => sent - o.received() <= o.maxLag || c.err !== '', o.timeoutMs, true)
  if (r !== 'ok' || c.err) throw new Error(`publisher: subscribers stalled ${sent - o.received()} msgs behind: ${c.err || o.watch.map((w) => w.err).find(Boolean) || r}`)
}

/**
 * QoS 0: pre-built batches of PUBLISH frames, each batch one write ending in a PINGREQ; never
 * more than `maxAhead` PINGRESPs outstanding (the server has read the publisher's bytes) and
 * never more than `maxLag` messages ahead of the slowest subscriber (the server is not just
 * buffering deliveries). Resolves after the last PINGRESP.
 */
export async function publishQos0(c: MqttConn, o: MqttPublishOpts): Promise<{ startAt: number; endAt: number }> {
  const { frame } = publishFrame(o.topic, o.payload, 0)
  const batch = (n: number): Buffer => repeatFrame(frame, n, PINGREQ)
  const per = Math.min(o.batch, o.count)
  const full = batch(per)
  const startAt = performance.now()
  let sent = 0
  while (sent < o.count) {
    if (c.pingsSent - c.pingResps >= o.maxAhead) {
      const want = c.pingsSent - o.maxAhead + 1
      const r = await waitUntil([c], () => c.pingResps >= want || c.err !== '', o.timeoutMs)
      if (r !== 'ok' || c.err) throw new Error(`publisher: no PINGRESP within ${o.timeoutMs} ms: ${c.err || r}`)
    }
    await waitLag(c, o, sent)
    const n = Math.min(per, o.count - sent)
    const ok = c.sock.write(n === per ? full : batch(n))
    c.pingsSent++
    sent += n
    if (!ok) await drain(c, o.timeoutMs)
  }
  const want = c.pingsSent
  const r = await waitUntil([c], () => c.pingResps >= want || c.err !== '', o.timeoutMs)
  if (r !== 'ok' || c.err) throw new Error(`publisher: final PINGRESP missing: ${c.err || r}`)
  return { startAt, endAt: performance.now() }
}

/**
 * QoS 1: keeps `window` PUBLISHes unacknowledged; whenever PUBACKs arrive, the freed slots are
 * refilled in one write. Also never more than `maxLag` ahead of the slowest subscriber (a broker
 * PUBACKs on receipt, so the window alone does not bound its queue to the subscriber).
 * Event-driven (a callback after every socket event, no promise per PUBACK) so the load
 * generator stays cheap. Resolves after the last PUBACK.
 */
export function publishQos1(c: MqttConn, o: MqttPublishOpts): Promise<{ startAt: number; endAt: number }> {
  const { frame, pidOff } = publishFrame(o.topic, o.payload, 1)
  const flen = frame.length
  const big = Buffer.allocUnsafe(o.window * flen)
  for (let i = 0; i < o.window; i++) frame.copy(big, i * flen)
  const startAt = performance.now()
  let sent = 0
  let pid = 0
  let blocked = false
  let progressAt = startAt
  let lastAcks = 0
  let lastRecv = 0
  const refill = Math.max(1, Math.min(o.refill ?? 1, o.window))
  // Nothing else to watch: only this connection's reads can move it on.
  const own = o.watch.length === 0 && o.maxLag === Infinity
  return new Promise((resolve, reject) => {
    const finish = (e?: Error): void => {
      if (own) c.onData = null
      onEvent.delete(pump)
      clearInterval(tick)
      c.sock.off('drain', onDrain)
      if (e) reject(e)
      else resolve({ startAt, endAt: performance.now() })
    }
    function pump(): void {
      if (c.err) return finish(new Error(`publisher: ${c.err} (${c.pubacks}/${o.count} acked)`))
      if (c.pubacks >= o.count) return finish()
      if (blocked || sent >= o.count) return
      const recv = o.received()
      if (sent - recv > o.maxLag) return
      const n = Math.min(o.window - (sent - c.pubacks), o.count - sent)
      // Eager refill by default, one write per read of PUBACKs. (Refilling in quarter-window
      // steps saves ~15% of the load generator's CPU but changes the traffic pattern.)
      if (n <= 0 || (n < refill && sent + n < o.count)) return
      for (let i = 0; i < n; i++) {
        pid = pid >= 0xffff ? 1 : pid + 1
        big.writeUInt16BE(pid, i * flen + pidOff)
      }
      // A copy: `big` is rewritten for the next batch while this one may still be queued.
      if (!c.sock.write(Buffer.from(big.subarray(0, n * flen)))) blocked = true
      sent += n
    }
    function onDrain(): void {
      blocked = false
      pump()
    }
    // Stall detection: no PUBACK and no subscriber progress for timeoutMs.
    const tick = setInterval(() => {
      const now = performance.now()
      const recv = o.received()
      if (c.pubacks !== lastAcks || recv !== lastRecv) {
        lastAcks = c.pubacks
        lastRecv = recv
        progressAt = now
      } else if (now - progressAt > o.timeoutMs) {
        finish(new Error(`publisher: no progress for ${o.timeoutMs} ms (${c.pubacks}/${o.count} acked, ${sent - recv} ahead of the subscriber): ${o.watch.map((w) => w.err).find(Boolean) || 'timeout'}`))
      }
      pump()
    }, 250)
    c.sock.on('drain', onDrain)
    if (own) c.onData = pump
    else onEvent.add(pump)
    pump()
  })
}
