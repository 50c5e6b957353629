// Persistent sessions (3.1.1 clean session 0, MQTT 5 Session Expiry > 0), kept in memory.
// When such a connection ends its subscriptions are handed to a Parked owner, which stays
// subscribed in the router and queues QoS 1/2 messages while the client is away (bounded
// by max_offline_msgs and max_offline_bytes; overflow policy: the newest message is
// dropped and counted, so what the device finds is the oldest, contiguous stretch).
// QoS 0 messages are not queued (MQTT allows either). A reconnect with the same client id
// takes the session back: unacknowledged messages are resent with DUP [MQTT-4.4.0-1], then
// the queue follows. Sessions expire after their expiry, checked on the server's housekeeping tick (startMqtt).

import { Buffer } from 'node:buffer'
import type { Msg } from '../../src/msg.ts'
import { mqttOptions } from '../../src/options.ts'
import { deliveryDenied } from '../../src/permissions.ts'
import type { Owner, Router, Sub } from '../../src/router.ts'
import { deliveryQos, subTopic, type MqttConn, type MqttSub, type Outgoing } from './conn.ts'
import type { MqttState } from './state.ts'
import { filterEntries, withFilter, type Filters } from './filters.ts'
import { deliveryProps, headersToProps, msgRetained } from './props.ts'

export class Parked implements Owner {
  readonly echo = true
  subs: Filters = null
  inflight = new Map<number, Outgoing>()
  /** Messages not yet sent: the old connection's waiting ones, then those queued offline. */
  queue: Outgoing[] = []
  /** Payload bytes in `queue`. */
  queued = 0
  /** Payload bytes of `queue` and `inflight` charged to the memory budget. */
  charged = 0
  qos2In = new Set<number>()

  constructor(
    readonly cid: number,
    readonly clientId: string,
    readonly st: MqttState,
    readonly router: Router,
    public expiresAt: number,
    private readonly maxMsgs: number,
    private readonly maxBytes: number,
  ) {}

  deliver(sub: Sub, m: Msg): void {
    const s = sub as MqttSub
    // The same delivery-time deny check as a live connection: a wildcard that overlaps a
    // denied subject must not fill the offline queue with what the user may not read.
    if (s.denyCheck !== undefined && deliveryDenied(s.denyCheck, m.subject, s.queue)) return
    const topic = subTopic(this.st, s, m)
    if (topic === null) return
    const qos = deliveryQos(s, m)
    if (qos === 0) return
    if (this.queue.length >= this.maxMsgs || this.queued + m.payload.length > this.maxBytes) {
      this.st.counters.offline_dropped++
      return
    }
    const b = this.router.budget
    if (b !== null && b.full) {
      // Near max_memory the queue keeps its policy as if it were full: the newest is dropped.
      this.st.counters.offline_dropped++
      b.dropped('an MQTT offline queue')
      return
    }
    const props = deliveryProps(headersToProps(this.st, m), s)
    this.queue.push({ topic, payload: Buffer.from(m.payload), qos, retain: s.rap === true && msgRetained(m), released: false, props })
    this.queued += m.payload.length
    charge(this, m.payload.length)
  }
}

/** Adds n bytes held by a parked session to the memory budget (negative: releases them). */
function charge(p: Parked, n: number): void {
  p.charged += n
  p.router.budget?.charge(n)
}

/** Moves a closing connection's session into a Parked owner that lives on for `expiryMs`. */
export function park(c: MqttConn, now: number, expiryMs: number): void {
  const o = mqttOptions(c.srv.opts)
  const p = new Parked(c.cid, c.clientId, c.st, c.srv.router, now + expiryMs, o.max_offline_msgs, o.max_offline_bytes)
  p.subs = moveSubs(c.srv.router, c.subs, p)
  c.subs = null
  p.inflight = new Map(c.inflight)
  p.queue = c.waiting.slice()
  for (const w of p.queue) p.queued += w.payload.length
  let inflight = 0
  for (const o of p.inflight.values()) inflight += o.payload.length
  charge(p, p.queued + inflight)
  p.qos2In = new Set(c.qos2In)
  c.st.sessions.set(c.clientId, p)
}

/** Takes the parked session for this id out of the store (null when there is none). */
export function takeParked(st: MqttState, clientId: string): Parked | null {
  const p = st.sessions.get(clientId)
  if (!p) return null
  st.sessions.delete(clientId)
  return p
}

/** A parked session the reconnecting client does not want (clean start) [MQTT-3.1.2-6]. */
export function discardParked(p: Parked): void {
  p.subs = moveSubs(p.router, p.subs, null)
  charge(p, -p.charged)
}

/** Gives a parked session to a connection that was just acknowledged (CONNACK sent). */
export function resume(c: MqttConn, p: Parked): void {
  c.subs = moveSubs(p.router, p.subs, c)
  p.subs = null
  charge(p, -p.charged) // the connection charges what it takes over
  for (const id of p.qos2In) c.qos2In.add(id)
  // Unacknowledged messages first, as they were, with DUP [MQTT-4.4.0-1].
  for (const [pid, o] of p.inflight) {
    c.inflight.set(pid, o)
    c.held += o.payload.length
    if (o.released) c.send({ cmd: 'pubrel', messageId: pid })
    else c.sendPublish(o, pid, true)
  }
  for (const o of p.queue) if (!c.done) c.enqueue(o)
}

/** Drops parked sessions whose time is up. */
export function expireSessions(st: MqttState, now: number): void {
  for (const [id, p] of st.sessions) {
    if (p.expiresAt > now) continue
    st.sessions.delete(id)
    p.subs = moveSubs(p.router, p.subs, null)
    charge(p, -p.charged)
  }
}

/**
 * Re-subscribes `from`'s router subscriptions under `owner` and returns them (or just drops
 * them when owner is null). Unsubscribe and subscribe happen in one turn, so nothing is missed.
 */
function moveSubs(router: Router, from: Filters, owner: Owner | null): Filters {
  let to: Filters = null
  for (const [filter, list] of filterEntries(from)) {
    for (const s of list) router.unsubscribe(s)
    if (owner === null) continue
    const moved: MqttSub[] = list.map((s) => ({ ...s, owner }))
    for (const s of moved) router.subscribe(s)
    to = withFilter(to, filter, moved)
  }
  return to
}
