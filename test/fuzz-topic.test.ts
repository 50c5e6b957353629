// Property-based tests of the MQTT topic/filter <-> NATS subject mapping
// (adapters/mqtt/topic.ts): nothing throws on any string; a topic that maps gives a valid
// literal subject that maps back to the same topic (and the reverse); filters give valid
// subjects; and a topic matches a filter under MQTT's rules exactly when its subject matches
// one of the filter's subjects under NATS's rules; the length limit holds in UTF-8 bytes.

import t from 'tap'
import fc from 'fast-check'
import { filterToSubjects, parseShared, subjectToTopic, topicToSubject, TopicErrors } from '../adapters/mqtt/topic.ts'
import { isValidLiteralSubject, isValidSubject, subjectMatches } from '../src/subject.ts'
import { check } from './helpers/fuzz.ts'

const ERRORS = new Set<unknown>(Object.values(TopicErrors))
const isError = (r: unknown): boolean => ERRORS.has(r)

// Units that hit every rule: separators, both wildcard families, $, whitespace, NUL, DEL,
// multi-byte and lone surrogates.
const unit = fc.constantFrom('a', 'b', 'c', '/', '/', '+', '#', '.', '*', '>', '$', ' ', '\t', '\u0000', '\u007f', 'é', '€', '😀', '\ud83d', '\ude00', 'share')
const str = fc.string({ unit, maxLength: 14 })
/** Strings that are mostly valid topics: plain levels joined by `/`. */
const plainTopic = fc.array(fc.stringMatching(/^[a-c.é$]{0,3}$/), { minLength: 1, maxLength: 5 }).map((l) => l.join('/'))
/** Filters built from plain levels and whole-level wildcards. */
const plainFilter = fc
  .tuple(fc.array(fc.oneof(fc.stringMatching(/^[a-c.]{0,2}$/), fc.constant('+')), { minLength: 1, maxLength: 4 }), fc.boolean())
  .map(([l, hash]) => (hash ? [...l, '#'] : l).join('/'))

const utf8Length = (s: string): number => new TextEncoder().encode(s).length

/** MQTT's own matching rule [MQTT-4.7.1], without the `$` rule (tested by the caller). */
function mqttMatches(filter: string, topic: string): boolean {
  const f = filter.split('/')
  const tl = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true // also matches the parent level
    if (i >= tl.length) return false
    if (f[i] !== '+' && f[i] !== tl[i]) return false
  }
  return f.length === tl.length
}

t.test('no string makes the mapping throw; errors are the shared frozen ones', async (t) => {
  check(
    t,
    'every function, any string',
    fc.property(fc.oneof(str, fc.string({ maxLength: 20, unit: 'binary' })), fc.option(fc.record({ maxLevels: fc.nat(6), maxLength: fc.nat(30) }), { nil: undefined }), (s, lim) => {
      const a = topicToSubject(s, lim)
      if (typeof a !== 'string' && !isError(a)) throw new Error(`topicToSubject: ${JSON.stringify(a)}`)
      const b = filterToSubjects(s, lim)
      if (!Array.isArray(b) && !isError(b)) throw new Error(`filterToSubjects: ${JSON.stringify(b)}`)
      const c = subjectToTopic(s)
      if (c !== null && typeof c !== 'string') throw new Error('subjectToTopic')
      const d = parseShared(s, lim)
      if (d !== null && !isError(d) && 'group' in d && (typeof d.group !== 'string' || !Array.isArray(d.subjects))) throw new Error('parseShared')
    }),
    4000,
  )
})

t.test('topic -> literal subject -> the same topic', async (t) => {
  check(
    t,
    'round trip from topics',
    fc.property(fc.oneof(str, plainTopic), (topic) => {
      const s = topicToSubject(topic)
      if (typeof s !== 'string') return
      if (!isValidLiteralSubject(s)) throw new Error(`${JSON.stringify(topic)} -> invalid literal subject ${JSON.stringify(s)}`)
      const back = subjectToTopic(s)
      if (back !== topic) throw new Error(`${JSON.stringify(topic)} -> ${JSON.stringify(s)} -> ${JSON.stringify(back)}`)
    }),
    4000,
  )
  check(
    t,
    'round trip from subjects',
    fc.property(fc.string({ unit: fc.constantFrom('a', 'b', '.', '/', '*', '>', '+', '#', ' ', 'é'), maxLength: 12 }), (subject) => {
      const topic = subjectToTopic(subject)
      if (topic === null) return
      const again = topicToSubject(topic)
      if (again !== subject) throw new Error(`${JSON.stringify(subject)} -> ${JSON.stringify(topic)} -> ${JSON.stringify(again)}`)
    }),
    4000,
  )
})

t.test('a topic matches a filter in MQTT exactly when its subject matches in NATS', async (t) => {
  check(
    t,
    'matching agrees',
    fc.property(plainFilter, plainTopic, (filter, topic) => {
      const subs = filterToSubjects(filter)
      const subj = topicToSubject(topic)
      if (!Array.isArray(subs) || typeof subj !== 'string') return
      for (const s of subs) if (!isValidSubject(s)) throw new Error(`${JSON.stringify(filter)} -> invalid subject ${JSON.stringify(s)}`)
      const nats = subs.some((s) => subjectMatches(s, subj))
      const mqtt = mqttMatches(filter, topic)
      if (nats !== mqtt) throw new Error(`filter ${JSON.stringify(filter)} ${JSON.stringify(subs)}, topic ${JSON.stringify(topic)} ${JSON.stringify(subj)}: MQTT ${mqtt}, NATS ${nats}`)
    }),
    4000,
  )
})

t.test('the length and depth limits hold', async (t) => {
  check(
    t,
    'limits',
    fc.property(fc.oneof(str, plainTopic), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 6 }), (topic, maxLength, maxLevels) => {
      const free = topicToSubject(topic)
      const r = topicToSubject(topic, { maxLength, maxLevels })
      if (typeof r === 'string') {
        if (utf8Length(topic) > maxLength) throw new Error(`${JSON.stringify(topic)}: ${utf8Length(topic)} bytes accepted under ${maxLength}`)
        if (topic.split('/').length > maxLevels) throw new Error(`${JSON.stringify(topic)}: deeper than ${maxLevels} accepted`)
      } else if (typeof free === 'string' && utf8Length(topic) <= maxLength && topic.split('/').length <= maxLevels) {
        throw new Error(`${JSON.stringify(topic)} refused (${JSON.stringify(r)}) within the limits`)
      }
    }),
    4000,
  )
})
