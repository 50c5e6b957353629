// A connection's outbound queue: bytes are appended into one growing buffer and handed to the
// wire in a single write per batch (the server flushes dirty queues once per I/O turn). The
// queue is bounded: `pending` counts what is buffered here plus what the wire has not yet
// drained, and reserve() refuses to grow past the limit, which the owner treats as a slow
// consumer. While the wire is backpressured nothing more is written to it, and what the
// socket still holds counts against the limit.
// With a memory budget (src/budget.ts) the queue charges it what it holds: the capacity of
// its buffers (what the memory costs, not just what is used), kept while a socket that
// refused a write still holds them, released once the socket drains or the connection is
// gone. Only allocating touches the budget, so appending stays as cheap as before.
// Two things keep garbage (which the runtime frees only at its next collection, and which
// would otherwise cost as much memory again as the queues themselves) down under a flood:
// while the wire is blocked the queue grows by adding segments instead of copying into ever
// larger buffers, and a busy connection whose wire took a batch at once and holds nothing
// (Wire.idle) writes its next batch into the same buffer.

import type { Budget } from './budget.ts'
import { EMPTY } from './bytes.ts'
import type { Wire } from './host.ts'
import { stallMark, type Stall } from './stall.ts'

/** Largest first buffer of a batch; a busy connection's batches start at its last batch's size. */
const MAX_FIRST = 4096
/** Smallest first buffer: a handshake reply or a PINGRESP fits. */
const MIN_FIRST = 64
/** While the wire is blocked, the queue grows in segments of this size (or one message, if larger). */
const SEGMENT = 64 * 1024

/** Full segments queued before `buf` while the wire is blocked. */
interface Segs {
  readonly list: Uint8Array[]
  /** Bytes in `list`, and their buffers' capacity. */
  bytes: number
  cap: number
}

/**
 * What the queues of one kind share (every client queue of a server: Server.queues; the
 * uplink's its own): where a queue with a new batch goes, the memory budget, and a hook.
 */
export interface QueuePool {
  /** Called with a queue when it gets the first bytes of a batch (the server flushes it later). */
  readonly schedule: (o: Outbound) => void
  readonly budget: Budget | null
  /** Called as flush() starts, while `buf` still holds the batch (the uplink keeps its frames). */
  readonly beforeFlush: ((o: Outbound) => void) | null
  /** The fast-producer stall (src/stall.ts): client queues only. */
  readonly stall?: Stall | null
}

// Twelve fields: an idle connection's queue stays in JSC's 112-byte size class (13 to 18
// fields: 160). Segments exist only while the wire is blocked: one object for them; what
// all of a server's queues share is one QueuePool.
export class Outbound {
  buf: Uint8Array = EMPTY
  len = 0
  /** host.now() when the wire last refused more, 0 when it is not blocked. */
  blockedSince = 0
  /** Set while this queue sits in the server's flush list. */
  scheduled = false
  /**
   * Size of the last batch handed to the wire: the next batch's first buffer. A quiet
   * connection (an idle device answering PINGREQs) then never holds a 4 KiB buffer that
   * lives until the next GC, while a busy one starts where it left off.
   */
  private last = MIN_FIRST
  /** Full segments queued before `buf`, only while the wire is blocked (null: none). */
  private segs: Segs | null = null
  /** Bytes charged to the budget: our buffers' capacity plus what a blocked socket holds of ours. */
  charged = 0
  /** Messages and their payload bytes the owner queued here (the connection's out_msgs, out_bytes for /connz). */
  msgs = 0
  bytes = 0
  readonly pool: QueuePool

  /** `pool`: shared by the server's queues; a bare schedule function (tests, one-off queues) makes one. */
  constructor(
    readonly wire: Wire,
    public limit: number,
    pool: QueuePool | ((o: Outbound) => void),
    budget: Budget | null = null,
  ) {
    this.pool = typeof pool === 'function' ? { schedule: pool, budget, beforeFlush: null } : pool
  }

  get budget(): Budget | null {
    return this.pool.budget
  }

  /** Bytes queued here plus, while the wire is blocked, what the socket still holds. */
  get pending(): number {
    return this.len + (this.segs === null ? 0 : this.segs.bytes) + (this.blockedSince !== 0 ? this.wire.buffered() : 0)
  }

  /** The wire has not taken everything yet: drained() comes once it has. */
  get blocked(): boolean {
    return this.blockedSince !== 0
  }

  /**
   * no_fast_producer_stall: true (and counted) when a message for this queue is to be dropped
   * rather than stall its publisher: the wire is not draining and the queue is past its stall
   * mark (src/stall.ts). One comparison while the wire drains, as it nearly always does.
   */
  shedding(): boolean {
    if (this.blockedSince === 0) return false
    const stall = this.pool.stall
    if (stall == null || !stall.off || this.pending <= stallMark(this.limit)) return false
    stall.drops++
    return true
  }

  /**
   * Makes room for n more bytes and returns the offset to write them at in `buf`,
   * or -1 when that would take the queue over its limit.
   */
  reserve(n: number): number {
    let at = this.len
    const need = at + n
    // Segments exist only while the wire is blocked, so an unblocked queue compares `need` alone.
    if (need > this.limit) return -1
    if (this.blockedSince !== 0) {
      const pending = need + (this.segs === null ? 0 : this.segs.bytes) + this.wire.buffered()
      if (pending > this.limit) return -1
      // Past 3/4 and not draining: the publish in progress pauses its publisher (src/stall.ts).
      const stall = this.pool.stall
      if (pending > stallMark(this.limit) && stall != null) stall.hot = this
    }
    if (need > this.buf.length) at = this.grow(n)
    this.len = at + n
    if (!this.scheduled) {
      this.scheduled = true
      this.pool.schedule(this)
    }
    return at
  }

  /**
   * A reply of a few bytes that never change (an idle device's PINGRESP) with nothing queued
   * before it: straight to the wire, no batch, no buffer, no flush scheduled. False, and
   * nothing written, when something is queued or the wire is blocked: the caller queues it.
   */
  direct(d: Uint8Array, now: number): boolean {
    if (this.len !== 0 || this.segs !== null || this.blockedSince !== 0) return false
    if (!this.wire.write(d)) this.blockedSince = now
    return true
  }

  /** Appends bytes; false when over the limit (nothing is written then). */
  push(data: Uint8Array): boolean {
    const at = this.reserve(data.length)
    if (at < 0) return false
    this.buf.set(data, at)
    return true
  }

  /** Room for n more bytes: a bigger buffer, or while blocked a new segment. Returns where they go. */
  private grow(n: number): number {
    const len = this.len
    let cap: number
    let keep = len
    if (this.blockedSince !== 0 && len + n > SEGMENT) {
      if (len > 0) {
        const segs = (this.segs ??= { list: [], bytes: 0, cap: 0 })
        segs.list.push(this.buf.subarray(0, len))
        segs.bytes += len
        segs.cap += this.buf.length
      }
      cap = n > SEGMENT ? n : SEGMENT
      keep = 0
    } else {
      cap = this.buf.length === 0 ? this.last : this.buf.length * 2
      while (cap < len + n) cap *= 2
    }
    const next = new Uint8Array(cap)
    if (keep > 0) next.set(this.buf.subarray(0, keep))
    const b = this.pool.budget
    if (b !== null) {
      const add = keep === 0 && len > 0 ? cap : cap - this.buf.length
      this.charged += add
      if ((b.held += add) > b.high) b.over(this.blockedSince !== 0)
    }
    this.buf = next
    this.len = keep
    return keep
  }

  /** Hands the batch to the wire unless the wire is still draining the previous one. */
  flush(now: number): void {
    this.scheduled = false
    const before = this.pool.beforeFlush
    if (before !== null) before(this)
    if (this.blockedSince !== 0) return
    const segs = this.segs
    let took = true
    if (segs !== null) {
      this.segs = null
      for (let i = 0; i < segs.list.length; i++) took = this.wire.write(segs.list[i]!)
    }
    if (this.len === 0) {
      if (segs !== null) this.wrote(now, took)
      return
    }
    const chunk = this.buf.subarray(0, this.len)
    this.last = this.len < MIN_FIRST ? MIN_FIRST : this.len > MAX_FIRST ? MAX_FIRST : this.len
    const busy = this.len >= MAX_FIRST
    this.len = 0
    took = this.wire.write(chunk) && took
    // A busy connection's buffer is used again once the wire holds nothing of it; otherwise
    // the wire keeps `chunk`, so the next batch starts in a fresh buffer.
    if (!(took && busy && this.wire.idle?.() === true)) this.buf = EMPTY
    this.wrote(now, took)
  }

  /** After writing: blocked, or everything but the buffer kept for reuse is off our hands. */
  private wrote(now: number, took: boolean): void {
    if (!took) this.blockedSince = now
    else if (this.charged > this.buf.length) this.release(this.charged - this.buf.length)
  }

  /** The wire drained: write whatever piled up meanwhile. */
  drained(now: number): void {
    this.blockedSince = 0
    this.unstall()
    const ours = this.buf.length + (this.segs === null ? 0 : this.segs.cap)
    if (this.charged > ours) this.release(this.charged - ours)
    this.flush(now)
  }

  /** Drops everything not yet handed to the wire (used when closing a slow consumer). */
  discard(): void {
    this.unstall() // nothing left to wait for
    const ours = this.buf.length + (this.segs === null ? 0 : this.segs.cap)
    if (ours !== 0 && this.charged !== 0) this.release(ours)
    this.buf = EMPTY
    this.len = 0
    this.segs = null
  }

  /** The socket is gone: nothing of this queue is held any more. */
  closed(): void {
    this.discard()
    if (this.charged !== 0) this.release(this.charged)
  }

  /** Publishers stalled for this queue (src/stall.ts) are read again. */
  private unstall(): void {
    const stall = this.pool.stall
    if (stall != null && stall.size !== 0) stall.release(this)
  }

  private release(n: number): void {
    this.charged -= n
    this.pool.budget!.charge(-n)
  }
}

