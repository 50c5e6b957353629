// MQTT state in the on-disk store (store on; with it off st.persist is null and nothing here
// runs): retained messages and persistent sessions, one keyed latest-value log
// (src/store/keyed.ts) in <store>/mqtt, restored at start-up before any listener opens.
//
// Keys (U+0000 separates: MQTT strings may not contain it [MQTT-1.5.3-2]):
//   r␀<topic>              a retained message
//   s␀<client id>          a session: its user and expiry (rewritten when it connects or parks)
//   f␀<client id>␀<filter> one of its subscriptions: QoS, no local, retain as published, id;
//                          a SUBSCRIBE or UNSUBSCRIBE writes only the filters it changes
//                          (format 1 stores before this kept the list in the s record: read too)
//   m␀<client id>␀<n>      a QoS 1/2 message held for it (offline queue or in flight), written
//                          once; n orders the queue
//   i␀<client id>␀<n>      that message's packet id and PUBREL state once sent (3 bytes)
//   q␀<client id>␀<pid>    a QoS 2 PUBLISH received and not yet released (PUBREL)
//   w␀<client id>          a will held back (MQTT 5 Will Delay Interval), with its due time
// An acknowledgement, a drop or the session's end writes tombstones. Each record is written
// in the turn that changes the state, before the PUBACK/PUBREC of the publish that caused it
// (handlers/publish.ts afterStored), so one group commit covers both.
// Expiry survives a restart on the wall clock: a parked session stores its wall-clock end; a
// session live at a crash restarts its expiry at the restart (the crash was its disconnect).

import { Buffer } from 'node:buffer'
import { userIdentity } from '../../src/auth.ts'
import { quote } from '../../src/log.ts'
import { mqttOptions } from '../../src/options.ts'
import { canSubscribe, needsDeliveryCheck } from '../../src/permissions.ts'
import type { Server } from '../../src/server.ts'
import { KeyedFile, type KeyedOptions } from '../../src/store/keyed.ts'
import type { Store } from '../../src/store/store.ts'
import { mqttSub, type MqttSub, type Outgoing, type QoS, type SubBase, type Will } from './delivery.ts'
import { filterEntries, withFilter, type Filters } from './filters.ts'
import { deadlineOf, setDeadline, type PublishProps } from './props.ts'
import { retain, type Retained } from './retained.ts'
import { Parked } from './session.ts'
import { mqttState } from './state.ts'
import { filterToSubjects, parseShared, wildcardFirst } from './topic.ts'
import { limits } from './handlers/common.ts'
import { holdWill } from './will.ts'

const SEP = '\u0000'
const enc = new TextEncoder()
const dec = new TextDecoder()

/** A session as the store keeps it. */
interface SessionRec {
  /** user */
  u: string
  /** expiry ms; -1: never */
  e: number
  /** wall-clock end while parked; null while a connection holds it */
  x: number | null
  /** subscriptions: filter, qos, no local, retain as published, subscription id (older stores; now f records) */
  s?: SubRec[]
}

type SubRec = [string, QoS, boolean, boolean, number | null]

interface MsgRec {
  t: string
  q: QoS
  r: boolean
  p: number
  x: boolean
  o?: PublishProps
  /** wall-clock expiry deadline (Message Expiry Interval) */
  d?: number
}

/** A held-back will. */
interface WillRec {
  t: string
  s: string
  q: QoS
  r: boolean
  /** the user it publishes as (its permissions) */
  u: string
  /** wall-clock due time */
  due: number
  o?: PublishProps
}

interface PerClient {
  /** Next message number. */
  next: number
  /** Every key of this client in the log. */
  keys: Set<string>
  /** Its subscriptions as the log has them: filter -> the f record's JSON. */
  subs: Map<string, string>
}

export class MqttPersist {
  readonly log: KeyedFile
  private readonly clients = new Map<string, PerClient>()
  private retainedKeys = 0

  constructor(
    private readonly srv: Server,
    store: Store,
    o: KeyedOptions = {},
  ) {
    this.log = new KeyedFile(store, `${store.opts.dir}/mqtt`, o)
  }

  private wallOf(t: number): number {
    const h = this.srv.host
    return t - h.now() + (h.wall ? h.wall() : h.now())
  }

  private nowOf(wall: number): number {
    const h = this.srv.host
    return wall - (h.wall ? h.wall() : h.now()) + h.now()
  }

  private client(id: string): PerClient {
    let c = this.clients.get(id)
    if (c === undefined) this.clients.set(id, (c = { next: 1, keys: new Set(), subs: new Map() }))
    return c
  }

  private put(c: PerClient, key: string, value: Uint8Array): boolean {
    if (!this.log.put(key, value)) {
      this.srv.spoolDrops++ // an MQTT 5 publisher whose publish this was gets 0x97
      return false
    }
    c.keys.add(key)
    return true
  }

  private del(c: PerClient, key: string): void {
    if (c.keys.delete(key)) this.log.delete(key)
  }

  // --- retained

  /** A retained message set (r) or cleared (null); false when the store refused it. */
  retained(topic: string, r: Retained | null): boolean {
    const key = `r${SEP}${topic}`
    if (r === null) {
      if (this.log.has(key)) {
        this.log.delete(key)
        this.retainedKeys--
      }
      return true
    }
    const d = deadlineOf(r.props)
    const meta = { s: r.subject, q: r.qos, ...(r.props ? { o: r.props } : {}), ...(d !== undefined ? { d: this.wallOf(d) } : {}) }
    const had = this.log.has(key)
    if (!this.log.put(key, withMeta(meta, r.payload))) {
      this.srv.spoolDrops++
      return false
    }
    if (!had) this.retainedKeys++
    return true
  }

  // --- sessions

  /** A connection holds the session now. */
  live(clientId: string, user: string, expiry: number, subs: Filters): void {
    this.session(clientId, { u: user, e: expiry === Infinity ? -1 : expiry, x: null }, subs)
  }

  /** The session's client went away: it is parked until p.expiresAt. */
  parked(p: Parked, expiry: number): void {
    // x -1: parked with no end (e is -1 then too).
    const forever = p.expiresAt === Infinity || expiry === Infinity
    this.session(p.clientId, { u: p.user, e: forever ? -1 : expiry, x: forever ? -1 : this.wallOf(p.expiresAt) }, p.subs)
  }

  private session(clientId: string, rec: SessionRec, subs: Filters): void {
    const c = this.client(clientId)
    this.put(c, `s${SEP}${clientId}`, enc.encode(JSON.stringify(rec)))
    this.subscriptions(clientId, subs)
  }

  /**
   * The session's subscriptions changed (a SUBSCRIBE or UNSUBSCRIBE packet, a reload's
   * permissions): only the filters that differ from what the log has are written.
   */
  subscriptions(clientId: string, subs: Filters): void {
    const c = this.client(clientId)
    const now = new Set<string>()
    for (const [filter, qos, nl, rap, id] of subsOf(subs)) {
      now.add(filter)
      const v = JSON.stringify([qos, nl, rap, id])
      if (c.subs.get(filter) === v) continue
      if (this.put(c, `f${SEP}${clientId}${SEP}${filter}`, enc.encode(v))) c.subs.set(filter, v)
    }
    for (const filter of c.subs.keys()) {
      if (now.has(filter)) continue
      c.subs.delete(filter)
      this.del(c, `f${SEP}${clientId}${SEP}${filter}`)
    }
  }

  /** The session ended: every record of it goes. */
  endSession(clientId: string): void {
    const c = this.clients.get(clientId)
    if (c === undefined) return
    this.clients.delete(clientId)
    for (const k of c.keys) this.log.delete(k)
  }

  // --- messages held for a session

  /** A QoS 1/2 message queued (not sent yet); false when the store refused it. */
  queued(clientId: string, o: Outgoing): boolean {
    if (o.key !== undefined) return true
    return this.writeMsg(clientId, o, 0)
  }

  /** Sent with packet id `pid` (or, for QoS 2, released: PUBREL sent). */
  sent(clientId: string, o: Outgoing, pid: number): void {
    if (o.key === undefined) {
      this.writeMsg(clientId, o, pid)
      return
    }
    const c = this.client(clientId)
    this.put(c, `i${SEP}${clientId}${SEP}${o.key}`, Uint8Array.of(pid >> 8, pid & 0xff, o.released ? 1 : 0))
  }

  /** Acknowledged or dropped. */
  done(clientId: string, o: Outgoing): void {
    if (o.key === undefined) return
    const c = this.clients.get(clientId)
    if (c === undefined) return
    this.del(c, `m${SEP}${clientId}${SEP}${o.key}`)
    this.del(c, `i${SEP}${clientId}${SEP}${o.key}`)
    o.key = undefined
  }

  private writeMsg(clientId: string, o: Outgoing, pid: number): boolean {
    const c = this.client(clientId)
    const n = c.next++
    const d = deadlineOf(o.props)
    const meta: MsgRec = { t: o.topic, q: o.qos, r: o.retain, p: pid, x: o.released, ...(o.props ? { o: o.props } : {}), ...(d !== undefined ? { d: this.wallOf(d) } : {}) }
    if (!this.put(c, `m${SEP}${clientId}${SEP}${n}`, withMeta(meta, o.payload))) return false
    o.key = n
    return true
  }

  /** QoS 2 in: a PUBLISH id received (true) or released by PUBREL (false). */
  qos2(clientId: string, pid: number, pending: boolean): void {
    const c = this.client(clientId)
    const key = `q${SEP}${clientId}${SEP}${pid}`
    if (pending) this.put(c, key, EMPTY)
    else this.del(c, key)
  }

  // --- delayed wills

  /** A will held back until `due` (host.now() time): kept so that a restart still sends it. */
  will(clientId: string, w: Will, user: string, due: number): void {
    const c = this.client(clientId)
    const key = `w${SEP}${clientId}`
    const meta: WillRec = { t: w.topic, s: w.subject, q: w.qos, r: w.retain, u: user, due: this.wallOf(due), ...(w.props ? { o: w.props } : {}) }
    // Refused (a full store): it waits in memory only, as without a store.
    if (this.log.put(key, withMeta(meta, w.payload))) c.keys.add(key)
  }

  /** The held-back will was sent, or cancelled by the client's return. */
  willDone(clientId: string): void {
    const c = this.clients.get(clientId)
    if (c !== undefined) this.del(c, `w${SEP}${clientId}`)
  }

  status(): Record<string, number> {
    let sessions = 0
    let msgs = 0
    let qos2 = 0
    let wills = 0
    for (const k of this.log.keys()) {
      const t = k.charCodeAt(0)
      if (t === 119) wills++ // w
      else if (t === 115) sessions++ // s
      else if (t === 109) msgs++ // m
      else if (t === 113) qos2++ // q
    }
    return {
      retained_msgs: this.retainedKeys,
      sessions,
      session_msgs: msgs,
      qos2_pending: qos2,
      delayed_wills: wills,
      bytes: this.log.bytes,
      dead_bytes: this.log.dead,
      segments: this.log.segments,
      compactions: this.log.compactions,
      bytes_written: this.log.written,
      refused: this.log.refused,
      restored: this.log.recovered,
    }
  }

  // --- start-up

  /** Puts what the log holds back into the MQTT state: retained messages, then parked sessions. */
  restore(): { retained: number; sessions: number; msgs: number } {
    const srv = this.srv
    const st = mqttState(srv)
    const now = srv.host.now()
    const sessions = new Map<string, SessionRec>()
    const msgs = new Map<string, Map<number, { m: MsgRec; payload: Uint8Array }>>()
    const pids = new Map<string, Uint8Array>()
    const qos2 = new Map<string, number[]>()
    const wills = new Map<string, { meta: WillRec; payload: Uint8Array }>()
    const filters = new Map<string, Map<string, string>>()
    let retained = 0
    const drop: string[] = []
    for (const [key, value] of this.log.entries()) {
      const parts = key.split(SEP)
      const kind = parts[0]
      try {
        if (kind === 'r' && parts.length === 2) {
          const { meta, payload } = readMeta<{ s: string; q: QoS; o?: PublishProps; d?: number }>(value)
          if (meta.o !== undefined && meta.d !== undefined) {
            if (meta.d <= this.wallOf(now)) {
              drop.push(key) // expired while sprig was down
              continue
            }
            setDeadline(meta.o, this.nowOf(meta.d))
          }
          if (retain(st.retained, parts[1]!, meta.s, payload, meta.q, meta.o)) {
            retained++
            this.retainedKeys++
          } else drop.push(key) // over the retained bounds now configured
        } else if (kind === 's' && parts.length === 2) {
          sessions.set(parts[1]!, JSON.parse(dec.decode(value)) as SessionRec)
        } else if (kind === 'm' && parts.length === 3) {
          const { meta, payload } = readMeta<MsgRec>(value)
          let m = msgs.get(parts[1]!)
          if (m === undefined) msgs.set(parts[1]!, (m = new Map()))
          m.set(Number(parts[2]), { m: meta, payload })
        } else if (kind === 'i' && parts.length === 3 && value.length === 3) {
          pids.set(key, value)
        } else if (kind === 'f' && parts.length === 3) {
          const v = dec.decode(value)
          JSON.parse(v) // read now: damage drops the record here, not later
          let m = filters.get(parts[1]!)
          if (m === undefined) filters.set(parts[1]!, (m = new Map()))
          m.set(parts[2]!, v)
        } else if (kind === 'w' && parts.length === 2) {
          wills.set(parts[1]!, readMeta<WillRec>(value))
        } else if (kind === 'q' && parts.length === 3) {
          let l = qos2.get(parts[1]!)
          if (l === undefined) qos2.set(parts[1]!, (l = []))
          l.push(Number(parts[2]))
        } else drop.push(key)
      } catch {
        srv.log.warn(`store: mqtt record ${quote(key.replace(/\u0000/g, '/'))} cannot be read; dropped`)
        drop.push(key)
      }
    }
    for (const k of drop) this.log.delete(k)
    // Parked sessions, oldest end first (st.sessions is oldest parked first).
    const o = mqttOptions(srv.opts)
    // Never longer than mqtt.session_expiry allows now (it may have been lowered).
    const end = (s: SessionRec): number => Math.min(now + o.session_expiry, s.e < 0 ? Infinity : s.x !== null && s.x >= 0 ? this.nowOf(s.x) : now + s.e)
    const order = [...sessions].map(([id, s]) => ({ id, s, end: end(s) }))
    order.sort((a, b) => a.end - b.end)
    // mqtt.max_sessions lowered since they were stored: the sessions that end first go, as
    // the oldest parked session goes when a new one needs room (session.ts roomForSession).
    const evict = o.max_sessions > 0 ? Math.max(0, order.filter((x) => x.end > now && userIdentity(srv.opts, x.s.u) !== null).length - o.max_sessions) : 0
    let evicted = 0
    let restored = 0
    let msgCount = 0
    let overMsgs = 0
    for (const { id, s, end } of order) {
      const c = this.client(id)
      c.keys.add(`s${SEP}${id}`)
      const who = userIdentity(srv.opts, s.u)
      if (end <= now || who === null || evicted < evict) {
        if (who === null) srv.log.info(`store: mqtt session ${quote(id)} not restored: User ${quote(s.u)} no longer exists`)
        else if (end > now) {
          evicted++
          st.counters.sessions_evicted++
        }
        this.forget(id, msgs.get(id), qos2.get(id), filters.get(id))
        filters.delete(id)
        continue
      }
      const p = new Parked(0, id, st, srv.router, end, o.max_offline_msgs, o.max_offline_bytes, o.max_sessions_bytes, s.u, who.perms)
      const fs = filters.get(id) ?? new Map<string, string>()
      filters.delete(id)
      for (const f of fs.keys()) c.keys.add(`f${SEP}${id}${SEP}${f}`)
      c.subs = fs
      const list: SubRec[] = [...(s.s ?? [])]
      for (const [f, v] of fs) list.push([f, ...(JSON.parse(v) as [QoS, boolean, boolean, number | null])])
      p.subs = this.subscribe(p, list, who.perms)
      // What the log holds now: f records (an older store's list moves to them; the list
      // itself goes when the session's record is next written), those no longer allowed deleted.
      this.subscriptions(id, p.subs)
      const held = [...(msgs.get(id) ?? [])].sort((a, b) => a[0] - b[0])
      msgs.delete(id)
      for (const [n, { m, payload }] of held) {
        c.keys.add(`m${SEP}${id}${SEP}${n}`)
        if (n >= c.next) c.next = n + 1
        const ik = `i${SEP}${id}${SEP}${n}`
        const pi = pids.get(ik)
        if (pi !== undefined) c.keys.add(ik)
        const pid = pi !== undefined ? (pi[0]! << 8) | pi[1]! : m.p
        const out: Outgoing = { topic: m.t, payload: Buffer.from(payload), qos: m.q, retain: m.r, released: pi !== undefined ? pi[2] === 1 : m.x, key: n, ...(m.o ? { props: m.o } : {}) }
        if (m.o !== undefined && m.d !== undefined) setDeadline(m.o, this.nowOf(m.d))
        if (pid > 0 && !p.inflight.has(pid)) {
          p.inflight.set(pid, out)
          p.unacked += payload.length
        } else {
          p.queue.push(out)
          p.queued += payload.length
        }
        msgCount++
      }
      // Offline bounds lowered since: the newest queued messages beyond them go (the queue's own
      // policy, Parked.deliver); messages already sent (in flight) stay.
      while (
        p.queue.length > 0 &&
        (p.queue.length > o.max_offline_msgs || p.queued > o.max_offline_bytes || (o.max_sessions_bytes > 0 && st.parkedBytes + p.queued + p.unacked > o.max_sessions_bytes))
      ) {
        const x = p.queue.pop()!
        p.queued -= x.payload.length
        this.done(id, x)
        st.counters.offline_dropped++
        msgCount--
        overMsgs++
      }
      for (const pid of qos2.get(id) ?? []) {
        c.keys.add(`q${SEP}${id}${SEP}${pid}`)
        p.qos2In.add(pid)
      }
      qos2.delete(id)
      const bytes = p.queued + p.unacked
      p.charged += bytes
      srv.budget.charge(bytes)
      p.stored = true
      st.parkedBytes += bytes
      st.sessions.set(id, p)
      // A session live at the crash is parked from now: its record says so.
      if (s.x === null) this.parked(p, s.e < 0 ? Infinity : s.e)
      restored++
    }
    // Records of sessions that are gone (a crash between a session's end and its tombstones).
    for (const [id, m] of msgs) this.forget(id, m, qos2.get(id))
    for (const [id, fs] of filters) for (const f of fs.keys()) this.log.delete(`f${SEP}${id}${SEP}${f}`)
    for (const [id, l] of qos2) if (!sessions.has(id)) this.forget(id, undefined, l)
    for (const k of pids.keys()) {
      const parts = k.split(SEP)
      if (!this.clients.get(parts[1]!)?.keys.has(`m${SEP}${parts[1]}${SEP}${parts[2]}`)) this.log.delete(k)
    }
    const held = this.restoreWills(wills, now)
    if (evicted > 0) srv.log.warn(`store: ${evicted} stored MQTT sessions not restored (those ending first): more than mqtt.max_sessions (${o.max_sessions})`)
    if (overMsgs > 0) srv.log.warn(`store: ${overMsgs} stored MQTT offline messages dropped (the newest of their queues): over mqtt.max_offline_msgs, max_offline_bytes or max_sessions_bytes`)
    if (retained + restored + held > 0) srv.log.info(`store: restored ${retained} retained MQTT messages, ${restored} MQTT sessions holding ${msgCount} messages, ${held} delayed wills`)
    return { retained, sessions: restored, msgs: msgCount }
  }

  /**
   * Held-back wills go back on hold: due when they were due, or when their session now ends
   * if that is sooner (5.0 §3.1.3.2.2); at once (on the next tick, with everything running)
   * when that passed while sprig was down, as when their session was not restored (it ended).
   * One whose user no longer exists is dropped.
   */
  private restoreWills(wills: Map<string, { meta: WillRec; payload: Uint8Array }>, now: number): number {
    const srv = this.srv
    const st = mqttState(srv)
    let n = 0
    for (const [id, { meta, payload }] of wills) {
      const key = `w${SEP}${id}`
      const who = userIdentity(srv.opts, meta.u)
      if (who === null) {
        srv.log.info(`store: delayed will of mqtt client ${quote(id)} dropped: User ${quote(meta.u)} no longer exists`)
        this.log.delete(key)
        continue
      }
      this.client(id).keys.add(key)
      const due = Math.max(now, Math.min(this.nowOf(meta.due), st.sessions.get(id)?.expiresAt ?? now))
      const w: Will = { topic: meta.t, subject: meta.s, payload: Buffer.from(payload), qos: meta.q, retain: meta.r, delay: 0, ...(meta.o ? { props: meta.o } : {}) }
      const label = `mqtt will of ${quote(id)}`
      holdWill(srv, st, w, { cid: 0, echo: true, skipsHeaderHook: true, user: meta.u, perms: who.perms, label: () => label, deliver() {} }, id, due)
      n++
    }
    return n
  }

  /** Deletes the records of a session not restored. */
  private forget(id: string, msgs: Map<number, unknown> | undefined, qos2: number[] | undefined, filters?: Map<string, string>): void {
    const c = this.client(id)
    for (const f of filters?.keys() ?? []) c.keys.add(`f${SEP}${id}${SEP}${f}`)
    for (const n of msgs?.keys() ?? []) {
      c.keys.add(`m${SEP}${id}${SEP}${n}`)
      c.keys.add(`i${SEP}${id}${SEP}${n}`)
    }
    for (const pid of qos2 ?? []) c.keys.add(`q${SEP}${id}${SEP}${pid}`)
    c.keys.add(`s${SEP}${id}`)
    this.endSession(id)
  }

  /**
   * A restored session's subscriptions under the permissions in force now: each filter mapped
   * as SUBSCRIBE maps it (handlers/subscribe.ts addSub); what is no longer allowed is left out.
   */
  private subscribe(p: Parked, list: SubRec[], perms: Parameters<typeof needsDeliveryCheck>[0]): Filters {
    const lim = limits(this.srv)
    let subs: Filters = null
    for (const [topic, qos, nl, rap, subId] of list) {
      const shared = parseShared(topic, lim)
      let subjects: string[]
      let queue: string | null = null
      let filter = topic
      if (shared === null) {
        const r = filterToSubjects(topic, lim)
        if (!Array.isArray(r)) continue
        subjects = r
      } else if ('error' in shared) continue
      else {
        subjects = shared.subjects
        queue = shared.group
        filter = shared.filter
      }
      if (perms !== null) subjects = subjects.filter((x) => canSubscribe(perms, x, queue))
      if (subjects.length === 0) continue
      const base: SubBase = { queue, owner: p, filter: topic, qos, noDollar: wildcardFirst(filter), noLocal: nl, rap, subId: subId ?? undefined }
      const subsOfFilter: MqttSub[] = subjects.map((subject) => mqttSub(base, subject, needsDeliveryCheck(perms, subject)))
      for (const x of subsOfFilter) this.srv.router.subscribe(x)
      subs = withFilter(subs, topic, subsOfFilter)
    }
    return subs
  }
}

/**
 * Opens the MQTT part of the store and restores it (targets/run.ts, before the listeners).
 * From here on the adapter writes its state changes through st.persist.
 */
export function openMqttStore(srv: Server, store: Store, o: KeyedOptions = {}): MqttPersist {
  const st = mqttState(srv)
  const ps = new MqttPersist(srv, store, o)
  ps.restore()
  st.persist = ps
  st.retained.persist = (topic, r) => ps.retained(topic, r)
  return ps
}

function subsOf(subs: Filters): SubRec[] {
  const out: SubRec[] = []
  for (const [filter, list] of filterEntries(subs)) {
    const s = list[0]
    if (s !== undefined) out.push([filter, s.qos, s.noLocal, s.rap === true, s.subId ?? null])
  }
  return out
}

const EMPTY = new Uint8Array(0)

/** u32 length | JSON | payload. Buffers in properties (correlation data) go as JSON arrays. */
function withMeta(meta: object, payload: Uint8Array): Uint8Array {
  const j = enc.encode(JSON.stringify(meta))
  const b = new Uint8Array(4 + j.length + payload.length)
  new DataView(b.buffer).setUint32(0, j.length, true)
  b.set(j, 4)
  b.set(payload, 4 + j.length)
  return b
}

function readMeta<T>(b: Uint8Array): { meta: T; payload: Uint8Array } {
  const n = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(0, true)
  if (4 + n > b.length) throw new Error('short')
  const meta = JSON.parse(dec.decode(b.subarray(4, 4 + n)), (_k, v: unknown) => {
    const x = v as { type?: unknown; data?: unknown }
    return x !== null && typeof x === 'object' && x.type === 'Buffer' && Array.isArray(x.data) ? Buffer.from(x.data as number[]) : v
  }) as T
  return { meta, payload: b.subarray(4 + n) }
}
