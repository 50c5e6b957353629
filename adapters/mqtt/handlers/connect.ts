// CONNECT: credentials (src/lifecycle.ts login, the same users as NATS), the will, keepalive,
// MQTT 5 limits both ways, the client id and its session (takeover, parked sessions,
// mqtt.max_sessions), then CONNACK.

import { Buffer } from 'node:buffer'
import type { IConnectPacket } from 'mqtt-packet'
import type { Credentials, Identity } from '../../../src/auth.ts'
import { NO_CREDS } from '../../../src/lifecycle.ts'
import { quote } from '../../../src/log.ts'
import { mqttOptions as mqttOpts } from '../../../src/options.ts'
import { canPublish, publishAllowed } from '../../../src/permissions.ts'
import type { MqttConn } from '../conn.ts'
import type { QoS, Will } from '../delivery.ts'
import type { PublishProps } from '../props.ts'
import { cancelWill, serviceTarget } from '../services.ts'
import { endParked, roomForSession, takeParked } from '../session.ts'
import { topicToSubject } from '../topic.ts'
import { limits, RC, why } from './common.ts'

function connack(c: MqttConn, code4: number, code5: number, props?: Record<string, unknown>, sessionPresent = false): void {
  c.send({ cmd: 'connack', returnCode: code4, reasonCode: code5, sessionPresent, ...(props && c.version === 5 ? { properties: props } : {}) })
}

function refuseConnect(c: MqttConn, code4: number, code5: number, why: string): void {
  c.srv.log.error(`${c.label()} mqtt connect refused: ${why}`)
  connack(c, code4, code5)
  c.teardown(why, false)
}

export function onConnect(c: MqttConn, p: IConnectPacket): void {
  const props = p.properties ?? {}
  if (props.authenticationMethod !== undefined) return refuseConnect(c, 0x05, RC.badAuthMethod, 'enhanced authentication')
  // The same users as NATS: username/password, or a token as the password.
  const pass = p.password ? p.password.toString() : undefined
  const creds: Credentials =
    p.username === undefined && pass === undefined ? NO_CREDS : { ...(p.username !== undefined ? { user: p.username } : {}), ...(pass !== undefined ? { pass, token: pass } : {}) }
  // A bcrypt hash: packets behind CONNECT wait until it is checked (handlers/index.ts).
  c.login(creds, (who) => admit(c, p, creds, who))
}

function admit(c: MqttConn, p: IConnectPacket, creds: Credentials, who: Identity | null): void {
  if (who !== null) return accept(c, p)
  const r = c.refusal(creds)
  if (r.unchecked) {
    // Too many password checks waiting: refused as a wrong password is; the queue logs the episode.
    c.srv.log.debug(() => `${c.label()} mqtt connect refused unchecked: too many password checks waiting${r.user}`)
    connack(c, 0x04, RC.badUserOrPassword)
    return c.teardown('authentication error', false)
  }
  refuseConnect(c, 0x04, RC.badUserOrPassword, `authentication error${r.user}`)
}

/** The will a CONNECT sets, or null; undefined when it is refused (and the connection closed). */
function willOf(c: MqttConn, p: IConnectPacket): Will | null | undefined {
  if (!p.will) return null
  const srv = c.srv
  const subject = topicToSubject(p.will.topic, limits(srv))
  if (typeof subject !== 'string') {
    // 5.0 has a code for it; 3.1.1 has none that fits, so it only closes.
    srv.log.error(`${c.label()} mqtt invalid will topic ${quote(p.will.topic)}: ${why(srv, subject.error)}`)
    if (c.version === 4) c.teardown(`invalid will topic: ${subject.error}`, false)
    else refuseConnect(c, 0, RC.topicNameInvalid, `invalid will topic: ${subject.error}`)
    return undefined
  }
  // A will is a publish: one the user may not make is refused at CONNECT, and so is one a
  // service would turn into a publish the user may not make ($SPRIG/mqtt/retain/...).
  const target = serviceTarget(subject)
  if (c.perms !== null && (!publishAllowed(c.perms, null, subject, srv.host.now()) || (target !== null && !canPublish(c.perms, target)))) {
    srv.counters.permission_violations++
    refuseConnect(c, 0x05, RC.notAuthorized, `Publish Violation - User ${quote(c.user)}, will Subject ${quote(subject)}`)
    return undefined
  }
  const payload = typeof p.will.payload === 'string' ? Buffer.from(p.will.payload) : p.will.payload
  const wp = (p.will.properties ?? {}) as PublishProps & { willDelayInterval?: number }
  const { willDelayInterval, ...rest } = wp
  return {
    topic: p.will.topic,
    subject,
    payload,
    qos: (p.will.qos ?? 0) as QoS,
    retain: p.will.retain === true,
    delay: c.version === 5 ? (willDelayInterval ?? 0) * 1000 : 0,
    ...(c.version === 5 && Object.keys(rest).length > 0 ? { props: rest } : {}),
  }
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
  const will = willOf(c, p)
  if (will === undefined) return
  let keepalive = (p.keepalive ?? 0) * 1000
  const o = mqttOpts(srv.opts)
  // Server Keep Alive: an MQTT 5 client asking for more than max_keepalive (or for none) is
  // told the maximum, and must use it [MQTT-3.2.2-21]; otherwise its own value applies
  // [MQTT-3.2.2-22]. A 3.1.1 client cannot be told, so it keeps its own.
  let serverKeepAlive: number | undefined
  if (c.version === 5 && o.max_keepalive > 0 && (keepalive === 0 || keepalive > o.max_keepalive)) {
    serverKeepAlive = Math.min(65535, Math.max(1, Math.floor(o.max_keepalive / 1000)))
    keepalive = serverKeepAlive * 1000
  }
  // 3.1.1: clean session 0 persists (until session_expiry); 5.0: Session Expiry Interval,
  // capped at session_expiry, and the CONNACK then says so.
  let expiryProp: number | undefined
  let sessionExpiry: number
  if (c.version === 4) sessionExpiry = p.clean === false ? o.session_expiry : 0
  else {
    const asked = props.sessionExpiryInterval ?? 0
    const ms = asked === 0xffffffff ? Infinity : asked * 1000
    sessionExpiry = Math.min(ms, o.session_expiry)
    if (ms > o.session_expiry) expiryProp = Math.floor(o.session_expiry / 1000)
  }
  c.open({
    clientId: id,
    will,
    keepalive,
    receiveMaximum: props.receiveMaximum ?? 0,
    maxPacket: props.maximumPacketSize ?? 0,
    // The client's Topic Alias Maximum: how many aliases sprig may give it [MQTT-3.3.2-11] (aliases.ts).
    aliasMax: c.version === 5 ? (props.topicAliasMaximum ?? 0) : 0,
    sessionExpiry,
  })
  const st = c.st
  const holder = st.clients.get(id)
  // A new persistent session (one that replaces none) must fit under max_sessions (session.ts).
  if (sessionExpiry > 0 && !st.sessions.has(id) && !(holder !== undefined && st.persistent.has(holder)) && !roomForSession(srv, st, o.max_sessions)) {
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
  if (sessionExpiry > 0) st.persistent.add(c)
  c.accepted()
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
  if (parked) c.resume(parked)
  c.storeSession()
}
