// A message as it travels through the router. One object is reused by each publisher for
// every message it parses, so a deliver() implementation must copy what it keeps (the NATS
// adapter copies straight into its outbound buffer; anything that queues must clone).
//
// The payload is lent, not given: it is the bytes src[at, at + size) of the publisher's read
// buffer, valid only while publish() runs (the next read reuses the buffer). A publisher that
// parsed it from a read hands the range over with lend(), and no view is made: the consumers
// on the hot path (NATS delivery, the uplink's frame, the router's accounting) copy straight
// from the range with putPayload() and `size`. Every other reader asks for `payload`, a view
// made on the first ask and shared by the rest of that publish; like the range, it must be
// copied by whoever keeps it. Assigning `payload` sets the range to the whole array.

import { EMPTY, put, putShort, rangeCopy, SHORT, utf8 } from './bytes.ts'

// Importers from before EMPTY moved to bytes.ts (adapters/mqtt/packets.ts).
export { EMPTY }

export class Msg {
  /** Literal subject, used to match subscriptions. */
  subject = ''
  /** The subject's UTF-8 bytes, so adapters can frame without re-encoding. */
  subjectBytes: Uint8Array = EMPTY
  /** Reply subject, or '' for none. */
  reply = ''
  replyBytes: Uint8Array = EMPTY
  /** NATS header block ("NATS/1.0\r\n...\r\n\r\n"), or null. */
  hdr: Uint8Array | null = null
  /** The payload's bytes are src[at, at + size): lent for the duration of publish(). */
  src: Uint8Array = EMPTY
  at = 0
  /** The payload's length in bytes (headers not included). */
  size = 0
  /**
   * Bumped for every publish through the router: adapters cache per-message framing
   * (sizes, reply) keyed by it, so fan-out to N subscribers builds that framing once.
   */
  seq = 0
  /** The payload as a view, once asked for (null: not made yet); read by putPayload. */
  view: Uint8Array | null = EMPTY
  /** Copies putPayload made from the range with the runtime's range copy, this publish. */
  copies = 0

  /** The payload as a Uint8Array (a view of the lent bytes: copy it to keep it). */
  get payload(): Uint8Array {
    const v = this.view
    if (v !== null) return v
    // A plain Uint8Array even when src is a Buffer, so that a consumer's slice() copies.
    const s = this.src
    return (this.view = new Uint8Array(s.buffer, s.byteOffset + this.at, this.size))
  }

  set payload(p: Uint8Array) {
    this.src = p
    this.at = 0
    this.size = p.length
    this.view = p
    this.copies = 0
  }

  /** Lends buf[at, at + size) as the payload, without making a view of it. */
  lend(buf: Uint8Array, at: number, size: number): void {
    this.src = buf
    this.at = at
    this.size = size
    this.view = null
    this.copies = 0
  }

  /**
   * A new Msg with the same fields, some replaced (a service answering or re-publishing from
   * within a delivery); the payload is the same lent range, so copy it to keep it.
   */
  with(o: { subject?: string; reply?: string; seq?: number }): Msg {
    const m = new Msg()
    m.subject = o.subject ?? this.subject
    m.subjectBytes = o.subject === undefined ? this.subjectBytes : utf8(o.subject)
    m.reply = o.reply ?? this.reply
    m.replyBytes = o.reply === undefined ? this.replyBytes : utf8(o.reply)
    m.hdr = this.hdr
    m.src = this.src
    m.at = this.at
    m.size = this.size
    m.view = this.view
    m.seq = o.seq ?? this.seq
    return m
  }
}

/**
 * Deliveries of one payload copied with the runtime's range copy before a view is made: a
 * view costs ~30 ns once and set() from it ~11 ns (64 B) to ~17 ns (1 KiB) per delivery,
 * the range copy ~13-20 ns (Bun), so copying wins for a few deliveries and the view for a
 * wide fan-out.
 */
const COPIES_BEFORE_VIEW = 8

/**
 * Copies the payload of `m` into b at p and returns the offset after it. A short one (as put()
 * in bytes.ts) is copied byte by byte from the lent range, with no view; a longer one with the
 * runtime's range copy (bytes.ts rangeCopy) for its first few deliveries, or else through the
 * view, made once per publish and shared by the rest of its deliveries (a fan-out).
 */
export function putPayload(b: Uint8Array, p: number, m: Msg): number {
  const n = m.size
  if (n < SHORT) return putShort(b, p, m.src, m.at, n)
  const copy = rangeCopy
  if (copy !== null && m.view === null && m.copies < COPIES_BEFORE_VIEW) {
    m.copies++
    return copy(b, p, m.src, m.at, n)
  }
  return put(b, p, m.payload)
}

export function newMsg(): Msg {
  return new Msg()
}
