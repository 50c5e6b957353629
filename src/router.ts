// The one subject space: every protocol adapter subscribes and publishes here. The router
// matches a message against the subscription index and hands it to each subscriber's owner
// (a NATS connection, an MQTT session, the uplink); owners do their own framing and queueing.

import type { Msg } from './msg.ts'
import { Sublist, type SubLike } from './sublist.ts'

export interface Owner {
  readonly cid: number
  /** false: the owner does not want its own publishes back (NATS `echo:false`). */
  readonly echo: boolean
  deliver(sub: Sub, msg: Msg): void
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

export class Router {
  readonly subs: Sublist<Sub>
  readonly traffic: Traffic = { in_msgs: 0, in_bytes: 0, out_msgs: 0, out_bytes: 0 }
  private seq = 0
  private readonly interest: InterestListener[] = []

  constructor() {
    this.subs = new Sublist<Sub>({ onInterest: (s, q, n) => { for (const f of this.interest) f(s, q, n) } })
  }

  /** Called on first-subscriber / last-gone changes (every change for queue groups). */
  onInterest(f: InterestListener): void {
    this.interest.push(f)
  }

  subscribe(sub: Sub): void {
    this.subs.insert(sub)
  }

  unsubscribe(sub: Sub): boolean {
    return this.subs.remove(sub)
  }

  /**
   * Delivers to every matching plain subscription and to one member of each queue group.
   * Returns how many subscriptions got the message (0 lets NATS answer no-responders).
   */
  publish(msg: Msg, from: Owner | null): number {
    msg.seq = ++this.seq
    const size = msg.payload.length + (msg.hdr ? msg.hdr.length : 0)
    const t = this.traffic
    t.in_msgs++
    t.in_bytes += size
    const m = this.subs.match(msg.subject)
    const skipSelf = from !== null && !from.echo
    let n = 0
    const psubs = m.psubs
    for (let i = 0; i < psubs.length; i++) {
      const s = psubs[i]!
      if (skipSelf && s.owner === from) continue
      s.owner.deliver(s, msg)
      n++
    }
    const qsubs = m.qsubs
    for (let g = 0; g < qsubs.length; g++) {
      const group = qsubs[g]!
      // Start at a random member; walk on only if echo rules that member out.
      const len = group.length
      const start = len === 1 ? 0 : Math.floor(Math.random() * len)
      for (let k = 0; k < len; k++) {
        const s = group[(start + k) % len]!
        if (skipSelf && s.owner === from) continue
        s.owner.deliver(s, msg)
        n++
        break
      }
    }
    t.out_msgs += n
    t.out_bytes += n * size
    return n
  }
}
