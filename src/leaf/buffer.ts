// Store-and-forward: messages that wait for an uplink, in publish order, bounded by a count and
// by bytes. When a new message does not fit, the policy picks the victim: the oldest waiting
// message (drop_oldest) or the new one (drop_newest); either way the drop is counted.
// Its bytes count against the memory budget; over max_memory the buffer does not grow: the
// same policy picks the victim as if it were full.
//
// At least once: a message sent to the hub stays here, unconfirmed, until the hub confirms it
// (the PONG to a PING sent after it, src/leaf/link.ts confirm()). A lost link rewinds: the
// unconfirmed messages are sent again. That includes messages that went straight to a live
// link: kept as long as they fit, but never at the cost of an unsent one, as the frames the
// link wrote for them, one record per run of frames (pushFrames), split into single frames
// when a lost link makes them unsent again. The on-disk spool (src/store/spool.ts) offers the
// same Spool interface.
//
// Two lanes, so new messages can go ahead of a backlog and each stays in order: `old` is the
// backlog (what was held when the link came up), `cur` everything pushed since. Every message
// in `old` is older than every message in `cur`.

import type { Budget } from '../budget.ts'
import { newMsg, type Msg } from '../msg.ts'
import { frameEnds, frameSubject } from './frames.ts'

export interface Stored {
  /** Local names; mapped to the hub's when sent, against the interest known then. */
  subject: string
  reply: string
  hdr: Uint8Array | null
  payload: Uint8Array
  size: number
  /** Position in the spool: increases by one per message kept (a run: its first frame's). */
  seq: number
  /**
   * In-memory buffer only: set when `payload` is LMSG/HMSG frames as written to the hub (and
   * `subject`, for a single frame, the hub's name for it): how many. Sent again as they are.
   */
  frames?: number
}

/** A remote's buffer: held messages, the next one to send, and those sent but unconfirmed. */
export interface Spool {
  /** Messages held: unsent plus sent-but-unconfirmed. */
  readonly length: number
  /** Messages not sent yet. */
  readonly unsent: number
  /** Bytes held (on disk for the store's spool). */
  readonly bytes: number
  /** Messages dropped by the bounds or the policy. */
  readonly dropped: number
  /** Messages sent again after a lost link (the hub may have had them: possible duplicates). */
  readonly resent: number
  /** True when kept on disk (every message for the hub goes through it). */
  readonly durable: boolean
  /** Keeps a copy of `m`. False when it (or, under drop_newest, it alone) was dropped. */
  push(m: Msg): boolean
  /** The next message to send, without taking it. */
  peek(): Stored | undefined
  /** The peeked message was sent (or skipped): it waits for confirmation now. */
  advance(): void
  /** The seq of the last message sent: what a confirmation PING covers. -1: none. */
  mark(): number
  /** The hub confirmed everything up to `seq`: forget it. */
  confirm(seq: number): void
  /** The link was lost: unconfirmed messages become unsent again. Returns how many. */
  rewind(): number
  /** The seq of the newest message held (-1: none yet). */
  readonly last: number
  /**
   * Durable spools only: `seq` (just pushed) went to the hub ahead of older unsent messages
   * (live traffic interleaved with a paced backlog); the reader skips it when it gets there.
   * False when no more can be tracked: queue it behind instead.
   */
  sentAhead?(seq: number): boolean
  /**
   * In-memory buffer only: keeps `count` messages that just went to the hub, as the LMSG/HMSG
   * frames the link wrote for them (one record, copied), sent and unconfirmed (the caller sends
   * straight only while nothing newer than the backlog waits: liveUnsent 0). When the buffer is
   * full they displace only older sent messages (drop_oldest), else what does not fit is not
   * kept (counted in `unkept`).
   */
  pushFrames?(frames: Uint8Array, count: number): void
  /** In-memory buffer only: unsent messages pushed since the backlog began (the live lane). */
  readonly liveUnsent?: number
  /** In-memory buffer only: the live lane's next message, and its send. */
  peekLive?(): Stored | undefined
  advanceLive?(): void
  /** In-memory buffer only: the link is up again: everything held becomes the backlog. */
  startReplay?(): void
  /** In-memory buffer only: housekeeping, gives back storage an emptied buffer grew. */
  trim?(): void
  /** Sent messages not kept for a resend because the buffer was full (at most once for them). */
  readonly unkept?: number
  /** Durable spools keep the hub's interest keys (what to buffer) across a restart. */
  saveInterest?(keys: string[]): void
  loadInterest?(): string[] | null
}

/** Per record in a Lane: byte offset, header length (-1: none, FRAMES: frames), payload length, seq, send, size, messages, block id. */
const META = 8
/** The header-length mark of a record holding frames as written to the hub (payload: the frames). */
const FRAMES = -2
/** A lane's byte blocks grow from this size, doubling, up to BLOCK; a larger record gets one of its own size. */
const FIRST_BLOCK = 4096
const BLOCK = 256 * 1024

/**
 * Emptied BLOCK-sized blocks a buffer keeps for its next ones, shared by its two lanes. Under
 * load a link has megabytes unconfirmed and one confirmation frees many blocks at once; with
 * one spare kept, nearly every new block came fresh from the allocator (zeroed, a page fault
 * per 4 KiB): ~18% more gateway CPU per message from one device (docs/benchmarks.md,
 * 2026-12-04 16:10–17:05). A lane makes a new block only when there is no spare, so the
 * blocks and the spares never exceed the most held at once plus two blocks per lane. trim()
 * lets go of as many as the last interval did not dip into (all of them once the flow stops),
 * and of all while the memory budget is full.
 */
class Spares {
  private readonly list: Uint8Array[] = []
  /** The fewest spares since the last trim(): that many were not needed. */
  private low = 0

  take(): Uint8Array | undefined {
    const b = this.list.pop()
    if (this.list.length < this.low) this.low = this.list.length
    return b
  }

  keep(b: Uint8Array): void {
    if (b.length === BLOCK) this.list.push(b)
  }

  trim(all: boolean): void {
    this.list.length -= all ? this.list.length : this.low
    this.low = this.list.length
  }

  get bytes(): number {
    return this.list.length * BLOCK
  }
}

/**
 * One FIFO of held messages, [head, next) sent and unconfirmed, [next, tail) unsent, as flat
 * arrays plus byte blocks for headers and payloads: keeping a message costs one copy of its
 * bytes. Blocks (at most BLOCK each, oldest first) are never copied into bigger ones: a lane
 * holding N bytes uses about N plus two blocks, not up to twice N plus the copy being made,
 * and a block its records all left goes to the buffer's spares for the next (a steady flow
 * through a live link cycles through the same few blocks and allocates nothing). A record is
 * one message, or (sent ones only) a run of messages as the LMSG/HMSG frames the link wrote
 * for them: what went straight to the hub is kept as one record per run (src/leaf/link.ts
 * keepLast), not one per message. A lost link splits runs back into one frame per record
 * (split()), so unsent records are always single messages.
 */
class Lane {
  /** `spares`: the buffer's emptied blocks, for the next ones needed. */
  constructor(private readonly spares: Spares) {}

  head = 0
  next = 0
  tail = 0
  /** Messages held ([head, tail), a run counting each of its frames). */
  msgs = 0
  /** Records in [head, tail) of frames not split yet (a run, or one frame without its subject). */
  runs = 0
  private mask = -1
  private subj: string[] = []
  private reply: string[] = []
  private meta = new Float64Array(0)
  /** Byte blocks, oldest first, and how many records each holds; blocks[0] has id firstBlock. */
  private blocks: Uint8Array[] = []
  private inBlock: number[] = []
  private firstBlock = 0
  /** Bytes used in the last block. */
  private fill = 0
  /** Pushed to since the last trim(). */
  private used = false
  private lastSubj = ''

  get length(): number {
    return this.msgs
  }

  /** Bytes of storage held for headers and payloads (its blocks; the spares are the buffer's). */
  get storage(): number {
    let n = 0
    for (const b of this.blocks) n += b.length
    return n
  }

  get unsent(): number {
    return this.tail - this.next
  }

  /** Appends a copy of `m`; `send` > 0: it went out already (with that send). */
  push(m: Msg, size: number, seq: number, send: number): void {
    this.add(m.subject, m.reply, m.hdr, m.payload, m.hdr === null ? -1 : m.hdr.length, size, seq, send, 1)
  }

  /**
   * Appends a copy of `frames` (`count` whole LMSG/HMSG frames, seqs from `seq` on); `subject`:
   * the hub subject of a single frame, '' for a run (read from the frames when split).
   */
  pushFrames(frames: Uint8Array, count: number, size: number, seq: number, send: number, subject: string): void {
    this.add(subject, '', null, frames, FRAMES, size, seq, send, count)
  }

  private add(subject: string, reply: string, hdr: Uint8Array | null, payload: Uint8Array, hl: number, size: number, seq: number, send: number, count: number): void {
    const h = hl < 0 ? 0 : hl
    const n = h + payload.length
    this.used = true
    if (this.tail - this.head > this.mask) this.growRecords()
    const o = this.place(n)
    const block = this.blocks[this.blocks.length - 1]!
    if (hdr !== null) block.set(hdr, o)
    block.set(payload, o + h)
    const r = this.tail & this.mask
    // The same subject as the last one (the usual case) keeps that older string: storing each
    // message's fresh copy into this long-lived array would cost the GC per message.
    if (subject !== this.lastSubj) this.lastSubj = subject
    this.subj[r] = this.lastSubj
    this.reply[r] = reply === '' ? '' : reply
    const i = r * META
    const meta = this.meta
    meta[i] = o
    meta[i + 1] = hl
    meta[i + 2] = payload.length
    meta[i + 3] = seq
    meta[i + 4] = send
    meta[i + 5] = size
    meta[i + 6] = count
    meta[i + 7] = this.firstBlock + this.blocks.length - 1
    this.tail++
    this.msgs += count
    if (hl === FRAMES && subject === '') this.runs++
    if (send > 0) this.next = this.tail
  }

  /** Record `n` as a message; its bytes are views, valid until the record is dropped. */
  at(n: number): Stored | undefined {
    if (n < this.head || n >= this.tail) return undefined
    const r = n & this.mask
    const i = r * META
    const meta = this.meta
    const o = meta[i]!
    const hl = meta[i + 1]!
    const h = hl < 0 ? 0 : hl
    const block = this.blocks[meta[i + 7]! - this.firstBlock]!
    const s: Stored = {
      subject: this.subj[r]!,
      reply: this.reply[r]!,
      hdr: hl < 0 ? null : block.subarray(o, o + h),
      payload: block.subarray(o + h, o + h + meta[i + 2]!),
      size: meta[i + 5]!,
      seq: meta[i + 3]!,
    }
    if (hl === FRAMES) s.frames = meta[i + 6]!
    return s
  }

  /** Marks the next unsent message sent with `send`. */
  advance(send: number): void {
    if (this.next >= this.tail) return
    this.meta[(this.next & this.mask) * META + 4] = send
    this.next++
  }

  /** The send of sent record `n`. */
  sendOf(n: number): number {
    return this.meta[(n & this.mask) * META + 4]!
  }

  /** Messages in record `n`. */
  countOf(n: number): number {
    return this.meta[(n & this.mask) * META + 6]!
  }

  /** Messages sent and unconfirmed. */
  get sentMsgs(): number {
    return this.msgs - (this.tail - this.next)
  }

  /** Forgets the oldest record (sent or not); returns its size. */
  drop(): number {
    if (this.head >= this.tail) return 0
    const r = this.head & this.mask
    const size = this.meta[r * META + 5]!
    this.msgs -= this.meta[r * META + 6]!
    if (this.meta[r * META + 1] === FRAMES && this.subj[r] === '') this.runs--
    this.subj[r] = ''
    this.reply[r] = ''
    this.head++
    if (this.next < this.head) this.next = this.head
    const k = this.meta[r * META + 7]! - this.firstBlock
    if (--this.inBlock[k]! === 0 && k === 0) this.freeLeading()
    return size
  }

  /** Lets go of the oldest blocks no record uses; the last one stays, empty, for the next push. */
  private freeLeading(): void {
    const blocks = this.blocks
    let k = 0
    while (k < blocks.length - 1 && this.inBlock[k] === 0) {
      this.spares.keep(blocks[k]!)
      k++
    }
    if (k > 0) {
      blocks.splice(0, k)
      this.inBlock.splice(0, k)
      this.firstBlock += k
    }
    if (this.inBlock[0] === 0) this.fill = 0 // the lane is empty: its last block starts over
  }

  /** Empty and unused since the last call: gives back storage grown for a burst. */
  trim(): void {
    const used = this.used
    this.used = false
    if (used || this.head !== this.tail) return
    // Idle and empty: no byte storage kept (a flow that starts again begins with a small block).
    this.firstBlock += this.blocks.length
    this.blocks = []
    this.inBlock = []
    this.fill = 0
    if (this.mask >= 65536) {
      this.mask = -1
      this.meta = new Float64Array(0)
      this.subj = []
      this.reply = []
    }
  }

  /** Appends every record of `from` as unsent, runs split into single frames, and empties it. */
  takeAll(from: Lane): void {
    for (let n = from.head; n < from.tail; n++) this.copyUnsent(from.at(n)!)
    while (from.head < from.tail) from.drop()
  }

  /** Appends a copy of `s` as unsent: a message, a frame, or a run as one record per frame. */
  private copyUnsent(s: Stored): void {
    if (s.frames === undefined) {
      const m = newMsg()
      m.subject = s.subject
      m.reply = s.reply
      m.hdr = s.hdr
      m.payload = s.payload
      this.push(m, s.size, s.seq, 0)
      return
    }
    if (s.frames === 1 && s.subject !== '') {
      this.pushFrames(s.payload, 1, s.size, s.seq, 0, s.subject)
      return
    }
    const b = s.payload
    let p = 0
    let seq = s.seq
    for (const e of frameEnds(b)) {
      this.pushFrames(b.subarray(p, e), 1, e - p, seq++, 0, frameSubject(b, p))
      p = e
    }
  }

  /** A lost link: everything sent becomes unsent again, runs split into single frames. */
  split(): Lane {
    if (this.runs === 0) {
      this.next = this.head
      return this
    }
    const l = new Lane(this.spares)
    l.takeAll(this)
    return l
  }

  /**
   * Room for n contiguous bytes at the end of the last block, which becomes a new one (a spare,
   * or twice the last one's size up to BLOCK, or n) when they do not fit; returns where.
   */
  private place(n: number): number {
    const blocks = this.blocks
    const k = blocks.length - 1
    if (k >= 0 && blocks[k]!.length - this.fill >= n) {
      const at = this.fill
      this.fill = at + n
      this.inBlock[k]!++
      return at
    }
    // An empty lane's last block holds no record: a new block replaces it.
    if (k >= 0 && this.inBlock[k] === 0) {
      const old = blocks.pop()!
      this.inBlock.pop()
      this.spares.keep(old)
    }
    let b = n <= BLOCK ? this.spares.take() : undefined
    if (b === undefined) {
      const prev = blocks.length > 0 ? blocks[blocks.length - 1]!.length : FIRST_BLOCK / 2
      const size = Math.min(BLOCK, Math.max(FIRST_BLOCK, prev * 2))
      b = new Uint8Array(n > size ? n : size)
    }
    blocks.push(b)
    this.inBlock.push(1)
    this.fill = n
    return 0
  }

  private growRecords(): void {
    const cap = Math.max(64, (this.mask + 1) * 2)
    const mask = cap - 1
    const meta = new Float64Array(cap * META)
    // Filled, not new Array(cap): a large sparse array is a hash table in V8 and JSC.
    const subj: string[] = []
    const reply: string[] = []
    for (let k = 0; k < cap; k++) {
      subj.push('')
      reply.push('')
    }
    for (let k = this.head; k < this.tail; k++) {
      const a = k & this.mask
      const b = k & mask
      subj[b] = this.subj[a]!
      reply[b] = this.reply[a]!
      for (let j = 0; j < META; j++) meta[b * META + j] = this.meta[a * META + j]!
    }
    this.meta = meta
    this.subj = subj
    this.reply = reply
    this.mask = mask
  }
}

export class StoreBuffer implements Spool {
  private readonly spares = new Spares()
  /** The backlog: held when the link came up. */
  private old = new Lane(this.spares)
  /** Pushed since (while down: the next backlog). */
  private cur = new Lane(this.spares)
  private seq = 0
  /** Sends so far: each sent message carries the count at its send; a PING covers up to it. */
  private sends = 0
  bytes = 0
  dropped = 0
  resent = 0
  unkept = 0
  readonly durable = false

  constructor(
    private readonly maxMsgs: number,
    private readonly maxBytes: number,
    private readonly dropNewest: boolean,
    private readonly budget: Budget | null = null,
  ) {}

  get length(): number {
    return this.old.length + this.cur.length
  }

  get unsent(): number {
    return this.old.unsent + this.cur.unsent
  }

  get liveUnsent(): number {
    return this.cur.unsent
  }

  /** Bytes of memory the held messages' bytes take (their blocks, and the spares), beside `bytes`, their size. */
  get storage(): number {
    return this.old.storage + this.cur.storage + this.spares.bytes
  }

  get last(): number {
    return this.seq - 1
  }

  /** Keeps a copy of `m` (the router reuses message objects). False when it was dropped. */
  push(m: Msg): boolean {
    const size = m.subject.length + m.reply.length + (m.hdr ? m.hdr.length : 0) + m.payload.length
    if (size > this.maxBytes || this.maxMsgs === 0) {
      this.dropped++
      return false
    }
    while (this.length >= this.maxMsgs || this.bytes + size > this.maxBytes) {
      if (this.dropNewest) {
        this.dropped++
        return false
      }
      this.dropped += this.dropOldest()
    }
    const b = this.budget
    if (b !== null && b.full) {
      const room = this.bytes
      if (this.dropNewest || room < size) {
        this.dropped++
        b.dropped('the uplink buffer')
        return false
      }
      while (this.bytes + size > room) {
        this.dropped += this.dropOldest()
        b.dropped('the uplink buffer')
      }
    }
    this.cur.push(m, size, this.seq++, 0)
    this.bytes += size
    b?.charge(size)
    return true
  }

  pushFrames(frames: Uint8Array, count: number): void {
    const cap = this.sentCap()
    if (!this.roomForSent(count, frames.length, cap)) {
      // Not all of it fits. As if pushed one by one: under drop_oldest each newer frame
      // displaces older sent ones, so the newest that fit stay, and only a frame that would not
      // fit even alone counts as unkept; under drop_newest the oldest that fit stay, the rest
      // unkept.
      const ends = frameEnds(frames)
      const msgRoom = this.maxMsgs - this.length
      const byteRoom = cap - this.bytes
      let from = 0
      let to = ends.length
      if (this.dropNewest) {
        while (to > 0 && (to > msgRoom || ends[to - 1]! > byteRoom)) to--
        this.unkept += count - to
      } else {
        const last = ends.length > 0 ? ends[ends.length - 1]! : 0
        while (from < to && (to - from > msgRoom || last - (from === 0 ? 0 : ends[from - 1]!) > byteRoom)) from++
        for (let j = 0; j < ends.length; j++) if (msgRoom < 1 || ends[j]! - (j === 0 ? 0 : ends[j - 1]!) > byteRoom) this.unkept++
      }
      if (to === from) return
      const start = from === 0 ? 0 : ends[from - 1]!
      frames = frames.subarray(start, ends[to - 1]!)
      count = to - from
    }
    this.cur.pushFrames(frames, count, frames.length, this.seq, ++this.sends, '')
    this.seq += count
    this.charge(frames.length)
  }

  /** The bytes sent messages may fill: over max_memory the buffer does not grow. */
  private sentCap(): number {
    const b = this.budget
    return b !== null && b.full ? Math.min(this.bytes, this.maxBytes) : this.maxBytes
  }

  /**
   * Makes room for `count` sent messages of `size` bytes within `cap`, displacing only older
   * sent ones (drop_oldest): a sent message never displaces an unsent one. False: no room.
   */
  private roomForSent(count: number, size: number, cap: number): boolean {
    while (this.length + count > this.maxMsgs || this.bytes + size > cap) {
      if (this.dropNewest || !this.dropSent()) return false
    }
    return true
  }

  private charge(size: number): void {
    this.bytes += size
    this.budget?.charge(size)
  }

  /** Removes the oldest sent-but-unconfirmed record; false when there is none. */
  private dropSent(): boolean {
    const l = this.old.head < this.old.next ? this.old : this.cur.head < this.cur.next ? this.cur : null
    if (l === null) return false
    this.release(l.drop())
    return true
  }

  /** Removes the oldest record (sent or not); returns how many messages went with it. */
  private dropOldest(): number {
    const l = this.old.length > 0 ? this.old : this.cur
    const n = l.countOf(l.head)
    this.release(l.drop())
    return n
  }

  startReplay(): void {
    const o = this.old
    const c = this.cur
    if (c.length === 0) return
    if (o.length === 0) {
      this.old = c
      this.cur = o
    } else o.takeAll(c)
    this.old.next = this.old.head
  }

  /** Plain order: the backlog, then what came after it. Valid until the next push. */
  peek(): Stored | undefined {
    const o = this.old
    return o.next < o.tail ? o.at(o.next) : this.cur.at(this.cur.next)
  }

  advance(): void {
    ;(this.old.next < this.old.tail ? this.old : this.cur).advance(++this.sends)
  }

  peekLive(): Stored | undefined {
    return this.cur.at(this.cur.next)
  }

  advanceLive(): void {
    this.cur.advance(++this.sends)
  }

  mark(): number {
    return this.old.head < this.old.next || this.cur.head < this.cur.next ? this.sends : -1
  }

  confirm(mark: number): void {
    for (const l of [this.old, this.cur]) while (l.head < l.next && l.sendOf(l.head) <= mark) this.release(l.drop())
  }

  rewind(): number {
    const n = this.old.sentMsgs + this.cur.sentMsgs
    this.old = this.old.split()
    this.cur = this.cur.split()
    this.resent += n
    return n
  }

  /** Housekeeping (every 100 ms): empty lanes give back what a burst grew, and spares not needed go. */
  trim(): void {
    this.old.trim()
    this.cur.trim()
    this.spares.trim(this.budget !== null && this.budget.full)
  }

  /** Removes the oldest message (sent or not); its bytes stay valid until the next push. */
  shift(): Stored | undefined {
    const l = this.old.length > 0 ? this.old : this.cur
    const s = l.at(l.head)
    if (s !== undefined) this.release(l.drop())
    return s
  }

  private release(size: number): void {
    this.bytes -= size
    this.budget?.charge(-size)
  }
}
