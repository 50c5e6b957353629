// What the MQTT adapter offers NATS clients, as subjects under `$SPRIG.mqtt.` (sprig's own
// namespace: nats-server keeps `$MQTT.` for its JetStream internals, and a `$` subject is
// never matched by an MQTT `#` or `+/...` subscription [MQTT-4.7.2-1], so devices do not
// see this traffic):
//
//   $SPRIG.mqtt.reply.<base64url>.<subject>   replies to MQTT 5 requests that carry
//       Correlation Data (see props.ts): republished to <subject> with the
//       `Nmqtt-Correlation-Data` header.
//   $SPRIG.mqtt.retained.get   request; payload: an MQTT topic filter (empty = `#`). Reply:
//       JSON {"messages":[{"topic","subject","qos","payload"(base64)}...],"truncated":bool}
//       (topic order; cut to fit max_payload, then truncated is true), or {"error":"..."}.
//   $SPRIG.mqtt.retain.<subject>   publish: sets the retained message of <subject>'s topic
//       (an empty payload deletes it) and delivers it to <subject> like an MQTT retained
//       PUBLISH; QoS from `Nmqtt-Pub` (default 1). With a reply subject it answers
//       {"ok":true} or {"error":"..."}.
//   Any NATS publish with the header `Nmqtt-Retain: 1` (router header hook): sets the retained
//       message of its subject's topic, and is delivered as usual.
//
// Each service acts with the permissions of whoever published to it (the router hands over
// the publishing Owner): a retained set or a relayed reply needs publish permission on the
// subject it ends up on (else it is refused like that publish: logged, counted, and the
// publisher gets its protocol's answer), and a retained query returns only messages the
// requester could subscribe to. The uplink publishes under its remote's import filters.
//
// Installed once per server, when the MQTT adapter takes its first connection or is
// started (startMqtt in index.ts).

import { Buffer } from 'node:buffer'
import { copyOf, utf8 } from '../../src/bytes.ts'
import { decodeHeaders, encodeHeaders } from '../../src/headers.ts'
import { newMsg, type Msg } from '../../src/msg.ts'
import { answeredAs, mayAnswer, mayPublishAs, mayReceiveAs } from '../../src/permissions.ts'
import { answerFor, type Owner, type Sub } from '../../src/router.ts'
import type { Server } from '../../src/server.ts'
import { quote } from '../../src/log.ts'
import { CORRELATION, headersToProps, msgQos, msgRetained, parseReply, REPLY_PREFIX, RETAINED_HEADERS } from './props.ts'
import { matchRetained, retain } from './retained.ts'
import { mqttState, type MqttState } from './state.ts'
import { filterToSubjects, startsWithDollar, subjectToTopic, wildcardFirst } from './topic.ts'

export const RETAINED_GET = '$SPRIG.mqtt.retained.get'
export const RETAIN_PREFIX = '$SPRIG.mqtt.retain.'

const installed = new WeakSet<Server>()

/** Subscribes the adapter's NATS-side services (idempotent). */
export function installServices(srv: Server): void {
  if (installed.has(srv)) return
  installed.add(srv)
  const owner: Owner = { cid: 0, echo: true, deliver: (sub, m, from) => (sub as ServiceSub).handle(srv, m, from) }
  const add = (subject: string, handle: (srv: Server, m: Msg, from: Owner | null) => void): void => {
    srv.router.subscribe({ subject, queue: null, owner, handle } as ServiceSub)
  }
  add(REPLY_PREFIX + '>', republishReply)
  add(RETAINED_GET, retainedGet)
  add(RETAIN_PREFIX + '>', retainSet)
  srv.router.headerHook = (m, from) => retainFromHeader(srv, m, from)
}

/**
 * A NATS publish (from a client or the uplink) with the header `Nmqtt-Retain: 1` sets the
 * retained message of its subject's topic, as an MQTT PUBLISH with the retain flag does (an
 * empty payload deletes it); it is delivered as usual. MQTT publishes keep their own and never
 * get here (Owner.skipsHeaderHook), and sprig's own publishes (from null: the retain service)
 * have stored theirs already.
 */
function retainFromHeader(srv: Server, m: Msg, from: Owner | null): void {
  if (from === null) return
  if (!msgRetained(m)) return
  const st = mqttState(srv)
  const topic = subjectToTopic(m.subject)
  if (topic === null) {
    st.counters.unmappable_subjects++
    srv.log.warn(`retained message on ${quote(m.subject)} not kept: the subject has no MQTT topic form`)
    return
  }
  storeRetained(srv, st, topic, m)
}

/** Keeps a copy of a routed message as its topic's retained message; false when the store is full. */
function storeRetained(srv: Server, st: MqttState, topic: string, m: Msg): boolean {
  // Kept with the message: its headers as MQTT 5 properties (Nmqtt-Expiry ends it), not the
  // reply. Decoded outside the per-message cache, which is then left pointing nowhere.
  const props = headersToProps(st, m.with({ reply: '', seq: -2 }))
  st.propsSeq = -1
  const kept = retain(st.retained, topic, m.subject, m.payload, msgQos(m), props) // retain() keeps a copy
  if (!kept) srv.log.warn(`retained message on ${quote(topic)} not kept: retained store full (mqtt.retained_max_msgs / mqtt.retained_max_bytes)`)
  return kept
}

interface ServiceSub extends Sub {
  handle(srv: Server, m: Msg, from: Owner | null): void
}

/**
 * The subject a service publishes to for a message on `subject`, or null when it publishes
 * none there (for a will's check at CONNECT: the same rule as the services apply).
 */
export function serviceTarget(subject: string): string | null {
  if (subject.startsWith(RETAIN_PREFIX)) return subject.slice(RETAIN_PREFIX.length)
  return parseReply(subject)?.subject ?? null
}

/**
 * May `from`'s message on `m.subject` make a service publish to `target`? If not, the refusal
 * is logged with who and what, counted, and `from` answers its client as for a refused publish.
 */
function permitted(srv: Server, m: Msg, from: Owner | null, target: string, ok = mayPublishAs(from, target)): boolean {
  if (ok) return true
  srv.counters.permission_violations++
  const who = from!.label?.() ?? 'client'
  srv.log.error(`${who} Publish Violation - User ${quote(from!.user ?? '')}, Subject ${quote(target)} (via ${quote(m.subject)})`)
  from!.refused?.(m.subject)
  return false
}

function publish(srv: Server, subject: string, hdr: Uint8Array | null, payload: Uint8Array, reply = '', from: Owner | null = null): void {
  const m = newMsg()
  m.subject = subject
  m.subjectBytes = utf8(subject)
  m.reply = reply
  m.replyBytes = utf8(reply)
  m.hdr = hdr
  m.payload = payload
  srv.router.publish(m, from)
}

/**
 * Answers `from`'s request on its reply subject: only where the requester could publish or
 * read (else refused as its publish), and as the requester's answer (answerFor), so a
 * service the reply subject names checks it too.
 */
function answer(srv: Server, m: Msg, from: Owner | null, body: unknown): void {
  if (m.reply === '' || !permitted(srv, m, from, m.reply, mayAnswer(from, m.reply))) return
  publish(srv, m.reply, null, body instanceof Uint8Array ? body : utf8(JSON.stringify(body)), '', answerFor(from))
}

/** A NATS reply to an MQTT request with Correlation Data: on to the Response Topic, with it. */
function republishReply(srv: Server, m: Msg, from: Owner | null): void {
  const r = parseReply(m.subject)
  if (r === null) return
  // The responder's permissions on the final subject, unless it answered as allow_responses lets it.
  if (!answeredAs(from, m.subject) && !permitted(srv, m, from, r.subject)) return
  const h = m.hdr ? decodeHeaders(m.hdr) : null
  const pairs = (h?.pairs ?? []).filter(([k]) => k !== CORRELATION)
  pairs.push([CORRELATION, r.corr.toString('base64')])
  publish(srv, r.subject, encodeHeaders(pairs, h?.status ?? ''), copyOf(m.payload), m.reply)
}

function retainedGet(srv: Server, m: Msg, from: Owner | null): void {
  if (m.reply === '') return
  const filter = Buffer.from(m.payload).toString('utf8').trim() || '#'
  const subjects = filterToSubjects(filter)
  if (!Array.isArray(subjects)) return answer(srv, m, from, { error: `invalid topic filter ${JSON.stringify(filter)}: ${subjects.error}` })
  const noDollar = wildcardFirst(filter)
  const found = matchRetained(mqttState(srv).retained, subjects, srv.host.now())
    .filter((r) => !(noDollar && startsWithDollar(r.topic)) && mayReceiveAs(from, r.subject))
    .sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0))
  // Messages are added while the reply stays within max_payload (what a client may receive),
  // each encoded once: the work grows with what is sent, not with the size of the store.
  const max = srv.opts.max_payload
  const parts: string[] = []
  let size = '{"messages":[],"truncated":false}'.length
  let truncated = false
  for (const r of found) {
    const one = JSON.stringify({ topic: r.topic, subject: r.subject, qos: r.qos, payload: Buffer.from(r.payload).toString('base64') })
    const add = Buffer.byteLength(one) + (parts.length > 0 ? 1 : 0)
    if (size + add > max) {
      truncated = true
      break
    }
    parts.push(one)
    size += add
  }
  answer(srv, m, from, utf8(`{"messages":[${parts.join(',')}],"truncated":${truncated}}`))
}

function retainSet(srv: Server, m: Msg, from: Owner | null): void {
  const subject = m.subject.slice(RETAIN_PREFIX.length)
  // An answer to a request never sets a retained message: its reply subject was the requester's choice.
  if (!permitted(srv, m, from, subject, from?.answer !== true && mayPublishAs(from, subject))) {
    return answer(srv, m, from, { error: `Permissions Violation for Publish to ${JSON.stringify(subject)}` })
  }
  const topic = subjectToTopic(subject)
  if (topic === null) return answer(srv, m, from, { error: `subject ${JSON.stringify(subject)} has no MQTT topic form` })
  const payload = copyOf(m.payload)
  const hdr = m.hdr ? copyOf(m.hdr) : null
  const reply = m.reply
  const st = mqttState(srv)
  const qos = msgQos(m)
  const kept = storeRetained(srv, st, topic, m.with({ subject }))
  // Like an MQTT retained PUBLISH, it also goes to current subscribers [MQTT-3.3.1-10],
  // marked retained (for Retain As Published).
  let out = RETAINED_HEADERS[qos]!
  if (hdr) {
    const h = decodeHeaders(hdr)
    const pairs = (h?.pairs ?? []).filter(([k]) => k.toLowerCase() !== 'nmqtt-retain')
    pairs.push(['Nmqtt-Retain', '1'])
    out = encodeHeaders(pairs, h?.status ?? '')
  }
  publish(srv, subject, out, payload)
  if (reply !== '') answer(srv, m.with({ reply }), from, kept ? { ok: true } : { error: 'retained store full' })
}

// --- delayed wills ----------------------------------------------------------------------------

interface PendingWill {
  due: number
  fire: () => void
}

const pendingWills = new WeakMap<MqttState, Map<string, PendingWill>>()
const timers = new WeakMap<MqttState, { cancel(): void }>()

/**
 * Holds a will back until `due` (host.now() time). Checked once a second by a timer that
 * exists only while wills wait, and stops with the server.
 */
export function scheduleWill(srv: Server, clientId: string, due: number, fire: () => void): void {
  const st = mqttState(srv)
  let map = pendingWills.get(st)
  if (!map) pendingWills.set(st, (map = new Map()))
  map.set(clientId, { due, fire })
  if (timers.has(st)) return
  const t = srv.host.every(1000, () => {
    const now = srv.host.now()
    // Wills still held back when the server stops are dropped with it.
    const stopped = !srv.running
    for (const [id, w] of map) {
      if (w.due > now && !stopped) continue
      map.delete(id)
      if (!stopped) w.fire()
    }
    if (map.size === 0) {
      t.cancel()
      timers.delete(st)
    }
  })
  timers.set(st, t)
}

/**
 * A client with this id connected: its delayed will is not sent [MQTT-3.1.3-9], or, when the
 * new connection ends the old session (Clean Start), sent now.
 */
export function cancelWill(st: MqttState, clientId: string, sessionEnds = false): void {
  const map = pendingWills.get(st)
  const w = map?.get(clientId)
  if (!w) return
  map!.delete(clientId)
  if (sessionEnds) w.fire()
  else st.persist?.willDone(clientId)
}

/** Client ids whose will is waiting (for tests and monitoring). */
export function pendingWillIds(st: MqttState): string[] {
  return [...(pendingWills.get(st)?.keys() ?? [])]
}
