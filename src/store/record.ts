// The store's on-disk format. A segment file starts with an 8-byte header (magic "SPRG", the
// format version, 3 reserved bytes); records follow back to back:
//
//   u32 length of body | u32 CRC-32 of body | body
//   body of a message: u8 kind (1) | f64 seq | u16 subject length | u16 reply length |
//                      u32 header length | subject | reply | header | payload
//   header length 0xffffffff: no header; 0xfffffff0 + k: header block k of KNOWN_HEADERS, not
//   written out (an MQTT publish's `Nmqtt-Pub: <qos>`: 26 bytes of every MQTT message).
//   body of a short message (no reply, subject under 256 bytes, no header or a known one):
//                      u8 kind (4) | f64 seq | u8 subject length | u8 header (0xff none, k known)
//                      | subject | payload
//   (11 bytes instead of 17 before the subject: telemetry is mostly small messages.)
//
// All little-endian. A torn write leaves a short or checksum-failing last record; a flipped bit
// fails its checksum. A newer version in a header is refused, never guessed at.

import { encodeHeaders } from '../headers.ts'
import type { Msg } from '../msg.ts'

export const FORMAT_VERSION = 1
export const MAGIC = [0x53, 0x50, 0x52, 0x47] // "SPRG"
export const SEG_HEADER = 8
export const REC_HEADER = 8
export const KIND_MSG = 1
export const KIND_SHORT = 4
/** Larger than any record we write (max_payload is capped well below): framing is broken. */
export const MAX_RECORD = 128 * 1024 * 1024
const NO_HDR = 0xffffffff
const KNOWN_HDR = 0xfffffff0
/**
 * Header blocks stored as a code (part of the format: append only, never reorder). The blocks
 * the MQTT adapter puts on a publish without properties (adapters/mqtt/props.ts QOS_HEADERS).
 */
const KNOWN_HEADERS: readonly Uint8Array[] = [0, 1, 2].map((q) => encodeHeaders([['Nmqtt-Pub', String(q)]]))

/** The code of a well-known header block, or -1. */
function knownHeader(h: Uint8Array): number {
  for (let k = 0; k < KNOWN_HEADERS.length; k++) {
    const w = KNOWN_HEADERS[k]!
    if (w.length !== h.length) continue
    let i = 0
    while (i < w.length && w[i] === h[i]) i++
    if (i === w.length) return k
  }
  return -1
}

// CRC-32 tables for slicing by 8: T[k][n] is the CRC of byte n followed by k zero bytes, so
// eight bytes are folded per step (about 3× the byte-at-a-time loop; records are written
// and read at every message). Built on the first CRC, not at start: the build's loops are hot
// enough for JSC's optimizing compiler (DFG), which then ran during start-up in some starts
// and not others, even with no store configured (docs/benchmarks.md, the binary's idle RSS).
let table: Int32Array | null = null

function tables(): Int32Array {
  const t = new Int32Array(8 * 256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    t[n] = c
  }
  for (let n = 0; n < 256; n++) for (let k = 1; k < 8; k++) t[k * 256 + n] = (t[(k - 1) * 256 + n]! >>> 8) ^ t[t[(k - 1) * 256 + n]! & 0xff]!
  return (table = t)
}

/** CRC-32 (IEEE), as zlib computes it. */
export function crc32(b: Uint8Array, start = 0, end = b.length): number {
  const T = table ?? tables()
  let c = -1
  let i = start
  for (; i + 8 <= end; i += 8) {
    const lo = c ^ (b[i]! | (b[i + 1]! << 8) | (b[i + 2]! << 16) | (b[i + 3]! << 24))
    c =
      T[1792 + (lo & 0xff)]! ^
      T[1536 + ((lo >>> 8) & 0xff)]! ^
      T[1280 + ((lo >>> 16) & 0xff)]! ^
      T[1024 + (lo >>> 24)]! ^
      T[768 + b[i + 4]!]! ^
      T[512 + b[i + 5]!]! ^
      T[256 + b[i + 6]!]! ^
      T[b[i + 7]!]!
  }
  for (; i < end; i++) c = T[(c ^ b[i]!) & 0xff]! ^ (c >>> 8)
  return (c ^ -1) >>> 0
}

export function segmentHeader(): Uint8Array {
  return Uint8Array.from([...MAGIC, FORMAT_VERSION, 0, 0, 0])
}

/** null: fine; else what is wrong with a segment header. 'newer' is a format we must not read. */
export function checkHeader(b: Uint8Array): null | 'short' | 'magic' | 'newer' {
  if (b.length < SEG_HEADER) return 'short'
  for (let i = 0; i < 4; i++) if (b[i] !== MAGIC[i]) return 'magic'
  if (b[4]! > FORMAT_VERSION) return 'newer'
  return null
}

const enc = new TextEncoder()
const dec = new TextDecoder()

// Little-endian fields written byte by byte: a DataView over a fresh record costs more than
// the record (on Bun, `.buffer` of a small typed array allocates its ArrayBuffer).
const F64 = new Float64Array(1)
const F64B = new Uint8Array(F64.buffer)
const LITTLE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v & 0xff
  b[at + 1] = (v >>> 8) & 0xff
  b[at + 2] = (v >>> 16) & 0xff
  b[at + 3] = (v >>> 24) & 0xff
}

function putF64(b: Uint8Array, at: number, v: number): void {
  F64[0] = v
  if (LITTLE) b.set(F64B, at)
  else for (let i = 0; i < 8; i++) b[at + i] = F64B[7 - i]!
}

function subjectOf(m: Msg): Uint8Array {
  return m.subjectBytes.length > 0 ? m.subjectBytes : enc.encode(m.subject)
}

function isShort(m: Msg, subj: Uint8Array, known: number): boolean {
  return m.reply === '' && subj.length < 256 && (m.hdr === null || known >= 0)
}

/** Length of `m` as a record (header and body): what encodeMsgInto writes. */
export function msgRecordSize(m: Msg): number {
  const subj = subjectOf(m)
  const known = m.hdr ? knownHeader(m.hdr) : -1
  if (isShort(m, subj, known)) return REC_HEADER + 11 + subj.length + m.payload.length
  const reply = m.reply === '' ? 0 : m.replyBytes.length > 0 ? m.replyBytes.length : enc.encode(m.reply).length
  const hdrLen = m.hdr && known < 0 ? m.hdr.length : 0
  return REC_HEADER + 17 + subj.length + reply + hdrLen + m.payload.length
}

/** One message as a complete record (header and body). */
export function encodeMsg(m: Msg, seq: number): Uint8Array {
  const b = new Uint8Array(msgRecordSize(m))
  encodeMsgInto(m, seq, b, 0)
  return b
}

/** Writes `m` as a record at `at` of `b`, which has room for msgRecordSize(m); returns its length. */
export function encodeMsgInto(m: Msg, seq: number, b: Uint8Array, at: number): number {
  const subj = subjectOf(m)
  const known = m.hdr ? knownHeader(m.hdr) : -1
  const s = at + REC_HEADER
  if (isShort(m, subj, known)) {
    const bodyLen = 11 + subj.length + m.payload.length
    putU32(b, at, bodyLen)
    b[s] = KIND_SHORT
    putF64(b, s + 1, seq)
    b[s + 9] = subj.length
    b[s + 10] = known >= 0 ? known : 0xff
    b.set(subj, s + 11)
    b.set(m.payload, s + 11 + subj.length)
    putU32(b, at + 4, crc32(b, s, s + bodyLen))
    return REC_HEADER + bodyLen
  }
  const reply = m.reply === '' ? EMPTY : m.replyBytes.length > 0 ? m.replyBytes : enc.encode(m.reply)
  const hdrLen = m.hdr && known < 0 ? m.hdr.length : 0
  const bodyLen = 1 + 8 + 2 + 2 + 4 + subj.length + reply.length + hdrLen + m.payload.length
  let p = s
  putU32(b, at, bodyLen)
  b[p++] = KIND_MSG
  putF64(b, p, seq)
  p += 8
  b[p] = subj.length & 0xff
  b[p + 1] = subj.length >>> 8
  b[p + 2] = reply.length & 0xff
  b[p + 3] = reply.length >>> 8
  putU32(b, p + 4, m.hdr === null ? NO_HDR : known >= 0 ? KNOWN_HDR + known : hdrLen)
  p += 8
  b.set(subj, p)
  p += subj.length
  b.set(reply, p)
  p += reply.length
  if (m.hdr && known < 0) {
    b.set(m.hdr, p)
    p += hdrLen
  }
  b.set(m.payload, p)
  putU32(b, at + 4, crc32(b, s, s + bodyLen))
  return REC_HEADER + bodyLen
}

export interface Decoded {
  seq: number
  subject: string
  reply: string
  hdr: Uint8Array | null
  payload: Uint8Array
  size: number
}

/**
 * Reads the record at `at` in `b` (which holds `end` valid bytes). Returns the record and its
 * total length; 'more' when the buffer ends inside it; 'torn' when the length field is
 * impossible; 'crc' (with its length) when the body fails its checksum or does not parse.
 */
export function decodeAt(b: Uint8Array, at: number, end: number): { rec: Decoded; len: number } | 'more' | 'torn' | { crc: number } {
  if (end - at < REC_HEADER) return 'more'
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength)
  const bodyLen = v.getUint32(at, true)
  if (bodyLen < 11 || bodyLen > MAX_RECORD) return 'torn'
  const len = REC_HEADER + bodyLen
  if (end - at < len) return 'more'
  const s = at + REC_HEADER
  if (crc32(b, s, s + bodyLen) !== v.getUint32(at + 4, true)) return { crc: len }
  if (b[s] === KIND_SHORT) {
    const seq = v.getFloat64(s + 1, true)
    const sl = b[s + 9]!
    const code = b[s + 10]!
    const hdr = code === 0xff ? null : KNOWN_HEADERS[code]
    if (hdr === undefined || 11 + sl > bodyLen) return { crc: len } // a code we do not know: damage, never a guess
    const subject = dec.decode(b.subarray(s + 11, s + 11 + sl))
    const payload = b.slice(s + 11 + sl, s + bodyLen)
    return { rec: { seq, subject, reply: '', hdr, payload, size: subject.length + (hdr?.length ?? 0) + payload.length }, len }
  }
  if (b[s] !== KIND_MSG || bodyLen < 17) return { crc: len }
  const seq = v.getFloat64(s + 1, true)
  const sl = v.getUint16(s + 9, true)
  const rl = v.getUint16(s + 11, true)
  const hl = v.getUint32(s + 13, true)
  let p = s + 17
  const known = hl >= KNOWN_HDR && hl !== NO_HDR ? KNOWN_HEADERS[hl - KNOWN_HDR] : undefined
  if (hl >= KNOWN_HDR && hl !== NO_HDR && known === undefined) return { crc: len } // not a code we know
  const hdrLen = hl >= KNOWN_HDR ? 0 : hl
  if (p + sl + rl + hdrLen > s + bodyLen) return { crc: len }
  const subject = dec.decode(b.subarray(p, p + sl))
  p += sl
  const reply = dec.decode(b.subarray(p, p + rl))
  p += rl
  // A known block is shared, as the adapter's own blocks are (nothing writes into a message's header).
  const hdr = hl === NO_HDR ? null : known !== undefined ? known : b.slice(p, p + hdrLen)
  p += hdrLen
  const payload = b.slice(p, s + bodyLen)
  return { rec: { seq, subject, reply, hdr, payload, size: subject.length + reply.length + (hdr?.length ?? 0) + payload.length }, len }
}

const EMPTY = new Uint8Array(0)
