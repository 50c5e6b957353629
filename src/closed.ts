// Recently closed connections, for /connz?state=closed: what /connz showed of each at its
// close, with the time and the reason (nats-server's `max_closed_clients` ring, 10000 by
// default). Bounded twice, by entries and by an estimate of the bytes the entries hold, so a
// flood of clients with long names cannot grow it; what falls out is counted.

import type { ConnInfo } from './monitor.ts'

/** nats-server's default max_closed_clients. */
export const MAX_CLOSED = 10_000
/** At most this many bytes (estimated) of closed-connection records. */
export const MAX_CLOSED_BYTES = 4 << 20

export interface ClosedConn {
  info: ConnInfo
  /** host.now() at close. */
  stop: number
  reason: string
  /** Estimated bytes this record holds. */
  size: number
}

/** Fixed cost of one record (the objects and their numbers), plus its strings' lengths. */
const RECORD_BYTES = 400

export class ClosedRing {
  private readonly list: (ClosedConn | undefined)[] = []
  /** Index of the oldest record in `list` (a ring once full). */
  private head = 0
  private count = 0
  bytes = 0
  /** Records dropped to stay within the bounds. */
  dropped = 0

  constructor(
    readonly max = MAX_CLOSED,
    readonly maxBytes = MAX_CLOSED_BYTES,
  ) {}

  get size(): number {
    return this.count
  }

  add(info: ConnInfo, reason: string, stop: number): void {
    if (this.max <= 0) return void this.dropped++
    let size = RECORD_BYTES + reason.length
    for (const k of ['name', 'lang', 'version', 'mqtt_client', 'authorized_user', 'ip'] as const) size += info[k]?.length ?? 0
    while (this.count > 0 && (this.count >= this.max || this.bytes + size > this.maxBytes)) this.shift()
    const rec: ClosedConn = { info, stop, reason, size }
    this.list[(this.head + this.count) % this.max] = rec
    this.count++
    this.bytes += size
  }

  private shift(): void {
    const rec = this.list[this.head]!
    this.list[this.head] = undefined
    this.head = (this.head + 1) % this.max
    this.count--
    this.bytes -= rec.size
    this.dropped++
  }

  /** Oldest first. */
  all(): ClosedConn[] {
    const out: ClosedConn[] = []
    for (let i = 0; i < this.count; i++) out.push(this.list[(this.head + i) % this.max]!)
    return out
  }
}
