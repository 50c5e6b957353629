// SUBSCRIBE (filters, shared subscriptions, permissions, limits, retained messages after the
// SUBACK) and UNSUBSCRIBE.

import { Buffer } from 'node:buffer'
import type { ISubscribePacket, ISubscription, IUnsubscribePacket } from 'mqtt-packet'
import { quote } from '../../../src/log.ts'
import { mqttOptions as mqttOpts } from '../../../src/options.ts'
import { canSubscribe, deliveryDenied, needsDeliveryCheck } from '../../../src/permissions.ts'
import type { MqttConn } from '../conn.ts'
import { mqttSub, type MqttSub, type QoS, type SubBase } from '../delivery.ts'
import { allowedPart, filterCount } from '../filters.ts'
import { deliveryProps, expiredAt, unexpired } from '../props.ts'
import { matchRetained } from '../retained.ts'
import { filterToSubjects, parseShared, startsWithDollar, wildcardFirst } from '../topic.ts'
import { limits, RC, why } from './common.ts'

interface Added {
  sub: MqttSub
  subjects: string[]
  rh: number
  isNew: boolean
}

export function onSubscribe(c: MqttConn, p: ISubscribePacket): void {
  const granted: number[] = []
  const fresh: Added[] = []
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
  c.storeSubs() // once per packet: a record per filter would rewrite the whole list each time
  c.send({ cmd: 'suback', messageId: p.messageId, granted }) // [MQTT-3.8.4-1]
  // Retained messages follow the SUBACK, with the retain flag set [MQTT-3.3.1-6]; MQTT 5
  // Retain Handling 1 sends them only for a new subscription, 2 never; none for shared ones.
  for (const f of fresh) {
    if (f.sub.queue !== null || f.rh === 2 || (f.rh === 1 && !f.isNew)) continue
    const now = c.srv.host.now()
    for (const r of matchRetained(c.st.retained, f.subjects, now)) {
      if (f.sub.noDollar && startsWithDollar(r.topic)) continue
      if (f.sub.denyCheck && deliveryDenied(c.perms, r.subject, f.sub.queue)) continue
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
function addSub(c: MqttConn, s: ISubscription, subId: number | undefined): Added | number | null {
  const srv = c.srv
  const fail = c.version === 5 ? RC.filterInvalid : 0x80
  const lim = limits(srv)
  const shared = parseShared(s.topic, lim)
  let subjects: string[]
  let queue: string | null = null
  let filter = s.topic
  const refused = (e: string): number => {
    srv.log.error(`${c.label()} mqtt subscribe to invalid filter ${quote(s.topic)}: ${why(srv, e)}`)
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
      srv.counters.permission_violations++
      srv.log.error(`${c.label()} Subscription Violation - User ${quote(c.user)}, Subject ${quote(subjects[0] ?? '')}${q}, filter ${quote(s.topic)}`)
      return c.version === 5 ? RC.notAuthorized : 0x80
    }
    subjects = ok
  }
  const old = c.filterSubs(s.topic)
  const max = mqttOpts(srv.opts).max_subscriptions || srv.opts.max_subscriptions
  if (!old && max > 0 && filterCount(c.subs) >= max) {
    // 5.0: Quota Exceeded; 3.1.1 has only Failure [MQTT-3.9.3-1].
    srv.log.error(`${c.label()} mqtt subscribe to ${quote(s.topic)} refused: maximum subscriptions (${max}) exceeded`)
    return c.version === 5 ? RC.quotaExceeded : 0x80
  }
  const base: SubBase = {
    queue,
    owner: c,
    filter: s.topic,
    qos: s.qos,
    noDollar: wildcardFirst(filter),
    noLocal: s.nl === true,
    rap: c.version === 5 && s.rap === true,
    subId,
  }
  const perms = c.perms
  const list: MqttSub[] = subjects.map((subject) => mqttSub(base, subject, needsDeliveryCheck(perms, subject)))
  // The same filter again replaces the old subscription [MQTT-3.8.4-3].
  c.subscribe(s.topic, list)
  return { sub: list[0]!, subjects, rh: s.rh ?? 0, isNew: !old }
}

export function onUnsubscribe(c: MqttConn, p: IUnsubscribePacket): void {
  const codes: number[] = []
  for (const f of p.unsubscriptions) codes.push(c.unsubscribe(f) ? RC.success : RC.noSubscriptionExisted)
  c.storeSubs()
  c.send({ cmd: 'unsuback', messageId: p.messageId, granted: c.version === 5 ? codes : [] }) // [MQTT-3.10.4-4]
}
