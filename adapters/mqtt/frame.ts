// Hand-written MQTT framing for the hot paths. Inbound: split a byte stream into packets by
// the fixed header (type byte + Remaining Length varint), and parse the common PUBLISH and
// PUBACK shapes straight from the bytes; anything else (and any shape not handled here) is
// left to mqtt-packet, one whole frame at a time. Outbound: frame a PUBLISH without
// properties directly into a buffer.

import type { IPublishPacket } from 'mqtt-packet'
import type { Buffer } from 'node:buffer'
import { text, utf8 } from '../../src/bytes.ts'

/** frameSize: the fixed header is not complete yet. */
export const NEED_MORE = -1
/** frameSize: the Remaining Length has a fifth byte (mqtt-packet: "Invalid variable byte integer"). */
export const MALFORMED = -2

/** Largest Remaining Length a varint of four bytes can hold. */
export const MAX_REMAINING = 268_435_455

/**
 * Size of the whole packet starting at b[at] (fixed header plus Remaining Length), read from
 * b[at, end); NEED_MORE when the header itself is cut, MALFORMED when its length has more
 * than four bytes. The packet may still extend past `end`.
 */
export function frameSize(b: Uint8Array, at: number, end: number): number {
  let value = 0
  let mul = 1
  for (let i = at + 1; i < end; i++) {
    const c = b[i]!
    value += (c & 0x7f) * mul
    if ((c & 0x80) === 0) return i + 1 - at + value
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

/**
 * A PUBLISH frame of `size` bytes at b[at], parsed like mqtt-packet would, or null when it is a shape left to mqtt-packet: QoS 3, a truncated topic or
 * packet id, or MQTT 5 properties.
 */
export function parsePublish(b: Uint8Array, at: number, size: number, v5: boolean): IPublishPacket | null {
  const b0 = b[at]!
  const qos = (b0 >> 1) & 3
  if (qos === 3) return null
  const end = at + size
  let p = at + headerSize(b, at)
  if (end - p < 2) return null
  const tlen = (b[p]! << 8) | b[p + 1]!
  p += 2
  if (p + tlen > end) return null
  const topic = topicAt(b, p, tlen)
  p += tlen
  let messageId: number | undefined
  if (qos > 0) {
    if (end - p < 2) return null
    messageId = (b[p]! << 8) | b[p + 1]!
    p += 2
  }
  if (v5) {
    if (p >= end || b[p] !== 0) return null
    p++
  }
  // A view into `b`, which the target only lends. It is a plain Uint8Array, not a Buffer:
  // whoever keeps it copies it with slice(), which on a Buffer would only make another view.
  const payload = new Uint8Array(b.buffer, b.byteOffset + p, end - p) as Buffer
  return { cmd: 'publish', topic, payload, qos: qos as 0 | 1 | 2, dup: (b0 & 8) !== 0, retain: (b0 & 1) !== 0, messageId }
}

let inTopic = ''
let inTopicBytes: Uint8Array = new Uint8Array(0)

/** The topic of n bytes at b[p]; the last one decoded is kept, as publishers tend to repeat it. */
function topicAt(b: Uint8Array, p: number, n: number): string {
  const last = inTopicBytes
  if (last.length === n) {
    let i = 0
    while (i < n && b[p + i] === last[i]) i++
    if (i === n) return inTopic
  }
  const t = text(b, p, p + n)
  if (n <= 256) {
    inTopic = t
    inTopicBytes = b.slice(p, p + n)
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
 * Size of a PUBLISH without properties (an MQTT 5 one has an empty property length), or -1
 * when it cannot be framed here (topic over 65535 bytes, or over the Remaining Length limit).
 */
export function publishSize(topic: Uint8Array, payloadLen: number, qos: number, v5: boolean): number {
  if (topic.length > 0xffff) return -1
  const rem = 2 + topic.length + (qos > 0 ? 2 : 0) + (v5 ? 1 : 0) + payloadLen
  if (rem > MAX_REMAINING) return -1
  return (rem < 128 ? 2 : rem < 16_384 ? 3 : rem < 2_097_152 ? 4 : 5) + rem
}

/** Writes a PUBLISH of publishSize(...) bytes at buf[at] (same bytes as mqtt-packet's generate). */
export function writePublish(
  buf: Uint8Array,
  at: number,
  topic: Uint8Array,
  payload: Uint8Array,
  qos: number,
  dup: boolean,
  retain: boolean,
  pid: number,
  v5: boolean,
): void {
  buf[at++] = 0x30 | (dup ? 8 : 0) | (qos << 1) | (retain ? 1 : 0)
  let rem = 2 + topic.length + (qos > 0 ? 2 : 0) + (v5 ? 1 : 0) + payload.length
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
  if (v5) buf[at++] = 0
  buf.set(payload, at)
}
