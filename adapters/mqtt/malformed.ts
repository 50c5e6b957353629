// The specifications' rules for a well-formed packet from a client, checked on the raw bytes
// of each whole frame before anything parses it. Both readers (the fast paths in frame.ts and
// mqtt-packet for everything else) only ever see frames that passed here, so they cannot
// disagree on what is malformed, and a rule lives in one place: one check per packet type.
// mqtt-packet alone is lax: it decodes bad UTF-8 to U+FFFD, lets a property run past the
// packet (yielding null), makes arrays of duplicated properties, ignores trailing bytes and
// the body of a PINGREQ, and reads a cut packet id as -1.
//
// A refusal carries the MQTT 5 reason code the connection is closed with: 0x81 Malformed
// Packet when the bytes cannot be read as the packet (5.0 §1.2), 0x82 Protocol Error when they
// can, but say something the protocol forbids (a duplicate property, packet id 0, ...).
// 3.1.1 just closes the connection [MQTT-4.8.0-1].

import { headerSize } from './frame.ts'

export interface Refusal {
  /** What was wrong, for the log line. */
  why: string
  /** MQTT 5 reason code: 0x81 Malformed Packet or 0x82 Protocol Error. */
  code: number
}

export const MALFORMED_PACKET = 0x81
export const PROTOCOL_ERROR = 0x82

function refuse(why: string, code = MALFORMED_PACKET): Refusal {
  return { why, code }
}

/** Where the check reads in the packet being checked (one check runs at a time). */
let pos = 0

/**
 * Null when the whole frame of n bytes at b[at] is well-formed for a packet a client may
 * send; else why not. `v5`: the connection speaks MQTT 5 (a CONNECT says for itself).
 */
export function checkPacket(b: Uint8Array, at: number, n: number, v5: boolean): Refusal | null {
  const b0 = b[at]!
  const type = b0 >> 4
  const flags = b0 & 0x0f
  const p = at + headerSize(b, at)
  const end = at + n
  if (type === 3) return checkPublish(b, b0, p, end, v5)
  // Reserved flag bits must be as listed: 0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, else
  // 0000 [MQTT-2.2.2-1] [MQTT-2.2.2-2] (5.0: [MQTT-2.1.3-1], a Malformed Packet).
  if (flags !== (type === 6 || type === 8 || type === 10 ? 2 : 0)) return refuse(`reserved flag bits 0x${flags.toString(16)} in a ${NAMES[type]} fixed header`)
  switch (type) {
    case 1:
      return checkConnect(b, p, end)
    case 4:
    case 5:
    case 6:
    case 7:
      return checkAck(b, type, p, end, v5)
    case 8:
      return checkSubscribe(b, p, end, v5)
    case 10:
      return checkUnsubscribe(b, p, end, v5)
    case 12:
      return p === end ? null : refuse('PINGREQ with a body')
    case 14:
      return checkDisconnect(b, p, end, v5)
    case 15:
      // 3.1.1 has no packet type 15; 5.0's AUTH is not offered (no enhanced authentication).
      return v5 ? refuse('AUTH without enhanced authentication', PROTOCOL_ERROR) : refuse('packet type 15')
    case 0:
      return refuse('packet type 0')
    default:
      // CONNACK, SUBACK, UNSUBACK, PINGRESP: only a server sends those.
      return refuse(`${NAMES[type]} from a client`, PROTOCOL_ERROR)
  }
}

const NAMES = ['reserved', 'CONNECT', 'CONNACK', 'PUBLISH', 'PUBACK', 'PUBREC', 'PUBREL', 'PUBCOMP', 'SUBSCRIBE', 'SUBACK', 'UNSUBSCRIBE', 'UNSUBACK', 'PINGREQ', 'PINGRESP', 'DISCONNECT', 'AUTH']

// --- packets ------------------------------------------------------------------------------------

/** PUBLISH: on the hot path, so the common shape (ASCII topic, no properties) costs one scan of the topic. */
export function checkPublish(b: Uint8Array, b0: number, p: number, end: number, v5: boolean): Refusal | null {
  const qos = (b0 >> 1) & 3
  if (qos === 3) return refuse('PUBLISH with QoS 3') // [MQTT-3.3.1-4]
  if (end - p < 2) return refuse('PUBLISH cut before its topic')
  const n = (b[p]! << 8) | b[p + 1]!
  let at = p + 2
  if (at + n > end) return refuse('PUBLISH topic runs past the packet')
  const u = utf8Check(b, at, at + n)
  if (u !== 0) return badString(u, 'topic name')
  at += n
  if (qos > 0) {
    if (end - at < 2) return refuse('PUBLISH cut before its packet id')
    if (b[at] === 0 && b[at + 1] === 0) return refuse('PUBLISH QoS > 0 with packet id 0', PROTOCOL_ERROR) // [MQTT-2.2.1-3]
    at += 2
  }
  if (!v5) return n === 0 ? EMPTY_TOPIC : null
  hasAlias = false
  if (at >= end || b[at] !== 0) {
    pos = at
    const r = properties(b, end, K_PUBLISH)
    if (r !== null) return r
  }
  // A zero-length topic is only an MQTT 5 Topic Alias at work (5.0 §3.3.2.1) [MQTT-4.7.3-1].
  return n === 0 && !hasAlias ? EMPTY_TOPIC : null
}

const EMPTY_TOPIC: Refusal = Object.freeze({ why: 'PUBLISH with an empty topic name and no Topic Alias', code: PROTOCOL_ERROR })

/** A protocol name and level, read from the start of a CONNECT (connectPreamble). */
export interface Protocol {
  name: string
  level: number
}

/**
 * The start of a client's first packet, read before all of it has arrived (conn.ts answers an
 * unsupported level with a CONNACK [MQTT-3.1.2-2], which mqtt-packet cannot tell it): 'more'
 * until the protocol level is in; then the name and level, or a refusal: not a CONNECT
 * [MQTT-3.1.0-1], or a protocol name other than "MQTT" (or 3.1's "MQIsdp", refused by its
 * level) [MQTT-3.1.2-1].
 */
export function connectPreamble(b: Uint8Array): Protocol | Refusal | 'more' {
  if (b.length === 0) return 'more'
  if (b[0] !== 0x10) return refuse('first packet is not CONNECT')
  let i = 1
  for (;;) {
    if (i >= b.length) return 'more'
    if ((b[i++]! & 0x80) === 0) break
    if (i > 4) return refuse('malformed remaining length')
  }
  return protocolAt(b, i, b.length)
}

/** The protocol name and level at b[p], CONNECT's variable header, reading up to `end`. */
function protocolAt(b: Uint8Array, p: number, end: number): Protocol | Refusal | 'more' {
  if (end < p + 2) return 'more'
  const n = (b[p]! << 8) | b[p + 1]!
  if (n !== 4 && n !== 6) return refuse('bad protocol name')
  if (end < p + 3 + n) return 'more'
  const name = String.fromCharCode(...b.subarray(p + 2, p + 2 + n))
  if (name !== 'MQTT' && name !== 'MQIsdp') return refuse('bad protocol name')
  return { name, level: b[p + 2 + n]! }
}

export function checkConnect(b: Uint8Array, p: number, end: number): Refusal | null {
  // "MQTT", level 4 or 5 (the first CONNECT was checked before it got here, by connectPreamble;
  // a second one is a protocol error, but is read first).
  const proto = end - p < 10 ? null : protocolAt(b, p, end)
  if (proto === null || proto === 'more' || 'why' in proto || proto.name !== 'MQTT') return refuse('CONNECT without protocol name "MQTT"')
  const level = proto.level
  if (level !== 4 && level !== 5) return refuse(`CONNECT protocol level ${level}`)
  const v5 = level === 5
  const flags = b[p + 7]!
  if (flags & 1) return refuse('CONNECT reserved flag bit 0 set') // [MQTT-3.1.2-3]
  const will = (flags & 4) !== 0
  const willQos = (flags >> 3) & 3
  if (!will && (willQos !== 0 || (flags & 0x20) !== 0)) return refuse('CONNECT Will QoS or Will Retain without a will') // [MQTT-3.1.2-11] [MQTT-3.1.2-13]
  if (willQos === 3) return refuse('CONNECT Will QoS 3') // [MQTT-3.1.2-14]
  // 3.1.1 only: a password needs a user name [MQTT-3.1.2-22]; 5.0 allows one alone.
  if (!v5 && (flags & 0x40) !== 0 && (flags & 0x80) === 0) return refuse('CONNECT password without a user name')
  pos = p + 10
  if (v5) {
    const r = properties(b, end, K_CONNECT)
    if (r !== null) return r
  }
  let r = string(b, end, 'client identifier')
  if (r === null && will) {
    if (v5) r = properties(b, end, K_WILL)
    r ??= string(b, end, 'will topic') ?? binary(b, end, 'will payload')
  }
  if (r === null && (flags & 0x80) !== 0) r = string(b, end, 'user name')
  if (r === null && (flags & 0x40) !== 0) r = binary(b, end, 'password')
  if (r !== null) return r
  return pos === end ? null : refuse(`${end - pos} bytes after the end of CONNECT`)
}

/** PUBACK, PUBREC, PUBREL, PUBCOMP. */
function checkAck(b: Uint8Array, type: number, p: number, end: number, v5: boolean): Refusal | null {
  const len = end - p
  // 3.1.1: the packet id and nothing else; 5.0: then an optional reason code and properties.
  if (len < 2 || (!v5 && len !== 2)) return refuse(`${NAMES[type]} with a body of ${len} bytes`)
  if (len === 2) return null
  const rc = b[p + 2]!
  if (!(type === 4 || type === 5 ? PUBACK_CODES : PUBREL_CODES).has(rc)) return refuse(`${NAMES[type]} reason code 0x${rc.toString(16)}`)
  if (len === 3) return null
  pos = p + 3
  return properties(b, end, K_ACK) ?? (pos === end ? null : refuse(`bytes after the properties of ${NAMES[type]}`))
}

const PUBACK_CODES = new Set([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99])
const PUBREL_CODES = new Set([0x00, 0x92])

function checkSubscribe(b: Uint8Array, p: number, end: number, v5: boolean): Refusal | null {
  const r = packetId(b, p, end, 'SUBSCRIBE') ?? (v5 ? properties(b, end, K_SUBSCRIBE) : null)
  if (r !== null) return r
  // At least one filter [MQTT-3.8.3-3] (5.0: a Protocol Error).
  if (pos === end) return refuse('SUBSCRIBE without topic filters', PROTOCOL_ERROR)
  while (pos < end) {
    const r = string(b, end, 'topic filter')
    if (r !== null) return r
    if (pos === end) return refuse('SUBSCRIBE topic filter without its options byte')
    const o = b[pos++]!
    // Reserved bits [MQTT-3.8.3-4] (5.0: [MQTT-3.8.3-5], malformed); QoS 3 [MQTT-3-8.3-4] and Retain Handling 3 (5.0: protocol errors).
    if ((o & (v5 ? 0xc0 : 0xfc)) !== 0) return refuse(`SUBSCRIBE options 0x${o.toString(16)} set reserved bits`)
    if ((o & 3) === 3) return refuse('SUBSCRIBE with QoS 3', PROTOCOL_ERROR) // 5.0 §3.8.3.1
    if (((o >> 4) & 3) === 3) return refuse('SUBSCRIBE with Retain Handling 3', PROTOCOL_ERROR)
  }
  return null
}

function checkUnsubscribe(b: Uint8Array, p: number, end: number, v5: boolean): Refusal | null {
  const r = packetId(b, p, end, 'UNSUBSCRIBE') ?? (v5 ? properties(b, end, K_UNSUBSCRIBE) : null)
  if (r !== null) return r
  if (pos === end) return refuse('UNSUBSCRIBE without topic filters', PROTOCOL_ERROR) // [MQTT-3.10.3-2]
  while (pos < end) {
    const r = string(b, end, 'topic filter')
    if (r !== null) return r
  }
  return null
}

function checkDisconnect(b: Uint8Array, p: number, end: number, v5: boolean): Refusal | null {
  if (p === end) return null
  if (!v5) return refuse('DISCONNECT with a body')
  const rc = b[p]!
  if (!DISCONNECT_CODES.has(rc)) return refuse(`DISCONNECT reason code 0x${rc.toString(16)}`)
  if (end - p === 1) return null
  pos = p + 1
  return properties(b, end, K_DISCONNECT) ?? (pos === end ? null : refuse('bytes after the properties of DISCONNECT'))
}

/** The DISCONNECT reason codes (5.0 §3.14.2.1) [MQTT-3.14.2-1]. */
const DISCONNECT_CODES = new Set([0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b, 0x8d, 0x8e, 0x8f, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9e, 0x9f, 0xa0, 0xa1, 0xa2])

/** A non-zero packet id at b[p] [MQTT-2.2.1-3]; pos after it. */
function packetId(b: Uint8Array, p: number, end: number, what: string): Refusal | null {
  if (end - p < 2) return refuse(`${what} cut before its packet id`)
  if (b[p] === 0 && b[p + 1] === 0) return refuse(`${what} with packet id 0`, PROTOCOL_ERROR)
  pos = p + 2
  return null
}

// --- fields -------------------------------------------------------------------------------------

/** A length-prefixed UTF-8 string at pos, ending by `end`. */
function string(b: Uint8Array, end: number, what: string): Refusal | null {
  if (end - pos < 2) return refuse(`${what} runs past the packet`)
  const n = (b[pos]! << 8) | b[pos + 1]!
  const start = pos + 2
  if (start + n > end) return refuse(`${what} runs past the packet`)
  const u = utf8Check(b, start, start + n)
  if (u !== 0) return badString(u, what)
  pos = start + n
  return null
}

/** Length-prefixed binary data at pos, ending by `end`. */
function binary(b: Uint8Array, end: number, what: string): Refusal | null {
  if (end - pos < 2) return refuse(`${what} runs past the packet`)
  const n = (b[pos]! << 8) | b[pos + 1]!
  if (pos + 2 + n > end) return refuse(`${what} runs past the packet`)
  pos += 2 + n
  return null
}

function badString(u: number, what: string): Refusal {
  return refuse(u === NUL ? `${what} contains U+0000` : `${what} is not well-formed UTF-8`)
}

const NUL = 2

/**
 * 0 when b[start, end) is well-formed UTF-8 without surrogates [MQTT-1.5.4-1] (3.1.1:
 * [MQTT-1.5.3-1]) and without U+0000 [MQTT-1.5.4-2]; 1 when ill-formed, NUL (2) for U+0000.
 * ASCII, what topics nearly always are, is one compare per byte.
 */
export function utf8Check(b: Uint8Array, start: number, end: number): number {
  for (let i = start; i < end; i++) {
    // One compare for "U+0000 or not ASCII": 0 - 1 wraps to the largest unsigned value.
    if ((b[i]! - 1) >>> 0 >= 0x7f) return utf8Rest(b, i, end)
  }
  return 0
}

/** utf8Check from the first byte that is not plain ASCII. */
function utf8Rest(b: Uint8Array, start: number, end: number): number {
  let i = start
  while (i < end) {
    const c = b[i]!
    if (c < 0x80) {
      if (c === 0) return NUL
      i++
    } else if (c < 0xc2) {
      return 1 // a continuation byte, or an overlong two-byte form
    } else if (c < 0xe0) {
      if (i + 1 >= end || (b[i + 1]! & 0xc0) !== 0x80) return 1
      i += 2
    } else if (c < 0xf0) {
      if (i + 2 >= end) return 1
      const c1 = b[i + 1]!
      if ((c1 & 0xc0) !== 0x80 || (b[i + 2]! & 0xc0) !== 0x80) return 1
      if ((c === 0xe0 && c1 < 0xa0) || (c === 0xed && c1 >= 0xa0)) return 1 // overlong; U+D800..U+DFFF
      i += 3
    } else if (c < 0xf5) {
      if (i + 3 >= end) return 1
      const c1 = b[i + 1]!
      if ((c1 & 0xc0) !== 0x80 || (b[i + 2]! & 0xc0) !== 0x80 || (b[i + 3]! & 0xc0) !== 0x80) return 1
      if ((c === 0xf0 && c1 < 0x90) || (c === 0xf4 && c1 >= 0x90)) return 1 // overlong; past U+10FFFF
      i += 4
    } else return 1
  }
  return 0
}

/**
 * A Variable Byte Integer at pos, ending by `end`: its value, or -1 when cut, -2 when longer
 * than four bytes or not in its shortest form [MQTT-1.5.5-1].
 */
function varint(b: Uint8Array, end: number): number {
  let value = 0
  let mul = 1
  for (let i = 0; i < 4; i++) {
    if (pos >= end) return -1
    const c = b[pos++]!
    value += (c & 0x7f) * mul
    if ((c & 0x80) === 0) return c === 0 && i > 0 ? -2 : value
    mul *= 128
  }
  return -2
}

// --- MQTT 5 properties --------------------------------------------------------------------------

// Where a property may appear, as a client sends it (5.0 §2.2.2.2, table 2-4).
const K_CONNECT = 1
const K_WILL = 2
const K_PUBLISH = 4
const K_ACK = 8
const K_SUBSCRIBE = 16
const K_UNSUBSCRIBE = 32
const K_DISCONNECT = 64
const K_NAMES: Record<number, string> = { 1: 'CONNECT', 2: 'will properties', 4: 'PUBLISH', 8: 'an acknowledgement', 16: 'SUBSCRIBE', 32: 'UNSUBSCRIBE', 64: 'DISCONNECT' }

const BYTE = 0
const U16 = 1
const U32 = 2
const VAR = 3
const STR = 4
const BIN = 5
const PAIR = 6

/** Property id -> [name, value type, where a client may send it (0: only a server)]. */
const PROPS: Record<number, [string, number, number]> = {
  0x01: ['Payload Format Indicator', BYTE, K_WILL | K_PUBLISH],
  0x02: ['Message Expiry Interval', U32, K_WILL | K_PUBLISH],
  0x03: ['Content Type', STR, K_WILL | K_PUBLISH],
  0x08: ['Response Topic', STR, K_WILL | K_PUBLISH],
  0x09: ['Correlation Data', BIN, K_WILL | K_PUBLISH],
  0x0b: ['Subscription Identifier', VAR, K_SUBSCRIBE],
  0x11: ['Session Expiry Interval', U32, K_CONNECT | K_DISCONNECT],
  0x12: ['Assigned Client Identifier', STR, 0],
  0x13: ['Server Keep Alive', U16, 0],
  0x15: ['Authentication Method', STR, K_CONNECT],
  0x16: ['Authentication Data', BIN, K_CONNECT],
  0x17: ['Request Problem Information', BYTE, K_CONNECT],
  0x18: ['Will Delay Interval', U32, K_WILL],
  0x19: ['Request Response Information', BYTE, K_CONNECT],
  0x1a: ['Response Information', STR, 0],
  0x1c: ['Server Reference', STR, K_DISCONNECT],
  0x1f: ['Reason String', STR, K_ACK | K_DISCONNECT],
  0x21: ['Receive Maximum', U16, K_CONNECT],
  0x22: ['Topic Alias Maximum', U16, K_CONNECT],
  0x23: ['Topic Alias', U16, K_PUBLISH],
  0x24: ['Maximum QoS', BYTE, 0],
  0x25: ['Retain Available', BYTE, 0],
  0x26: ['User Property', PAIR, K_CONNECT | K_WILL | K_PUBLISH | K_ACK | K_SUBSCRIBE | K_UNSUBSCRIBE | K_DISCONNECT],
  0x27: ['Maximum Packet Size', U32, K_CONNECT],
  0x28: ['Wildcard Subscription Available', BYTE, 0],
  0x29: ['Subscription Identifier Available', BYTE, 0],
  0x2a: ['Shared Subscription Available', BYTE, 0],
}

/** The last properties() saw a Topic Alias (for PUBLISH's empty topic). */
let hasAlias = false

/**
 * A property block at pos (length, then properties), for a packet of kind `kind` ending at
 * `end`. Each value must lie within the block; only User Property may repeat.
 */
function properties(b: Uint8Array, end: number, kind: number): Refusal | null {
  const len = varint(b, end)
  if (len === -1) return refuse(`${K_NAMES[kind]}: property length runs past the packet`)
  if (len === -2) return refuse(`${K_NAMES[kind]}: property length is not a valid Variable Byte Integer`)
  const stop = pos + len
  if (stop > end) return refuse(`${K_NAMES[kind]}: properties run past the packet`)
  let seenLo = 0
  let seenHi = 0
  while (pos < stop) {
    const id = b[pos++]!
    const def = PROPS[id]
    if (def === undefined) return refuse(`${K_NAMES[kind]}: unknown property 0x${id.toString(16)}`)
    const [name, type, where] = def
    if ((where & kind) === 0) {
      // A Subscription Identifier is a server's to send [MQTT-3.3.4-6].
      if (id === 0x0b && kind === K_PUBLISH) return refuse('PUBLISH from a client with a Subscription Identifier', PROTOCOL_ERROR)
      return refuse(`${K_NAMES[kind]}: property ${name} not allowed there`)
    }
    if (type !== PAIR) {
      const bit = 1 << (id & 31)
      const seen = id < 32 ? seenLo : seenHi
      if ((seen & bit) !== 0) return refuse(`${K_NAMES[kind]}: property ${name} more than once`, PROTOCOL_ERROR)
      if (id < 32) seenLo |= bit
      else seenHi |= bit
    }
    let v = 0
    let r: Refusal | null = null
    switch (type) {
      case BYTE:
        if (pos + 1 > stop) return cut(kind, name)
        v = b[pos++]!
        break
      case U16:
        if (pos + 2 > stop) return cut(kind, name)
        v = (b[pos]! << 8) | b[pos + 1]!
        pos += 2
        break
      case U32:
        if (pos + 4 > stop) return cut(kind, name)
        v = ((b[pos]! << 24) | (b[pos + 1]! << 16) | (b[pos + 2]! << 8) | b[pos + 3]!) >>> 0
        pos += 4
        break
      case VAR:
        v = varint(b, stop)
        if (v === -1) return cut(kind, name)
        if (v === -2) return refuse(`${K_NAMES[kind]}: property ${name} is not a valid Variable Byte Integer`)
        break
      case STR:
        r = string(b, stop, `${K_NAMES[kind]}: property ${name}`)
        break
      case BIN:
        r = binary(b, stop, `${K_NAMES[kind]}: property ${name}`)
        break
      default:
        r = string(b, stop, `${K_NAMES[kind]}: User Property name`) ?? string(b, stop, `${K_NAMES[kind]}: User Property value`)
    }
    if (r !== null) return r
    switch (id) {
      case 0x01: // Payload Format Indicator 0 or 1 (5.0 §3.3.2.3.2)
      case 0x17: // Request Problem Information 0 or 1 (5.0 §3.1.2.11.7)
      case 0x19: // Request Response Information 0 or 1 (5.0 §3.1.2.11.6)
        if (v > 1) return refuse(`${K_NAMES[kind]}: property ${name} is ${v}, not 0 or 1`, PROTOCOL_ERROR)
        break
      case 0x21: // Receive Maximum (5.0 §3.1.2.11.3)
      case 0x27: // Maximum Packet Size (5.0 §3.1.2.11.4)
      case 0x0b: // Subscription Identifier (5.0 §3.8.2.1.2)
        if (v === 0) return refuse(`${K_NAMES[kind]}: property ${name} is 0`, PROTOCOL_ERROR)
        break
      case 0x23:
        hasAlias = true
    }
  }
  return null
}

function cut(kind: number, name: string): Refusal {
  return refuse(`${K_NAMES[kind]}: property ${name} runs past the properties`)
}
