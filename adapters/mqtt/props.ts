// MQTT 5 PUBLISH properties <-> NATS headers, so metadata survives crossing protocols:
//   user property `k: v`             <-> header `k: v` (a repeated name repeats, order kept)
//   Content Type                     <-> `Nmqtt-Content-Type`
//   Payload Format Indicator (UTF-8) <-> `Nmqtt-Format: 1`
// plus `Nmqtt-Pub: <qos>` on every message from MQTT. Other `Nmqtt-` headers are ours and are
// not turned into user properties. A user property that cannot be a NATS header (a name
// with ':' or whitespace, CR/LF anywhere) is left out rather than mangled.
//   Message Expiry Interval          <-> `Nmqtt-Expiry: <seconds>` (what is left of it when the
//                                        message is published; a NATS publisher may set it)
//   the PUBLISH retain flag          <-> `Nmqtt-Retain: 1` (for Retain As Published)
// A message with an expiry gets its deadline when it is routed; one still queued (in-flight
// window, offline queue, retained store) when it passes is not delivered [MQTT-3.3.2-5],
// and one delivered later carries the remaining interval [MQTT-3.3.2-6].
//
// Request/response across protocols (MQTT 5 §4.10):
//   Correlation Data <-> `Nmqtt-Correlation-Data: <base64>` (standard base64, padded)
//   Response Topic   <-> the NATS reply subject:
//     - without Correlation Data, the reply subject is the Response Topic's subject
//       (`resp/dev1` -> reply `resp.dev1`), so a NATS service's msg.respond() publishes
//       straight to it;
//     - with Correlation Data, the reply subject is `$SPRIG.mqtt.reply.<base64url>.<subject>`.
//       A NATS responder knows nothing of correlation data, so it is carried in the reply
//       subject itself (stateless: nothing to expire, several replies work); sprig
//       subscribes to `$SPRIG.mqtt.reply.>` and republishes each reply to <subject> with
//       the `Nmqtt-Correlation-Data` header, which the MQTT requester receives as its
//       Correlation Data.
//   In the other direction, a message with a reply subject reaches an MQTT 5 subscriber
//   with Response Topic = the reply's topic form (a nats.js inbox `_INBOX.x.y` is
//   `_INBOX/x/y`; a `$SPRIG.mqtt.reply.` subject is decoded back to the original Response
//   Topic and Correlation Data) and Correlation Data from the header, when present. A reply
//   subject with no topic form is left out (the message is still delivered).

import { Buffer } from 'node:buffer'
import { decodeHeaders, encodeHeaders, headerValue } from '../../src/headers.ts'
import type { Msg } from '../../src/msg.ts'
import type { MqttState } from './state.ts'
import { subjectToTopic, topicToSubject } from './topic.ts'

export type UserProperties = { [name: string]: string | string[] }

export interface PublishProps {
  userProperties?: UserProperties
  contentType?: string
  payloadFormatIndicator?: boolean
  responseTopic?: string
  correlationData?: Buffer
  messageExpiryInterval?: number
  subscriptionIdentifier?: number | number[]
}

/** host.now() by which a message with a Message Expiry Interval expires, by its properties. */
const deadlines = new WeakMap<PublishProps, number>()

const EXPIRY = 'Nmqtt-Expiry'
const RETAIN = 'Nmqtt-Retain'

/** Reply subjects that carry Correlation Data: `$SPRIG.mqtt.reply.<base64url>.<subject>`. */
export const REPLY_PREFIX = '$SPRIG.mqtt.reply.'
export const CORRELATION = 'Nmqtt-Correlation-Data'

const QOS = 'Nmqtt-Pub'
const CONTENT_TYPE = 'Nmqtt-Content-Type'
const FORMAT = 'Nmqtt-Format'

/** The header block for an MQTT 5 publish with properties, or null when none map (publishHeaders). */
function propsToHeaders(qos: number, p: PublishProps | undefined, retained = false): Uint8Array | null {
  if (!p || (!p.userProperties && p.contentType === undefined && !p.payloadFormatIndicator && !p.correlationData && p.messageExpiryInterval === undefined)) {
    return retained ? RETAINED_HEADERS[qos]! : null
  }
  const pairs: [string, string][] = [[QOS, String(qos)]]
  if (retained) pairs.push([RETAIN, '1'])
  if (p.messageExpiryInterval !== undefined) pairs.push([EXPIRY, String(p.messageExpiryInterval)])
  if (p.contentType !== undefined && okValue(p.contentType)) pairs.push([CONTENT_TYPE, p.contentType])
  if (p.payloadFormatIndicator) pairs.push([FORMAT, '1'])
  if (p.correlationData) pairs.push([CORRELATION, Buffer.from(p.correlationData).toString('base64')])
  for (const [k, v] of Object.entries(p.userProperties ?? {})) {
    if (!okName(k)) continue
    for (const x of Array.isArray(v) ? v : [v]) if (okValue(x)) pairs.push([k, x])
  }
  return encodeHeaders(pairs)
}

/**
 * The PUBLISH properties for a routed message's headers, or undefined when it has none
 * to give. Decoded once per message (cached by seq), as fan-out sends the same to each.
 */
export function headersToProps(st: MqttState, m: Msg): PublishProps | undefined {
  if (m.hdr === null && m.reply === '') return undefined
  if (st.propsSeq === m.seq) return st.props
  st.propsSeq = m.seq
  st.props = undefined
  const out: PublishProps = {}
  if (m.reply !== '') replyToProps(m.reply, out)
  let expiry = -1
  const h = m.hdr === null ? null : decodeHeaders(m.hdr)
  if (!h) {
    if (out.responseTopic !== undefined) st.props = out
    return st.props
  }
  let user: UserProperties | undefined
  for (const [k, v] of h.pairs) {
    if (k === CONTENT_TYPE) out.contentType = v
    else if (k === FORMAT) out.payloadFormatIndicator = v === '1'
    else if (k === CORRELATION) out.correlationData ??= Buffer.from(v, 'base64')
    else if (k === EXPIRY) expiry = /^[0-9]{1,10}$/.test(v) ? Math.min(Number(v), 0xffffffff) : -1
    else if (k.startsWith('Nmqtt-')) continue
    else {
      user ??= {}
      const had = user[k]
      user[k] = had === undefined ? v : Array.isArray(had) ? [...had, v] : [had, v]
    }
  }
  if (user) out.userProperties = user
  if (expiry >= 0) {
    out.messageExpiryInterval = expiry
    deadlines.set(out, st.now() + expiry * 1000)
  }
  if (out.userProperties || out.contentType !== undefined || out.payloadFormatIndicator || out.responseTopic !== undefined || out.correlationData || expiry >= 0) st.props = out
  return st.props
}

// --- Nmqtt-Pub: the QoS a message was published with -------------------------------------------

export type QoS = 0 | 1 | 2

/** QoS a NATS publish without `Nmqtt-Pub` gets: 1, so it reaches QoS 1 subscribers at least once. */
export const NATS_DEFAULT_QOS: QoS = 1

/** `Nmqtt-Pub: <qos>` header blocks (nats-server's header name), built once. */
export const QOS_HEADERS: readonly Uint8Array[] = [0, 1, 2].map((q) => encodeHeaders([[QOS, String(q)]]))

/** `Nmqtt-Pub` plus `Nmqtt-Retain: 1`, for retained MQTT publishes without properties. */
export const RETAINED_HEADERS: readonly Uint8Array[] = [0, 1, 2].map((q) => encodeHeaders([[QOS, String(q)], [RETAIN, '1']]))

/** The header block of an MQTT publish: its properties and retain flag as headers, always with `Nmqtt-Pub`. */
export function publishHeaders(qos: QoS, p: PublishProps | undefined, retained: boolean): Uint8Array {
  return propsToHeaders(qos, p, retained) ?? QOS_HEADERS[qos]!
}

/** The QoS a routed message carries: its `Nmqtt-Pub` header, else NATS_DEFAULT_QOS. */
export function msgQos(m: Msg): QoS {
  const h = m.hdr
  if (h === null) return NATS_DEFAULT_QOS
  // MQTT publishes without properties carry one of these blocks as they are: no need to parse them.
  if (h === QOS_HEADERS[0]) return 0
  if (h === QOS_HEADERS[1]) return 1
  if (h === QOS_HEADERS[2]) return 2
  if (h === RETAINED_HEADERS[0]) return 0
  if (h === RETAINED_HEADERS[1]) return 1
  if (h === RETAINED_HEADERS[2]) return 2
  const v = headerValue(h, QOS)
  if (v === '0') return 0
  if (v === '1') return 1
  if (v === '2') return 2
  return NATS_DEFAULT_QOS
}

/** Whether a routed message was published with the retain flag (`Nmqtt-Retain: 1`). */
export function msgRetained(m: Msg): boolean {
  return m.hdr !== null && headerValue(m.hdr, RETAIN) === '1'
}

/** The MQTT 5 properties an inbound PUBLISH keeps when it is retained (not the Topic Alias). */
export function keepProps(p: PublishProps & { topicAlias?: number } | undefined, now: number): PublishProps | undefined {
  if (!p) return undefined
  const { topicAlias: _a, subscriptionIdentifier: _s, ...rest } = p
  if (Object.keys(rest).length === 0) return undefined
  if (rest.messageExpiryInterval !== undefined) deadlines.set(rest, now + rest.messageExpiryInterval * 1000)
  return rest
}

/**
 * Properties for one delivery: `props` plus the subscription's identifier [MQTT-3.3.4-3]
 * (the same object when there is none to add).
 */
export function deliveryProps(props: PublishProps | undefined, sub: { subId?: number }): PublishProps | undefined {
  if (sub.subId === undefined) return props
  const out: PublishProps = { ...props, subscriptionIdentifier: sub.subId }
  const d = props ? deadlines.get(props) : undefined
  if (d !== undefined) deadlines.set(out, d)
  return out
}

/**
 * For a message about to be sent after waiting: false when its Message Expiry Interval has
 * passed [MQTT-3.3.2-5]; otherwise true, with the interval lowered to what is left
 * [MQTT-3.3.2-6] (on a copy: the properties may be shared).
 */
export function unexpired(o: { props?: PublishProps }, now: number): boolean {
  const p = o.props
  if (p === undefined || p.messageExpiryInterval === undefined) return true
  const d = deadlines.get(p)
  if (d === undefined) return true
  const left = Math.ceil((d - now) / 1000)
  if (left <= 0) return false
  if (left < p.messageExpiryInterval) {
    const q = { ...p, messageExpiryInterval: left }
    deadlines.set(q, d)
    o.props = q
  }
  return true
}

/** host.now() by which a message with these properties expires (the store keeps it on the wall clock, persist.ts). */
export function deadlineOf(p: PublishProps | undefined): number | undefined {
  return p ? deadlines.get(p) : undefined
}

/** Sets that deadline on restored properties (persist.ts). */
export function setDeadline(p: PublishProps, d: number): void {
  deadlines.set(p, d)
}

/** False when a kept message's deadline has passed. */
export function expiredAt(p: PublishProps | undefined, now: number): boolean {
  const d = p ? deadlines.get(p) : undefined
  return d !== undefined && d <= now
}

/** Response Topic (and Correlation Data) for a NATS reply subject; nothing when it has no topic form. */
function replyToProps(reply: string, out: PublishProps): void {
  const parsed = parseReply(reply)
  const subject = parsed ? parsed.subject : reply
  const topic = subjectToTopic(subject)
  if (topic === null) return
  out.responseTopic = topic
  if (parsed) out.correlationData = parsed.corr
}

/** `$SPRIG.mqtt.reply.<base64url>.<subject>` taken apart, or null when reply is not one. */
export function parseReply(reply: string): { corr: Buffer; subject: string } | null {
  if (!reply.startsWith(REPLY_PREFIX)) return null
  const dot = reply.indexOf('.', REPLY_PREFIX.length)
  if (dot < 0 || dot === reply.length - 1) return null
  return { corr: Buffer.from(reply.slice(REPLY_PREFIX.length, dot), 'base64url'), subject: reply.slice(dot + 1) }
}

/**
 * The NATS reply subject for an MQTT 5 PUBLISH: '' without a Response Topic, null when the
 * Response Topic is not a valid topic name [MQTT-3.3.2-14].
 */
export function replyFor(p: PublishProps | undefined): string | null {
  if (p?.responseTopic === undefined) return ''
  const subject = topicToSubject(p.responseTopic)
  if (typeof subject !== 'string') return null
  if (!p.correlationData || p.correlationData.length === 0) return subject
  return REPLY_PREFIX + Buffer.from(p.correlationData).toString('base64url') + '.' + subject
}

function okName(k: string): boolean {
  if (k.length === 0) return false
  for (let i = 0; i < k.length; i++) {
    const c = k.charCodeAt(i)
    if (c <= 32 || c === 58 || c === 127) return false // controls, space, ':'
  }
  return true
}

function okValue(v: string): boolean {
  return !v.includes('\r') && !v.includes('\n')
}
