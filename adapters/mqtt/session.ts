// Persistent sessions (3.1.1 clean session 0, MQTT 5 Session Expiry > 0), kept in memory.
// When such a connection ends its subscriptions are handed to a Parked owner, which stays
// subscribed in the router and queues QoS 1/2 messages while the client is away (bounded
// by max_offline_msgs and max_offline_bytes, and for all parked sessions together by
// max_sessions_bytes; overflow policy: the newest message is dropped and counted, so what
// the device finds is the oldest, contiguous stretch).
// QoS 0 messages are not queued (MQTT allows either). A reconnect with the same client id
// takes the session back: unacknowledged messages are resent with DUP [MQTT-4.4.0-1], then
// the queue follows. Sessions expire after their expiry, checked on the server's housekeeping tick (startMqtt).
//
// A session belongs to the identity that made it (the authenticated user; '' on an open
// server): only that identity resumes it, and always under the permissions in force then
// (recheckSession). Another identity with the same client id ends it and starts clean.
// mqtt.max_sessions bounds parked and live persistent sessions together: a new one over it
// expires the oldest parked session, or is refused when every session is live (roomForSession).

import { Buffer } from 'node:buffer'
import { userIdentity } from '../../src/auth.ts'
import type { Msg } from '../../src/msg.ts'
import { quote } from '../../src/log.ts'
import { mqttOptions } from '../../src/options.ts'
import { canSubscribe, deliveryDenied, mayReceive, needsDeliveryCheck, type CompiledPermissions } from '../../src/permissions.ts'
import type { Owner, Router, Sub } from '../../src/router.ts'
import type { Server } from '../../src/server.ts'
import { deliveryQos, mqttSub, subTopic, type MqttSub, type Outgoing } from './delivery.ts'
import { mqttState, type MqttState } from './state.ts'
import { allowedPart, filterEntries, withFilter, withoutFilter, type Filters } from './filters.ts'
import { deliveryProps, headersToProps, msgRetained } from './props.ts'
import { cancelWill } from './services.ts'
import { topicToSubject } from './topic.ts'

export class Parked implements Owner {
  readonly echo = true
  subs: Filters = null
  inflight = new Map<number, Outgoing>()
  /** Messages not yet sent: the old connection's waiting ones, then those queued offline. */
  queue: Outgoing[] = []
  /** Payload bytes in `queue`. */
  queued = 0
  /** Payload bytes in `inflight`. */
  unacked = 0
  /** Payload bytes of `queue` and `inflight` charged to the memory budget. */
  charged = 0
  qos2In = new Set<number>()
  /** In st.sessions, its bytes counted in st.parkedBytes (false once taken or ended). */
  stored = false

  constructor(
    readonly cid: number,
    readonly clientId: string,
    readonly st: MqttState,
    readonly router: Router,
    public expiresAt: number,
    private readonly maxMsgs: number,
    private readonly maxBytes: number,
    /** max_sessions_bytes: 0 = no bound on all parked sessions together. */
    private readonly maxAllBytes: number,
    /** The identity the session belongs to (src/auth.ts Identity.user). */
    readonly user: string,
    /** The permissions its subscriptions and messages were last checked against. */
    public perms: CompiledPermissions | null,
  ) {}

  deliver(sub: Sub, m: Msg): void {
    const s = sub as MqttSub
    // The same delivery-time deny check as a live connection: a wildcard that overlaps a
    // denied subject must not fill the offline queue with what the user may not read.
    if (s.denyCheck && deliveryDenied(this.perms, m.subject, s.queue)) return
    const topic = subTopic(this.st, s, m)
    if (topic === null) return
    const qos = deliveryQos(s, m)
    if (qos === 0) return
    const n = m.payload.length
    if (this.queue.length >= this.maxMsgs || this.queued + n > this.maxBytes || (this.maxAllBytes > 0 && this.st.parkedBytes + n > this.maxAllBytes)) {
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
    const o: Outgoing = { topic, payload: Buffer.from(m.payload), qos, retain: s.rap === true && msgRetained(m), released: false, props }
    // With a store the message is queued only once it is written there (persist.ts).
    if (this.st.persist !== null && !this.st.persist.queued(this.clientId, o)) {
      this.st.counters.offline_dropped++
      return
    }
    this.queue.push(o)
    this.queued += n
    charge(this, n)
    if (this.stored) this.st.parkedBytes += n
  }

  /** Drops the held messages `keep` refuses; returns how many. */
  dropHeld(keep: (o: Outgoing) => boolean): number {
    let bytes = 0
    let n = 0
    const kept: Outgoing[] = []
    for (const o of this.queue) {
      if (keep(o)) kept.push(o)
      else {
        bytes += o.payload.length
        n++
        this.st.persist?.done(this.clientId, o)
      }
    }
    this.queue = kept
    this.queued -= bytes
    for (const [pid, o] of this.inflight) {
      if (keep(o)) continue
      this.st.persist?.done(this.clientId, o)
      this.inflight.delete(pid)
      this.unacked -= o.payload.length
      bytes += o.payload.length
      n++
    }
    charge(this, -bytes)
    if (this.stored) this.st.parkedBytes -= bytes
    return n
  }
}

/** Adds n bytes held by a parked session to the memory budget (negative: releases them). */
function charge(p: Parked, n: number): void {
  p.charged += n
  p.router.budget?.charge(n)
}

/** What a closing connection hands over to be parked (conn.ts teardown). */
export interface Leaving {
  readonly cid: number
  readonly clientId: string
  readonly user: string
  readonly perms: CompiledPermissions | null
  readonly subs: Filters
  readonly inflight: ReadonlyMap<number, Outgoing> | null
  readonly waiting: readonly Outgoing[] | null
  readonly qos2In: ReadonlySet<number> | null
  label(): string
}

/**
 * Moves a closing connection's session into a Parked owner that lives on for `expiryMs`; its
 * subscriptions are the parked session's now. False when the session ends instead: its user
 * no longer exists (a reload removed it).
 */
export function park(srv: Server, st: MqttState, c: Leaving, now: number, expiryMs: number): boolean {
  const who = userIdentity(srv.opts, c.user)
  if (who === null) {
    srv.log.info(`${c.label()} mqtt session not kept: User ${quote(c.user)} no longer exists`)
    st.counters.sessions_revoked++
    return false
  }
  const o = mqttOptions(srv.opts)
  const p = new Parked(c.cid, c.clientId, st, srv.router, now + expiryMs, o.max_offline_msgs, o.max_offline_bytes, o.max_sessions_bytes, c.user, c.perms)
  p.subs = moveSubs(srv.router, c.subs, p)
  p.inflight = new Map(c.inflight ?? [])
  p.queue = c.waiting?.slice() ?? []
  for (const w of p.queue) p.queued += w.payload.length
  for (const w of p.inflight.values()) p.unacked += w.payload.length
  charge(p, p.queued + p.unacked)
  p.qos2In = new Set(c.qos2In ?? [])
  // A reload whose check of this connection has not finished (a bcrypt user): the session
  // keeps only what the new rules allow.
  if (who.perms !== c.perms) recheckParked(srv, p, who.perms)
  p.stored = true
  st.parkedBytes += p.queued + p.unacked
  st.sessions.set(c.clientId, p)
  return true
}

/** Takes a parked session out of the store. */
function unstore(p: Parked): void {
  if (!p.stored) return
  p.stored = false
  p.st.sessions.delete(p.clientId)
  p.st.parkedBytes -= p.queued + p.unacked
}

/** Takes the parked session for this id out of the store (null when there is none). */
export function takeParked(st: MqttState, clientId: string): Parked | null {
  const p = st.sessions.get(clientId)
  if (!p) return null
  unstore(p)
  return p
}

/**
 * Ends a parked session (Clean Start [MQTT-3.1.2-6], another identity took its client id,
 * max_sessions, its user is gone): subscriptions dropped, and a will waiting for the
 * session's end goes now, as at any session end (5.0 §3.1.3.2.2).
 */
export function endParked(p: Parked): void {
  unstore(p)
  p.st.persist?.endSession(p.clientId)
  p.subs = moveSubs(p.router, p.subs, null)
  cancelWill(p.st, p.clientId, true)
  charge(p, -p.charged)
}

/**
 * Hands a parked session to `owner`, a connection just acknowledged (CONNACK sent), whose
 * permissions are `perms`: its subscriptions, with only what the client may read now
 * (permissions may have changed while it was away), move to the owner and are returned; the
 * owner takes the messages (conn.ts resume) and charges them from here on.
 */
export function unpark(srv: Server, p: Parked, perms: CompiledPermissions | null, owner: Owner): Filters {
  if (p.perms !== perms) recheckParked(srv, p, perms)
  const subs = moveSubs(p.router, p.subs, owner)
  p.subs = null
  charge(p, -p.charged)
  return subs
}

/** Drops parked sessions whose time is up. */
export function expireSessions(st: MqttState, now: number): void {
  for (const p of [...st.sessions.values()]) {
    if (p.expiresAt > now) continue
    unstore(p)
    p.st.persist?.endSession(p.clientId)
    p.subs = moveSubs(p.router, p.subs, null)
    charge(p, -p.charged)
  }
}

/**
 * Room for one more persistent session under mqtt.max_sessions (`max`; 0: no limit), parked
 * and live ones counted: the oldest parked session is expired early to make it (logged,
 * counted); false when every session is live, and the new one must be refused.
 */
export function roomForSession(srv: Server, st: MqttState, max: number): boolean {
  if (max === 0) return true
  while (st.sessions.size + st.persistent.size >= max) {
    const oldest = st.sessions.values().next().value
    if (oldest === undefined) return false
    srv.log.warn(`mqtt session ${quote(oldest.clientId)} of User ${quote(oldest.user)} expired early: mqtt.max_sessions (${max}) reached`)
    st.counters.sessions_evicted++
    endParked(oldest)
  }
  return true
}

// --- permissions ------------------------------------------------------------------------------

/** A session a permissions check applies to: a live connection or a parked session. */
export interface Checked {
  readonly subs: Filters
  /** Drops the held QoS 1/2 messages (waiting, in flight) `keep` refuses; returns how many. */
  dropHeld(keep: (o: Outgoing) => boolean): number
}

/**
 * The one rule for a session against the permissions in force: at resume, for a live
 * connection after a reload, for a parked session after a reload. A filter whose subject
 * the permissions now refuse is unsubscribed and removed (filters.ts allowedPart, as at
 * SUBSCRIBE); the others get the delivery-time deny check SUBSCRIBE would
 * give them. Held messages on a subject the user may no longer read are dropped (counted).
 * `removed` hears each filter taken away, for the log. Returns the session's filters now.
 */
export function recheckSession(s: Checked, router: Router, st: MqttState, perms: CompiledPermissions | null, removed: (filter: string) => void): Filters {
  let subs = s.subs
  for (const [filter, list] of filterEntries(subs)) {
    const ok = perms === null ? list : allowedPart(list, (x) => canSubscribe(perms, x.subject, x.queue))
    if (ok === null) {
      for (const x of list) router.unsubscribe(x)
      subs = withoutFilter(subs, filter)
      removed(filter)
      continue
    }
    for (const x of list) {
      if (ok.length !== list.length && !ok.includes(x)) router.unsubscribe(x)
      else x.denyCheck = needsDeliveryCheck(perms, x.subject)
    }
    if (ok.length !== list.length) subs = withFilter(subs, filter, ok)
  }
  if (perms !== null) st.counters.revoked_msgs += s.dropHeld((o) => stillReadable(perms, o))
  return subs
}

/**
 * May a held message still go to a client with `perms`? Not when it may no longer read its
 * subject. A QoS 2 message already released (PUBREL sent) was delivered: it stays.
 */
function stillReadable(perms: CompiledPermissions, o: Outgoing): boolean {
  if (o.released) return true
  const subject = topicToSubject(o.topic) // the exact reverse of the topic it was given (topic.ts)
  return typeof subject === 'string' && mayReceive(perms, subject)
}

/** recheckSession for a parked session, logged under its client id. */
function recheckParked(srv: Server, p: Parked, perms: CompiledPermissions | null): void {
  const before = p.st.counters.revoked_msgs
  p.subs = recheckSession(p, p.router, p.st, perms, (filter) =>
    srv.log.info(`mqtt session ${quote(p.clientId)}: removed sub ${quote(filter)} for User ${quote(p.user)} - not authorized`),
  )
  p.perms = perms
  p.st.persist?.parked(p, p.expiresAt - p.st.now())
  const dropped = p.st.counters.revoked_msgs - before
  if (dropped > 0) srv.log.info(`mqtt session ${quote(p.clientId)}: dropped ${dropped} held message(s) User ${quote(p.user)} may no longer read`)
}

/**
 * After a reload changed users or permissions: each parked session against its user as the
 * new configuration has it. A session whose user is gone ends; the others keep what the new
 * permissions allow.
 */
export function reloadParked(srv: Server): void {
  const st = mqttState(srv)
  for (const p of [...st.sessions.values()]) {
    const who = userIdentity(srv.opts, p.user)
    if (who === null) {
      srv.log.warn(`mqtt session ${quote(p.clientId)} ended: User ${quote(p.user)} no longer exists`)
      st.counters.sessions_revoked++
      endParked(p)
    } else if (who.perms !== p.perms) recheckParked(srv, p, who.perms)
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
    const moved: MqttSub[] = list.map((s) => mqttSub({ queue: s.queue, owner, filter: s.filter, qos: s.qos, noDollar: s.noDollar, noLocal: s.noLocal, rap: s.rap === true, subId: s.subId }, s.subject, s.denyCheck))
    for (const s of moved) router.subscribe(s)
    to = withFilter(to, filter, moved)
  }
  return to
}
