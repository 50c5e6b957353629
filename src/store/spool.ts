// A remote's store-and-forward buffer on disk (the Spool of src/leaf/buffer.ts): append-only
// segment files named by their first sequence number, written sequentially; a small `acked`
// file holds the last sequence the hub confirmed; a segment is deleted whole once everything in
// it is confirmed (or dropped by drop_oldest). Nothing is ever rewritten.
//
// Start-up reads only the last segment in full (a torn tail is cut off there); sealed segments
// have contiguous sequence numbers (the next one's name bounds them) and are checked record by
// record as replay reads them. Damage is logged with file and offset, counted, and skipped.

import type { Stored, Spool } from '../leaf/buffer.ts'
import type { Msg } from '../msg.ts'
import { copyOf } from '../bytes.ts'
import { crc32, decodeAt, encodeMsg, encodeMsgInto, msgRecordSize, SEG_HEADER, segmentHeader } from './record.ts'
import { segmentBytes, StoreError, type Store, type Tenant } from './store.ts'

export interface SpoolOptions {
  /** Bound on this spool's segment files (bytes). */
  max_bytes: number
  drop_newest: boolean
}

interface Seg {
  first: number
  path: string
  fd: number
  size: number
}

const SEG_RE = /^[0-9a-f]{16}\.seg$/
/** Largest segment file; smaller for a small bound, so drop_oldest frees space in steps. */
const SEG_MAX = 8 * 1024 * 1024
const SEG_MIN = 64 * 1024
/** Records read ahead of the sender (bytes): a bounded window, whatever the backlog on disk. */
const AHEAD_MAX = 1024 * 1024
const CHUNK = 256 * 1024
/** Most live messages tracked as sent ahead of a paced backlog; past it they queue behind. */
const SKIP_MAX = 100_000
/** Write batch: records appended in one turn go to the file in one write of at most this. */
const PEND_MAX = 64 * 1024

function errCode(e: unknown): string {
  return (e as { code?: string }).code ?? (e as Error).message
}

export class DiskSpool implements Spool, Tenant {
  readonly durable = true
  dropped = 0
  resent = 0
  /** Made room by dropping the oldest: the full episode goes on until confirmations free space. */
  private squeezed = false
  private segs: Seg[] = []
  private nextSeq = 1
  private acked = 0
  private sentUpTo = 0
  private ackFd: number
  private readonly ackBuf = new Uint8Array(16)
  private readonly segMax: number
  // The reader: the next record on disk not yet in `ahead`.
  private rseg: Seg | null = null
  private roff = SEG_HEADER
  private ahead: Stored[] = []
  private aheadHead = 0
  private aheadBytes = 0
  private chunk = new Uint8Array(CHUNK)
  /** Seqs sent ahead of the backlog (sentAhead), skipped when the reader reaches them. */
  private readonly skip = new Set<number>()
  // Records appended this turn and not yet written (flush): one write instead of one per message.
  private readonly pend = new Uint8Array(PEND_MAX)
  private pendLen = 0
  private pendSeg: Seg | null = null
  /** File position of the first unwritten byte of pendSeg (its size on disk). */
  private pendPos = 0
  /** Sequence number of the first record in the batch. */
  private pendFirst = 0

  constructor(
    private readonly store: Store,
    readonly dir: string,
    private readonly opts: SpoolOptions,
  ) {
    const f = store.files
    this.segMax = Math.max(SEG_MIN, Math.min(SEG_MAX, Math.floor(opts.max_bytes / 8)))
    try {
      f.mkdir(dir)
      this.ackFd = f.open(`${dir}/acked`)
    } catch (e) {
      throw new StoreError(`store directory ${dir}: cannot write to it: ${(e as { code?: string }).code ?? (e as Error).message}`)
    }
    this.recover()
    store.tenants.push(this)
  }

  // --- start-up

  private recover(): void {
    const f = this.store.files
    const t0 = this.store.host.now()
    for (const { id, path, fd, size } of this.store.openSegments(this.dir, SEG_RE)) {
      // Empty or unreadable headers were removed by openSegments (a power cut right after creating one).
      this.segs.push({ first: id, path, fd, size })
    }
    // acked: f64 seq + u32 CRC. A torn or missing one means "nothing confirmed": resend, never lose.
    const ab = this.ackBuf
    const n = f.read(this.ackFd, ab, 0)
    const v = new DataView(ab.buffer)
    const first = this.segs[0]?.first ?? 1
    this.acked = n >= 12 && crc32(ab, 0, 8) === v.getUint32(8, true) ? v.getFloat64(0, true) : 0
    if (this.acked < first - 1) this.acked = first - 1
    // The last segment in full: where the next record goes, and a torn tail cut off.
    const last = this.segs[this.segs.length - 1]
    if (last !== undefined) {
      let seq = last.first - 1
      this.scan(last, (s) => (seq = s))
      this.nextSeq = Math.max(seq + 1, last.first)
    } else this.nextSeq = this.acked + 1
    // Fully confirmed segments left by a crash between the confirmation and the delete.
    this.release()
    this.sentUpTo = this.acked
    this.rewindReader()
    const r = this.store.recovery
    r.segments += this.segs.length
    r.messages += this.length
    r.ms += this.store.host.now() - t0
    if (this.length > 0) this.store.log.info(`store: ${this.dir}: ${this.length} messages waiting for the hub (${this.segs.length} segments)`)
  }

  /** Reads a whole segment, checking every record; truncates a torn tail. */
  private scan(seg: Seg, each: (seq: number) => void): void {
    const f = this.store.files
    let off = SEG_HEADER
    let buf = this.chunk
    for (;;) {
      const n = f.read(seg.fd, buf, off)
      if (n === 0) break
      let at = 0
      for (;;) {
        const r = decodeAt(buf, at, n)
        if (r === 'more') break
        if (r === 'torn') {
          at = -1
          break
        }
        if ('crc' in r) {
          this.store.damaged(seg.path, off + at, 'record fails its checksum; skipped')
          this.store.recovery.corrupt_records++
          at += r.crc
          continue
        }
        each(r.rec.seq)
        at += r.len
      }
      if (at < 0) break
      if (at === 0) {
        if (off + n >= seg.size) break // a short tail: torn
        buf = new Uint8Array(buf.length * 2) // one record larger than the buffer
        continue
      }
      off += at
    }
    seg.size = this.store.cutTail(seg.path, seg.fd, off, seg.size)
  }

  // --- Spool

  get length(): number {
    return Math.max(0, this.nextSeq - 1 - this.acked)
  }

  get unsent(): number {
    return Math.max(0, this.nextSeq - 1 - this.sentUpTo)
  }

  get bytes(): number {
    return segmentBytes(this.segs)
  }

  get segments(): number {
    return this.segs.length
  }

  push(m: Msg): boolean {
    const len = msgRecordSize(m)
    const st = this.store
    const over = (): boolean => this.bytes + len > this.opts.max_bytes || st.bytes + len > st.opts.max_bytes
    if (over()) {
      if (!this.opts.drop_newest && over() && this.segs.length > 1) {
        st.noSpace(`${this.dir} is at its bound (buffer_max_bytes ${this.opts.max_bytes}, store max_bytes ${st.opts.max_bytes}): dropping the oldest`)
        this.squeezed = true
        while (over() && this.segs.length > 1) this.dropOldest()
      }
      if (over()) {
        this.dropped++
        st.noSpace(`${this.dir} is at its bound (buffer_max_bytes ${this.opts.max_bytes}, store max_bytes ${st.opts.max_bytes})`)
        return false
      }
    }
    let seg = this.segs[this.segs.length - 1]
    if (seg === undefined || (seg.size + len > this.segMax && seg.size > SEG_HEADER)) {
      if (!this.flush()) return this.push(m) // the batch before it was lost; this one goes on its own
      for (;;) {
        try {
          seg = this.newSegment()
          break
        } catch (e) {
          if (seg !== undefined && this.makeRoom(e, seg)) continue
          return this.refuse(e, seg)
        }
      }
    }
    if (this.pendLen + len > PEND_MAX) {
      if (!this.flush()) return this.push(m)
    }
    if (len > PEND_MAX) {
      // Larger than the write batch: written on its own, at once.
      const rec = encodeMsg(m, this.nextSeq)
      for (;;) {
        try {
          st.files.write(seg.fd, rec, seg.size)
          break
        } catch (e) {
          if (this.makeRoom(e, seg)) continue
          return this.refuse(e, seg)
        }
      }
      if (!this.squeezed) st.hasSpace()
      st.wrote(seg.fd)
    } else {
      // Batched: one write per I/O turn for every record of it (Store.flush, or before a read).
      if (this.pendLen === 0) {
        this.pendSeg = seg
        this.pendPos = seg.size
        this.pendFirst = this.nextSeq
        st.pending(this)
      }
      encodeMsgInto(m, this.nextSeq, this.pend, this.pendLen)
      this.pendLen += len
    }
    const caughtUp = this.rseg === seg && this.roff === seg.size && this.aheadBytes < AHEAD_MAX
    seg.size += len
    const seq = this.nextSeq++
    if (caughtUp) {
      // The sender reads from memory what it would otherwise read straight back.
      this.roff = seg.size
      this.keep({ subject: m.subject, reply: m.reply, hdr: m.hdr ? copyOf(m.hdr) : null, payload: copyOf(m.payload), size: len, seq })
    }
    return true
  }

  /**
   * Writes the records batched since the last flush (Store.flush at the end of the turn, and
   * before anything reads the file or starts a new segment). A full disk under drop_oldest
   * deletes the oldest segment and tries again; a batch that still cannot be written is lost
   * as a whole (the newest messages: counted as dropped, and the store tells the acknowledgements
   * waiting for it). False then.
   */
  flush(): boolean {
    const n = this.pendLen
    const seg = this.pendSeg
    if (n === 0 || seg === null) return true
    const st = this.store
    for (;;) {
      try {
        st.files.write(seg.fd, this.pend.subarray(0, n), this.pendPos)
        break
      } catch (e) {
        if (this.makeRoom(e, seg, this.pendPos)) continue
        this.refuse(e, seg)
        this.loseBatch()
        return false
      }
    }
    this.pendLen = 0
    this.pendPos += n
    if (!this.squeezed) st.hasSpace()
    st.wrote(seg.fd)
    return true
  }

  /** A write failed at `pos` of `seg`: no half record left behind; true when drop_oldest made room to try again. */
  private makeRoom(e: unknown, seg: Seg, pos = seg.size): boolean {
    try {
      this.store.files.truncate(seg.fd, pos)
    } catch {
      // the next start-up cuts it off
    }
    if (errCode(e) !== 'ENOSPC' || this.opts.drop_newest || this.segs.length <= 1) return false
    // A full disk: drop_oldest makes room by deleting the oldest segment, then tries again.
    this.store.noSpace('the disk is full (ENOSPC): dropping the oldest')
    this.squeezed = true
    this.dropOldest()
    return true
  }

  /** A write that cannot be made: counted as dropped, logged once per episode. */
  private refuse(e: unknown, seg: Seg | undefined): false {
    const code = errCode(e)
    this.dropped++
    this.store.noSpace(code === 'ENOSPC' ? 'the disk is full (ENOSPC)' : `cannot write ${seg?.path ?? this.dir}: ${code}`)
    return false
  }

  /** The batch could not be written: its messages (the newest) are forgotten, counted as dropped. */
  private loseBatch(): void {
    const seg = this.pendSeg!
    const first = this.pendFirst
    const lost = this.nextSeq - first
    this.dropped += lost - 1 // refuse() counted one
    this.nextSeq = first
    seg.size = this.pendPos
    this.pendLen = 0
    if (this.rseg === seg && this.roff > seg.size) this.roff = seg.size
    while (this.ahead.length > this.aheadHead && this.ahead[this.ahead.length - 1]!.seq >= first) this.aheadBytes -= this.ahead.pop()!.size
    for (const s of this.skip) if (s >= first) this.skip.delete(s)
    // Sent to the hub from memory already: they got there or not, as a dropped message may.
    if (this.sentUpTo >= first) this.sentUpTo = first - 1
    if (this.acked >= first) this.acked = first - 1
  }

  get last(): number {
    return this.nextSeq - 1
  }

  sentAhead(seq: number): boolean {
    if (this.skip.size >= SKIP_MAX) return false
    this.skip.add(seq)
    return true
  }

  peek(): Stored | undefined {
    for (;;) {
      if (this.aheadHead >= this.ahead.length) this.fill()
      const s = this.ahead[this.aheadHead]
      if (s === undefined || !this.skip.delete(s.seq)) return s
      this.advance() // sent ahead of the backlog already
    }
  }

  advance(): void {
    const s = this.ahead[this.aheadHead]
    if (s === undefined) return
    this.ahead[this.aheadHead++] = undefined as unknown as Stored
    this.aheadBytes -= s.size
    if (this.aheadHead === this.ahead.length) {
      this.ahead = []
      this.aheadHead = 0
    }
    this.sentUpTo = s.seq
  }

  mark(): number {
    return this.sentUpTo > this.acked ? this.sentUpTo : -1
  }

  confirm(seq: number): void {
    if (seq <= this.acked) return
    this.acked = Math.min(seq, this.nextSeq - 1)
    this.writeAcked()
    this.release()
  }

  rewind(): number {
    const n = Math.max(0, this.sentUpTo - this.acked)
    this.resent += n
    this.sentUpTo = this.acked
    this.skip.clear() // sent ahead but unconfirmed: they go again, in order
    if (n > 0) this.rewindReader()
    return n
  }

  saveInterest(keys: string[]): void {
    try {
      this.store.files.writeText(`${this.dir}/interest.json`, JSON.stringify(keys))
    } catch (e) {
      this.store.log.warn(`store: cannot save the hub's interest in ${this.dir}: ${(e as { code?: string }).code ?? (e as Error).message}`)
    }
  }

  loadInterest(): string[] | null {
    try {
      const v = JSON.parse(this.store.files.readText(`${this.dir}/interest.json`) ?? 'null') as unknown
      return Array.isArray(v) ? v.filter((k): k is string => typeof k === 'string') : null
    } catch {
      return null // damaged: buffer by buffer_subjects only until the hub is back
    }
  }

  close(): void {
    this.flush()
    const f = this.store.files
    for (const s of this.segs) {
      this.store.forget(s.fd)
      f.close(s.fd)
    }
    this.segs = []
    f.close(this.ackFd)
  }

  // --- segments

  private newSegment(): Seg {
    const f = this.store.files
    const path = `${this.dir}/${this.nextSeq.toString(16).padStart(16, '0')}.seg`
    const fd = f.open(path)
    f.truncate(fd, 0)
    try {
      f.write(fd, segmentHeader(), 0)
    } catch (e) {
      f.close(fd)
      f.remove(path)
      throw e
    }
    const seg = { first: this.nextSeq, path, fd, size: SEG_HEADER }
    this.segs.push(seg)
    if (this.rseg === null) {
      this.rseg = seg
      this.roff = SEG_HEADER
    }
    return seg
  }

  /** Deletes leading segments whose every message is confirmed (never the one being written). */
  private release(): void {
    if (this.segs.length > 1 && this.segs[1]!.first - 1 <= this.acked) this.squeezed = false
    while (this.segs.length > 1 && this.segs[1]!.first - 1 <= this.acked) this.removeFirst()
    const only = this.segs[0]
    // The last segment, fully confirmed and large: start afresh rather than grow it forever.
    if (only !== undefined && this.segs.length === 1 && this.acked >= this.nextSeq - 1 && only.size >= this.segMax) this.removeFirst()
  }

  /** drop_oldest: the oldest segment goes, counted as dropped for what was unconfirmed in it. */
  private dropOldest(): void {
    const end = this.segs[1]!.first - 1
    this.dropped += Math.max(0, end - this.acked)
    this.acked = Math.max(this.acked, end)
    if (this.sentUpTo < this.acked) this.sentUpTo = this.acked
    this.writeAcked()
    this.removeFirst()
  }

  private removeFirst(): void {
    const s = this.segs.shift()!
    if (s === this.pendSeg) {
      this.pendLen = 0 // the segment goes whole: nothing left to write into it
      this.pendSeg = null
    }
    const f = this.store.files
    this.store.forget(s.fd)
    f.close(s.fd)
    f.remove(s.path)
    if (this.rseg === s) this.rewindReader()
    else {
      // Drop read-ahead that the removal made stale.
      while (this.aheadHead < this.ahead.length && this.ahead[this.aheadHead]!.seq <= this.sentUpTo) this.advance()
    }
  }

  private writeAcked(): void {
    const v = new DataView(this.ackBuf.buffer)
    v.setFloat64(0, this.acked, true)
    v.setUint32(8, crc32(this.ackBuf, 0, 8), true)
    try {
      // Not synced on its own: lost, it only makes the next start resend (never lose) messages.
      this.store.files.write(this.ackFd, this.ackBuf, 0)
    } catch {
      // ENOSPC on 16 bytes in place: the same, resends after a restart
    }
  }

  // --- reading

  /** Positions the reader at the first message after sentUpTo. */
  private rewindReader(): void {
    this.ahead = []
    this.aheadHead = 0
    this.aheadBytes = 0
    const want = this.sentUpTo + 1
    let seg: Seg | null = this.segs[0] ?? null
    for (const s of this.segs) if (s.first <= want) seg = s
    this.rseg = seg
    this.roff = SEG_HEADER
  }

  private keep(s: Stored): void {
    this.ahead.push(s)
    this.aheadBytes += s.size
  }

  /** Reads the next records from disk into `ahead` (bounded), skipping damage. */
  private fill(): void {
    const f = this.store.files
    this.flush() // what is read must be in the file
    while (this.rseg !== null && this.aheadHead >= this.ahead.length) {
      const seg = this.rseg
      if (this.roff >= seg.size) {
        const i = this.segs.indexOf(seg)
        const next = i >= 0 ? this.segs[i + 1] : this.segs[0]
        if (next === undefined) return // caught up with the writer
        this.rseg = next
        this.roff = SEG_HEADER
        continue
      }
      let buf = this.chunk
      const want = Math.min(buf.length, seg.size - this.roff)
      let n = f.read(seg.fd, buf.subarray(0, want), this.roff)
      if (n === 0) {
        this.roff = seg.size
        continue
      }
      let at = 0
      while (this.aheadBytes < AHEAD_MAX) {
        const r = decodeAt(buf, at, n)
        if (r === 'more') {
          if (at === 0 && this.roff + n < seg.size) {
            // One record larger than the chunk: read it whole.
            const len = new DataView(buf.buffer).getUint32(0, true) + 8
            buf = new Uint8Array(len)
            n = f.read(seg.fd, buf, this.roff)
            continue
          }
          if (at === 0) {
            this.store.damaged(seg.path, this.roff, 'torn record; the rest of this segment is skipped')
            at = seg.size - this.roff
          }
          break
        }
        if (r === 'torn') {
          this.store.damaged(seg.path, this.roff + at, 'damaged record length; the rest of this segment is skipped')
          at = seg.size - this.roff
          break
        }
        if ('crc' in r) {
          this.store.damaged(seg.path, this.roff + at, 'record fails its checksum; skipped')
          at += r.crc
          continue
        }
        at += r.len
        const d = r.rec
        if (d.seq > this.sentUpTo) this.keep({ subject: d.subject, reply: d.reply, hdr: d.hdr, payload: d.payload, size: r.len, seq: d.seq })
      }
      this.roff += at
    }
  }
}
