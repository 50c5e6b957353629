// Store-and-forward: messages that wait for an uplink, in publish order, bounded by a count and
// by bytes. When a new message does not fit, the policy picks the victim: the oldest waiting
// message (drop_oldest) or the new one (drop_newest); either way the drop is counted.
// Its bytes count against the memory budget; over max_memory the buffer does not grow: the
// same policy picks the victim as if it were full.
//
// At least once: a message sent to the hub stays here, unconfirmed, until the hub confirms it
// (the PONG to a PING sent after it, src/leaf/link.ts confirm()). A lost link rewinds: the
// unconfirmed messages are sent again. The on-disk spool (src/store/spool.ts) offers the same
// Spool interface.

import type { Budget } from '../budget.ts'
import type { Msg } from '../msg.ts'

export interface Stored {
  /** Local names; mapped to the hub's when sent, against the interest known then. */
  subject: string
  reply: string
  hdr: Uint8Array | null
  payload: Uint8Array
  size: number
  /** Position in the spool: increases by one per message kept. */
  seq: number
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
  /** Durable spools keep the hub's interest keys (what to buffer) across a restart. */
  saveInterest?(keys: string[]): void
  loadInterest?(): string[] | null
}

export class StoreBuffer implements Spool {
  private items: (Stored | undefined)[] = []
  private head = 0
  /** Index of the next message to send (head..next are sent, unconfirmed). */
  private next = 0
  private seq = 0
  bytes = 0
  dropped = 0
  resent = 0
  readonly durable = false

  constructor(
    private readonly maxMsgs: number,
    private readonly maxBytes: number,
    private readonly dropNewest: boolean,
    private readonly budget: Budget | null = null,
  ) {}

  get length(): number {
    return this.items.length - this.head
  }

  get unsent(): number {
    return this.items.length - this.next
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
      this.shift()
      this.dropped++
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
        this.shift()
        this.dropped++
        b.dropped('the uplink buffer')
      }
    }
    this.items.push({ subject: m.subject, reply: m.reply, hdr: m.hdr ? m.hdr.slice() : null, payload: m.payload.slice(), size, seq: this.seq++ })
    this.bytes += size
    b?.charge(size)
    return true
  }

  peek(): Stored | undefined {
    return this.items[this.next]
  }

  advance(): void {
    if (this.next < this.items.length) this.next++
  }

  mark(): number {
    return this.next > this.head ? this.items[this.next - 1]!.seq : -1
  }

  confirm(seq: number): void {
    for (let s = this.items[this.head]; s !== undefined && s.seq <= seq && this.head < this.next; s = this.items[this.head]) this.shift()
  }

  rewind(): number {
    const n = this.next - this.head
    this.next = this.head
    this.resent += n
    return n
  }

  /** Removes the oldest message (sent or not). */
  shift(): Stored | undefined {
    const s = this.items[this.head]
    if (s === undefined) return undefined
    this.items[this.head++] = undefined
    if (this.next < this.head) this.next = this.head
    this.bytes -= s.size
    this.budget?.charge(-s.size)
    // Compact once the consumed front outweighs what is left, so memory follows the length.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.next -= this.head
      this.head = 0
    } else if (this.head === this.items.length) {
      this.items = []
      this.next = 0
      this.head = 0
    }
    return s
  }
}
