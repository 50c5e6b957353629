// Retained messages: the last retained PUBLISH per topic, in memory, bounded by count and
// bytes. Overflow policy: a message for a topic not yet kept is refused (and counted) when
// either bound would be passed; replacing or deleting a kept topic always works, so a
// device's known state can still change while the store is full. Refusing rather than
// evicting keeps what is retained predictable: nothing disappears because others arrived.
// The bytes count against the memory budget; over max_memory the store takes nothing that
// would make it grow (the same refusal, counted).

import type { Budget } from '../../src/budget.ts'
import { copyOf } from '../../src/bytes.ts'
import { subjectMatches } from '../../src/subject.ts'
import { expiredAt, type PublishProps } from './props.ts'

export interface Retained {
  topic: string
  /** The topic's NATS subject, matched against subscription subjects. */
  subject: string
  payload: Uint8Array
  qos: 0 | 1 | 2
  /** MQTT 5 properties kept with it (user properties, expiry, ...); its expiry ends it. */
  props?: PublishProps
}

export interface RetainedStore {
  readonly byTopic: Map<string, Retained>
  bytes: number
  /** Messages not kept because the store was full. */
  refused: number
  maxMsgs: number
  maxBytes: number
  budget: Budget | null
  /** Writes a change to the on-disk store (persist.ts); false when the store refused it. Null: no store. */
  persist: ((topic: string, r: Retained | null) => boolean) | null
}

export function newRetainedStore(maxMsgs: number, maxBytes: number, budget: Budget | null = null): RetainedStore {
  return { byTopic: new Map(), bytes: 0, refused: 0, maxMsgs, maxBytes, budget, persist: null }
}

function setBytes(st: RetainedStore, bytes: number): void {
  st.budget?.charge(bytes - st.bytes)
  st.bytes = bytes
}

const size = (r: { topic: string; payload: Uint8Array }): number => r.topic.length + r.payload.length

/**
 * Stores (copying the payload) or, for an empty payload, deletes [MQTT-3.3.1-10] [MQTT-3.3.1-11].
 * False when refused for lack of room.
 */
export function retain(st: RetainedStore, topic: string, subject: string, payload: Uint8Array, qos: 0 | 1 | 2, props?: PublishProps): boolean {
  const old = st.byTopic.get(topic)
  if (payload.length === 0) {
    if (old) {
      st.byTopic.delete(topic)
      setBytes(st, st.bytes - size(old))
      st.persist?.(topic, null)
    }
    return true
  }
  const r: Retained = { topic, subject, payload: copyOf(payload), qos, ...(props ? { props } : {}) }
  const bytes = st.bytes - (old ? size(old) : 0) + size(r)
  if (!old && (st.byTopic.size + 1 > st.maxMsgs || bytes > st.maxBytes)) {
    st.refused++
    return false
  }
  if (old && bytes > st.maxBytes) {
    st.refused++
    return false
  }
  if (bytes > st.bytes && st.budget !== null && st.budget.full) {
    st.refused++
    st.budget.dropped('the MQTT retained store')
    return false
  }
  if (st.persist !== null && !st.persist(topic, r)) {
    st.refused++ // the on-disk store is full: not kept, as when the memory bound is reached
    return false
  }
  st.byTopic.set(topic, r)
  setBytes(st, bytes)
  return true
}

/**
 * Kept messages whose subject matches any of `subjects` (a filter's NATS form). Messages
 * whose Message Expiry Interval has passed (at `now`) are deleted instead [MQTT-3.3.2-5].
 */
export function matchRetained(st: RetainedStore, subjects: readonly string[], now = 0): Retained[] {
  const out: Retained[] = []
  for (const r of st.byTopic.values()) {
    if (r.props && expiredAt(r.props, now)) {
      st.byTopic.delete(r.topic)
      setBytes(st, st.bytes - size(r))
      st.persist?.(r.topic, null)
      continue
    }
    for (const s of subjects) {
      if (subjectMatches(s, r.subject)) {
        out.push(r)
        break
      }
    }
  }
  return out
}
