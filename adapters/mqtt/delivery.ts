// What a routed message becomes for an MQTT subscriber, the same for a live connection
// (conn.ts) and a parked session (session.ts): the subscription's shape, the topic and QoS it
// gets the message with, and the message on its way while QoS 1/2 waits for acknowledgement.

import type { Buffer } from 'node:buffer'
import type { DenyChecked } from '../../src/lifecycle.ts'
import type { Msg } from '../../src/msg.ts'
import type { Owner, Sub } from '../../src/router.ts'
import { msgQos, type PublishProps, type QoS } from './props.ts'
import type { MqttState } from './state.ts'
import { subjectToTopic } from './topic.ts'

export type { QoS } from './props.ts'

export interface MqttSub extends Sub, DenyChecked {
  /** The connection, or a Parked session while its persistent client is away. */
  readonly owner: Owner
  /** The filter as the client sent it (the key of `subs`). */
  readonly filter: string
  readonly qos: QoS
  /** The filter starts with a wildcard, so it must not match `$` topics [MQTT-4.7.2-1]. */
  readonly noDollar: boolean
  /** MQTT 5 No Local: not the client's own publishes. */
  readonly noLocal: boolean
  /** MQTT 5 Subscription Identifier, sent back with each message it matches [MQTT-3.3.4-3]. */
  readonly subId?: number | undefined
  /** MQTT 5 Retain As Published: the retain flag as published [MQTT-3.3.1-13] (else 0 [MQTT-3.3.1-12]). */
  readonly rap?: boolean
}

/** What a filter's subscriptions share; `mqttSub` adds the subject and its deny check. */
export interface SubBase {
  queue: string | null
  owner: Owner
  filter: string
  qos: QoS
  noDollar: boolean
  noLocal: boolean
  rap: boolean
  subId: number | undefined
}

/** MQTT 5's subscription options besides QoS, when any is set (a 3.1.1 subscription never has them). */
interface Options5 {
  readonly noLocal: boolean
  readonly rap: boolean
  readonly subId: number | undefined
}

// Subscription.bits: the QoS in the low two bits, then two flags.
const QOS = 3
const NO_DOLLAR = 4
const DENY_CHECK = 8

/**
 * One router subscription: a class, always the same fields in the same order (V8 gives an
 * object spread, `{ ...base, subject }`, a hidden class of its own: ~320 bytes more per
 * subscription on Node and Deno). Six fields, JSC's 64-byte size class (ten took 112): the
 * QoS and two flags share one number, the MQTT 5 options are one object, null when none is
 * set, all read through getters.
 */
class Subscription implements MqttSub {
  private bits: number

  constructor(
    readonly subject: string,
    readonly queue: string | null,
    readonly owner: Owner,
    /** The filter when the subject does not give it back (subjectToTopic); null: it does. */
    private readonly f: string | null,
    qos: QoS,
    noDollar: boolean,
    denyCheck: boolean,
    private readonly o5: Options5 | null,
  ) {
    this.bits = qos | (noDollar ? NO_DOLLAR : 0) | (denyCheck ? DENY_CHECK : 0)
  }

  get qos(): QoS {
    return (this.bits & QOS) as QoS
  }

  /** The filter starts with a wildcard, so it must not match `$` topics [MQTT-4.7.2-1]. */
  get noDollar(): boolean {
    return (this.bits & NO_DOLLAR) !== 0
  }

  /** Checked against its owner's permissions per message (src/lifecycle.ts DenyChecked); set again after a reload. */
  get denyCheck(): boolean {
    return (this.bits & DENY_CHECK) !== 0
  }

  set denyCheck(on: boolean) {
    this.bits = on ? this.bits | DENY_CHECK : this.bits & ~DENY_CHECK
  }

  /**
   * The filter as the client sent it. Most are the topic of their one subject (`d/1/cmd`:
   * `d.1.cmd`), so they are not kept twice: a string fewer per idle device. Read per
   * SUBSCRIBE, UNSUBSCRIBE and close, never per message.
   */
  get filter(): string {
    return this.f ?? subjectToTopic(this.subject)!
  }

  get noLocal(): boolean {
    return this.o5 !== null && this.o5.noLocal
  }

  get rap(): boolean {
    return this.o5 !== null && this.o5.rap
  }

  get subId(): number | undefined {
    return this.o5 === null ? undefined : this.o5.subId
  }
}

/** One router subscription of a filter (`b`) for one of its subjects. */
export function mqttSub(b: SubBase, subject: string, denyCheck: boolean): MqttSub {
  const o5 = b.noLocal || b.rap || b.subId !== undefined ? { noLocal: b.noLocal, rap: b.rap, subId: b.subId } : null
  const f = b.queue === null && subjectToTopic(subject) === b.filter ? null : b.filter
  return new Subscription(subject, b.queue, b.owner, f, b.qos, b.noDollar, denyCheck, o5)
}

/** A QoS > 0 message on its way to the client. */
export interface Outgoing {
  topic: string
  payload: Buffer
  qos: QoS
  retain: boolean
  /** QoS 2: PUBREC came and PUBREL went; waiting for PUBCOMP. */
  released: boolean
  /** MQTT 5 properties from the message's NATS headers. */
  props?: PublishProps
  /** Its number in the store (persist.ts), when a persistent session's message is written there. */
  key?: number | undefined
}

/** The will from CONNECT, published if the connection ends without DISCONNECT [MQTT-3.1.2-8]. */
export interface Will {
  topic: string
  subject: string
  payload: Buffer
  qos: QoS
  retain: boolean
  /** MQTT 5 Will Delay Interval, ms (0: none). */
  delay: number
  /** MQTT 5 will properties. */
  props?: PublishProps
}

/**
 * The topic a subscription gets a routed message under, or null: the subject has none, or
 * it is a `$` topic and the filter starts with a wildcard [MQTT-4.7.2-1]. The same check for
 * a live connection and a parked session.
 */
export function subTopic(st: MqttState, s: MqttSub, m: Msg): string | null {
  const topic = topicFor(st, m)
  return topic !== null && s.noDollar && topic.charCodeAt(0) === 36 ? null : topic
}

/** The topic for a routed message (mapped once per message), or null, counted, if it has none. */
function topicFor(st: MqttState, m: Msg): string | null {
  if (st.topicSeq !== m.seq) {
    st.topicSeq = m.seq
    if (m.subject !== lastSubject) {
      lastSubject = m.subject
      lastSubjectTopic = subjectToTopic(m.subject)
    }
    st.topic = lastSubjectTopic
    if (st.topic === null) st.counters.unmappable_subjects++
  }
  return st.topic
}

// The last subject mapped to a topic: a stream of messages on one subject maps it once.
let lastSubject = ''
let lastSubjectTopic: string | null = null

/** Delivery QoS: the lower of the subscription's and the message's [MQTT-3.8.4-8]. */
export function deliveryQos(s: MqttSub, m: Msg): QoS {
  const q = msgQos(m)
  return s.qos < q ? s.qos : q
}
