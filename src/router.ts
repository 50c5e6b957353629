// The one subject space: every protocol adapter subscribes and publishes here. The router
// matches a message against the subscription index and hands it to each subscriber's owner
// (a NATS connection, an MQTT session, the uplink); owners do their own framing and queueing.

import type { Budget } from './budget.ts'
import type { Msg } from './msg.ts'
import { mayPublishAs, mayReceiveAs, type Principal } from './permissions.ts'
import type { Stall } from './stall.ts'
import { Sublist, pickQueueMember, type Match, type SubLike } from './sublist.ts'

/**
 * A subscriber and a publisher. As a Principal it says who it publishes as (user,
 * permissions), for sprig's services that act on its behalf; they are the only ones that
 * use `from` in deliver().
 */
export interface Owner extends Principal {
  readonly cid: number
  /** false: the owner does not want its own publishes back (NATS `echo:false`). */
  readonly echo: boolean
  deliver(sub: Sub, msg: Msg, from: Owner | null): void
  /** The connection's socket, when it has one: the uplink pauses it to slow a publisher down. */
  readonly wire?: import('./host.ts').Wire
  /** Who it is, for log lines. */
  label?(): string
  /**
   * A service refused what this owner's publish to `subject` asked of it (its permissions do
   * not cover the subject the service would publish to): answer as the protocol does.
   */
  refused?(subject: string): void
  /** Its publishes never go through the header hook (MQTT: its retained messages are its own to keep). */
  readonly skipsHeaderHook?: boolean
}

/**
 * Who sprig's answer to `from`'s request publishes as: the requester's rules for where an
 * answer may go (mayAnswer in permissions.ts), without its connection (echo, the uplink's
 * rule for its own messages and flow control do not apply). null (sprig's own) stays null.
 */
export function answerFor(from: Owner | null): Owner | null {
  if (from === null) return null
  return {
    cid: 0,
    echo: true,
    answer: true,
    user: from.user ?? '',
    label: () => from.label?.() ?? 'client',
    mayPublish: (s) => mayPublishAs(from, s) || mayReceiveAs(from, s),
    mayReceive: (s) => mayReceiveAs(from, s),
    deliver() {},
  }
}

export interface Sub extends SubLike {
  readonly owner: Owner
}

export interface Traffic {
  in_msgs: number
  in_bytes: number
  out_msgs: number
  out_bytes: number
}

export type InterestListener = (subject: string, queue: string | null, count: number) => void

/**
 * Sees every publish after local delivery (the uplink: it keeps the hub's interest apart from
 * local interest, so local subscribers never include it). `local` is what matched here.
 * Returns how many receivers it stands for (counted for no-responders).
 */
export type Tap = (msg: Msg, from: Owner | null, local: Match<Sub>) => number

/**
 * Sees, before delivery, every publish that carries headers (the MQTT adapter: a NATS publish
 * with `Nmqtt-Retain: 1` sets a retained message). Header-less publishes, and those of an
 * owner that skipsHeaderHook, never reach it.
 */
export type HeaderHook = (msg: Msg, from: Owner | null) => void

export class Router {
  readonly subs: Sublist<Sub>
  /** At most one; set by the adapter that needs it. */
  headerHook: HeaderHook | null = null
  /** The memory budget: a publish that fed a stuck queue while over it pauses its sender. */
  budget: Budget | null = null
  /** The fast-producer stall: a publish that left a client queue past 3/4 of max_pending pauses its sender. */
  stall: Stall | null = null
  readonly traffic: Traffic = { in_msgs: 0, in_bytes: 0, out_msgs: 0, out_bytes: 0 }
  private seq = 0
  private readonly interest: InterestListener[] = []
  private taps: Tap[] = []

  constructor() {
    this.subs = new Sublist<Sub>({ onInterest: (s, q, n) => { for (const f of this.interest) f(s, q, n) } })
  }

  /** Called on first-subscriber / last-gone changes (every change for queue groups). */
  onInterest(f: InterestListener): void {
    this.interest.push(f)
  }

  /** Adds a tap; the returned function removes it. */
  addTap(t: Tap): () => void {
    this.taps = [...this.taps, t]
    return () => {
      this.taps = this.taps.filter((x) => x !== t)
    }
  }

  subscribe(sub: Sub): void {
    this.subs.insert(sub)
  }

  unsubscribe(sub: Sub): boolean {
    return this.subs.remove(sub)
  }

  /**
   * What a publish to `subject` (with a header block: `hdr`) would reach, asked before its
   * Msg exists: the match to hand to publish(), or null when nothing would see it (no
   * subscriber, no tap, no header hook), so the publisher need not build the message and
   * calls unheard() instead. One cache lookup, no allocation.
   */
  reach(subject: string, hdr: boolean): Match<Sub> | null {
    const m = this.subs.match(subject)
    if (m.psubs.length > 0 || m.qsubs.length > 0 || this.taps.length > 0 || (hdr && this.headerHook !== null)) return m
    return null
  }

  /** Counts a publish of `size` bytes that reach() found nobody for, as publish() counts it. */
  unheard(size: number): void {
    const t = this.traffic
    t.in_msgs++
    t.in_bytes += size
  }

  /**
   * Delivers to every matching plain subscription and to one member of each queue group.
   * Returns how many subscriptions got the message (0 lets NATS answer no-responders).
   * `queues` (a message from a hub) limits queue delivery to the groups it names; `match`
   * is what reach() returned for this message, if it was asked.
   */
  publish(msg: Msg, from: Owner | null, queues?: readonly string[], match?: Match<Sub>): number {
    msg.seq = ++this.seq
    const b = this.budget
    if (b !== null) b.hot = false // set again only by this publish's deliveries
    const st = this.stall
    if (st !== null) st.hot = null // likewise
    const size = msg.size + (msg.hdr ? msg.hdr.length : 0)
    const t = this.traffic
    t.in_msgs++
    t.in_bytes += size
    if (msg.hdr !== null && this.headerHook !== null && from?.skipsHeaderHook !== true) this.headerHook(msg, from)
    const m = match ?? this.subs.match(msg.subject)
    const skipSelf = from !== null && !from.echo
    let n = 0
    const psubs = m.psubs
    for (let i = 0; i < psubs.length; i++) {
      const s = psubs[i]!
      if (skipSelf && s.owner === from) continue
      s.owner.deliver(s, msg, from)
      n++
    }
    const qsubs = m.qsubs
    for (let g = 0; g < qsubs.length; g++) {
      const group = qsubs[g]!
      if (queues !== undefined && !queues.includes(group[0]!.queue!)) continue
      const s = pickQueueMember(group, skipSelf ? from : null)
      if (s === null) continue
      s.owner.deliver(s, msg, from)
      n++
    }
    t.out_msgs += n
    t.out_bytes += n * size
    const taps = this.taps
    for (let i = 0; i < taps.length; i++) n += taps[i]!(msg, from, m)
    if (b !== null && b.hot) b.pause(from?.wire)
    if (st !== null && st.hot !== null) st.pause(from?.wire)
    return n
  }
}
