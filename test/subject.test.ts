import t from 'tap'
import {
  hasWildcard,
  isValidLiteralSubject,
  isValidQueueName,
  isValidSubject,
  subjectIsSubsetOf,
  subjectMatches,
  subjectsCollide,
} from '../src/subject.ts'

// [subject, valid for SUB, valid for PUB]
const validity: [string, boolean, boolean][] = [
  ['foo', true, true],
  ['foo.bar', true, true],
  ['foo.bar.baz', true, true],
  ['a', true, true],
  ['*', true, false],
  ['>', true, false],
  ['foo.*', true, false],
  ['foo.>', true, false],
  ['*.bar', true, false],
  ['*.*.>', true, false],
  ['foo.*.bar', true, false],
  ['foo.*bar', true, true], // `*` inside a token is a literal character
  ['foo.bar*', true, true],
  ['foo.b>r', true, true],
  ['foo.>>', true, true],
  ['foo.**', true, true],
  ['>x', true, true],
  ['foo-bar_baz:1/2', true, true],
  ['ünïcødé.токен', true, true],
  ['', false, false],
  ['.', false, false],
  ['..', false, false],
  ['foo..bar', false, false],
  ['.foo', false, false],
  ['foo.', false, false],
  ['foo. bar', false, false],
  ['foo bar', false, false],
  [' ', false, false],
  ['foo.\tbar', false, false],
  ['foo\t', false, false],
  ['foo.\t', false, false],
  ['foo\nbar', false, false],
  ['foo\rbar', false, false],
  ['foo\fbar', false, false],
  ['foo.\f', false, false],
  ['>.foo', false, false],
  ['foo.>.bar', false, false],
  ['foo.>.>', false, false],
  ['>.', false, false],
  ['foo.>.', false, false],
  ['*.', false, false],
]

t.test('isValidSubject / isValidLiteralSubject', async (t) => {
  for (const [s, sub, pub] of validity) {
    t.equal(isValidSubject(s), sub, `SUB ${JSON.stringify(s)}`)
    t.equal(isValidLiteralSubject(s), pub, `PUB ${JSON.stringify(s)}`)
  }
})

t.test('isValidQueueName', async (t) => {
  const table: [string, boolean][] = [
    ['q', true],
    ['workers', true],
    ['q.with.dots', true],
    ['*', true],
    ['', false],
    ['a b', false],
    ['a\tb', false],
    ['a\n', false],
    ['\r', false],
    ['\f', false],
  ]
  for (const [q, ok] of table) t.equal(isValidQueueName(q), ok, JSON.stringify(q))
})

t.test('hasWildcard', async (t) => {
  t.equal(hasWildcard('foo.bar'), false)
  t.equal(hasWildcard('foo.*bar'), false)
  t.equal(hasWildcard('foo.*'), true)
  t.equal(hasWildcard('*.foo'), true)
  t.equal(hasWildcard('>'), true)
  t.equal(hasWildcard('a.>'), true)
})

// [pattern, subject, matches]
const matches: [string, string, boolean][] = [
  ['foo', 'foo', true],
  ['foo', 'bar', false],
  ['foo', 'foo.bar', false],
  ['foo.bar', 'foo', false],
  ['foo.bar', 'foo.bar', true],
  ['foo.bar', 'foo.baz', false],
  ['foo.bar', 'foo.barx', false],
  ['foo.barx', 'foo.bar', false],
  ['*', 'foo', true],
  ['*', 'foo.bar', false],
  ['foo.*', 'foo.bar', true],
  ['foo.*', 'foo', false],
  ['foo.*', 'foo.bar.baz', false],
  ['*.bar', 'foo.bar', true],
  ['*.bar', 'foo.baz', false],
  ['foo.*.baz', 'foo.bar.baz', true],
  ['foo.*.baz', 'foo.bar.bax', false],
  ['*.*', 'a.b', true],
  ['>', 'foo', true],
  ['>', 'foo.bar.baz', true],
  ['foo.>', 'foo', false], // `>` needs at least one token
  ['foo.>', 'foo.bar', true],
  ['foo.>', 'foo.bar.baz', true],
  ['foo.>', 'bar.baz', false],
  ['*.>', 'foo', false],
  ['*.>', 'foo.bar', true],
  ['foo.*bar', 'foo.xbar', false], // literal token, not a wildcard
  ['foo.*bar', 'foo.*bar', true],
  ['foo.bar', 'foo.*', false], // a literal `*` in a published subject is just text
  ['foo.*', 'foo.*', true],
  ['foo.>', 'foo.>', true],
  ['foo.>.bar', 'foo.x.bar', false], // invalid pattern matches nothing
  ['', 'foo', false],
  ['foo', '', false],
]

t.test('subjectMatches', async (t) => {
  for (const [p, s, want] of matches) t.equal(subjectMatches(p, s), want, `${p} ~ ${s}`)
})

// [a, b, a ⊆ b]
const subsets: [string, string, boolean][] = [
  ['a', 'a', true],
  ['a', 'b', false],
  ['a.b', '*.b', true],
  ['*.b', 'a.b', false],
  ['a.*', 'a.>', true],
  ['a.>', 'a.*', false],
  ['a.b.c', 'a.>', true],
  ['a', 'a.>', false],
  ['a.>', '>', true],
  ['>', 'a.>', false],
  ['>', '>', true],
  ['*', '>', true],
  ['>', '*', false],
  ['*.*', '*.>', true],
  ['*.>', '*.*', false],
  ['a.*.c', 'a.>', true],
  ['a.*.c', '*.*.c', true],
  ['a.*.c', 'a.b.c', false],
  ['a.b', 'a.b.c', false],
  ['a.b.c', 'a.b', false],
  ['*', '*.*', false],
  ['', 'a', false],
  ['a', '', false],
]

t.test('subjectIsSubsetOf', async (t) => {
  for (const [a, b, want] of subsets) t.equal(subjectIsSubsetOf(a, b), want, `${a} ⊆ ${b}`)
})

// [a, b, collide]
const collisions: [string, string, boolean][] = [
  ['a', 'a', true],
  ['a', 'b', false],
  ['a.*', 'a.b', true],
  ['a.*', '*.b', true],
  ['a.*', 'b.*', false],
  ['a.>', 'a', false],
  ['a.>', 'a.b.c', true],
  ['>', 'x', true],
  ['*', 'a.b', false],
  ['*.>', 'a', false],
  ['*.>', '*', false],
  ['a.*.c', 'a.b.>', true],
  ['a.*.c', 'a.b.d', false],
  ['a.b', 'a.b.c', false],
  ['*.b.>', 'a.*.c', true],
  ['', 'a', false],
]

t.test('subjectsCollide', async (t) => {
  for (const [a, b, want] of collisions) {
    t.equal(subjectsCollide(a, b), want, `${a} ∩ ${b}`)
    t.equal(subjectsCollide(b, a), want, `${b} ∩ ${a} (symmetric)`)
  }
})

// Exhaustive cross-check against an independent, split-based reference over a small
// universe: patterns up to 3 tokens, literals up to 4 tokens, plus a token no pattern uses
// (so "some other token" always has a witness).
function refMatch(pattern: string, subject: string): boolean {
  const p = pattern.split('.')
  const s = subject.split('.')
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && s.length > i
    if (i >= s.length) return false
    if (p[i] !== '*' && p[i] !== s[i]) return false
  }
  return p.length === s.length
}

function* seqs(alphabet: string[], maxLen: number): Generator<string> {
  let level = ['']
  for (let len = 1; len <= maxLen; len++) {
    const next: string[] = []
    for (const pre of level) for (const tok of alphabet) next.push(pre === '' ? tok : pre + '.' + tok)
    yield* next
    level = next
  }
}

t.test('exhaustive cross-check against a reference', async (t) => {
  const patterns = [...seqs(['a', 'b', '*', '>'], 3)].filter(isValidSubject)
  const literals = [...seqs(['a', 'b', 'z'], 4)]
  let bad = 0
  for (const p of patterns) {
    for (const l of literals) if (subjectMatches(p, l) !== refMatch(p, l)) bad++
  }
  t.equal(bad, 0, 'subjectMatches agrees with the reference')

  bad = 0
  for (const a of patterns) {
    for (const b of patterns) {
      const inA = literals.filter((l) => refMatch(a, l))
      const subset = inA.every((l) => refMatch(b, l))
      const collide = inA.some((l) => refMatch(b, l))
      if (subjectIsSubsetOf(a, b) !== subset) {
        bad++
        t.fail(`subset ${a} ${b}`)
      }
      if (subjectsCollide(a, b) !== collide) {
        bad++
        t.fail(`collide ${a} ${b}`)
      }
    }
  }
  t.equal(bad, 0, 'subset/collide agree with enumeration')

  // The check can fail: a reference that forgets `>` needs a token disagrees.
  const sloppy = (p: string, s: string) => p === 'a.>' ? s.startsWith('a') : refMatch(p, s)
  t.ok(literals.some((l) => sloppy('a.>', l) !== subjectMatches('a.>', l)), 'a wrong matcher is caught')
})
