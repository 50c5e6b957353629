import t from 'tap'
import { subjectMatches } from '../src/subject.ts'
import { Sublist, pickQueueMember, type Match } from '../src/sublist.ts'

interface Sub {
  readonly id: number
  readonly subject: string
  readonly queue: string | null
}

let nextId = 1
const sub = (subject: string, queue: string | null = null): Sub => ({ id: nextId++, subject, queue })

// Order inside a Match carries no meaning, so compare a canonical form:
// sorted psub ids, and queue name -> sorted member ids.
interface Norm {
  psubs: number[]
  qsubs: Record<string, number[]>
}

// Structural mistakes (empty, duplicate or mixed groups, queue subs among psubs) get names
// or ids the oracle never produces, so they fail the comparison too.
function norm(m: Match<Sub>): Norm {
  const qsubs: Record<string, number[]> = {}
  for (const g of m.qsubs) {
    const q = g[0]?.queue ?? '<empty group>'
    const name =
      qsubs[q] !== undefined ? `<duplicate group ${q}>` : g.every((s) => s.queue === q) ? q : `<mixed group ${q}>`
    qsubs[name] = g.map((s) => s.id).sort((a, b) => a - b)
  }
  const psubs = m.psubs.map((s) => (s.queue === null ? s.id : -s.id)).sort((a, b) => a - b)
  return { psubs, qsubs }
}

/** What match(subject) should return, computed by brute force over the live subs. */
function oracle(live: Iterable<Sub>, subject: string): Norm {
  const psubs: number[] = []
  const qsubs: Record<string, number[]> = {}
  for (const s of live) {
    if (!subjectMatches(s.subject, subject)) continue
    if (s.queue === null) psubs.push(s.id)
    else (qsubs[s.queue] ??= []).push(s.id)
  }
  psubs.sort((a, b) => a - b)
  for (const q in qsubs) qsubs[q]!.sort((a, b) => a - b)
  return { psubs, qsubs }
}

const same = (a: Norm, b: Norm) => JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b))
function sortKeys(n: Norm): Norm {
  const qsubs: Record<string, number[]> = {}
  for (const k of Object.keys(n.qsubs).sort()) qsubs[k] = n.qsubs[k]!
  return { psubs: n.psubs, qsubs }
}

/** Deterministic PRNG (mulberry32) so a failing run can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = a
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

const ids = (subs: readonly Sub[]) => subs.map((s) => s.id).sort((a, b) => a - b)

t.test('literal, * and > matching', async (t) => {
  const sl = new Sublist<Sub>()
  const lit = sub('foo.bar')
  const pwc = sub('foo.*')
  const fwc = sub('foo.>')
  const all = sub('>')
  const mid = sub('*.bar')
  const deep = sub('foo.bar.baz')
  for (const s of [lit, pwc, fwc, all, mid, deep]) sl.insert(s)
  t.equal(sl.count, 6)

  t.same(ids(sl.match('foo.bar').psubs), ids([lit, pwc, fwc, all, mid]))
  t.same(ids(sl.match('foo.baz').psubs), ids([pwc, fwc, all]))
  t.same(ids(sl.match('foo.bar.baz').psubs), ids([fwc, all, deep]))
  t.same(ids(sl.match('foo').psubs), ids([all]), '`foo.>` does not match `foo`')
  t.same(ids(sl.match('x.bar').psubs), ids([all, mid]))
  t.same(ids(sl.match('x.y.z.w').psubs), ids([all]))
  t.same(sl.match('foo.bar').qsubs, [])
})

t.test('no match and malformed published subjects', async (t) => {
  const sl = new Sublist<Sub>()
  sl.insert(sub('foo.bar'))
  sl.insert(sub('>'))
  t.same(sl.match('nothing.here').psubs.length, 1)
  for (const bad of ['', '.', 'foo..bar', '.foo', 'foo.']) {
    const m = sl.match(bad)
    t.equal(m.psubs.length + m.qsubs.length, 0, `${JSON.stringify(bad)} matches nothing`)
  }
  t.equal(sl.stats().cacheEntries, 1, 'malformed subjects are not cached')
  const empty = new Sublist<Sub>().match('a.b')
  t.same([empty.psubs.length, empty.qsubs.length], [0, 0])
})

t.test('a published `*` or `>` token is literal text', async (t) => {
  const sl = new Sublist<Sub>()
  const lit = sub('foo.bar')
  const pwc = sub('foo.*')
  const fwc = sub('foo.>')
  for (const s of [lit, pwc, fwc]) sl.insert(s)
  t.same(ids(sl.match('foo.*').psubs), ids([pwc, fwc]), 'counted once, literal not matched')
  t.same(ids(sl.match('foo.>').psubs), ids([pwc, fwc]))
  sl.insert(sub('foo.baz'))
  t.same(ids(sl.match('foo.*').psubs), ids([pwc, fwc]), 'cache fix agrees')
})

t.test('queue groups are merged by name across nodes', async (t) => {
  const sl = new Sublist<Sub>()
  const a1 = sub('foo.bar', 'A')
  const a2 = sub('foo.*', 'A')
  const a3 = sub('foo.>', 'A')
  const b1 = sub('foo.*', 'B')
  const c1 = sub('other', 'C')
  const p = sub('foo.bar')
  for (const s of [a1, a2, a3, b1, c1, p]) sl.insert(s)

  const m = sl.match('foo.bar')
  t.same(ids(m.psubs), [p.id])
  t.same(norm(m).qsubs, { A: ids([a1, a2, a3]), B: [b1.id] })
  t.equal(m.qsubs.length, 2, 'one array per group name, no group C')

  const m2 = sl.match('foo.x.y')
  t.same(norm(m2).qsubs, { A: [a3.id] })
  t.same(m2.psubs, [])
})

t.test('inserting twice is a no-op; removal', async (t) => {
  const events: unknown[] = []
  const sl = new Sublist<Sub>({ onInterest: (...e) => events.push(e) })
  const s = sub('foo')
  sl.insert(s)
  sl.insert(s)
  t.equal(sl.count, 1)
  t.same(ids(sl.match('foo').psubs), [s.id])
  t.equal(sl.stats().inserts, 1)
  t.equal(sl.remove(s), true)
  t.equal(sl.remove(s), false, 'already gone')
  t.equal(sl.remove(sub('foo')), false, 'a different object with the same subject')
  t.equal(sl.remove(sub('never.seen')), false)
  t.equal(sl.remove(sub('foo', 'q')), false)
  t.equal(sl.count, 0)
  t.same(sl.match('foo').psubs, [])
  t.same(events, [
    ['foo', null, 1],
    ['foo', null, 0],
  ])
  t.equal(sl.stats().nodes, 0, 'failed removals create no nodes')
})

t.test('pruning returns the trie to empty', async (t) => {
  const sl = new Sublist<Sub>()
  const subs = [
    sub('a'),
    sub('a.b'),
    sub('a.b.c.d.e'),
    sub('a.*.c'),
    sub('a.>'),
    sub('*'),
    sub('>'),
    sub('x.y', 'q'),
    sub('x.y', 'q'),
    sub('x.y', 'r'),
    sub('x.y'),
  ]
  for (const s of subs) sl.insert(s)
  t.ok(sl.stats().nodes > 0)
  // Partial removal prunes only the branch that emptied.
  sl.remove(subs[2]!)
  t.equal(sl.stats().nodes, 9, 'a.b.c.d.e pruned back to a.b: a, a.b, a.*, a.*.c, a.>, *, >, x, x.y')
  for (const s of subs) sl.remove(s)
  t.equal(sl.count, 0)
  t.equal(sl.stats().nodes, 0)
  t.same(sl.interest(), [])

  // Churn does not grow the trie.
  for (let i = 0; i < 1000; i++) {
    const s = sub(`_INBOX.${i}.reply`)
    sl.insert(s)
    sl.match(s.subject)
    sl.remove(s)
  }
  t.equal(sl.stats().nodes, 0)
  t.equal(sl.count, 0)
})

t.test('interest events', async (t) => {
  const events: [string, string | null, number][] = []
  const sl = new Sublist<Sub>({ onInterest: (s, q, n) => events.push([s, q, n]) })
  const p1 = sub('foo.*')
  const p2 = sub('foo.*')
  const p3 = sub('foo.bar')
  const q1 = sub('foo.*', 'w')
  const q2 = sub('foo.*', 'w')
  const q3 = sub('foo.*', 'v')

  sl.insert(p1)
  sl.insert(p2) // 1 -> 2: silent for plain subs
  sl.insert(p3)
  sl.insert(q1)
  sl.insert(q2)
  sl.insert(q3)
  sl.insert(q2) // duplicate: no event
  t.same(
    sl.interest().sort((a, b) => `${a.subject}|${a.queue ?? ''}`.localeCompare(`${b.subject}|${b.queue ?? ''}`)),
    [
      { subject: 'foo.*', queue: null, count: 2 },
      { subject: 'foo.*', queue: 'v', count: 1 },
      { subject: 'foo.*', queue: 'w', count: 2 },
      { subject: 'foo.bar', queue: null, count: 1 },
    ],
  )
  sl.remove(p1) // 2 -> 1: silent
  sl.remove(q1)
  sl.remove(p2)
  sl.remove(q2)
  sl.remove(q2) // not present: no event
  sl.remove(q3)
  sl.remove(p3)
  t.same(events, [
    ['foo.*', null, 1],
    ['foo.bar', null, 1],
    ['foo.*', 'w', 1],
    ['foo.*', 'w', 2],
    ['foo.*', 'v', 1],
    ['foo.*', 'w', 1],
    ['foo.*', null, 0],
    ['foo.*', 'w', 0],
    ['foo.*', 'v', 0],
    ['foo.bar', null, 0],
  ])
})

t.test('interest events see the updated sublist', async (t) => {
  const seen: number[] = []
  const sl: Sublist<Sub> = new Sublist<Sub>({
    onInterest: () => seen.push(sl.match('a.b').psubs.length),
  })
  const s = sub('a.*')
  sl.insert(s)
  sl.remove(s)
  t.same(seen, [1, 0])
})

t.test('pickQueueMember is roughly uniform', async (t) => {
  const group = [sub('q', 'g'), sub('q', 'g'), sub('q', 'g'), sub('q', 'g')]
  const counts = new Map<Sub, number>()
  const n = 40_000
  for (let i = 0; i < n; i++) {
    const m = pickQueueMember(group)!
    counts.set(m, (counts.get(m) ?? 0) + 1)
  }
  t.equal(counts.size, 4, 'every member picked')
  // Expected 10000 each, sd ~87: ±10% is over 10 sd away.
  for (const [m, c] of counts) t.ok(Math.abs(c - n / 4) < n / 40, `member ${m.id}: ${c}`)
  t.equal(pickQueueMember([group[0]!]), group[0])
  t.throws(() => pickQueueMember([]))

  // Edges of Math.random's range stay in bounds.
  const orig = Math.random
  try {
    Math.random = () => 0
    t.equal(pickQueueMember(group), group[0])
    Math.random = () => 0.9999999999999999
    t.equal(pickQueueMember(group), group[3])
  } finally {
    Math.random = orig
  }
})

t.test('pickQueueMember passes over the skipped owner, uniformly among the rest', async (t) => {
  const me = {}
  const other = {}
  const group = [
    { ...sub('q', 'g'), owner: me },
    { ...sub('q', 'g'), owner: other },
    { ...sub('q', 'g'), owner: me },
    { ...sub('q', 'g'), owner: other },
  ]
  const seen = new Set<unknown>()
  let mine = 0
  for (let i = 0; i < 2000; i++) {
    const m = pickQueueMember(group, me)
    if (m?.owner === me) mine++
    seen.add(m)
  }
  t.equal(mine, 0, 'never the skipped owner')
  t.equal(seen.size, 2, 'both other members picked')
  t.equal(pickQueueMember(group.filter((s) => s.owner === me), me), null, 'all skipped: none')
  t.ok(pickQueueMember(group.filter((s) => s.owner === me)), 'no skip: one of them')
})

t.test('cache: hits return the same object, stats count', async (t) => {
  const sl = new Sublist<Sub>()
  sl.insert(sub('a.b'))
  const m1 = sl.match('a.b')
  const m2 = sl.match('a.b')
  t.equal(m1, m2, 'hit returns the stored object')
  const st = sl.stats()
  t.same(
    { matches: st.matches, cacheHits: st.cacheHits, cacheEntries: st.cacheEntries, subscriptions: st.subscriptions },
    { matches: 2, cacheHits: 1, cacheEntries: 1, subscriptions: 1 },
  )
})

t.test('cache: changes fix only matching entries and never mutate handed-out results', async (t) => {
  const sl = new Sublist<Sub>()
  const ab = sub('a.b')
  sl.insert(ab)
  const mab = sl.match('a.b')
  const mac = sl.match('a.c')
  const mxy = sl.match('x.y')
  const snap = [norm(mab), norm(mac), norm(mxy)]

  const wild = sub('a.*', 'q')
  sl.insert(wild)
  t.equal(sl.match('x.y'), mxy, 'unrelated entry kept as is')
  t.not(sl.match('a.b'), mab, 'affected entry replaced')
  t.same(norm(sl.match('a.b')), { psubs: [ab.id], qsubs: { q: [wild.id] } })
  t.same(norm(sl.match('a.c')), { psubs: [], qsubs: { q: [wild.id] } })

  const lit = sub('a.c')
  const before = sl.match('a.b')
  sl.insert(lit)
  t.equal(sl.match('a.b'), before, 'a literal sub touches only its own entry')
  t.same(ids(sl.match('a.c').psubs), [lit.id])

  sl.remove(wild)
  sl.remove(ab)
  t.same(norm(sl.match('a.b')), { psubs: [], qsubs: {} })
  t.same(ids(sl.match('a.c').psubs), [lit.id])
  t.same([norm(mab), norm(mac), norm(mxy)], snap, 'old results unchanged')
  t.equal(sl.stats().cacheEntries, 3, 'entries fixed in place, not dropped')
})

t.test('cache: eviction is bounded and stays correct', async (t) => {
  const sl = new Sublist<Sub>({ cacheMax: 8 })
  const live: Sub[] = [sub('s.*'), sub('s.1'), sub('>', 'q')]
  for (const s of live) sl.insert(s)
  let max = 0
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 20; i++) {
      const subject = `s.${i}`
      t.ok(same(norm(sl.match(subject)), oracle(live, subject)), `round ${round} ${subject}`)
      max = Math.max(max, sl.stats().cacheEntries)
    }
    const s = sub(`s.${round}`)
    live.push(s)
    sl.insert(s)
  }
  t.ok(max <= 8, `cache never above cacheMax (max seen ${max})`)

  const off = new Sublist<Sub>({ cacheMax: 0 })
  off.insert(sub('a'))
  off.match('a')
  off.match('a')
  t.equal(off.stats().cacheEntries, 0, 'cacheMax 0 disables the cache')
  t.equal(off.stats().cacheHits, 0)
})

t.test('cache: eviction drops the oldest quarter', async (t) => {
  const sl = new Sublist<Sub>({ cacheMax: 8 })
  for (let i = 0; i < 8; i++) sl.match(`k.${i}`)
  t.equal(sl.stats().cacheEntries, 8)
  sl.match('k.8') // 9 > 8: evict down to 6
  t.equal(sl.stats().cacheEntries, 6)
  const hits = sl.stats().cacheHits
  sl.match('k.0') // evicted (oldest)
  t.equal(sl.stats().cacheHits, hits, 'oldest entry was evicted')
  sl.match('k.8')
  t.equal(sl.stats().cacheHits, hits + 1, 'newest entry kept')
})

// The randomized check compares every match() with the brute-force oracle while subs come
// and go, so a stale or wrongly fixed cache entry shows up as a mismatch.
type Asserts = Pick<typeof t, 'ok' | 'equal' | 'same' | 'fail'>

function churn(t: Asserts, seed: number, cacheMax: number | undefined, ops: number): void {
  const rnd = prng(seed)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!
  const toks = ['a', 'b', 'c']
  const patTok = ['a', 'b', 'c', '*', '*']
  const queues = [null, null, null, 'q1', 'q2']

  const randLiteral = () => {
    const n = 1 + Math.floor(rnd() * 4)
    const out: string[] = []
    for (let i = 0; i < n; i++) out.push(pick(toks))
    return out.join('.')
  }
  const randPattern = () => {
    const n = 1 + Math.floor(rnd() * 3)
    const out: string[] = []
    for (let i = 0; i < n; i++) out.push(pick(patTok))
    if (rnd() < 0.2) out.push('>')
    return out.join('.')
  }

  const events: [string, string | null, number][] = []
  const sl = new Sublist<Sub>({ cacheMax, onInterest: (s, q, n) => events.push([s, q, n]) })
  const live = new Map<number, Sub>()
  const pairCount = new Map<string, number>() // oracle for interest counts
  const key = (s: Sub) => `${s.subject}\u0000${s.queue ?? ''}`
  const kept: [Match<Sub>, Norm][] = [] // handed-out results must never change
  let mismatches = 0
  let matchesChecked = 0
  let eventErrors = 0

  // Plain subs report only 0->1 (insert) and 1->0 (remove); queue subs report every change.
  const expectEvent = (s: Sub, count: number, inserted: boolean) => {
    const fires = s.queue !== null || count === (inserted ? 1 : 0)
    const expected = fires ? [[s.subject, s.queue, count]] : []
    if (JSON.stringify(events.splice(0)) !== JSON.stringify(expected)) eventErrors++
  }

  for (let op = 0; op < ops; op++) {
    const r = rnd()
    if (r < 0.3) {
      const s = sub(randPattern(), pick(queues))
      sl.insert(s)
      live.set(s.id, s)
      const n = (pairCount.get(key(s)) ?? 0) + 1
      pairCount.set(key(s), n)
      expectEvent(s, n, true)
    } else if (r < 0.33 && live.size > 0) {
      const s = pick([...live.values()])
      sl.insert(s) // duplicate: no-op
      if (events.splice(0).length !== 0) eventErrors++
    } else if (r < 0.6 && live.size > 0) {
      const s = pick([...live.values()])
      if (!sl.remove(s)) mismatches++
      live.delete(s.id)
      const n = pairCount.get(key(s))! - 1
      if (n === 0) pairCount.delete(key(s))
      else pairCount.set(key(s), n)
      expectEvent(s, n, false)
    } else if (r < 0.62) {
      if (sl.remove(sub(randPattern(), pick(queues)))) mismatches++ // never inserted
      if (events.splice(0).length !== 0) eventErrors++
    } else {
      const subject = randLiteral()
      const m = sl.match(subject)
      matchesChecked++
      const want = oracle(live.values(), subject)
      if (!same(norm(m), want)) {
        mismatches++
        if (mismatches < 5) t.fail(`seed ${seed} op ${op}: match(${subject})`, { got: norm(m), want })
      }
      if (rnd() < 0.05) {
        kept.push([m, norm(m)])
        if (kept.length > 50) kept.shift()
      }
    }
    if (sl.count !== live.size) mismatches++
  }

  t.equal(mismatches, 0, `seed ${seed}: ${matchesChecked} matches agree with the oracle`)
  t.equal(eventErrors, 0, 'interest events as expected')
  t.ok(kept.every(([m, n]) => same(norm(m), n)), 'handed-out results never mutated')

  const interest = sl.interest().map((i) => `${i.subject}\u0000${i.queue ?? ''}=${i.count}`).sort()
  const wantInterest = [...pairCount].map(([k, n]) => `${k}=${n}`).sort()
  t.same(interest, wantInterest, 'interest() agrees with the oracle')

  const st = sl.stats()
  if (cacheMax !== undefined) t.ok(st.cacheEntries <= cacheMax, 'cache bounded')
  t.ok(st.cacheHits > 0, `cache was exercised (${st.cacheHits} hits)`)

  for (const s of live.values()) sl.remove(s)
  t.equal(sl.count, 0)
  t.equal(sl.stats().nodes, 0, 'trie pruned to nothing')
}

t.test('cache correctness under churn (default cache)', async (t) => {
  churn(t, 1, undefined, 20_000)
})

t.test('cache correctness under churn (tiny cache, constant eviction)', async (t) => {
  churn(t, 2, 5, 20_000)
})

t.test('cache correctness under churn (more seeds)', async (t) => {
  for (const seed of [3, 4, 5]) churn(t, seed, 64, 5_000)
})

t.test('the oracle catches wrong results', async (t) => {
  const sl = new Sublist<Sub>()
  const live = [sub('a.b'), sub('a.*', 'q'), sub('>')]
  for (const s of live) sl.insert(s)
  const good = sl.match('a.b')
  t.ok(same(norm(good), oracle(live, 'a.b')), 'correct result passes')

  // A result missing one sub, and a stale result from before an insert, both fail.
  t.notOk(same(norm({ psubs: good.psubs.slice(1), qsubs: good.qsubs }), oracle(live, 'a.b')))
  const added = sub('a.b', 'q')
  sl.insert(added)
  live.push(added)
  t.notOk(same(norm(good), oracle(live, 'a.b')), 'the pre-insert (stale) result is caught')
  t.ok(same(norm(sl.match('a.b')), oracle(live, 'a.b')), 'the fixed cache entry passes')
  // Group membership matters, not just ids: a sub reported in the wrong group fails.
  t.notOk(same(norm({ psubs: [...good.psubs, added], qsubs: good.qsubs }), oracle(live, 'a.b')))
})

t.test('a node keeps three fields; what few nodes need is made and dropped with it', async (t) => {
  const sl = new Sublist<Sub>()
  type N = { psub: Sub | null; children: Map<string, N> | null; x: object | null }
  const root = (sl as unknown as { root: N }).root
  const node = (subject: string): N => subject.split('.').reduce((n, tok) => n.children!.get(tok)!, root)
  const devs = Array.from({ length: 3 }, (_, i) => sub(`dev.${i}.cmd`))
  for (const d of devs) sl.insert(d)
  const leaf = node('dev.1.cmd')
  t.equal(Object.keys(leaf).length, 3, 'a leaf has three fields (48 bytes on JSC; six took 64)')
  t.equal(leaf.x, null, 'one subscriber, no wildcard children: nothing more')
  t.equal(node('dev').x, null)
  // Everything that needs the rest, then gone again.
  const more = [sub('dev.1.cmd'), sub('dev.1.cmd', 'q'), sub('dev.1.cmd', 'q'), sub('dev.*.cmd'), sub('dev.>'), sub('dev.1.*'), sub('dev.1.>', 'r')]
  for (const s of more) sl.insert(s)
  t.same(ids(sl.match('dev.1.cmd').psubs), ids([devs[1]!, more[0]!, more[3]!, more[4]!, more[5]!]))
  t.equal(sl.match('dev.1.cmd').qsubs.length, 2, 'two queue groups')
  t.not(leaf.x, null)
  t.not(node('dev').x, null)
  for (const s of more) t.ok(sl.remove(s))
  t.equal(leaf.x, null, 'the extra part dropped once it holds nothing')
  t.equal(node('dev').x, null)
  t.equal(node('dev.1').x, null)
  t.equal(leaf.psub, devs[1], 'the lone subscriber back in its field')
  t.same(ids(sl.match('dev.1.cmd').psubs), [devs[1]!.id])
  for (const d of devs) sl.remove(d)
  t.equal(sl.stats().nodes, 0, 'all pruned')
  t.equal(root.x, null)
})
