// Store-and-forward: messages that wait for an uplink, in publish order, bounded by a count and
// by bytes. When a new message does not fit, the policy picks the victim: the oldest waiting
// message (drop_oldest) or the new one (drop_newest); either way the drop is counted.
// Its bytes count against the memory budget; over max_memory the buffer does not grow: the
// same policy picks the victim as if it were full.
//
// At least once: a message sent to the hub stays here, unconfirmed, until the hub confirms it
// (the PONG to a PING sent after it, src/leaf/link.ts confirm()). A lost link rewinds: the
// unconfirmed messages are sent again. That includes messages that went straight to a live
// link (pushSent): kept as long as they fit, but never at the cost of an unsent one. The
// on-disk spool (src/store/spool.ts) offers the same Spool interface.
//
// Two lanes, so new messages can go ahead of a backlog and each stays in order: `old` is the
// backlog (what was held when the link came up), `cur` everything pushed since. Every message
// in `old` is older than every message in `cur`.

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
  /** In memory: the send it went out with (see mark()); stale once rewound. */
  sent?: number
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
   * In-memory buffer only: keeps `m`, which just went to the hub, as sent and unconfirmed
   * (the caller sends straight only while nothing newer than the backlog waits: liveUnsent 0).
   * When the buffer is full it displaces only older sent messages (drop_oldest), else it is
   * not kept (counted in `unkept`).
   */
  pushSent?(m: Msg): void
  /** In-memory buffer only: unsent messages pushed since the backlog began (the live lane). */
  readonly liveUnsent?: number
  /** In-memory buffer only: the live lane's next message, and its send. */
  peekLive?(): Stored | undefined
  advanceLive?(): void
  /** In-memory buffer only: the link is up again: everything held becomes the backlog. */
  startReplay?(): void
  /** Sent messages not kept for a resend because the buffer was full (at most once for them). */
  readonly unkept?: number
  /** Durable spools keep the hub's interest keys (what to buffer) across a restart. */
  saveInterest?(keys: string[]): void
  loadInterest?(): string[] | null
}

/** One FIFO of held messages: [head, next) sent and unconfirmed, [next, end) unsent. */
class Lane {
  items: (Stored | undefined)[] = []
  head = 0
  next = 0

  get length(): number {
    return this.items.length - this.head
  }

  get unsent(): number {
    return this.items.length - this.next
  }

  /** Removes the oldest message (sent or not); compacts so memory follows the length. */
  shift(): Stored | undefined {
    const s = this.items[this.head]
    if (s === undefined) return undefined
    this.items[this.head++] = undefined
    if (this.next < this.head) this.next = this.head
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

  /** What is left, from the oldest; the lane is empty after. */
  take(): (Stored | undefined)[] {
    const rest = this.head === 0 ? this.items : this.items.slice(this.head)
    this.items = []
    this.head = this.next = 0
    return rest
  }
}

export class StoreBuffer implements Spool {
  /** The backlog: held when the link came up. */
  private old = new Lane()
  /** Pushed since (while down: the next backlog). */
  private cur = new Lane()
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
    this.keep(m, size)
    return true
  }

  pushSent(m: Msg): void {
    const size = m.subject.length + m.reply.length + (m.hdr ? m.hdr.length : 0) + m.payload.length
    const b = this.budget
    // Over max_memory the buffer does not grow; a sent message never displaces an unsent one.
    const cap = b !== null && b.full ? Math.min(this.bytes, this.maxBytes) : this.maxBytes
    while (this.length >= this.maxMsgs || this.bytes + size > cap) {
      if (this.dropNewest || size > cap || !this.shiftSent()) {
        this.unkept++
        return
      }
    }
    this.keep(m, size)
    const c = this.cur
    c.items[c.next++]!.sent = ++this.sends
  }

  private keep(m: Msg, size: number): void {
    this.cur.items.push({ subject: m.subject, reply: m.reply, hdr: m.hdr ? m.hdr.slice() : null, payload: m.payload.slice(), size, seq: this.seq++, sent: 0 })
    this.bytes += size
    this.budget?.charge(size)
  }

  /** Removes the oldest sent-but-unconfirmed message; false when there is none. */
  private shiftSent(): boolean {
    const l = this.old.head < this.old.next ? this.old : this.cur.head < this.cur.next ? this.cur : null
    if (l === null) return false
    this.release(l.shift()!)
    return true
  }

  startReplay(): void {
    const o = this.old
    const c = this.cur
    if (c.length === 0) return
    if (o.length === 0) {
      this.old = c
      this.cur = o
    } else {
      o.items = o.take().concat(c.take())
    }
    this.old.next = this.old.head
  }

  /** Plain order: the backlog, then what came after it. */
  peek(): Stored | undefined {
    const o = this.old
    return o.next < o.items.length ? o.items[o.next] : this.cur.items[this.cur.next]
  }

  advance(): void {
    const l = this.old.next < this.old.items.length ? this.old : this.cur
    const s = l.items[l.next]
    if (s === undefined) return
    s.sent = ++this.sends
    l.next++
  }

  peekLive(): Stored | undefined {
    return this.cur.items[this.cur.next]
  }

  advanceLive(): void {
    const c = this.cur
    const s = c.items[c.next]
    if (s === undefined) return
    s.sent = ++this.sends
    c.next++
  }

  mark(): number {
    return this.old.head < this.old.next || this.cur.head < this.cur.next ? this.sends : -1
  }

  confirm(mark: number): void {
    for (const l of [this.old, this.cur]) {
      for (let s = l.items[l.head]; s !== undefined && l.head < l.next && s.sent! <= mark; s = l.items[l.head]) this.release(l.shift()!)
    }
  }

  rewind(): number {
    const n = this.old.next - this.old.head + this.cur.next - this.cur.head
    this.old.next = this.old.head
    this.cur.next = this.cur.head
    this.resent += n
    return n
  }

  /** Removes the oldest message (sent or not). */
  shift(): Stored | undefined {
    const s = this.old.length > 0 ? this.old.shift() : this.cur.shift()
    if (s !== undefined) this.release(s)
    return s
  }

  private release(s: Stored): void {
    this.bytes -= s.size
    this.budget?.charge(-s.size)
  }
}
