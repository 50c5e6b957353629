// Subject rules, as nats-server applies them by default (no rune/NUL checks).
// A subject is `.`-separated tokens; `*` and `>` are wildcards only as whole tokens,
// so `a.b*` is an ordinary literal. Everything here scans char codes in place: these
// run per SUB/PUB and per cache fix-up, so no split(), no regexes, no allocation.

const DOT = 46 // .
const STAR = 42 // *
const GT = 62 // >

/** The whitespace nats-server rejects inside subjects and queue names. */
export function isSpace(c: number): boolean {
  return c === 32 || c === 9 || c === 10 || c === 13 || c === 12
}

/** Index just past the token starting at `i` (the next `.`, or the end). */
function tokenEnd(s: string, i: number): number {
  const e = s.indexOf('.', i)
  return e < 0 ? s.length : e
}

/** Is s[start, end) exactly the one-char token `code`? */
function isTok(s: string, start: number, end: number, code: number): boolean {
  return end - start === 1 && s.charCodeAt(start) === code
}

function checkSubject(s: string, literal: boolean): boolean {
  const n = s.length
  if (n === 0) return false
  let start = 0 // start of the current token
  for (let i = 0; i <= n; i++) {
    const c = i < n ? s.charCodeAt(i) : DOT // treat the end as a closing separator
    if (c === DOT) {
      if (i === start) return false // empty token: leading, trailing or double dot
      if (i - start === 1) {
        const t = s.charCodeAt(start)
        if (t === GT && (literal || i < n)) return false // `>` only as the last token
        if (t === STAR && literal) return false
      }
      start = i + 1
    } else if (isSpace(c)) {
      return false
    }
  }
  return true
}

/** Valid for SUB: wildcards allowed, `>` only last. */
export function isValidSubject(s: string): boolean {
  return checkSubject(s, false)
}

/** Valid for PUB (pedantic): a valid subject with no wildcard token. */
export function isValidLiteralSubject(s: string): boolean {
  return checkSubject(s, true)
}

export function isValidQueueName(q: string): boolean {
  const n = q.length
  if (n === 0) return false
  for (let i = 0; i < n; i++) if (isSpace(q.charCodeAt(i))) return false
  return true
}

/** Same token text at a[as, ae) and b[bs, be)? */
function sameTok(a: string, as: number, ae: number, b: string, bs: number, be: number): boolean {
  if (ae - as !== be - bs) return false
  for (let i = 0; i < ae - as; i++) if (a.charCodeAt(as + i) !== b.charCodeAt(bs + i)) return false
  return true
}

/**
 * Does the literal `subject` match `pattern`? Tokens of `subject` are taken as plain
 * text (a non-pedantic PUB to `foo.*` is only matched by wildcards, as in the trie).
 */
export function subjectMatches(pattern: string, subject: string): boolean {
  const pn = pattern.length
  const sn = subject.length
  if (pn === 0 || sn === 0) return false
  let p = 0
  let s = 0
  for (;;) {
    const pe = tokenEnd(pattern, p)
    const se = tokenEnd(subject, s)
    // `>` takes this token and the rest; one that is not last (invalid) matches nothing,
    // as in the trie, so cache fix-ups agree with fresh matches
    if (isTok(pattern, p, pe, GT)) return pe === pn
    if (!isTok(pattern, p, pe, STAR) && !sameTok(pattern, p, pe, subject, s, se)) return false
    if (pe === pn || se === sn) return pe === pn && se === sn
    p = pe + 1
    s = se + 1
  }
}

/** Is every subject matched by pattern `a` also matched by pattern `b`? (e.g. `a.*` ⊂ `a.>`) */
export function subjectIsSubsetOf(a: string, b: string): boolean {
  const an = a.length
  const bn = b.length
  if (an === 0 || bn === 0) return false
  let i = 0
  let j = 0
  for (;;) {
    const ae = tokenEnd(a, i)
    const be = tokenEnd(b, j)
    if (isTok(b, j, be, GT)) return true
    // b takes exactly one token here, so a `>` in a (one or more) always escapes it
    if (isTok(a, i, ae, GT)) return false
    if (!isTok(b, j, be, STAR)) {
      if (isTok(a, i, ae, STAR) || !sameTok(a, i, ae, b, j, be)) return false
    }
    if (ae === an || be === bn) return ae === an && be === bn
    i = ae + 1
    j = be + 1
  }
}

/** Is there a literal subject that both patterns match? */
export function subjectsCollide(a: string, b: string): boolean {
  const an = a.length
  const bn = b.length
  if (an === 0 || bn === 0) return false
  let i = 0
  let j = 0
  for (;;) {
    const ae = tokenEnd(a, i)
    const be = tokenEnd(b, j)
    // both have a token here, so `>` on either side can absorb the other's remainder
    if (isTok(a, i, ae, GT) || isTok(b, j, be, GT)) return true
    if (!isTok(a, i, ae, STAR) && !isTok(b, j, be, STAR) && !sameTok(a, i, ae, b, j, be)) return false
    if (ae === an || be === bn) return ae === an && be === bn
    i = ae + 1
    j = be + 1
  }
}

/** True if any token is a wildcard. Assumes a valid subject. */
export function hasWildcard(s: string): boolean {
  const n = s.length
  let start = 0
  for (let i = 0; i <= n; i++) {
    if (i === n || s.charCodeAt(i) === DOT) {
      if (i - start === 1) {
        const t = s.charCodeAt(start)
        if (t === STAR || t === GT) return true
      }
      start = i + 1
    }
  }
  return false
}
