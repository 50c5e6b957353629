// Hand-written MQTT framing for the hot paths. Inbound: split a byte stream into packets by
// the fixed header (type byte + Remaining Length varint), and read the hot packets (PUBLISH,
// PUBACK, PINGREQ) straight from the bytes; everything else (CONNECT and SUBSCRIBE included,
// and any shape not handled here) is left to mqtt-packet, one whole frame at a time. Both only see frames that checkPacket
// (malformed.ts) accepted: on those, a fast path gives what mqtt-packet would, or null.
// Outbound: frame a PUBLISH without properties directly into a buffer.

import type { IPublishPacket, Packet } from 'mqtt-packet'
import { Buffer } from 'node:buffer'
import { copyOf, EMPTY, text, utf8 } from '../../src/bytes.ts'
import type { Outbound } from '../../src/outbound.ts'

/** frameSize: the fixed header is not complete yet. */
export const NEED_MORE = -1
/**
 * frameSize: the Remaining Length has a fifth byte (mqtt-packet: "Invalid variable byte
 * integer"), or is not in its shortest form, such as 0x80 0x00 [MQTT-1.5.5-1].
 */
export const MALFORMED = -2

/** Largest Remaining Length a varint of four bytes can hold. */
const MAX_REMAINING = 268_435_455

/**
 * Size of the whole packet starting at b[at] (fixed header plus Remaining Length), read from
 * b[at, end); NEED_MORE when the header itself is cut, MALFORMED when its length has more
 * than four bytes or a needless last zero byte. The packet may still extend past `end`.
 */
export function frameSize(b: Uint8Array, at: number, end: number): number {
  let value = 0
  let mul = 1
  for (let i = at + 1; i < end; i++) {
    const c = b[i]!
    value += (c & 0x7f) * mul
    if ((c & 0x80) === 0) return c === 0 && i > at + 1 ? MALFORMED : i + 1 - at + value
    if (i - at === 4) return MALFORMED
    mul *= 128
  }
  return NEED_MORE
}

/** Bytes of the fixed header of a complete frame at b[at]. */
export function headerSize(b: Uint8Array, at: number): number {
  let i = at + 1
  while ((b[i]! & 0x80) !== 0) i++
  return i + 1 - at
}

const PINGREQ: Packet = { cmd: 'pingreq' }

/**
 * The packet in a whole frame of n bytes at b[at], read by the fast paths below, or null for
 * mqtt-packet to read. Only for frames checkPacket accepted.
 */
export function fastPacket(b: Uint8Array, at: number, n: number, v5: boolean): Packet | null {
  const b0 = b[at]!
  if ((b0 & 0xf0) === 0x30) return parsePublish(b, at, n, v5)
  if (b0 === 0x40 && n === 4) return { cmd: 'puback', messageId: (b[at + 2]! << 8) | b[at + 3]! }
  if (b0 === 0xc0 && n === 2) return PINGREQ // what an idle device sends, once per keepalive
  return null
}

/** A PUBLISH as readPublish reads it: its payload is b[at, at + size) of the frame's buffer. */
export interface PublishIn {
  topic: string
  qos: 0 | 1 | 2
  dup: boolean
  retain: boolean
  /** The packet id; 0 at QoS 0. */
  messageId: number
  at: number
  size: number
}

export function publishIn(): PublishIn {
  return { topic: '', qos: 0, dup: false, retain: false, messageId: 0, at: 0, size: 0 }
}

/**
 * Reads a PUBLISH frame of `size` bytes at b[at] into `out` as mqtt-packet would, without
 * making anything per message but the topic string of a new topic (the payload stays a range
 * of b). False for a shape left to mqtt-packet: QoS 3, a truncated topic or packet id, or MQTT
 * 5 properties.
 */
export function readPublish(b: Uint8Array, at: number, size: number, v5: boolean, memo: TopicMemo, out: PublishIn): boolean {
  const b0 = b[at]!
  const qos = (b0 >> 1) & 3
  if (qos === 3) return false
  const end = at + size
  let p = at + headerSize(b, at)
  if (end - p < 2) return false
  const tlen = (b[p]! << 8) | b[p + 1]!
  p += 2
  if (p + tlen > end) return false
  const topic = topicAt(b, p, tlen, memo)
  p += tlen
  let messageId = 0
  if (qos > 0) {
    if (end - p < 2) return false
    messageId = (b[p]! << 8) | b[p + 1]!
    p += 2
  }
  if (v5) {
    if (p >= end || b[p] !== 0) return false
    p++
  }
  out.topic = topic
  out.qos = qos as 0 | 1 | 2
  out.dup = (b0 & 8) !== 0
  out.retain = (b0 & 1) !== 0
  out.messageId = messageId
  out.at = p
  out.size = end - p
  return true
}

/** For parsePublish, which copies out of it at once. */
const READ = publishIn()

/**
 * A PUBLISH frame of `size` bytes at b[at], parsed like mqtt-packet would, or null when it is a
 * shape left to mqtt-packet (see readPublish).
 */
export function parsePublish(b: Uint8Array, at: number, size: number, v5: boolean, memo: TopicMemo = SHARED_MEMO): IPublishPacket | null {
  return readPublish(b, at, size, v5, memo, READ) ? publishPacket(b, READ) : null
}

/** The mqtt-packet shape of what readPublish read from b, the payload a view of b. */
export function publishPacket(b: Uint8Array, r: PublishIn): IPublishPacket {
  return { cmd: 'publish', topic: r.topic, payload: payloadView(b, r.at, r.size), qos: r.qos, dup: r.dup, retain: r.retain, messageId: r.qos > 0 ? r.messageId : undefined }
}

/**
 * A view of b[at, at + n), which the target only lends. It is a plain Uint8Array, not a
 * Buffer: whoever keeps it copies it with slice(), which on a Buffer would only make another view.
 */
function payloadView(b: Uint8Array, at: number, n: number): Buffer {
  return new Uint8Array(b.buffer, b.byteOffset + at, n) as Buffer
}

// Like mqtt-packet's Buffer.toString: a leading U+FEFF is kept, never stripped [MQTT-1.5.4-3].
const DECODER = new TextDecoder('utf-8', { ignoreBOM: true })

/** Whether b[start, end) is short ASCII, which text() builds without a decoder (one that would strip a BOM). */
function ascii(b: Uint8Array, start: number, end: number): boolean {
  if (end - start >= 48) return false
  for (let i = start; i < end; i++) if (b[i]! > 127) return false
  return true
}

/**
 * A publisher's last PUBLISH topic: its bytes and string (topicAt), and the subject it maps to
 * (handlers/publish.ts). A device repeats its own topic, so each connection keeps one (made on
 * its first PUBLISH); with a single shared one, 1,000 devices taking turns would miss every time.
 */
export interface TopicMemo {
  bytes: Uint8Array
  topic: string
  /** The topic `subject` was mapped from, under `limits` ('' : none yet). */
  subjectOf: string
  limits: unknown
  subject: string
}

export function topicMemo(): TopicMemo {
  return { bytes: EMPTY, topic: '', subjectOf: '', limits: null, subject: '' }
}

/** For callers without a connection of their own (fastPacket). */
const SHARED_MEMO = topicMemo()

/** The topic of n bytes at b[p]; the last one decoded is kept in `memo`, as publishers repeat it. */
function topicAt(b: Uint8Array, p: number, n: number, memo: TopicMemo): string {
  const last = memo.bytes
  if (last.length === n && n > 0) {
    let i = 0
    while (i < n && b[p + i] === last[i]) i++
    if (i === n) return memo.topic
  }
  const t = ascii(b, p, p + n) ? text(b, p, p + n) : DECODER.decode(b.subarray(p, p + n))
  if (n <= 256) {
    memo.topic = t
    memo.bytes = copyOf(b.subarray(p, p + n))
  }
  return t
}

let lastTopic = ''
let lastTopicBytes: Uint8Array = new Uint8Array(0)

/** UTF-8 bytes of a topic; a fan-out sends one topic many times, so the last one is kept. */
export function topicBytes(topic: string): Uint8Array {
  if (topic !== lastTopic) {
    lastTopicBytes = utf8(topic)
    lastTopic = topic
  }
  return lastTopicBytes
}

/**
 * Size of a PUBLISH without properties (an MQTT 5 one has an empty property length, or only
 * a Topic Alias when `alias` > 0), or -1
 * when it cannot be framed here (topic over 65535 bytes, or over the Remaining Length limit).
 */
export function publishSize(topic: Uint8Array, payloadLen: number, qos: number, v5: boolean, alias = 0): number {
  if (topic.length > 0xffff) return -1
  const rem = 2 + topic.length + (qos > 0 ? 2 : 0) + propsSize(v5, alias) + payloadLen
  if (rem > MAX_REMAINING) return -1
  return (rem < 128 ? 2 : rem < 16_384 ? 3 : rem < 2_097_152 ? 4 : 5) + rem
}

/**
 * Writes a PUBLISH of publishSize(...) bytes at buf[at] (same bytes as mqtt-packet's generate)
 * up to its payload, of `size` bytes, which the caller copies to the offset returned.
 */
export function writePublishHead(
  buf: Uint8Array,
  at: number,
  topic: Uint8Array,
  size: number,
  qos: number,
  dup: boolean,
  retain: boolean,
  pid: number,
  v5: boolean,
  alias: number,
): number {
  buf[at++] = 0x30 | (dup ? 8 : 0) | (qos << 1) | (retain ? 1 : 0)
  let rem = 2 + topic.length + (qos > 0 ? 2 : 0) + propsSize(v5, alias) + size
  do {
    let c = rem % 128
    rem = Math.floor(rem / 128)
    if (rem > 0) c |= 0x80
    buf[at++] = c
  } while (rem > 0)
  buf[at++] = topic.length >> 8
  buf[at++] = topic.length & 0xff
  buf.set(topic, at)
  at += topic.length
  if (qos > 0) {
    buf[at++] = pid >> 8
    buf[at++] = pid & 0xff
  }
  if (v5) {
    if (alias > 0) {
      // Property length 3: Topic Alias (0x23), two bytes.
      buf[at++] = 3
      buf[at++] = 0x23
      buf[at++] = alias >> 8
      buf[at++] = alias & 0xff
    } else buf[at++] = 0
  }
  return at
}

/** Bytes of a hand-framed PUBLISH's properties: none (3.1.1), empty, or only a Topic Alias. */
function propsSize(v5: boolean, alias: number): number {
  return v5 ? (alias > 0 ? 4 : 1) : 0
}

/**
 * Bytes of the common small packets sprig sends (PINGRESP, the acks without reason code or
 * properties, SUBACK/UNSUBACK without properties, a 3.1.1 CONNACK), written straight into
 * `out` as mqtt-packet's generator would; false when `p` is some other shape, for the
 * generator; 'full' when the queue is over its limit. Saves a Buffer per ack on the QoS 1 path and per handshake on idle connections.
 */
export function writeSmall(p: Packet, v5: boolean, out: Outbound): boolean | 'full' {
  switch (p.cmd) {
    case 'pingresp':
      return put(out, [0xd0, 0])
    case 'puback':
    case 'pubrec':
    case 'pubrel':
    case 'pubcomp': {
      if ((v5 && p.reasonCode !== undefined && p.reasonCode !== 0) || p.properties !== undefined) return false
      // One per QoS 1/2 message: written in place, without a byte array of its own.
      const id = p.messageId ?? 0
      const at = out.reserve(4)
      if (at < 0) return 'full'
      const b = out.buf
      b[at] = ACK_TYPE[p.cmd]
      b[at + 1] = 2
      b[at + 2] = id >> 8
      b[at + 3] = id & 0xff
      return true
    }
    case 'suback':
    case 'unsuback': {
      if (p.properties !== undefined) return false
      const codes = p.granted as number[]
      const id = p.messageId ?? 0
      const rem = 2 + (v5 ? 1 : 0) + codes.length
      if (rem > 127 || codes.some((c) => typeof c !== 'number')) return false
      const bytes = [p.cmd === 'suback' ? 0x90 : 0xb0, rem, id >> 8, id & 0xff]
      if (v5) bytes.push(0)
      for (const c of codes) bytes.push(c)
      return put(out, bytes)
    }
    case 'connack':
      if (v5) return false
      return put(out, [0x20, 2, p.sessionPresent ? 1 : 0, p.returnCode ?? 0])
    default:
      return false
  }
}

const ACK_TYPE = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 } as const

function put(out: Outbound, bytes: number[]): true | 'full' {
  const at = out.reserve(bytes.length)
  if (at < 0) return 'full'
  out.buf.set(bytes, at)
  return true
}
