// Store-and-forward: messages that wait for an uplink, in publish order, bounded by a count and
// by bytes. When a new message does not fit, the policy picks the victim: the oldest waiting
// message (drop_oldest) or the new one (drop_newest); either way the drop is counted.
// Its bytes count against the memory budget; over max_memory the buffer does not grow: the
// same policy picks the victim as if it were full.

import type { Budget } from '../budget.ts'
import type { Msg } from '../msg.ts'

export interface Stored {
  /** Local names; mapped to the hub's when sent, against the interest known then. */
  subject: string
  reply: string
  hdr: Uint8Array | null
  payload: Uint8Array
  size: number
}

export class StoreBuffer {
  private items: (Stored | undefined)[] = []
  private head = 0
  bytes = 0
  dropped = 0

  constructor(
    private readonly maxMsgs: number,
    private readonly maxBytes: number,
    private readonly dropNewest: boolean,
    private readonly budget: Budget | null = null,
  ) {}

  get length(): number {
    return this.items.length - this.head
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
    this.items.push({ subject: m.subject, reply: m.reply, hdr: m.hdr ? m.hdr.slice() : null, payload: m.payload.slice(), size })
    this.bytes += size
    b?.charge(size)
    return true
  }

  peek(): Stored | undefined {
    return this.items[this.head]
  }

  shift(): Stored | undefined {
    const s = this.items[this.head]
    if (s === undefined) return undefined
    this.items[this.head++] = undefined
    this.bytes -= s.size
    this.budget?.charge(-s.size)
    // Compact once the consumed front outweighs what is left, so memory follows the length.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    } else if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    }
    return s
  }
}
