// What the packet handlers share: MQTT 5 reason codes, the configured topic limits, and how a
// refused topic is described.

import { mqttOptions as mqttOpts } from '../../../src/options.ts'
import type { Server } from '../../../src/server.ts'
import type { TopicLimits } from '../topic.ts'

// MQTT 5 reason codes used by the handlers.
export const RC = {
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

const limitsCache = new WeakMap<object, TopicLimits>()

/** The configured topic limits, in the form topic.ts takes (built once per options object). */
export function limits(srv: Server): TopicLimits {
  const o = mqttOpts(srv.opts)
  let lim = limitsCache.get(o)
  if (!lim) {
    lim = { maxLength: o.max_topic_length, ...(o.max_topic_levels > 0 ? { maxLevels: o.max_topic_levels } : {}) }
    limitsCache.set(o, lim)
  }
  return lim
}

/** A clear description of a refused topic, naming the limit when one was passed. */
export function why(srv: Server, error: string): string {
  const o = mqttOpts(srv.opts)
  if (error === 'too_long') return `too_long (mqtt.max_topic_length is ${o.max_topic_length} bytes)`
  if (error === 'too_deep') return `too_deep (mqtt.max_topic_levels is ${o.max_topic_levels})`
  return error
}
