import t from 'tap'
import {
  filterToSubjects,
  parseShared,
  startsWithDollar,
  subjectToTopic,
  topicToSubject,
  TopicErrors,
  wildcardFirst,
  type TopicError,
  type TopicErrorCode,
  type TopicLimits,
} from '../adapters/mqtt/topic.ts'
import { isValidLiteralSubject, isValidSubject } from '../src/subject.ts'

// Spec references are MQTT 5.0 numbering (3.1.1 numbers the wildcard rules 4.7.1-2/-3).

const code = (r: unknown): TopicErrorCode | undefined =>
  typeof r === 'object' && r !== null && 'error' in r ? (r as TopicError).error : undefined

// [MQTT topic name, NATS subject]: used both ways, every row must round-trip.
const both: [string, string][] = [
  ['sensors/t1/temp', 'sensors.t1.temp'],
  ['cmd/t1/reboot', 'cmd.t1.reboot'],
  ['foo', 'foo'],
  ['a/b/c/d/e/f', 'a.b.c.d.e.f'],
  // empty levels become the token `/`
  ['/foo/bar', '/.foo.bar'],
  ['foo/bar/', 'foo.bar./'],
  ['foo//bar', 'foo./.bar'],
  ['/', '/./'],
  ['//', '/././'],
  ['///', '/./././'],
  ['/a/', '/.a./'],
  ['a///b', 'a././.b'],
  // `.` inside a level becomes `//`
  ['foo.bar', 'foo//bar'],
  ['foo.bar/baz', 'foo//bar.baz'],
  ['a.b.c', 'a//b//c'],
  ['.', '//'],
  ['..', '////'],
  ['.a.', '//a//'],
  ['a./b', 'a//.b'],
  ['a/.b', 'a.//b'],
  ['a/./b', 'a.//.b'],
  ['./', '//./'],
  ['/.', '/.//'],
  ['.//.', '//././/'],
  ['192.168.1.7/status', '192//168//1//7.status'],
  // UTF-8 levels pass through untouched
  ['capteurs/température', 'capteurs.température'],
  ['日本/東京/気温', '日本.東京.気温'],
  ['😀/🌡.x', '😀.🌡//x'],
  // odd characters that are ordinary in both worlds
  ['a-b_c:d@e', 'a-b_c:d@e'],
  ['a=1&b=2/~!%^()', 'a=1&b=2.~!%^()'],
  // `*` and `>` inside a longer level are plain characters
  ['foo*/>bar/**/>>', 'foo*.>bar.**.>>'],
  // `$` topics map like any other; delivery applies [MQTT-4.7.2-1] separately
  ['$SYS/x', '$SYS.x'],
  ['$SYS/broker/clients', '$SYS.broker.clients'],
]

t.test('topic names <-> subjects, both ways', async (t) => {
  for (const [mqtt, nats] of both) {
    t.equal(topicToSubject(mqtt), nats, `topicToSubject(${JSON.stringify(mqtt)})`)
    t.equal(subjectToTopic(nats), mqtt, `subjectToTopic(${JSON.stringify(nats)})`)
    t.ok(isValidLiteralSubject(nats), `${nats} is a literal NATS subject`)
  }
})

// [filter, NATS subscription subjects]
const filters: [string, string[]][] = [
  ['a/b', ['a.b']],
  ['#', ['>']], // a bare `#` is everything: no parent level
  ['a/#', ['a.>', 'a']], // `#` also matches the parent level [MQTT-4.7.1-1]
  ['+', ['*']],
  ['+/+', ['*.*']],
  ['a/+/#', ['a.*.>', 'a.*']],
  ['+/#', ['*.>', '*']],
  ['a/+', ['a.*']],
  ['+/b', ['*.b']], // `+` at any level, first and last included [MQTT-4.7.1-2]
  ['sensors/+/temp', ['sensors.*.temp']],
  ['/#', ['/.>', '/']],
  ['//#', ['/./.>', '/./']],
  ['/+', ['/.*']],
  ['+/', ['*./']],
  ['a.b/+', ['a//b.*']],
  ['$SYS/#', ['$SYS.>', '$SYS']],
  ['capteurs/+/température', ['capteurs.*.température']],
  // whole levels `*` / `>` are taken as NATS wildcards, like nats-server does
  ['a/*', ['a.*']],
  ['*/b', ['*.b']],
  ['a/>', ['a.>', 'a']],
  ['>', ['>']],
  // ...inside a longer level they are plain
  ['foo*/x>', ['foo*.x>']],
]

t.test('filters -> subscription subjects', async (t) => {
  for (const [f, subs] of filters) {
    t.same(filterToSubjects(f), subs, `filterToSubjects(${JSON.stringify(f)})`)
    for (const s of subs) t.ok(isValidSubject(s), `${s} is a valid NATS subscription subject`)
  }
})

// [input, applies to, expected error, limits]
type Kind = 'topic' | 'filter' | 'both'
const invalid: [string, Kind, TopicErrorCode, TopicLimits?][] = [
  ['', 'both', 'empty'], // [MQTT-4.7.3-1] at least one character long
  // [MQTT-3.3.2-2] a PUBLISH topic name must not contain wildcard characters
  ['a/+', 'topic', 'wildcard'],
  ['a/#', 'topic', 'wildcard'],
  ['+', 'topic', 'wildcard'],
  ['#', 'topic', 'wildcard'],
  ['a+b', 'topic', 'wildcard'],
  ['a#', 'topic', 'wildcard'],
  // [MQTT-4.7.1-2] `+` must occupy an entire level
  ['a+', 'filter', 'bad_wildcard'],
  ['+a', 'filter', 'bad_wildcard'],
  ['a/b+', 'filter', 'bad_wildcard'],
  ['a/+b/c', 'filter', 'bad_wildcard'],
  ['++', 'filter', 'bad_wildcard'],
  // [MQTT-4.7.1-1] `#` alone or after `/`, and last
  ['a#', 'filter', 'bad_wildcard'],
  ['a/b#', 'filter', 'bad_wildcard'],
  ['#a', 'filter', 'bad_wildcard'],
  ['#/a', 'filter', 'bad_wildcard'],
  ['a/#/b', 'filter', 'bad_wildcard'],
  ['#/', 'filter', 'bad_wildcard'],
  ['##', 'filter', 'bad_wildcard'],
  ['+#', 'filter', 'bad_wildcard'],
  // whitespace and DEL: nats-server refuses them in subjects
  ['a b', 'both', 'whitespace'],
  [' ', 'both', 'whitespace'],
  ['a/\tb', 'both', 'whitespace'],
  ['a\n', 'both', 'whitespace'],
  ['a\r/b', 'both', 'whitespace'],
  ['\fa', 'both', 'whitespace'],
  ['a/b c/+', 'filter', 'whitespace'],
  ['a\u007fb', 'both', 'del_char'],
  ['\u007f/#', 'filter', 'del_char'],
  ['a\u0000b', 'both', 'null_char'], // [MQTT-4.7.3-2] no U+0000
  ['\u0000', 'both', 'null_char'],
  // a name level `*` / `>` would be a NATS wildcard token, not a literal
  ['*', 'topic', 'nats_wildcard'],
  ['>', 'topic', 'nats_wildcard'],
  ['a/*', 'topic', 'nats_wildcard'],
  ['a/>/b', 'topic', 'nats_wildcard'],
  ['*/b', 'topic', 'nats_wildcard'],
  // in a filter `>` is the NATS full wildcard, so it has to be last
  ['a/>/b', 'filter', 'nats_wildcard'],
  ['>/#', 'filter', 'nats_wildcard'],
  // limits
  ['a/b/c', 'both', 'too_deep', { maxLevels: 2 }],
  ['a/b/', 'both', 'too_deep', { maxLevels: 2 }], // a trailing `/` is a level too
  ['/', 'both', 'too_deep', { maxLevels: 1 }],
  ['a/+/#', 'filter', 'too_deep', { maxLevels: 2 }],
  ['abcd', 'both', 'too_long', { maxLength: 3 }],
  ['é', 'both', 'too_long', { maxLength: 1 }], // bytes, not chars: é is 2
  ['ééé', 'both', 'too_long', { maxLength: 5 }],
  ['東', 'both', 'too_long', { maxLength: 2 }],
  ['😀', 'both', 'too_long', { maxLength: 3 }], // a surrogate pair is 4 bytes
  ['a/😀/b', 'both', 'too_long', { maxLength: 7 }],
]

t.test('invalid topics and filters', async (t) => {
  for (const [s, kind, want, lim] of invalid) {
    const name = `${JSON.stringify(s)}${lim ? ' ' + JSON.stringify(lim) : ''}`
    if (kind !== 'filter') t.equal(code(topicToSubject(s, lim)), want, `topic ${name}`)
    if (kind !== 'topic') t.equal(code(filterToSubjects(s, lim)), want, `filter ${name}`)
  }
})

t.test('limits: at the limit is fine', async (t) => {
  const ok: [string, TopicLimits, string][] = [
    ['a/b', { maxLevels: 2 }, 'a.b'],
    ['a/', { maxLevels: 2 }, 'a./'],
    ['abc', { maxLength: 3 }, 'abc'],
    ['é', { maxLength: 2 }, 'é'],
    ['ééé', { maxLength: 6 }, 'ééé'],
    ['東', { maxLength: 3 }, '東'],
    ['😀', { maxLength: 4 }, '😀'],
    ['a/😀/b', { maxLength: 8, maxLevels: 3 }, 'a.😀.b'],
    // measured on the MQTT string, not the (longer) subject
    ['a.b', { maxLength: 3 }, 'a//b'],
  ]
  for (const [s, lim, want] of ok) t.equal(topicToSubject(s, lim), want, `${s} ${JSON.stringify(lim)}`)
  t.same(filterToSubjects('a/#', { maxLevels: 2, maxLength: 3 }), ['a.>', 'a'])
  t.equal(topicToSubject('x'.repeat(65535), { maxLength: 65535 }), 'x'.repeat(65535)) // [MQTT-4.7.3-3]
  t.equal(code(topicToSubject('x'.repeat(65536), { maxLength: 65535 })), 'too_long')
})

t.test('errors are shared frozen objects, never strings', async (t) => {
  // `empty` is itself a fine topic, so a bare code string would be ambiguous
  t.equal(topicToSubject('empty'), 'empty')
  t.equal(topicToSubject(''), TopicErrors.empty)
  t.ok(Object.isFrozen(TopicErrors.empty))
  t.equal(filterToSubjects('a+'), TopicErrors.bad_wildcard)
})

// NATS subjects that have no MQTT topic name: delivery skips the MQTT subscriber.
const noTopic: [string, string][] = [
  ['', 'empty subject'],
  ['/', 'one empty level is the empty topic [MQTT-4.7.3-1]'],
  ['a/b.c', 'lone `/` inside a token'],
  ['/a', 'lone `/` starting a token'],
  ['a/', 'lone `/` ending a token'],
  ['a.b/', 'lone `/` in the last token'],
  ['x///y', 'odd run of `/`'],
  ['///', 'odd run of `/`, not exactly `/`'],
  ['a.///.b', 'odd run of `/` as a whole token'],
  ['a//b/c', 'even run, then a lone one'],
  ['a..b', 'empty token'],
  ['.a', 'empty first token'],
  ['a.', 'empty last token'],
  ['.', 'empty tokens only'],
  ['a.*', 'wildcard token from a non-pedantic NATS PUB'],
  ['*', 'wildcard token'],
  ['a.>', 'wildcard token'],
  ['>', 'wildcard token'],
  ['a.b+c', '`+` may not appear in a topic name [MQTT-3.3.2-2]'],
  ['a.#', '`#` may not appear in a topic name [MQTT-3.3.2-2]'],
  ['a#b', '`#` may not appear in a topic name [MQTT-3.3.2-2]'],
  ['a\u0000b', 'U+0000 [MQTT-4.7.3-2]'],
  ['a\u007fb', 'DEL'],
  ['a b', 'whitespace'],
]

t.test('subjects with no MQTT form', async (t) => {
  for (const [s, why] of noTopic) t.equal(subjectToTopic(s), null, `${JSON.stringify(s)}: ${why}`)
})

t.test('shared subscriptions', async (t) => {
  // [MQTT-4.8.2-1] starts with `$share/`, non-empty ShareName
  t.same(parseShared('$share/g/a/#'), { group: 'g', filter: 'a/#', subjects: ['a.>', 'a'] })
  t.same(parseShared('$share/workers/jobs/+'), { group: 'workers', filter: 'jobs/+', subjects: ['jobs.*'] })
  t.same(parseShared('$share/g/#'), { group: 'g', filter: '#', subjects: ['>'] })
  t.same(parseShared('$share/g.1-x/a.b'), { group: 'g.1-x', filter: 'a.b', subjects: ['a//b'] })
  t.same(parseShared('$share/g//a'), { group: 'g', filter: '/a', subjects: ['/.a'] })
  t.same(parseShared('$share/grüppe/$SYS/x'), { group: 'grüppe', filter: '$SYS/x', subjects: ['$SYS.x'] })
  // not shared: ordinary filters
  for (const f of ['a/b', '#', '$SYS/#', '$share', '$sharex/g/a', '$SHARE/g/a', 'x/$share/g/a']) {
    t.equal(parseShared(f), null, `${f} is not shared`)
  }
  const bad: [string, TopicErrorCode, TopicLimits?][] = [
    ['$share//a', 'bad_share'], // [MQTT-4.8.2-1] ShareName at least one character
    ['$share/', 'bad_share'],
    ['$share/g', 'bad_share'], // [MQTT-4.8.2-2] ShareName followed by `/`...
    ['$share/g/', 'bad_share'], // ...and a topic filter
    ['$share/g+/a', 'bad_share'], // [MQTT-4.8.2-2] no `+` or `#` in ShareName
    ['$share/+/a', 'bad_share'],
    ['$share/#/a', 'bad_share'],
    ['$share/g h/a', 'bad_share'], // a NATS queue group name has no whitespace
    ['$share/g\t/a', 'bad_share'],
    ['$share/g\u0000/a', 'bad_share'], // [MQTT-4.7.3-2]
    // the filter part has its own rules
    ['$share/g/a b', 'whitespace'],
    ['$share/g/a#', 'bad_wildcard'],
    ['$share/g/#/a', 'bad_wildcard'],
    ['$share/g/a/>/b', 'nats_wildcard'],
    ['$share/g/a/b/c', 'too_deep', { maxLevels: 2 }], // levels of the filter part
    ['$share/g/a', 'too_long', { maxLength: 9 }], // bytes of the whole string
  ]
  for (const [f, want, lim] of bad) t.equal(code(parseShared(f, lim)), want, JSON.stringify(f))
  t.same(parseShared('$share/g/a/b', { maxLevels: 2, maxLength: 12 }), { group: 'g', filter: 'a/b', subjects: ['a.b'] })
})

t.test('$ topics and wildcard-first filters [MQTT-4.7.2-1]', async (t) => {
  for (const s of ['$SYS/x', '$SYS', '$', '$share/g/a', '$SYS.x']) t.ok(startsWithDollar(s), s)
  for (const s of ['SYS/$x', '', 'a$', '/$SYS']) t.notOk(startsWithDollar(s), JSON.stringify(s))
  // filters starting with a wildcard must not match `$` topics
  for (const f of ['#', '+', '+/x', '+/+', '+/#', '*', '*/x', '>']) t.ok(wildcardFirst(f), f)
  for (const f of ['a/#', 'a/+', '$SYS/#', '/+', '/#', '+a', '#a', '*x/y', '>x', '', '$share/g/#']) {
    t.notOk(wildcardFirst(f), JSON.stringify(f))
  }
})

/** Deterministic PRNG (mulberry32) so a failing run can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

function randomString(rnd: () => number, alphabet: string[], maxLen: number): string {
  const n = Math.floor(rnd() * (maxLen + 1))
  let s = ''
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(rnd() * alphabet.length)]!
  return s
}

// Slow, obviously-right reference versions (split/join is fine in a test).
type Ref = { subject: string } | { error: TopicErrorCode }
function refTopic(s: string, filter: boolean): Ref {
  if (s === '') return { error: 'empty' }
  const levels = s.split('/')
  for (const [i, l] of levels.entries()) {
    for (const ch of l) {
      if (' \t\n\r\f'.includes(ch)) return { error: 'whitespace' }
      if (ch === '\u007f') return { error: 'del_char' }
      if (ch === '\u0000') return { error: 'null_char' }
      if (ch === '+' || ch === '#') {
        if (!filter) return { error: 'wildcard' }
        if (l.length !== 1 || (ch === '#' && i !== levels.length - 1)) return { error: 'bad_wildcard' }
      }
    }
    if (l === '*' || l === '>') {
      if (!filter || (l === '>' && i !== levels.length - 1)) return { error: 'nats_wildcard' }
    }
  }
  const subject = levels
    .map((l) => (l === '' ? '/' : l === '+' ? '*' : l === '#' ? '>' : l.split('.').join('//')))
    .join('.')
  return { subject }
}

function refSubject(s: string): string | null {
  const out: string[] = []
  for (const tok of s.split('.')) {
    if (tok === '' || tok === '*' || tok === '>') return null
    if (/[+#\u0000\u007f \t\n\r\f]/.test(tok)) return null
    if (tok === '/') {
      out.push('')
      continue
    }
    for (const run of tok.match(/\/+/g) ?? []) if (run.length % 2 === 1) return null
    out.push(tok.split('//').join('.'))
  }
  const topic = out.join('/')
  return topic === '' ? null : topic
}

t.test('property: random topics round-trip and give literal subjects', async (t) => {
  const rnd = prng(0x5eed)
  const alphabet = ['/', '/', '/', '.', '.', 'a', 'b', 'é', '東', '😀', '$', '*', '>', '+', '#', ' ', '-']
  let valid = 0
  let bad = 0
  for (let i = 0; i < 30000; i++) {
    const topic = randomString(rnd, alphabet, 10)
    const subj = topicToSubject(topic)
    const want = refTopic(topic, false)
    if (typeof subj === 'string') {
      valid++
      if (!('subject' in want) || subj !== want.subject || !isValidLiteralSubject(subj) || subjectToTopic(subj) !== topic) {
        t.fail(`topic ${JSON.stringify(topic)} -> ${JSON.stringify(subj)} -> ${JSON.stringify(subjectToTopic(subj))}`)
        return
      }
    } else {
      bad++
      if (!('error' in want) || subj.error !== want.error) {
        t.fail(`topic ${JSON.stringify(topic)}: ${subj.error}, reference says ${JSON.stringify(want)}`)
        return
      }
    }
  }
  t.ok(valid > 3000 && bad > 3000, `both outcomes exercised (${valid} valid, ${bad} refused)`)
})

t.test('property: random filters match the reference', async (t) => {
  const rnd = prng(0xf117e5)
  const alphabet = ['/', '/', '/', '.', 'a', 'é', '😀', '*', '>', '+', '+', '#', '#']
  let valid = 0
  for (let i = 0; i < 30000; i++) {
    const f = randomString(rnd, alphabet, 8)
    const got = filterToSubjects(f)
    const ref = refTopic(f, true)
    // `x/#` also subscribes `x`
    const want = 'error' in ref ? ref.error : ref.subject.endsWith('.>') ? [ref.subject, ref.subject.slice(0, -2)] : [ref.subject]
    if (!Array.isArray(got)) {
      if (got.error !== want) {
        t.fail(`filter ${JSON.stringify(f)}: ${got.error}, reference ${JSON.stringify(want)}`)
        return
      }
      continue
    }
    valid++
    if (JSON.stringify(got) !== JSON.stringify(want) || !got.every(isValidSubject)) {
      t.fail(`filter ${JSON.stringify(f)} -> ${JSON.stringify(got)}, reference ${JSON.stringify(want)}`)
      return
    }
  }
  t.ok(valid > 3000, `${valid} valid filters checked`)
})

t.test('property: random subjects map back only when exactly invertible', async (t) => {
  const rnd = prng(0xbacc)
  const alphabet = ['/', '/', '/', '.', '.', 'a', 'é', '😀', '*', '>', '+', '#', ' ']
  let mapped = 0
  for (let i = 0; i < 30000; i++) {
    const s = randomString(rnd, alphabet, 10)
    const topic = subjectToTopic(s)
    if (topic !== refSubject(s)) {
      t.fail(`subject ${JSON.stringify(s)} -> ${JSON.stringify(topic)}, reference ${JSON.stringify(refSubject(s))}`)
      return
    }
    if (topic === null) continue
    mapped++
    if (topicToSubject(topic) !== s) {
      t.fail(`subject ${JSON.stringify(s)} -> ${JSON.stringify(topic)} -> ${JSON.stringify(topicToSubject(topic))}`)
      return
    }
  }
  t.ok(mapped > 1000, `${mapped} subjects mapped and re-mapped`)
})
