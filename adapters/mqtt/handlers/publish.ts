// PUBLISH from a client (topic alias, topic → subject, permissions, QoS 1/2 handshakes, the
// retained store) and the acknowledgements of what sprig sent it.

import { Buffer } from 'node:buffer'
import type { IPublishPacket } from 'mqtt-packet'
import { quote } from '../../../src/log.ts'
import { mqttOptions as mqttOpts } from '../../../src/options.ts'
import { publishAllowed } from '../../../src/permissions.ts'
import type { MqttConn } from '../conn.ts'
import type { QoS } from '../delivery.ts'
import { keepProps, publishHeaders, replyFor, type PublishProps } from '../props.ts'
import { retain } from '../retained.ts'
import { topicMemo, type TopicMemo } from '../frame.ts'
import { topicToSubject, type TopicError, type TopicLimits } from '../topic.ts'
import { limits, RC, why } from './common.ts'

export function onPublish(c: MqttConn, p: IPublishPacket): void {
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
    const known = c.topicAlias(alias, topic)
    if (known === null) return c.protocolError(`unknown topic alias ${alias}`, RC.protocolError)
    topic = known
  }
  const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload
  publish(c, topic, p.properties, p.qos, p.retain, p.messageId ?? 0, payload, 0, payload.length)
}

/**
 * A PUBLISH without properties, read by hand (conn.ts) from a connected client: its payload is
 * src[at, at + size), lent for this call.
 */
export function onPublishIn(c: MqttConn, topic: string, qos: QoS, retained: boolean, pid: number, src: Uint8Array, at: number, size: number): void {
  publish(c, topic, undefined, qos, retained, pid, src, at, size)
}

/** A PUBLISH of a topic name (any alias resolved); the payload is src[at, at + size), lent. */
function publish(c: MqttConn, topic: string, props: PublishProps | undefined, qos: QoS, retained: boolean, pid: number, src: Uint8Array, at: number, size: number): void {
  const subject = publishSubject(topic, limits(c.srv), c.topics ?? SHARED_MEMO)
  if (typeof subject !== 'string') {
    // Wildcards or an invalid name [MQTT-3.3.2-2]: 3.1.1 closes, 5.0 says 0x90 first.
    c.srv.log.error(`${c.label()} mqtt publish to invalid topic ${quote(topic)}: ${why(c.srv, subject.error)}`)
    return c.disconnect(RC.topicNameInvalid, 'Invalid Publish Topic')
  }
  // A Response Topic must be a topic name, without wildcards [MQTT-3.3.2-14].
  const reply = c.version === 5 ? replyFor(props) : ''
  if (reply === null) return c.protocolError(`invalid response topic ${quote(String(props?.responseTopic))}`, RC.protocolError)
  if (size > c.srv.opts.max_payload) {
    c.srv.log.error(`${c.label()} mqtt payload of ${size} bytes over max_payload`)
    return c.disconnect(RC.packetTooLarge, 'Max Payload Exceeded')
  }
  if (c.perms !== null && !publishAllowed(c.perms, c.replies, subject, c.srv.host.now())) return refusePublish(c, subject, qos, pid)
  if (qos === 2) {
    // Exactly once, method A: route at PUBLISH, remember the id until PUBREL so a resent
    // PUBLISH (DUP) is only acknowledged again [MQTT-4.3.3-2].
    if (!c.qos2Pending(pid)) {
      if (c.qos2Count >= mqttOpts(c.srv.opts).max_ack_pending) return c.disconnect(RC.receiveMaxExceeded, 'Receive Maximum Exceeded')
      c.qos2Received(pid)
      const dropped = c.srv.spoolDrops
      if (!route(c, topic, subject, src, at, size, 2, retained, props, reply)) {
        c.qos2Released(pid) // refused: no PUBREL follows a PUBREC with 0x87
        return refusedAck(c, 2, pid)
      }
      if (c.srv.spoolDrops !== dropped && c.version === 5) {
        c.qos2Released(pid) // the full store dropped it: 0x97, and no PUBREL follows
        return void c.send({ cmd: 'pubrec', messageId: pid, reasonCode: RC.quotaExceeded })
      }
    }
    // With a store, acknowledged once what the publish wrote there is synced (the policy's rule).
    c.srv.afterStored((ok) => {
      if (ok || c.version !== 5) return c.send({ cmd: 'pubrec', messageId: pid })
      c.qos2Released(pid) // a full disk dropped it after all: 0x97, no PUBREL follows
      c.send({ cmd: 'pubrec', messageId: pid, reasonCode: RC.quotaExceeded })
    })
    return
  }
  const dropped = c.srv.spoolDrops
  if (!route(c, topic, subject, src, at, size, qos, retained, props, reply)) return refusedAck(c, qos, pid)
  // The store was full (max_bytes or the disk) and dropped this message: 5.0 says so.
  if (qos === 1 && c.srv.spoolDrops !== dropped && c.version === 5) return void c.send({ cmd: 'puback', messageId: pid, reasonCode: RC.quotaExceeded })
  // [MQTT-4.3.2-2]; a full disk that dropped it after all: 0x97 on 5.0.
  if (qos === 1) c.srv.afterStored((ok) => c.send(ok || c.version !== 5 ? { cmd: 'puback', messageId: pid } : { cmd: 'puback', messageId: pid, reasonCode: RC.quotaExceeded }))
}

/** For a connection without a memo of its own (a PUBLISH mqtt-packet read). */
const SHARED_MEMO = topicMemo()

/** topicToSubject for a PUBLISH topic name, mapping a publisher's repeated topic only once. */
function publishSubject(topic: string, lim: TopicLimits, memo: TopicMemo): string | TopicError {
  if (topic === memo.subjectOf && lim === memo.limits) return memo.subject
  const subject = topicToSubject(topic, lim)
  if (typeof subject === 'string') {
    memo.subjectOf = topic
    memo.limits = lim
    memo.subject = subject
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

/**
 * Hands an MQTT message (payload src[at, at + size), lent) to the router as a NATS message (its
 * properties, QoS and retain flag as headers, props.ts); keeps a copy if retained. False when a
 * service refused it.
 */
function route(c: MqttConn, topic: string, subject: string, src: Uint8Array, at: number, size: number, qos: QoS, retained: boolean, props: PublishProps | undefined, reply: string): boolean {
  const v5props = c.version === 5 ? props : undefined
  if (retained) retain(c.st.retained, topic, subject, src.subarray(at, at + size), qos, keepProps(v5props, c.srv.host.now()))
  // A retained message with an empty payload only deletes; it still goes to current
  // subscribers as a normal message [MQTT-3.3.1-10].
  return c.route(subject, publishHeaders(qos, v5props, retained), src, at, size, reply)
}

// --- acknowledgements -------------------------------------------------------------------------

export function onPuback(c: MqttConn, pid: number): void {
  c.acknowledged(pid, 1)
}

/** QoS 2 out, step 2: the client has it; release it [MQTT-4.3.3-1]. */
export function onPubrec(c: MqttConn, pid: number): void {
  const known = c.received(pid)
  c.send({ cmd: 'pubrel', messageId: pid, ...(known || c.version === 4 ? {} : { reasonCode: 0x92 }) })
}

/** QoS 2 out, done. */
export function onPubcomp(c: MqttConn, pid: number): void {
  c.acknowledged(pid, 2)
}

/** QoS 2 in, step 3: forget the id, so it may be reused for a new message. */
export function onPubrel(c: MqttConn, pid: number): void {
  const known = c.qos2Released(pid)
  c.send({ cmd: 'pubcomp', messageId: pid, ...(known || c.version === 4 ? {} : { reasonCode: 0x92 }) })
}
