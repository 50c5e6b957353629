// What all MQTT connections of one server share: who holds each client id (for session
// takeover), the retained store and the adapter's counters. Kept beside the Server rather
// than in it, so the core stays protocol-free.

import { mqttOptions as mqttOpts } from '../../src/options.ts'
import type { Server } from '../../src/server.ts'
import { newRetainedStore, type RetainedStore } from './retained.ts'
import type { Parked } from './session.ts'
import type { PublishProps } from './props.ts'
import type { MqttPersist } from './persist.ts'

export interface MqttCounters {
  /** NATS messages skipped for an MQTT subscriber because the subject has no topic form. */
  unmappable_subjects: number
  /** Deliveries dropped because they exceeded the client's Maximum Packet Size (MQTT 5). */
  oversize_drops: number
  /** Will messages published. */
  wills: number
  /** QoS 1/2 messages dropped because a disconnected session's queue (or all of them, max_sessions_bytes) was full. */
  offline_dropped: number
  /** Oldest parked sessions expired early to make room for a new one (mqtt.max_sessions). */
  sessions_evicted: number
  /** New persistent sessions refused (CONNACK 0x97 / 0x03): max_sessions reached and none parked. */
  sessions_refused: number
  /** Sessions ended because another identity connected with their client id. */
  sessions_foreign: number
  /** Sessions ended because their user no longer exists (reload). */
  sessions_revoked: number
  /** Held messages dropped because the session's user may no longer read their subject. */
  revoked_msgs: number
  /** Packets refused as malformed or as a protocol error (each closed its connection). */
  malformed_packets: number
}

/** The part of a connection the shared state needs: closing it on takeover. */
export interface Holder {
  takeover(): void
}

export interface MqttState {
  readonly clients: Map<string, Holder>
  readonly retained: RetainedStore
  /** Persistent sessions whose client is away, by client id; oldest parked first. */
  readonly sessions: Map<string, Parked>
  /** Live connections with a persistent session (they count against max_sessions too). */
  readonly persistent: Set<Holder>
  /**
   * Payload bytes held by all parked sessions (queued and unacknowledged): what
   * mqtt.max_sessions_bytes bounds, one number for a memory budget to read.
   */
  parkedBytes: number
  readonly counters: MqttCounters
  /** Subject -> topic of the last message delivered (fan-out maps each message once). */
  topicSeq: number
  topic: string | null
  /** Header -> MQTT 5 properties of the last message delivered, likewise. */
  propsSeq: number
  props: PublishProps | undefined
  /** The server's clock (host.now()), for message expiry. */
  now(): number
  /** Retained messages and persistent sessions in the on-disk store; null without one (persist.ts). */
  persist: MqttPersist | null
}

const states = new WeakMap<Server, MqttState>()

export function mqttState(srv: Server): MqttState {
  let st = states.get(srv)
  if (!st) {
    const o = mqttOpts(srv.opts)
    st = {
      clients: new Map(),
      retained: newRetainedStore(o.retained_max_msgs, o.retained_max_bytes, srv.budget),
      sessions: new Map(),
      persistent: new Set(),
      parkedBytes: 0,
      counters: {
        unmappable_subjects: 0,
        oversize_drops: 0,
        wills: 0,
        offline_dropped: 0,
        sessions_evicted: 0,
        sessions_refused: 0,
        sessions_foreign: 0,
        sessions_revoked: 0,
        revoked_msgs: 0,
        malformed_packets: 0,
      },
      topicSeq: -1,
      topic: null,
      propsSeq: -1,
      props: undefined,
      now: () => srv.host.now(),
      persist: null,
    }
    states.set(srv, st)
  }
  return st
}
