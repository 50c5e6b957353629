// What each MQTT packet does: one small handler per packet type, called by the connection
// (conn.ts) with the packet mqtt-packet parsed. Spec references are to MQTT 3.1.1 and 5.0;
// where the two differ, the handler says which.

import { Buffer } from 'node:buffer'
import type {
  IConnectPacket,
  IDisconnectPacket,
  IPublishPacket,
  ISubscribePacket,
  ISubscription,
  IUnsubscribePacket,
  Packet,
} from 'mqtt-packet'
import { utf8 } from '../../src/bytes.ts'
import { encodeHeaders } from '../../src/headers.ts'
import { EMPTY, newMsg, type Msg } from '../../src/msg.ts'
import { mqttOptions as mqttOpts } from '../../src/options.ts'
import { identify, refusedUnchecked, type Credentials, type Identity } from '../../src/auth.ts'
import { quote } from '../../src/log.ts'
import { canPublish, canSubscribe, deliveryDenied, needsDeliveryCheck, publishAllowed } from '../../src/permissions.ts'
import type { Owner } from '../../src/router.ts'
import type { MqttConn, MqttSub, QoS, Will } from './conn.ts'
import { matchRetained, retain } from './retained.ts'
import { endParked, recheckSession, resume, roomForSession, takeParked } from './session.ts'
import { expiredAt, keepProps, propsToHeaders, replyFor, unexpired, deliveryProps, type PublishProps } from './props.ts'
import { cancelWill, scheduleWill, serviceTarget } from './services.ts'
import { allowedPart, filterCount, subsOf, withFilter, withoutFilter } from './filters.ts'
import { filterToSubjects, parseShared, startsWithDollar, topicToSubject, wildcardFirst, type TopicError, type TopicLimits } from './topic.ts'

/** `Nmqtt-Pub: <qos>` header blocks (nats-server's header name), built once. */
export const QOS_HEADERS: readonly Uint8Array[] = [0, 1, 2].map((q) => encodeHeaders([['Nmqtt-Pub', String(q)]]))

// MQTT 5 reason codes used here.
const RC = {
  success: 0x00,
  noSubscriptionExisted: 0x11,
  unspecified: 0x80,
  malformed: 0x81,
  protocolError: 0x82,
  clientIdInvalid: 0x85,
  badUserOrPassword: 0x86,
  notAuthorized: 0x87,
  badAuthMethod: 0x8c,
  filterInvalid: 0x8f,
  topicNameInvalid: 0x90,
  receiveMaxExceeded: 0x93,
  topicAliasInvalid: 0x94,
  packetTooLarge: 0x95,
  quotaExceeded: 0x97,
  unsupportedVersion: 0x84,
} as const

/** A will with its MQTT 5 extras: Will Delay Interval (ms) and properties. */
interface FullWill extends Will {
  delay: number
  props?: PublishProps
}

/** Topic aliases a client has set (MQTT 5 §3.3.2.3.4), per connection; only for those that use them. */
const aliases = new WeakMap<MqttConn, Map<number, string>>()

const limitsCache = new WeakMap<object, TopicLimits>()

/** The configured topic limits, in the form topic.ts takes (built once per options object). */
function limits(c: MqttConn): TopicLimits {
  const o = mqttOpts(c.srv.opts)
  let lim = limitsCache.get(o)
  if (!lim) {
    lim = { maxLength: o.max_topic_length, ...(o.max_topic_levels > 0 ? { maxLevels: o.max_topic_levels } : {}) }
    limitsCache.set(o, lim)
  }
  return lim
}

/** A clear description of a refused topic, naming the limit when one was passed. */
function why(c: MqttConn, error: string): string {
  const o = mqttOpts(c.srv.opts)
  if (error === 'too_long') return `too_long (mqtt.max_topic_length is ${o.max_topic_length} bytes)`
  if (error === 'too_deep') return `too_deep (mqtt.max_topic_levels is ${o.max_topic_levels})`
  return error
}

// --- before the parser: the protocol level ----------------------------------------------------

/**
 * Looks at the start of the first packet: it must be CONNECT [MQTT-3.1.0-1] naming "MQTT"
 * [MQTT-3.1.2-1]; a level other than 4 (3.1.1) or 5 gets CONNACK 0x01 (3.1.1's "unacceptable
 * protocol version") or, for levels above 5, 0x84 in 5.0's format, then a close
 * [MQTT-3.1.2-2]. 'more' until enough bytes arrived.
 */
export function checkConnectHeader(c: MqttConn, b: Uint8Array): 'more' | 'ok' | 'refused' {
  const refuse = (why: string): 'refused' => {
    c.srv.log.error(`${c.label()} mqtt connect refused: ${why}`)
    c.teardown(why, true)
    return 'refused'
  }
  if (b.length === 0) return 'more'
  if (b[0] !== 0x10) return refuse('first packet is not CONNECT')
  let i = 1
  for (;;) {
    if (i >= b.length) return 'more'
    if ((b[i++]! & 0x80) === 0) break
    if (i > 4) return refuse('malformed remaining length')
  }
  if (b.length < i + 2) return 'more'
  const n = (b[i]! << 8) | b[i + 1]!
  if (n !== 4 && n !== 6) return refuse('bad protocol name')
  if (b.length < i + 3 + n) return 'more'
  const name = String.fromCharCode(...b.subarray(i + 2, i + 2 + n))
  const level = b[i + 2 + n]!
  if (name !== 'MQTT' && name !== 'MQIsdp') return refuse('bad protocol name')
  if (name === 'MQTT' && (level === 4 || level === 5)) {
    // Known before the CONNECT is read: a malformed one is refused in its version's format.
    c.version = level
    return 'ok'
  }
  // The refusal goes out in the format the client can read: 3.1.1's for older levels.
  c.out.push(level > 5 ? new Uint8Array([0x20, 3, 0, RC.unsupportedVersion, 0]) : new Uint8Array([0x20, 2, 0, 0x01]))
  return refuse(`unsupported protocol ${name} level ${level}`)
}

// --- dispatch ---------------------------------------------------------------------------------

type Handler = (c: MqttConn, p: Packet) => void

const PINGRESP: Packet = { cmd: 'pingresp' }

const HANDLERS: Partial<Record<Packet['cmd'], Handler>> = {
  connect: (c, p) => onConnect(c, p as IConnectPacket),
  publish: (c, p) => onPublish(c, p as IPublishPacket),
  puback: (c, p) => onPuback(c, p.messageId ?? 0),
  pubrec: (c, p) => onPubrec(c, p.messageId ?? 0),
  pubrel: (c, p) => onPubrel(c, p.messageId ?? 0),
  pubcomp: (c, p) => onPubcomp(c, p.messageId ?? 0),
  subscribe: (c, p) => onSubscribe(c, p as ISubscribePacket),
  unsubscribe: (c, p) => onUnsubscribe(c, p as IUnsubscribePacket),
  pingreq: (c) => c.send(PINGRESP), // [MQTT-3.12.4-1]
  disconnect: (c, p) => onDisconnect(c, p as IDisconnectPacket),
}

export function onPacket(c: MqttConn, p: Packet): void {
  if (c.done) return
  const q = held.get(c)
  if (q) return holdPacket(c, q, p)
  if (p.cmd === 'connect') {
    if (c.connected) return c.protocolError('second CONNECT', RC.protocolError) // [MQTT-3.1.0-2]
  } else if (!c.connected) {
    return c.protocolError(`${p.cmd} before CONNACK`, RC.protocolError)
  }
  const h = HANDLERS[p.cmd]
  // Server-to-client packets, and AUTH (no enhanced authentication offered), end the connection.
  if (!h) return c.protocolError(`unexpected ${p.cmd}`, RC.protocolError)
  h(c, p)
}

/**
 * A PUBACK read by hand (conn.ts): onPacket's checks, without a packet object per QoS 1
 * message unless one must be held or refused.
 */
export function onPubackIn(c: MqttConn, pid: number): void {
  if (c.done) return
  if (!c.connected || held.has(c)) return onPacket(c, { cmd: 'puback', messageId: pid })
  onPuback(c, pid)
}

// --- CONNECT ----------------------------------------------------------------------------------

function connack(c: MqttConn, code4: number, code5: number, props?: Record<string, unknown>, sessionPresent = false): void {
  c.send({ cmd: 'connack', returnCode: code4, reasonCode: code5, sessionPresent, ...(props && c.version === 5 ? { properties: props } : {}) })
}

function refuseConnect(c: MqttConn, code4: number, code5: number, why: string): void {
  c.srv.log.error(`${c.label()} mqtt connect refused: ${why}`)
  connack(c, code4, code5)
  c.teardown(why, false)
}

function onConnect(c: MqttConn, p: IConnectPacket): void {
  c.version = p.protocolVersion === 5 ? 5 : 4
  const props = p.properties ?? {}
  if (props.authenticationMethod !== undefined) return refuseConnect(c, 0x05, RC.badAuthMethod, 'enhanced authentication')
  // The same users as NATS: username/password, or a token as the password.
  const pass = p.password ? p.password.toString() : undefined
  const creds: Credentials =
    p.username === undefined && pass === undefined ? NO_CREDS : { ...(p.username !== undefined ? { user: p.username } : {}), ...(pass !== undefined ? { pass, token: pass } : {}) }
  const who = identify(c.srv, 'mqtt', c.wire, creds, () => !c.done)
  if (!(who instanceof Promise)) return admit(c, p, creds, who)
  // A bcrypt hash: packets behind CONNECT wait until it is checked.
  held.set(c, { packets: [], bytes: 0 })
  void who.then((v) => {
    const q = held.get(c)
    held.delete(c)
    admit(c, p, creds, v)
    for (const pk of q?.packets ?? []) onPacket(c, pk)
  })
}

/**
 * Credentials kept per connection, to check again on reload. A connection that sent none
 * has no entry (most devices on an open broker): it is checked with NO_CREDS.
 */
const credsOf = new WeakMap<MqttConn, Credentials>()
const NO_CREDS: Credentials = Object.freeze({})

/** Packets that arrived while CONNECT's password hash was being checked. */
const held = new WeakMap<MqttConn, { packets: Packet[]; bytes: number }>()

function holdPacket(c: MqttConn, q: { packets: Packet[]; bytes: number }, p: Packet): void {
  // A PUBLISH's payload may be a view of the read buffer: keep a copy.
  if (p.cmd === 'publish') p = { ...p, payload: Buffer.from(p.payload) }
  q.bytes += 32 + (p.cmd === 'publish' ? p.payload.length : 0)
  if (q.bytes > c.srv.opts.max_pending) {
    c.srv.log.error(`${c.label()} mqtt too much sent while authenticating (max_pending)`)
    return c.teardown('Slow Consumer', false)
  }
  q.packets.push(p)
}

function setIdentity(c: MqttConn, id: Identity): void {
  c.user = id.user
  c.perms = id.perms
  c.replies = id.perms?.responses ? (c.replies ?? new Map()) : null
}

function admit(c: MqttConn, p: IConnectPacket, creds: Credentials, who: Identity | null): void {
  if (c.done) return
  if (who === null) {
    const user = creds.user ? ` - User ${quote(creds.user)}` : ''
    if (refusedUnchecked(creds)) {
      // Too many password checks waiting: refused as a wrong password is; the queue logs the episode.
      c.srv.log.debug(() => `${c.label()} mqtt connect refused unchecked: too many password checks waiting${user}`)
      connack(c, 0x04, RC.badUserOrPassword)
      return c.teardown('authentication error', false)
    }
    return refuseConnect(c, 0x04, RC.badUserOrPassword, `authentication error${user}`)
  }
  if (creds !== NO_CREDS) credsOf.set(c, creds)
  setIdentity(c, who)
  accept(c, p)
}

/**
 * After a config reload: checks the credentials again (a client that no longer passes is
 * disconnected) and applies the new permissions: filters they now refuse are removed.
 */
export function reauthorize(c: MqttConn): void {
  if (c.done || !c.connected) return
  const creds = credsOf.get(c) ?? NO_CREDS
  const apply = (who: Identity | null): void => {
    if (c.done) return
    if (who === null) {
      c.srv.log.error(`${c.label()} mqtt authentication error after reload${creds.user ? ` - User ${quote(creds.user)}` : ''}`)
      return c.disconnect(RC.notAuthorized, 'Authorization Violation')
    }
    setIdentity(c, who)
    recheckSession(c, c.srv.router, c.st, who.perms, (filter) =>
      c.srv.log.info(`Removed sub ${quote(filter)} for User ${quote(c.user)} - not authorized`),
    )
  }
  const who = identify(c.srv, 'mqtt', c.wire, creds, () => !c.done, true)
  if (who instanceof Promise) void who.then(apply)
  else apply(who)
}

/** CONNECT with accepted credentials. */
function accept(c: MqttConn, p: IConnectPacket): void {
  const srv = c.srv
  const props = p.properties ?? {}
  let id = p.clientId
  let assigned = false
  if (id === '') {
    // 3.1.1: a zero-length id only with a clean session [MQTT-3.1.3-7] [MQTT-3.1.3-8].
    if (c.version === 4 && !p.clean) return refuseConnect(c, 0x02, RC.clientIdInvalid, 'empty client id without clean session')
    id = `sprig-${srv.id.slice(-8)}-${c.cid}-${Math.random().toString(36).slice(2, 8)}` // [MQTT-3.1.3-6]
    assigned = true
  }
  let will: Will | null = null
  if (p.will) {
    const subject = topicToSubject(p.will.topic, limits(c))
    if (typeof subject !== 'string') {
      // 5.0 has a code for it; 3.1.1 has none that fits, so it only closes.
      c.srv.log.error(`${c.label()} mqtt invalid will topic ${quote(p.will.topic)}: ${why(c, subject.error)}`)
      if (c.version === 4) return c.teardown(`invalid will topic: ${subject.error}`, false)
      return refuseConnect(c, 0, RC.topicNameInvalid, `invalid will topic: ${subject.error}`)
    }
    // A will is a publish: one the user may not make is refused at CONNECT, and so is one a
    // service would turn into a publish the user may not make ($SPRIG/mqtt/retain/...).
    const target = serviceTarget(subject)
    if (c.perms !== null && (!publishAllowed(c.perms, null, subject, srv.host.now()) || (target !== null && !canPublish(c.perms, target)))) {
      srv.counters.permission_violations++
      return refuseConnect(c, 0x05, RC.notAuthorized, `Publish Violation - User ${quote(c.user)}, will Subject ${quote(subject)}`)
    }
    const payload = typeof p.will.payload === 'string' ? Buffer.from(p.will.payload) : p.will.payload
    const wp = (p.will.properties ?? {}) as PublishProps & { willDelayInterval?: number }
    const { willDelayInterval, ...rest } = wp
    const fw: FullWill = {
      topic: p.will.topic,
      subject,
      payload,
      qos: (p.will.qos ?? 0) as QoS,
      retain: p.will.retain === true,
      delay: c.version === 5 ? (willDelayInterval ?? 0) * 1000 : 0,
      ...(c.version === 5 && Object.keys(rest).length > 0 ? { props: rest } : {}),
    }
    will = fw
  }
  c.clientId = id
  c.will = will
  c.keepalive = (p.keepalive ?? 0) * 1000
  const o = mqttOpts(srv.opts)
  // Server Keep Alive: an MQTT 5 client asking for more than max_keepalive (or for none) is
  // told the maximum, and must use it [MQTT-3.2.2-21]; otherwise its own value applies
  // [MQTT-3.2.2-22]. A 3.1.1 client cannot be told, so it keeps its own.
  let serverKeepAlive: number | undefined
  if (c.version === 5 && o.max_keepalive > 0 && (c.keepalive === 0 || c.keepalive > o.max_keepalive)) {
    serverKeepAlive = Math.min(65535, Math.max(1, Math.floor(o.max_keepalive / 1000)))
    c.keepalive = serverKeepAlive * 1000
  }
  if (props.receiveMaximum) c.maxInflight = Math.min(c.maxInflight, props.receiveMaximum)
  if (props.maximumPacketSize) c.maxOutPacket = props.maximumPacketSize
  // The client's Topic Alias Maximum: how many aliases sprig may give it [MQTT-3.3.2-11] (aliases.ts).
  if (c.version === 5 && props.topicAliasMaximum) c.aliasMax = props.topicAliasMaximum
  // 3.1.1: clean session 0 persists (until session_expiry); 5.0: Session Expiry Interval,
  // capped at session_expiry, and the CONNACK then says so.
  let expiryProp: number | undefined
  if (c.version === 4) c.sessionExpiry = p.clean === false ? o.session_expiry : 0
  else {
    const asked = props.sessionExpiryInterval ?? 0
    const ms = asked === 0xffffffff ? Infinity : asked * 1000
    c.sessionExpiry = Math.min(ms, o.session_expiry)
    if (ms > o.session_expiry) expiryProp = Math.floor(o.session_expiry / 1000)
  }
  const st = c.st
  const holder = st.clients.get(id)
  // A new persistent session (one that replaces none) must fit under max_sessions (session.ts).
  if (c.sessionExpiry > 0 && !st.sessions.has(id) && !(holder !== undefined && st.persistent.has(holder)) && !roomForSession(srv, st, o.max_sessions)) {
    st.counters.sessions_refused++
    return refuseConnect(c, 0x03, RC.quotaExceeded, `maximum sessions (${o.max_sessions}) reached (mqtt.max_sessions), none parked`)
  }
  // Session takeover: the older connection with this id goes [MQTT-3.1.4-2] (parking its
  // session if it was persistent, so it can be picked up right below).
  holder?.takeover()
  st.clients.set(id, c)
  let parked = takeParked(st, id)
  // A session belongs to the identity that made it: another one gets a clean session, and
  // the old session ends (its subscriptions and messages never reach the newcomer).
  const foreign = parked !== null && parked.user !== c.user
  if (parked && foreign) {
    srv.log.warn(`${c.label()} mqtt session ${quote(id)} of User ${quote(parked.user)} ended: client id taken by User ${quote(c.user)}`)
    st.counters.sessions_foreign++
  }
  // Clean session / Clean Start: any previous session is discarded [MQTT-3.1.2-6] (5.0: [MQTT-3.1.2-4]).
  if (parked && (foreign || p.clean !== false)) {
    endParked(parked)
    parked = null
  }
  // A delayed will of this session is not sent once the client is back [MQTT-3.1.3-9];
  // when the old session ends here, a will waiting for that goes now.
  cancelWill(st, id, p.clean !== false || foreign)
  if (c.sessionExpiry > 0) st.persistent.add(c)
  c.connected = true
  // 3.1.1 CONNACKs carry no properties: not even built for them.
  connack(c, 0, RC.success, c.version === 4 ? undefined : {
    ...(expiryProp !== undefined ? { sessionExpiryInterval: expiryProp } : {}),
    receiveMaximum: o.max_ack_pending,
    maximumPacketSize: srv.opts.max_payload + 64 * 1024,
    retainAvailable: o.retained_max_msgs > 0,
    wildcardSubscriptionAvailable: true,
    subscriptionIdentifiersAvailable: true,
    ...(o.topic_alias_maximum > 0 ? { topicAliasMaximum: o.topic_alias_maximum } : {}),
    ...(serverKeepAlive !== undefined ? { serverKeepAlive } : {}),
    sharedSubscriptionAvailable: true,
    ...(assigned ? { assignedClientIdentifier: id } : {}), // MQTT 5 §3.2.2.3.7
  }, parked !== null) // session present [MQTT-3.2.2-2]
  srv.log.debug(() => `${c.label()} mqtt ${c.version === 5 ? '5.0' : '3.1.1'} client connected${parked ? ', session resumed' : ''}`)
  if (parked) resume(c, parked)
}

// --- PUBLISH in -------------------------------------------------------------------------------

function onPublish(c: MqttConn, p: IPublishPacket): void {
  let topic = p.topic
  const alias = p.properties?.topicAlias
  if (alias !== undefined) {
    // Topic Alias (5.0 §3.3.2.3.4): 0 or more than our Topic Alias Maximum is invalid
    // [MQTT-3.3.2-8] [MQTT-3.3.2-9]; a topic name sets the alias, an empty one uses it.
    const max = mqttOpts(c.srv.opts).topic_alias_maximum
    if (alias === 0 || alias > max) {
      c.srv.log.error(`${c.label()} mqtt topic alias ${alias} outside 1..${max} (mqtt.topic_alias_maximum)`)
      return c.disconnect(RC.topicAliasInvalid, 'Topic Alias Invalid')
    }
    let map = aliases.get(c)
    if (topic === '') {
      const known = map?.get(alias)
      if (known === undefined) return c.protocolError(`unknown topic alias ${alias}`, RC.protocolError)
      topic = known
    } else {
      if (!map) aliases.set(c, (map = new Map()))
      map.set(alias, topic)
    }
  }
  const subject = publishSubject(topic, limits(c))
  if (typeof subject !== 'string') {
    // Wildcards or an invalid name [MQTT-3.3.2-2]: 3.1.1 closes, 5.0 says 0x90 first.
    c.srv.log.error(`${c.label()} mqtt publish to invalid topic ${quote(topic)}: ${why(c, subject.error)}`)
    return c.disconnect(RC.topicNameInvalid, 'Invalid Publish Topic')
  }
  // A Response Topic must be a topic name, without wildcards [MQTT-3.3.2-14].
  const reply = c.version === 5 ? replyFor(p.properties) : ''
  if (reply === null) return c.protocolError(`invalid response topic ${quote(String(p.properties?.responseTopic))}`, RC.protocolError)
  const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload
  if (payload.length > c.srv.opts.max_payload) {
    c.srv.log.error(`${c.label()} mqtt payload of ${payload.length} bytes over max_payload`)
    return c.disconnect(RC.packetTooLarge, 'Max Payload Exceeded')
  }
  const qos = p.qos
  const pid = p.messageId ?? 0
  if (c.perms !== null && !publishAllowed(c.perms, c.replies, subject, c.srv.host.now())) return refusePublish(c, subject, qos, pid)
  if (qos === 2) {
    // Exactly once, method A: route at PUBLISH, remember the id until PUBREL so a resent
    // PUBLISH (DUP) is only acknowledged again [MQTT-4.3.3-2].
    if (!c.qos2In.has(pid)) {
      if (c.qos2In.size >= mqttOpts(c.srv.opts).max_ack_pending) return c.disconnect(RC.receiveMaxExceeded, 'Receive Maximum Exceeded')
      c.qos2In.add(pid)
      const dropped = c.srv.spoolDrops
      if (!route(c, topic, subject, payload, 2, p.retain, p.properties, reply)) {
        c.qos2In.delete(pid) // refused: no PUBREL follows a PUBREC with 0x87
        return refusedAck(c, 2, pid)
      }
      if (c.srv.spoolDrops !== dropped && c.version === 5) {
        c.qos2In.delete(pid) // the full store dropped it: 0x97, and no PUBREL follows
        return void c.send({ cmd: 'pubrec', messageId: pid, reasonCode: RC.quotaExceeded })
      }
    }
    // With a store, acknowledged once what the publish wrote there is synced (the policy's rule).
    c.srv.afterStored(() => c.send({ cmd: 'pubrec', messageId: pid }))
    return
  }
  const dropped = c.srv.spoolDrops
  if (!route(c, topic, subject, payload, qos, p.retain, p.properties, reply)) return refusedAck(c, qos, pid)
  // The store was full (max_bytes or the disk) and dropped this message: 5.0 says so.
  if (qos === 1 && c.srv.spoolDrops !== dropped && c.version === 5) return void c.send({ cmd: 'puback', messageId: pid, reasonCode: RC.quotaExceeded })
  if (qos === 1) c.srv.afterStored(() => c.send({ cmd: 'puback', messageId: pid })) // [MQTT-4.3.2-2]
}

// The last PUBLISH topic mapped, with the limits it passed: publishers tend to repeat one.
let pubTopic = ''
let pubLimits: TopicLimits | null = null
let pubSubject = ''

/** topicToSubject for a PUBLISH topic name, mapping a repeated one only once. */
function publishSubject(topic: string, lim: TopicLimits): string | TopicError {
  if (topic === pubTopic && lim === pubLimits) return pubSubject
  const subject = topicToSubject(topic, lim)
  if (typeof subject === 'string') {
    pubTopic = topic
    pubLimits = lim
    pubSubject = subject
  }
  return subject
}

/**
 * A publish the user's permissions refuse: not routed (nor retained). MQTT 5 says so with
 * reason 0x87 in PUBACK/PUBREC; QoS 0, and 3.1.1 (which has no refusal code), are
 * acknowledged as usual and dropped, which the specifications allow.
 */
function refusePublish(c: MqttConn, subject: string, qos: QoS, pid: number): void {
  c.srv.counters.permission_violations++
  c.srv.log.error(`${c.label()} Publish Violation - User ${quote(c.user)}, Subject ${quote(subject)}`)
  refusedAck(c, qos, pid)
}

/** The acknowledgement of a refused PUBLISH (see refusePublish). */
function refusedAck(c: MqttConn, qos: QoS, pid: number): void {
  const rc = c.version === 5 ? { reasonCode: RC.notAuthorized } : {}
  if (qos === 1) c.send({ cmd: 'puback', messageId: pid, ...rc })
  else if (qos === 2) c.send({ cmd: 'pubrec', messageId: pid, ...rc })
}

/** The connection whose PUBLISH a service refused while it was being routed (see route). */
let refusedConn: MqttConn | null = null

/** A service refused what c's PUBLISH asked of it (it logged and counted that already). */
export function publishRefused(c: MqttConn): void {
  if (c.publishing) refusedConn = c
}

/**
 * Hands an MQTT message to the router as a NATS message; keeps it if retained. False when a
 * service refused it ($SPRIG/mqtt/retain/... to a topic the user may not publish to).
 */
function route(c: MqttConn, topic: string, subject: string, payload: Uint8Array, qos: QoS, retained: boolean, props: PublishProps | undefined, reply: string): boolean {
  const v5props = c.version === 5 ? props : undefined
  if (retained) retain(c.st.retained, topic, subject, payload, qos, keepProps(v5props, c.srv.host.now()))
  // A retained message with an empty payload only deletes; it still goes to current
  // subscribers as a normal message [MQTT-3.3.1-10].
  const m = c.msg ?? (c.msg = newMsg())
  // The Msg is this connection's own and nothing changes its bytes: a publisher that repeats
  // its subject (and reply) keeps the encoded bytes of the last one.
  if (m.subject !== subject) {
    m.subject = subject
    m.subjectBytes = utf8(subject)
  }
  m.hdr = propsToHeaders(qos, v5props, retained) ?? QOS_HEADERS[qos]!
  m.payload = payload
  if (m.reply !== reply) {
    m.reply = reply // the Response Topic, as props.ts maps it
    m.replyBytes = reply === '' ? EMPTY : utf8(reply)
  }
  c.publishing = true
  try {
    c.srv.router.publish(m, c)
  } finally {
    c.publishing = false
  }
  if (refusedConn !== c) return true
  refusedConn = null
  return false
}

/**
 * Publishes a will: on abrupt close [MQTT-3.1.2-8], never after DISCONNECT [MQTT-3.1.2-10].
 * An MQTT 5 Will Delay Interval holds it back until the delay or the session ends, whichever
 * comes first (5.0 §3.1.3.2.2); a reconnect before then cancels it [MQTT-3.1.3-9].
 */
export function publishWill(c: MqttConn, w: Will): void {
  const fw = w as FullWill
  const now = c.srv.host.now()
  const wait = Math.min(fw.delay ?? 0, c.sessionExpiry)
  // Published as the client that set it (the services check its permissions), after it is gone.
  const by: Owner & { kind: 'mqtt' } = { cid: c.cid, kind: 'mqtt', echo: true, user: c.user, perms: c.perms, label: () => c.label(), deliver() {} }
  if (wait > 0) return scheduleWill(c.srv, c.clientId, now + wait, () => sendWill(c.srv, c.st, fw, by))
  sendWill(c.srv, c.st, fw, by)
}

function sendWill(srv: MqttConn['srv'], st: MqttConn['st'], w: FullWill, by: Owner): void {
  // Runs from a socket's close or a timer: a failure is logged and ends nothing else.
  try {
    publishWillNow(srv, st, w, by)
  } catch (e) {
    srv.log.error(`mqtt will on ${quote(w.topic)} not published: ${(e as Error).message}`)
  }
}

function publishWillNow(srv: MqttConn['srv'], st: MqttConn['st'], w: FullWill, by: Owner): void {
  st.counters.wills++
  const reply = replyFor(w.props)
  const props = keepProps(w.props, srv.host.now())
  if (w.retain) retain(st.retained, w.topic, w.subject, w.payload, w.qos, props)
  const m: Msg = newMsg()
  m.subject = w.subject
  m.subjectBytes = utf8(w.subject)
  m.hdr = propsToHeaders(w.qos, props, w.retain) ?? QOS_HEADERS[w.qos]!
  m.payload = w.payload
  if (reply) {
    m.reply = reply
    m.replyBytes = utf8(reply)
  }
  srv.router.publish(m, by)
}

// --- acknowledgements -------------------------------------------------------------------------

function onPuback(c: MqttConn, pid: number): void {
  const o = c.inflight.get(pid)
  if (o && o.qos === 1) c.acked(pid)
}

/** QoS 2 out, step 2: the client has it; release it [MQTT-4.3.3-1]. */
function onPubrec(c: MqttConn, pid: number): void {
  const o = c.inflight.get(pid)
  if (o && o.qos === 2) o.released = true
  c.send({ cmd: 'pubrel', messageId: pid, ...(o || c.version === 4 ? {} : { reasonCode: 0x92 }) })
}

/** QoS 2 out, done. */
function onPubcomp(c: MqttConn, pid: number): void {
  const o = c.inflight.get(pid)
  if (o && o.qos === 2) c.acked(pid)
}

/** QoS 2 in, step 3: forget the id, so it may be reused for a new message. */
function onPubrel(c: MqttConn, pid: number): void {
  const known = c.qos2In.delete(pid)
  c.send({ cmd: 'pubcomp', messageId: pid, ...(known || c.version === 4 ? {} : { reasonCode: 0x92 }) })
}

// --- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------------

function onSubscribe(c: MqttConn, p: ISubscribePacket): void {
  const granted: number[] = []
  const fresh: { sub: MqttSub; subjects: string[]; rh: number; isNew: boolean }[] = []
  // Identifier 0, or no filter at all, never gets here (malformed.ts).
  const subId = c.version === 5 ? p.properties?.subscriptionIdentifier : undefined
  for (const s of p.subscriptions) {
    const r = addSub(c, s, subId)
    if (typeof r === 'number') granted.push(r)
    else if (r === null) return // the connection was closed
    else {
      granted.push(r.sub.qos)
      fresh.push(r)
    }
  }
  c.send({ cmd: 'suback', messageId: p.messageId, granted }) // [MQTT-3.8.4-1]
  // Retained messages follow the SUBACK, with the retain flag set [MQTT-3.3.1-6]; MQTT 5
  // Retain Handling 1 sends them only for a new subscription, 2 never; none for shared ones.
  for (const f of fresh) {
    if (f.sub.queue !== null || f.rh === 2 || (f.rh === 1 && !f.isNew)) continue
    const now = c.srv.host.now()
    for (const r of matchRetained(c.st.retained, f.subjects, now)) {
      if (f.sub.noDollar && startsWithDollar(r.topic)) continue
      if (f.sub.denyCheck !== undefined && deliveryDenied(f.sub.denyCheck, r.subject, f.sub.queue)) continue
      const qos = Math.min(r.qos, f.sub.qos) as QoS
      const o = {
        topic: r.topic,
        payload: Buffer.from(r.payload.buffer, r.payload.byteOffset, r.payload.byteLength),
        qos,
        retain: true,
        released: false,
        props: c.version === 5 ? deliveryProps(r.props, f.sub) : undefined,
      }
      // The remaining Message Expiry Interval goes with it [MQTT-3.3.2-6].
      if (expiredAt(r.props, now) || !unexpired(o, now)) continue
      c.enqueue(o)
    }
  }
}

/** One filter: its router subscriptions, or a failure code for SUBACK, or null if closed. */
function addSub(c: MqttConn, s: ISubscription, subId: number | undefined): { sub: MqttSub; subjects: string[]; rh: number; isNew: boolean } | number | null {
  const fail = c.version === 5 ? RC.filterInvalid : 0x80
  const lim = limits(c)
  const shared = parseShared(s.topic, lim)
  let subjects: string[]
  let queue: string | null = null
  let filter = s.topic
  const refused = (e: string): number => {
    c.srv.log.error(`${c.label()} mqtt subscribe to invalid filter ${quote(s.topic)}: ${why(c, e)}`)
    return fail
  }
  if (shared === null) {
    const r = filterToSubjects(s.topic, lim)
    if (!Array.isArray(r)) return refused(r.error)
    subjects = r
  } else if ('error' in shared) {
    return refused(shared.error)
  } else {
    // No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4].
    if (s.nl) {
      c.disconnect(RC.protocolError, 'No Local on a shared subscription')
      return null
    }
    subjects = shared.subjects
    queue = shared.group
    filter = shared.filter
  }
  if (c.perms !== null) {
    const perms = c.perms
    const ok = allowedPart(subjects, (x) => canSubscribe(perms, x, queue))
    if (ok === null) {
      const q = queue === null ? '' : `, Queue: ${quote(queue)}`
      c.srv.counters.permission_violations++
      c.srv.log.error(`${c.label()} Subscription Violation - User ${quote(c.user)}, Subject ${quote(subjects[0] ?? '')}${q}, filter ${quote(s.topic)}`)
      return c.version === 5 ? RC.notAuthorized : 0x80
    }
    subjects = ok
  }
  const old = subsOf(c.subs, s.topic)
  const max = mqttOpts(c.srv.opts).max_subscriptions || c.srv.opts.max_subscriptions
  if (!old && max > 0 && filterCount(c.subs) >= max) {
    // 5.0: Quota Exceeded; 3.1.1 has only Failure [MQTT-3.9.3-1].
    c.srv.log.error(`${c.label()} mqtt subscribe to ${quote(s.topic)} refused: maximum subscriptions (${max}) exceeded`)
    return c.version === 5 ? RC.quotaExceeded : 0x80
  }
  // The same filter again replaces the old subscription [MQTT-3.8.4-3].
  if (old) for (const x of old) c.srv.router.unsubscribe(x)
  const base = {
    queue,
    owner: c,
    filter: s.topic,
    qos: s.qos,
    noDollar: wildcardFirst(filter),
    noLocal: s.nl === true,
    rap: c.version === 5 && s.rap === true,
    ...(subId !== undefined ? { subId } : {}),
  }
  const list: MqttSub[] = subjects.map((subject) => (needsDeliveryCheck(c.perms, subject) ? { ...base, subject, denyCheck: c.perms! } : { ...base, subject }))
  c.subs = withFilter(c.subs, s.topic, list)
  for (const x of list) c.srv.router.subscribe(x)
  return { sub: list[0]!, subjects, rh: s.rh ?? 0, isNew: !old }
}

function onUnsubscribe(c: MqttConn, p: IUnsubscribePacket): void {
  const codes: number[] = []
  for (const f of p.unsubscriptions) {
    const list = subsOf(c.subs, f)
    if (list) {
      for (const s of list) c.srv.router.unsubscribe(s)
      c.subs = withoutFilter(c.subs, f)
    }
    codes.push(list ? RC.success : RC.noSubscriptionExisted)
  }
  c.send({ cmd: 'unsuback', messageId: p.messageId, granted: c.version === 5 ? codes : [] }) // [MQTT-3.10.4-4]
}

// --- DISCONNECT -------------------------------------------------------------------------------

function onDisconnect(c: MqttConn, p: IDisconnectPacket): void {
  const se = p.properties?.sessionExpiryInterval
  if (se !== undefined) {
    // Turning a clean session persistent at DISCONNECT is a Protocol Error (5.0 §3.14.2.2.2).
    if (c.sessionExpiry === 0 && se > 0) return c.protocolError('session expiry set at DISCONNECT', RC.protocolError)
    c.sessionExpiry = Math.min(se === 0xffffffff ? Infinity : se * 1000, mqttOpts(c.srv.opts).session_expiry)
  }
  // MQTT 5 reason 0x04 "Disconnect with Will Message" keeps the will; otherwise it is
  // discarded [MQTT-3.14.4-3].
  const keepWill = c.version === 5 && p.reasonCode === 0x04
  c.teardown('Client Disconnect', keepWill)
}
