// MQTT topic names/filters <-> NATS subjects, in the mapping nats-server 2.10+ uses, so an
// MQTT client sees the same topic for the same subject on sprig and on a nats-server.
//
// Model: an MQTT topic is `/`-separated levels, a NATS subject `.`-separated tokens, and
// level i becomes token i:
//   - an empty level becomes the token `/` (NATS has no empty tokens):
//     `/a` -> `/.a`, `a/` -> `a./`, `a//b` -> `a./.b`, `/` -> `/./`
//   - otherwise each `.` in the level becomes `//` (a `.` would split the token):
//     `a.b/c` -> `a//b.c`
//   - in filters, a whole level `+` becomes `*` and `#` becomes `>`.
// MQTT levels never contain `/`, so `/` inside a token only ever comes from these two
// rules; that is what makes the reverse exact (see subjectToTopic).
//
// Spec references are to MQTT 5.0 (OASIS, 07 March 2019). The same rules hold for 3.1.1,
// where the two wildcard statements are numbered [MQTT-4.7.1-2] (`#`) and [MQTT-4.7.1-3] (`+`).
//
// Everything scans char codes once, with no regexes and no split/join: these run on every
// MQTT PUBLISH and on every NATS->MQTT delivery. Nothing is cached here; the caller may.

const NUL = 0
const HASH = 35 // #
const DOLLAR = 36 // $
const STAR = 42 // *
const PLUS = 43 // +
const DOT = 46 // .
const SLASH = 47 // /
const GT = 62 // >
const DEL = 127

export type TopicErrorCode =
  | 'empty' // [MQTT-4.7.3-1] topics and filters are at least one character long
  | 'wildcard' // `+` or `#` in a topic name [MQTT-3.3.2-2]
  | 'whitespace' // space \t \n \r \f: nats-server refuses them in subjects (they split its wire protocol)
  | 'del_char' // 0x7f: nats-server refuses it in MQTT topics
  | 'null_char' // U+0000 [MQTT-4.7.3-2]
  | 'bad_wildcard' // `+`/`#` not a whole level, or `#` not last [MQTT-4.7.1-1] [MQTT-4.7.1-2]
  | 'nats_wildcard' // a level `*`/`>` that cannot be carried (see topicToSubject, filterToSubjects)
  | 'too_long' // over lim.maxLength UTF-8 bytes
  | 'too_deep' // over lim.maxLevels levels
  | 'bad_share' // malformed `$share/GROUP/FILTER` [MQTT-4.8.2-1] [MQTT-4.8.2-2]

/**
 * A refusal. An object, not a bare code string, because a code like `empty` is itself a valid
 * subject: `typeof r === 'string'` must mean success. The instances are shared and frozen, so
 * refusing allocates nothing; compare `r.error`, or the instances themselves.
 */
export interface TopicError {
  readonly error: TopicErrorCode
}

const err = (error: TopicErrorCode): TopicError => Object.freeze({ error })
export const TopicErrors: { readonly [K in TopicErrorCode]: TopicError } = Object.freeze({
  empty: err('empty'),
  wildcard: err('wildcard'),
  whitespace: err('whitespace'),
  del_char: err('del_char'),
  null_char: err('null_char'),
  bad_wildcard: err('bad_wildcard'),
  nats_wildcard: err('nats_wildcard'),
  too_long: err('too_long'),
  too_deep: err('too_deep'),
  bad_share: err('bad_share'),
})

export interface TopicLimits {
  /** Most levels a topic/filter may have (`a/b/` has 3). For `$share/G/F`, counts F's. */
  maxLevels?: number
  /** Most UTF-8 bytes of the string as the client sent it (MQTT's own cap is 65535 [MQTT-4.7.3-3]). */
  maxLength?: number
}

export interface SharedFilter {
  /** The share name, used as the NATS queue group. */
  group: string
  /** The topic filter after `$share/GROUP/`. */
  filter: string
  /** NATS subscriptions for `filter`, as filterToSubjects returns them. */
  subjects: string[]
}

/** Same set as isSpace in src/subject.ts: what nats-server rejects in subjects and queues. */
function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || c === 12
}

/** Does s encode to more than max UTF-8 bytes? Counts only when the length alone can't tell. */
function overBytes(s: string, max: number): boolean {
  const n = s.length
  if (n > max) return true // every UTF-16 unit is at least one byte
  if (n * 3 <= max) return false // and at most three (a surrogate pair is 4 bytes for 2 units)
  let bytes = 0
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) bytes += 1
    else if (c < 0x800) bytes += 2
    // low half of a pair: the high half already counted 3, the pair is 4
    else if (c >= 0xdc00 && c <= 0xdfff && i > 0 && isHigh(s.charCodeAt(i - 1))) bytes += 1
    else bytes += 3 // BMP char, high half, or a lone half (encoded as U+FFFD)
  }
  return bytes > max
}

function isHigh(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff
}

/**
 * The shared scan behind topicToSubject and filterToSubjects: the subject, or why not.
 * The end of the string closes the last level the same way a `/` closes the others.
 */
function convert(s: string, filter: boolean, lim: TopicLimits | undefined): string | TopicError {
  const n = s.length
  if (n === 0) return TopicErrors.empty
  if (lim?.maxLength !== undefined && overBytes(s, lim.maxLength)) return TopicErrors.too_long
  const maxLevels = lim?.maxLevels ?? Infinity
  let out = ''
  let from = 0 // s[from, i) is still to be copied to out
  let level = 0 // start of the current level
  let levels = 1
  for (let i = 0; i <= n; i++) {
    const c = i < n ? s.charCodeAt(i) : SLASH
    if (c === SLASH) {
      const len = i - level
      if (len === 0) {
        out += '/' // empty level; nothing pending, as the previous char was a `/` or the start
      } else {
        if (len === 1) {
          const w = s.charCodeAt(level)
          if (w === STAR || w === GT) {
            // In a name, a level `*`/`>` would be a wildcard token of the subject: NATS routes
            // such a PUB to wildcard subscriptions only (and pedantic NATS calls it invalid), so
            // the message would not go where the topic says. Refuse rather than route it mangled.
            // In a filter it is the NATS wildcard, as in nats-server; `>` must then be last.
            if (!filter || (w === GT && i < n)) return TopicErrors.nats_wildcard
          }
        }
        out += s.slice(from, i)
      }
      if (i < n) {
        if (++levels > maxLevels) return TopicErrors.too_deep
        out += '.'
      }
      from = i + 1
      level = i + 1
    } else if (c === DOT) {
      out += s.slice(from, i) + '//'
      from = i + 1
    } else if (c === PLUS || c === HASH) {
      if (!filter) return TopicErrors.wildcard // [MQTT-3.3.2-2]
      const next = i + 1 < n ? s.charCodeAt(i + 1) : SLASH
      // a whole level [MQTT-4.7.1-2]; `#` also the last one [MQTT-4.7.1-1]
      if (i !== level || next !== SLASH || (c === HASH && i + 1 !== n)) return TopicErrors.bad_wildcard
      out += c === PLUS ? '*' : '>'
      from = i + 1
    } else if (isSpace(c)) {
      return TopicErrors.whitespace
    } else if (c === DEL) {
      return TopicErrors.del_char
    } else if (c === NUL) {
      return TopicErrors.null_char
    }
  }
  return out
}

/**
 * PUBLISH topic name -> the literal NATS subject to route it on.
 * Refuses wildcards, and levels exactly `*` or `>` (they would be NATS wildcards, not literals).
 */
export function topicToSubject(topic: string, lim?: TopicLimits): string | TopicError {
  return convert(topic, false, lim)
}

/**
 * SUBSCRIBE filter -> the NATS subjects to subscribe to: one, or two for `x/#`, which MQTT
 * says also matches `x` itself [MQTT-4.7.1-1] while NATS `x.>` does not. A bare `#` is `>`.
 * A whole level `*` or `>` is taken as the NATS wildcard, like `+`/`#` (nats-server does the
 * same); strictly MQTT would match only a literal `*` level, which no sprig topic name has.
 */
export function filterToSubjects(filter: string, lim?: TopicLimits): string[] | TopicError {
  const subj = convert(filter, true, lim)
  if (typeof subj !== 'string') return subj
  const n = subj.length
  // ends in the token `>` after at least one other token: add the parent level
  if (n > 2 && subj.charCodeAt(n - 1) === GT && subj.charCodeAt(n - 2) === DOT) return [subj, subj.slice(0, n - 2)]
  return [subj]
}

/**
 * NATS literal subject -> the MQTT topic name to deliver it under, or null if it has none
 * (the caller skips that MQTT subscriber and counts it). Exactly the inverse of
 * topicToSubject: a non-null result t always gives topicToSubject(t) === subject.
 *
 * Per token: `/` alone is an empty level; otherwise every run of `/` must have even length,
 * each `//` becoming `.`. So null for:
 *   - a token with an odd run of `/` (`a/b`, `/a`, `x///y`): nats-server drops the lone `/`
 *     and delivers `a.b` as `ab`, a topic that names another subject. We deliberately don't.
 *   - the subject `/` (one empty level is the empty topic, which MQTT forbids)
 *   - an empty token (`a..b`, `.a`): a non-pedantic NATS PUB; no level maps to it
 *   - a token `*` or `>` (non-pedantic PUB to a wildcard): `a/*` would be a topic that MQTT
 *     clients can't publish back through sprig; nats-server would deliver it
 *   - `+` or `#` anywhere: a PUBLISH topic name must not contain them [MQTT-3.3.2-2]
 *   - U+0000 [MQTT-4.7.3-2], DEL or whitespace (the last can't reach here from NATS anyway)
 */
export function subjectToTopic(subject: string): string | null {
  const n = subject.length
  let out = ''
  let from = 0 // subject[from, i) is still to be copied to out
  let tok = 0 // start of the current token
  for (let i = 0; i <= n; i++) {
    const c = i < n ? subject.charCodeAt(i) : DOT
    if (c === DOT) {
      const len = i - tok
      if (len === 0) return null
      if (len === 1) {
        const t = subject.charCodeAt(tok)
        if (t === STAR || t === GT) return null
        if (t === SLASH) from = i // the empty-level token: copy none of it
      }
      out += subject.slice(from, i)
      if (i < n) out += '/'
      from = i + 1
      tok = i + 1
    } else if (c === SLASH) {
      let j = i + 1
      while (j < n && subject.charCodeAt(j) === SLASH) j++
      const run = j - i
      if (run === 1 && i === tok && (j === n || subject.charCodeAt(j) === DOT)) continue // token `/`
      if ((run & 1) === 1) return null
      out += subject.slice(from, i)
      for (let k = 0; k < run; k += 2) out += '.'
      from = j
      i = j - 1
    } else if (c === PLUS || c === HASH || c === NUL || c === DEL || isSpace(c)) {
      return null
    }
  }
  return out.length === 0 ? null : out
}

const SHARE = '$share/'

/**
 * `$share/GROUP/FILTER` -> its parts; null when the filter is not a shared subscription
 * (does not start with `$share/`). GROUP must be non-empty [MQTT-4.8.2-1], free of `+`/`#`
 * and followed by `/` and a filter [MQTT-4.8.2-2]; it also becomes a NATS queue group, so
 * no whitespace (and no U+0000, as anywhere in MQTT). Those failures are `bad_share`; a
 * FILTER that is present but invalid gives its own error. lim.maxLength applies to the whole
 * string, lim.maxLevels to FILTER.
 */
export function parseShared(filter: string, lim?: TopicLimits): SharedFilter | null | TopicError {
  if (!filter.startsWith(SHARE)) return null
  const n = filter.length
  const start = SHARE.length
  let i = start
  for (; i < n; i++) {
    const c = filter.charCodeAt(i)
    if (c === SLASH) break
    if (c === PLUS || c === HASH || c === NUL || isSpace(c)) return TopicErrors.bad_share
  }
  if (i === start || i + 1 >= n) return TopicErrors.bad_share // no group, or no `/FILTER`
  if (lim?.maxLength !== undefined && overBytes(filter, lim.maxLength)) return TopicErrors.too_long
  const inner = filter.slice(i + 1)
  const subjects = filterToSubjects(inner, lim) // its maxLength check can't fail: inner is shorter
  if (!Array.isArray(subjects)) return subjects
  return { group: filter.slice(start, i), filter: inner, subjects }
}

/** Topic (or subject) starts with `$`: reserved, e.g. `$SYS/...` [MQTT-4.7.2-1]. */
export function startsWithDollar(s: string): boolean {
  return s.charCodeAt(0) === DOLLAR
}

/**
 * Is the filter's first level a wildcard (`+`, `#`, or `*`/`>`, which filterToSubjects also
 * treats as wildcards)? Such a filter must not match topics starting with `$` [MQTT-4.7.2-1],
 * which the NATS match alone would allow: the delivery path skips those when
 * `wildcardFirst(filter) && startsWithDollar(topic)`. For a shared subscription pass the
 * filter after `$share/GROUP/`.
 */
export function wildcardFirst(filter: string): boolean {
  const c = filter.charCodeAt(0)
  if (c !== PLUS && c !== HASH && c !== STAR && c !== GT) return false
  return filter.length === 1 || filter.charCodeAt(1) === SLASH
}
