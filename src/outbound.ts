// A connection's outbound queue: bytes are appended into one growing buffer and handed to the
// wire in a single write per batch (the server flushes dirty queues once per I/O turn). The
// queue is bounded: `pending` counts what is buffered here plus what the wire has not yet
// drained, and reserve() refuses to grow past the limit, which the owner treats as a slow
// consumer. While the wire is backpressured nothing more is written to it, and what the
// socket still holds counts against the limit.
// With a memory budget (src/budget.ts) the queue charges it what it holds: the capacity of
// its buffer as it grows (what the memory costs, not just what is used), kept while a socket
// that refused a write still holds it, released once the socket drains or the connection is
// gone. Only growing touches the budget, so appending stays as cheap as before.

import type { Budget } from './budget.ts'
import type { Wire } from './host.ts'

/** Largest first buffer of a batch; a busy connection's batches start at its last batch's size. */
const MAX_FIRST = 4096
/** Smallest first buffer: a handshake reply or a PINGRESP fits. */
const MIN_FIRST = 64

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
  /** Bytes charged to the budget: this buffer's capacity plus what a blocked socket holds of ours. */
  charged = 0

  constructor(
    readonly wire: Wire,
    public limit: number,
    private readonly schedule: (o: Outbound) => void,
    readonly budget: Budget | null = null,
  ) {}

  /** Bytes queued here plus, while the wire is blocked, what the socket still holds. */
  get pending(): number {
    return this.len + (this.blockedSince !== 0 ? this.wire.buffered() : 0)
  }

  /**
   * Makes room for n more bytes and returns the offset to write them at in `buf`,
   * or -1 when that would take the queue over its limit.
   */
  reserve(n: number): number {
    const at = this.len
    const need = at + n
    if (need > this.limit || (this.blockedSince !== 0 && need + this.wire.buffered() > this.limit)) return -1
    if (need > this.buf.length) this.grow(need)
    this.len = need
    if (!this.scheduled) {
      this.scheduled = true
      this.schedule(this)
    }
    return at
  }

  /** Appends bytes; false when over the limit (nothing is written then). */
  push(data: Uint8Array): boolean {
    const at = this.reserve(data.length)
    if (at < 0) return false
    this.buf.set(data, at)
    return true
  }

  private grow(need: number): void {
    let cap = this.buf.length === 0 ? this.last : this.buf.length * 2
    while (cap < need) cap *= 2
    const next = new Uint8Array(cap)
    if (this.len > 0) next.set(this.buf.subarray(0, this.len))
    const b = this.budget
    if (b !== null) {
      const n = cap - this.buf.length
      this.charged += n
      if ((b.held += n) > b.high) b.over(this.blockedSince !== 0)
    }
    this.buf = next
  }

  /** Hands the batch to the wire unless the wire is still draining the previous one. */
  flush(now: number): void {
    this.scheduled = false
    if (this.len === 0 || this.blockedSince !== 0) return
    const chunk = this.buf.subarray(0, this.len)
    this.last = this.len < MIN_FIRST ? MIN_FIRST : this.len > MAX_FIRST ? MAX_FIRST : this.len
    // The wire keeps `chunk`, so start a fresh buffer rather than reuse this one.
    this.buf = EMPTY
    this.len = 0
    if (!this.wire.write(chunk)) this.blockedSince = now
    else if (this.charged !== 0) this.release(this.charged) // the socket took it
  }

  /** The wire drained: write whatever piled up meanwhile. */
  drained(now: number): void {
    this.blockedSince = 0
    if (this.charged > this.buf.length) this.release(this.charged - this.buf.length)
    this.flush(now)
  }

  /** Drops everything not yet handed to the wire (used when closing a slow consumer). */
  discard(): void {
    if (this.buf.length !== 0 && this.charged !== 0) this.release(this.buf.length)
    this.buf = EMPTY
    this.len = 0
  }

  /** The socket is gone: nothing of this queue is held any more. */
  closed(): void {
    this.discard()
    if (this.charged !== 0) this.release(this.charged)
  }

  private release(n: number): void {
    this.charged -= n
    this.budget!.charge(-n)
  }
}

const EMPTY = new Uint8Array(0)
