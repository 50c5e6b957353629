// The fast-producer stall, as nats-server has it: a publish that leaves a client's outbound
// queue over 3/4 of its limit (max_pending) while that queue's socket is not draining pauses
// the publisher's reads, until the socket drains, the queue is gone, or STALL_MS passes.
// A subscriber that merely reads in bursts is then not cut as a slow consumer by a publisher
// that writes faster for a moment; one that stops reading for good is still cut, by
// write_deadline or by a publish that takes its queue past max_pending (each stall runs out,
// so its publishers get on meanwhile, slowly). Only client queues stall (the server's
// QueuePool): the uplink has its own flow control, and a publisher without a socket (the
// uplink's hub traffic, sprig's services) is never paused.
// With no_fast_producer_stall (nats-server's option) nobody is paused: a message for a queue
// past its mark while its socket is not draining is dropped for that subscriber instead
// (Outbound.shedding), and counted. Either way a subscriber that reads in bursts stays
// connected; the option chooses whether its publishers wait or it loses messages.

import type { Host, Wire } from './host.ts'
import type { Options } from './options.ts'
import type { Outbound } from './outbound.ts'
import { Paused } from './pause.ts'

/** Longest a publisher is paused for one queue (nats-server 2.9 stalls 0.1–1 s). */
export const STALL_MS = 1000

/** A queue stalls from this share of its limit on: 3/4 (nats-server: 1/2 or 3/4, by release). */
export function stallMark(limit: number): number {
  return limit - (limit >> 2)
}

interface Stalled {
  readonly paused: Paused
  readonly timer: { cancel(): void }
}

export class Stall {
  /** Set by a queue's reserve() in the publish in progress: a congested queue past its mark. */
  hot: Outbound | null = null
  /** Publishers paused so far (for /varz). */
  count = 0
  /** no_fast_producer_stall: drop for the crowded queue instead of pausing its publishers. */
  off = false
  /** Messages dropped for a crowded queue because `off` (for /varz). */
  drops = 0
  private readonly byQueue = new Map<Outbound, Stalled>()

  constructor(private readonly host: Pick<Host, 'every'>) {}

  /** Queues with paused publishers now. */
  get size(): number {
    return this.byQueue.size
  }

  /** The router, after a publish that left `hot` past its mark: pauses the publisher `w`. */
  pause(w: Wire | undefined): void {
    const o = this.hot
    this.hot = null
    if (o === null || w === undefined || w.pause === undefined || this.off) return
    let s = this.byQueue.get(o)
    if (s === undefined) {
      const timer = this.host.every(STALL_MS, () => this.release(o))
      this.byQueue.set(o, (s = { paused: new Paused(), timer }))
    }
    if (s.paused.add(w)) this.count++
  }

  /** The queue's socket drained, or the queue is gone: its publishers are read again. */
  release(o: Outbound): void {
    const s = this.byQueue.get(o)
    if (s === undefined) return
    this.byQueue.delete(o)
    s.timer.cancel()
    s.paused.releaseAll()
  }

  /** Every paused publisher is read again (the stall was switched off). */
  releaseAll(): void {
    for (const o of [...this.byQueue.keys()]) this.release(o)
  }
}

/** SIGHUP: no_fast_producer_stall applies at once (nats-server reloads it too). */
export function reloadStall(srv: { opts: Options; readonly stall: Stall }, next: Options): () => string[] {
  return () => {
    const off = next.no_fast_producer_stall
    if (srv.opts.no_fast_producer_stall === off) return []
    srv.opts = { ...srv.opts, no_fast_producer_stall: off }
    srv.stall.off = off
    if (off) srv.stall.releaseAll()
    return [`no_fast_producer_stall: ${off}`]
  }
}
