// NATS client-protocol parser: bytes in, one handler call per operation out. It works on whole
// control lines (found with indexOf, not a per-byte state machine), except for the stream of
// `PUB <the previous subject> <size>` a publisher sends, which one byte-level pass reads
// without looking for the line end first. Payloads stay in the read buffer (the handler gets
// offsets) unless a payload is split across reads, and then they are copied once. Operation names are
// case-insensitive and arguments may be separated by any run of spaces and tabs, as in
// nats-server. What counts as an error, and how it ends, follows nats-server (see `Failure`).

import type { Budget } from '../../src/budget.ts'
import { equalBytes, text } from '../../src/bytes.ts'

/** How parsing stopped; the connection sends what nats-server sends for it and closes. */
export type Failure =
  | 'unknown_op' // -ERR 'Unknown Protocol Operation'
  | 'control_line' // -ERR 'maximum control line exceeded'
  | 'max_payload' // -ERR 'Maximum Payload Violation'
  | 'bad_args' // closed without an -ERR (nats-server's processPub/processSub parse errors)
  | 'no_headers' // HPUB from a client that did not ask for headers: closed without an -ERR
  | 'auth_first' // another operation before CONNECT while auth is required: -ERR 'Authorization Violation'

export interface PubArgs {
  subject: string
  subjectBytes: Uint8Array
  reply: string
  replyBytes: Uint8Array
  /** Header length for HPUB, -1 for PUB. */
  hdr: number
  /** Total size (headers + payload). */
  size: number
}

export interface Handler {
  connect(json: string): void
  /**
   * buf[at, at + p.size) holds headers then payload; valid only during the call. Offsets, not
   * a view: a view costs as much as the rest of a small PUB's parsing, and a publish nobody
   * receives never needs one.
   */
  pub(p: PubArgs, buf: Uint8Array, at: number): void
  sub(subject: string, queue: string | null, sid: string): void
  unsub(sid: string, max: number): void
  ping(): void
  pong(): void
  err(text: string): void
  fail(why: Failure, detail: string): void
}

const SP = 32
const TAB = 9
const CR = 13
const LF = 10
const NO_BYTES = new Uint8Array(0)
/** nats-server refuses sizes with more digits than this (≈ 1 GB). */
const MAX_SIZE_DIGITS = 9

export class Parser {
  maxPayload: number
  maxControlLine: number
  /** Set once the client's CONNECT asked for headers; HPUB is refused before that. */
  headers = false
  /** While auth is pending every operation must be CONNECT, as in nats-server. */
  connectFirst = false
  stopped = false

  /**
   * Start of a control line left incomplete by the previous read: partial[0, partialLen),
   * grown by doubling, so a line arriving a byte at a time is copied O(n) times, not O(n²).
   */
  private partial: Uint8Array | null = null
  private partialLen = 0
  /** A payload being assembled across reads (size + CRLF bytes); charged to `budget` while held. */
  private body: Uint8Array | null = null
  /** The memory budget (src/budget.ts), when there is one. */
  budget: Budget | null = null
  private filled = 0
  private readonly pa: PubArgs = { subject: '', subjectBytes: NO_BYTES, reply: '', replyBytes: NO_BYTES, hdr: -1, size: 0 }
  /** Argument boundaries of the current line: start,end pairs. */
  private readonly args = new Int32Array(12)
  /** The previous publish subject, reused when the next one has the same bytes. */
  private lastSubject = NO_BYTES
  private lastSubjectText = ''

  constructor(
    private readonly h: Handler,
    opts: { maxPayload: number; maxControlLine: number },
  ) {
    this.maxPayload = opts.maxPayload
    this.maxControlLine = opts.maxControlLine
  }

  /** At a line's start: no control line cut, no payload arriving, not stopped. */
  atLineStart(): boolean {
    return this.partial === null && this.body === null && !this.stopped
  }

  feed(chunk: Uint8Array): void {
    if (this.stopped) return
    // A plain Uint8Array view of a runtime's Buffer: subarray() on a Buffer subclass costs
    // more (on Bun ~40% of the parse of a small PUB), and handlers only need Uint8Array.
    const buf = chunk.constructor === Uint8Array ? chunk : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    let pos = 0
    if (this.partial !== null) {
      pos = this.resume(buf)
      if (pos < 0) return
    }
    if (this.body !== null) {
      pos = this.fillBody(buf, pos)
      if (pos < 0) return
    }
    const len = buf.length
    while (pos < len && !this.stopped) {
      const fast = this.fastPub(buf, pos, len)
      if (fast > 0) {
        pos = fast
        continue
      }
      const nl = buf.indexOf(LF, pos)
      if (nl < 0) {
        this.keep(buf, pos, len)
        return
      }
      const next = this.lineAt(buf, pos, nl)
      if (next < 0) return
      pos = next
    }
  }

  /** The control line buf[pos, nl] (nl: its LF); returns where parsing continues, or -1. */
  private lineAt(buf: Uint8Array, pos: number, nl: number): number {
    const end = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl
    // Only a line longer than the limit can have an argument over it (slow path).
    if (nl - pos > this.maxControlLine && this.overLimit(buf, pos, end)) return -1
    return this.line(buf, pos, end, nl + 1)
  }

  /**
   * `PUB <the previous subject> <size>\r\n<payload>\r\n`, whole in this read, in one
   * byte-level pass: returns the offset after it, or -1 for anything else (other operations,
   * other forms, a split frame, a size over a limit, a bad end), which the general path then
   * parses, with the same result for this form.
   */
  private fastPub(buf: Uint8Array, pos: number, len: number): number {
    const ls = this.lastSubject
    const sl = ls.length
    const d0 = pos + 5 + sl // the first digit
    if (sl === 0 || d0 + 3 > len) return -1
    if ((buf[pos]! | 0x20) !== 0x70 || (buf[pos + 1]! | 0x20) !== 0x75 || (buf[pos + 2]! | 0x20) !== 0x62) return -1
    if (buf[pos + 3] !== SP || buf[d0 - 1] !== SP) return -1
    const s = pos + 4
    for (let k = 0; k < sl; k++) if (buf[s + k] !== ls[k]) return -1
    let size = 0
    let i = d0
    const dmax = Math.min(len, d0 + MAX_SIZE_DIGITS + 1)
    for (; i < dmax; i++) {
      const d = buf[i]! - 48
      if (d < 0 || d > 9) break
      size = size * 10 + d
    }
    const nd = i - d0
    if (nd === 0 || nd > MAX_SIZE_DIGITS || i + 1 >= len || buf[i] !== CR || buf[i + 1] !== LF) return -1
    if (size > this.maxPayload || sl + 1 + nd > this.maxControlLine) return -1
    const at = i + 2
    const end = at + size
    if (end + 2 > len || buf[end] !== CR || buf[end + 1] !== LF) return -1
    this.h.pub(this.samePub(size), buf, at)
    return end + 2
  }

  /** The PUB arguments of `PUB <the previous subject> <size>`: no reply, no headers. */
  private samePub(size: number): PubArgs {
    const pa = this.pa
    pa.subject = this.lastSubjectText
    pa.subjectBytes = this.lastSubject
    pa.reply = ''
    pa.replyBytes = NO_BYTES
    pa.hdr = -1
    pa.size = size
    return pa
  }

  /**
   * The next read after one that ended inside a control line: completes the line in the
   * partial buffer (only the line's bytes are copied, never the whole read) and handles it.
   * Returns the offset in buf after the line, or -1 (still incomplete, or stopped).
   */
  private resume(buf: Uint8Array): number {
    const nl = buf.indexOf(LF)
    const take = nl < 0 ? buf.length : nl + 1
    let p = this.partial!
    const n = this.partialLen + take
    if (n > p.length) {
      const grown = new Uint8Array(Math.max(n, p.length * 2))
      grown.set(p.subarray(0, this.partialLen))
      p = this.partial = grown
    }
    p.set(take === buf.length ? buf : buf.subarray(0, take), this.partialLen)
    this.partialLen = n
    if (nl < 0) {
      if (!this.mayKeep(p, 0, n)) this.partial = null
      return -1
    }
    this.partial = null
    this.partialLen = 0
    // A PUB's payload is not in this line buffer: pub() starts the body, filled from buf next.
    this.lineAt(p.subarray(0, n), 0, n - 1)
    return this.stopped ? -1 : take
  }

  /**
   * Keeps the start of a line for the next read, unless nats-server would already refuse it
   * (see mayKeep).
   */
  private keep(buf: Uint8Array, pos: number, len: number): void {
    if (!this.mayKeep(buf, pos, len)) return
    const n = len - pos
    const p = new Uint8Array(Math.max(n * 2, 64))
    p.set(buf.subarray(pos, len))
    this.partial = p
    this.partialLen = n
  }

  /**
   * May buf[pos, len), the start of a line, wait for more bytes? Not when nats-server would
   * already refuse it: its byte-wise parser fails an unknown operation (or anything but
   * CONNECT while auth is pending) at the first bad byte, and an argument over the limit
   * while it is still arriving. Fails the parser then. nats-server skips the blanks before an
   * argument without buffering them; sprig would hold them, so it refuses a line whose name and
   * blanks alone are over the limit (else a read of blanks then one byte is held whole, twice).
   */
  private mayKeep(buf: Uint8Array, pos: number, len: number): boolean {
    if (this.connectFirst && (buf[pos]! | 0x20) !== 0x63) {
      this.failWith('auth_first', text(buf, pos, Math.min(len, pos + 16)))
      return false
    }
    const at = scanOp(buf, pos, len)
    if (at === OP_BAD) {
      this.failWith('unknown_op', text(buf, pos, Math.min(len, pos + 32)))
      return false
    }
    const end = buf[len - 1] === CR ? len - 1 : len
    if (at >= 0 ? end - at > this.maxControlLine || at - pos > this.maxControlLine : len - pos > this.maxControlLine) {
      this.failWith('control_line', 'control line too long')
      return false
    }
    return true
  }

  /**
   * For a complete line longer than max_control_line: fails it when its argument (the line
   * after the operation name and blanks) is over the limit, as nats-server measures it.
   * PING, PONG and +OK lines that long fail too: nats-server skips any amount of junk after
   * them, but sprig bounds what it buffers for a line.
   */
  private overLimit(buf: Uint8Array, pos: number, end: number): boolean {
    if (this.connectFirst && (buf[pos]! | 0x20) !== 0x63) return false // line() refuses it
    const at = scanOp(buf, pos, end)
    if (at >= 0 ? end - at <= this.maxControlLine : at !== OP_NO_ARGS) return false
    this.failWith('control_line', 'control line too long')
    return true
  }

  /** Handles one control line; returns where parsing continues, or -1 to stop for now. */
  private line(buf: Uint8Array, start: number, end: number, after: number): number {
    const c0 = buf[start]! | 0x20
    if (this.connectFirst && c0 !== 0x63) return this.failWith('auth_first', text(buf, start, Math.min(end, start + 16)))
    const c1 = end > start + 1 ? buf[start + 1]! | 0x20 : 0
    switch (c0) {
      case 0x70: // p
        if (c1 === 0x75 && this.word(buf, start, end, 'pub', true)) return this.pub(buf, start + 3, end, after, false)
        if (c1 === 0x69 && this.word(buf, start, end, 'ping', false)) {
          this.h.ping()
          return after
        }
        if (c1 === 0x6f && this.word(buf, start, end, 'pong', false)) {
          this.h.pong()
          return after
        }
        break
      case 0x68: // h
        if (this.word(buf, start, end, 'hpub', true)) {
          if (!this.headers) return this.failWith('no_headers', 'headers not supported')
          return this.pub(buf, start + 4, end, after, true)
        }
        break
      case 0x73: // s
        if (this.word(buf, start, end, 'sub', true)) return this.sub(buf, start + 3, end, after)
        break
      case 0x75: // u
        if (this.word(buf, start, end, 'unsub', true)) return this.unsub(buf, start + 5, end, after)
        break
      case 0x63: // c
        if (this.word(buf, start, end, 'connect', false)) {
          this.h.connect(text(buf, skipBlanks(buf, start + 7, end), end))
          return after
        }
        break
      case 0x69: // i: a client may echo INFO back; nats-server ignores it if it is JSON
        if (this.word(buf, start, end, 'info', false)) {
          if (!isJsonObject(text(buf, skipBlanks(buf, start + 4, end), end))) return this.failWith('bad_args', 'bad INFO')
          return after
        }
        break
      case 0x2b: // +OK
        if (c1 === 0x6f && end > start + 2 && (buf[start + 2]! | 0x20) === 0x6b) return after
        break
      case 0x2d: // -ERR from a client ends its connection
        if (this.word(buf, start, end, '-err', true)) {
          this.h.err(text(buf, skipBlanks(buf, start + 4, end), end))
          return after
        }
        break
    }
    this.failWith('unknown_op', text(buf, start, Math.min(end, start + 32)))
    return -1
  }

  /** Does the line start with `w` (case-insensitive), followed by a blank when `blank`? */
  private word(buf: Uint8Array, start: number, end: number, w: string, blank: boolean): boolean {
    const n = w.length
    if (end - start < n + (blank ? 1 : 0)) return false
    for (let i = 0; i < n; i++) {
      const c = buf[start + i]!
      const lc = c >= 0x41 && c <= 0x5a ? c | 0x20 : c
      if (lc !== w.charCodeAt(i)) return false
    }
    if (!blank) return true
    const b = buf[start + n]
    return b === SP || b === TAB
  }

  private pub(buf: Uint8Array, from: number, end: number, after: number, hpub: boolean): number {
    const pa = this.pa
    // Fast path: `PUB <the previous subject> <size>` with single spaces, as clients send a
    // stream of publishes; anything else (tabs, runs of blanks, a reply, HPUB) takes the
    // general path below, which gives the same result for this form.
    const ls = this.lastSubject
    const sl = ls.length
    const at = from + 2 + sl
    let size = hpub || sl === 0 || buf[from] !== SP || end - at < 1 || buf[at - 1] !== SP || !equalBytes(ls, buf, from + 1, at - 1) ? -1 : parseSize(buf, at, end)
    if (size >= 0) {
      if (size > this.maxPayload) return this.failWith('max_payload', `${size} > ${this.maxPayload}`)
      this.samePub(size)
    } else {
      const a = this.args
      const n = splitArgs(buf, from, end, a, false)
      if (n < 0) return this.failWith('bad_args', 'CR inside a publish argument')
      let hdr = -1
      const si = 0
      let ri = -1
      if (!hpub && (n === 2 || n === 3)) {
        if (n === 3) ri = 2
        size = parseSize(buf, a[(n - 1) * 2]!, a[(n - 1) * 2 + 1]!)
      } else if (hpub && (n === 3 || n === 4)) {
        if (n === 4) ri = 2
        hdr = parseSize(buf, a[(n - 2) * 2]!, a[(n - 2) * 2 + 1]!)
        size = parseSize(buf, a[(n - 1) * 2]!, a[(n - 1) * 2 + 1]!)
        if (hdr < 0 || hdr > size) return this.failWith('bad_args', 'bad header size')
      } else {
        return this.failWith('bad_args', 'bad publish arguments')
      }
      if (size < 0) return this.failWith('bad_args', 'bad or missing size')
      if (size > this.maxPayload) return this.failWith('max_payload', `${size} > ${this.maxPayload}`)
      this.subject(buf, a[si]!, a[si + 1]!)
      if (ri < 0) {
        pa.reply = ''
        pa.replyBytes = NO_BYTES
      } else {
        pa.replyBytes = buf.subarray(a[ri]!, a[ri + 1]!)
        pa.reply = text(pa.replyBytes)
      }
      pa.hdr = hdr
      pa.size = size
    }
    const need = size + 2
    if (buf.length - after >= need) {
      if (buf[after + size] !== CR || buf[after + size + 1] !== LF) return this.failWith('unknown_op', 'payload not followed by CRLF')
      this.h.pub(pa, buf, after)
      return after + need
    }
    // Split payload: keep copies, since the read buffer goes away after this call.
    // (subjectBytes is the parser's own copy already.)
    pa.replyBytes = pa.replyBytes.slice()
    this.body = new Uint8Array(need)
    this.budget?.charge(need)
    this.filled = 0
    this.fillBody(buf, after)
    return -1
  }

  /** Drops a payload being assembled (done, failed, or the connection is gone). */
  release(): void {
    if (this.body === null) return
    this.budget?.charge(-this.body.length)
    this.body = null
  }

  /** Copies the next part of a split payload from buf[pos..]; returns the offset after it, or -1 if still incomplete. */
  private fillBody(buf: Uint8Array, pos: number): number {
    const body = this.body!
    const take = Math.min(body.length - this.filled, buf.length - pos)
    body.set(pos === 0 && take === buf.length ? buf : buf.subarray(pos, pos + take), this.filled)
    this.filled += take
    const size = body.length - 2
    if (this.filled < body.length) {
      // nats-server refuses a wrong byte after the payload at once, not when the line is full
      if (this.filled > size && body[size] !== CR) this.failWith('unknown_op', 'payload not followed by CRLF')
      return -1
    }
    this.release()
    if (body[size] !== CR || body[size + 1] !== LF) {
      this.failWith('unknown_op', 'payload not followed by CRLF')
      return -1
    }
    this.h.pub(this.pa, body, 0)
    return pos + take
  }

  /**
   * Sets pa.subject/subjectBytes, reusing the previous string and bytes (a copy, never changed)
   * when the bytes repeat: a view into the read buffer per message (subarray) costs as much as
   * the rest of a small PUB's parsing together.
   */
  private subject(buf: Uint8Array, s: number, e: number): void {
    const pa = this.pa
    if (equalBytes(this.lastSubject, buf, s, e)) {
      pa.subject = this.lastSubjectText
      pa.subjectBytes = this.lastSubject
      return
    }
    pa.subject = text(buf, s, e)
    this.lastSubject = buf.slice(s, e)
    this.lastSubjectText = pa.subject
    pa.subjectBytes = this.lastSubject
  }

  private sub(buf: Uint8Array, from: number, end: number, after: number): number {
    const a = this.args
    const n = splitArgs(buf, from, end, a, true)
    if (n !== 2 && n !== 3) return this.failWith('bad_args', 'bad subscribe arguments')
    const subject = text(buf, a[0]!, a[1]!)
    const queue = n === 3 ? text(buf, a[2]!, a[3]!) : null
    const k = (n - 1) * 2
    this.h.sub(subject, queue, text(buf, a[k]!, a[k + 1]!))
    return after
  }

  private unsub(buf: Uint8Array, from: number, end: number, after: number): number {
    const a = this.args
    const n = splitArgs(buf, from, end, a, true)
    if (n !== 1 && n !== 2) return this.failWith('bad_args', 'bad unsubscribe arguments')
    const max = n === 2 ? parseSize(buf, a[2]!, a[3]!) : -1
    this.h.unsub(text(buf, a[0]!, a[1]!), max)
    return after
  }

  private failWith(why: Failure, detail: string): number {
    this.stopped = true
    this.partial = null
    this.partialLen = 0
    this.release()
    this.h.fail(why, detail)
    return -1
  }
}

/** scanOp results other than the offset of an argument. */
const OP_BAD = -1 // no client operation starts with these bytes
const OP_PENDING = -2 // could still become an operation: more bytes needed
const OP_NO_ARGS = -3 // PING, PONG, +OK: no argument

/** Operation names: `blank` ones need a blank before their argument, `bare` ones take none. */
const OPS: readonly { w: string; blank: boolean; bare: boolean }[] = [
  { w: 'pub', blank: true, bare: false },
  { w: 'hpub', blank: true, bare: false },
  { w: 'sub', blank: true, bare: false },
  { w: 'unsub', blank: true, bare: false },
  { w: '-err', blank: true, bare: false },
  { w: 'connect', blank: false, bare: false },
  { w: 'info', blank: false, bare: false },
  { w: 'ping', blank: false, bare: true },
  { w: 'pong', blank: false, bare: true },
  { w: '+ok', blank: false, bare: true },
]

/**
 * Where the argument of the operation starting at buf[s] begins (after its name and blanks),
 * or OP_BAD / OP_PENDING / OP_NO_ARGS. Only for slow paths: split or overlong lines.
 */
function scanOp(buf: Uint8Array, s: number, e: number): number {
  let pending = false
  for (const op of OPS) {
    const w = op.w
    const n = Math.min(w.length, e - s)
    let i = 0
    while (i < n) {
      const c = buf[s + i]!
      if ((c >= 0x41 && c <= 0x5a ? c | 0x20 : c) !== w.charCodeAt(i)) break
      i++
    }
    if (i < n) continue
    if (n < w.length) {
      pending = true
      continue
    }
    if (op.bare) return OP_NO_ARGS
    let j = s + n
    if (op.blank) {
      if (j === e) return OP_PENDING
      if (buf[j] !== SP && buf[j] !== TAB) continue
    }
    j = skipBlanks(buf, j, e)
    return j === e ? OP_PENDING : j
  }
  return pending ? OP_PENDING : OP_BAD
}

/** JSON that Go can decode into a struct: an object, or null. */
function isJsonObject(s: string): boolean {
  try {
    const v: unknown = JSON.parse(s)
    return v === null || (typeof v === 'object' && !Array.isArray(v))
  } catch {
    return false
  }
}

function skipBlanks(buf: Uint8Array, i: number, end: number): number {
  while (i < end && (buf[i] === SP || buf[i] === TAB)) i++
  return i
}

/**
 * Splits buf[from, end) on runs of blanks into out (start,end pairs). Returns the count, 6 if
 * more than 5. A bare CR inside the line: with `crSplits` it is a blank (nats-server's
 * splitArg, used for SUB and UNSUB: `SUB s 7\r8` is queue 7, sid 8); without, the line is
 * refused (-1). nats-server's PUB/HPUB keep it inside the argument and relay it in other
 * clients' MSG lines; sprig closes such a publisher instead (no CR may reach another
 * client's protocol stream).
 */
export function splitArgs(buf: Uint8Array, from: number, end: number, out: Int32Array, crSplits: boolean): number {
  let n = 0
  let i = from
  while (i < end) {
    while (i < end && isArgBlank(buf[i]!, crSplits)) i++
    if (i >= end) break
    if (n === 6) return 6
    const s = i
    for (; i < end; i++) {
      const c = buf[i]!
      if (c === SP || c === TAB) break
      if (c === CR) {
        if (crSplits) break
        return -1
      }
    }
    out[n * 2] = s
    out[n * 2 + 1] = i
    n++
  }
  return n
}

function isArgBlank(c: number, crSplits: boolean): boolean {
  return c === SP || c === TAB || (crSplits && c === CR)
}

/** Decimal size as nats-server reads it: digits only, at most 9 of them; -1 otherwise. */
export function parseSize(buf: Uint8Array, s: number, e: number): number {
  if (e <= s || e - s > MAX_SIZE_DIGITS) return -1
  let v = 0
  for (let i = s; i < e; i++) {
    const d = buf[i]! - 48
    if (d < 0 || d > 9) return -1
    v = v * 10 + d
  }
  return v
}
