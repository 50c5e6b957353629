// The subscription index: a trie keyed by subject tokens, plus a cache of match results
// per literal subject. The broker calls match() once per published message, so a cache
// hit is one Map.get, and a miss walks the trie by scanning the subject string in place.

import { hasWildcard, subjectMatches } from './subject.ts'

export interface SubLike {
  readonly subject: string
  readonly queue: string | null
}

/**
 * Who gets a message. `qsubs` holds one array per queue group name, never empty; deliver
 * to every psub and to one member of each group (see pickQueueMember). Order carries no
 * meaning. Results are shared (cached): treat them as read-only.
 */
export interface Match<S> {
  readonly psubs: readonly S[]
  readonly qsubs: readonly (readonly S[])[]
}

export interface SublistOptions {
  /**
   * Fires after a change of the number of subs with exactly this (subject, queue): for plain
   * subs (queue null) only on 0→1 and 1→0, for queue subs on every change (the count is the
   * weight sent upstream). `count` is the new count, 0 when the pair is gone.
   */
  onInterest?: (subject: string, queue: string | null, count: number) => void
  /** Most cached match results (default 1024, 0 disables the cache). */
  cacheMax?: number
}

export interface SublistStats {
  subscriptions: number
  cacheEntries: number
  inserts: number
  removes: number
  matches: number
  cacheHits: number
  /** Trie nodes below the root; back to 0 once every sub is removed. */
  nodes: number
}

export interface Interest {
  subject: string
  queue: string | null
  count: number
}

// One node per distinct pattern prefix. Wildcard children live in their own fields so a
// literal token `*` in a (non-pedantic) published subject cannot reach them by name.
// Plain subs: a lone one sits in `psub`, two or more in the `psubs` Set, never both. Most
// nodes hold one subscriber (a device's own topic), and a Set costs ~250 bytes.
// Most nodes are also a leaf with that one subscriber, or a level with literal children: what
// else a node may hold (a Set of subscribers, queue groups, wildcard children) is in `x`, made
// when needed, so such a node has three fields (48 bytes on JSC) instead of six (64).
interface Node<S> {
  psub: S | null
  children: Map<string, Node<S>> | null
  x: Extra<S> | null
}

interface Extra<S> {
  psubs: Set<S> | null
  qsubs: Map<string, Set<S>> | null
  pwc: Node<S> | null // `*`
  fwc: Node<S> | null // `>`
}

function newNode<S>(): Node<S> {
  return { psub: null, children: null, x: null }
}

function extra<S>(n: Node<S>): Extra<S> {
  return (n.x ??= { psubs: null, qsubs: null, pwc: null, fwc: null })
}

/** Drops `x` once it holds nothing. */
function trimExtra<S>(n: Node<S>): void {
  const x = n.x
  if (x !== null && x.psubs === null && x.qsubs === null && x.pwc === null && x.fwc === null) n.x = null
}

function isEmptyNode<S>(n: Node<S>): boolean {
  return n.psub === null && n.children === null && n.x === null
}

function childOf<S>(n: Node<S>, tok: string): Node<S> | null {
  if (tok === '*') return n.x === null ? null : n.x.pwc
  if (tok === '>') return n.x === null ? null : n.x.fwc
  return n.children?.get(tok) ?? null
}

function setChild<S>(n: Node<S>, tok: string, c: Node<S> | null): void {
  if (tok === '*' || tok === '>') {
    const k = tok === '*' ? 'pwc' : 'fwc'
    if (c !== null) extra(n)[k] = c
    else if (n.x !== null) {
      n.x[k] = null
      trimExtra(n)
    }
  } else if (c !== null) (n.children ??= new Map()).set(tok, c)
  else if (n.children !== null) {
    n.children.delete(tok)
    if (n.children.size === 0) n.children = null
  }
}

const EMPTY: Match<never> = Object.freeze({ psubs: Object.freeze([]), qsubs: Object.freeze([]) })

/** A published subject with an empty token matches nothing (nats-server does the same). */
function hasEmptyToken(s: string): boolean {
  const n = s.length
  if (n === 0 || s.charCodeAt(0) === 46 || s.charCodeAt(n - 1) === 46) return true
  return s.indexOf('..') >= 0
}

// Accumulator for one uncached match. Queue groups are merged by name across nodes; a
// Map is only made when a second node brings groups, the common case needs none.
interface Acc<S> {
  psubs: S[]
  qsubs: S[][]
  byName: Map<string, S[]> | null
}

function collectNode<S extends SubLike>(n: Node<S>, acc: Acc<S>): void {
  if (n.psub !== null) acc.psubs.push(n.psub)
  const x = n.x
  if (x === null) return
  if (x.psubs !== null) for (const s of x.psubs) acc.psubs.push(s)
  const qsubs = x.qsubs
  if (qsubs === null) return
  if (acc.qsubs.length === 0) {
    for (const members of qsubs.values()) acc.qsubs.push(Array.from(members))
    return
  }
  let byName = acc.byName
  if (byName === null) {
    byName = acc.byName = new Map()
    for (const g of acc.qsubs) byName.set(g[0]!.queue!, g)
  }
  for (const [q, members] of qsubs) {
    const g = byName.get(q)
    if (g !== undefined) for (const s of members) g.push(s)
    else {
      const ng = Array.from(members)
      byName.set(q, ng)
      acc.qsubs.push(ng)
    }
  }
}

/** Walks the trie for the token of `subject` starting at `start` (past the end = done). */
function walk<S extends SubLike>(n: Node<S>, subject: string, start: number, acc: Acc<S>): void {
  if (start > subject.length) {
    collectNode(n, acc)
    return
  }
  const x = n.x
  if (x !== null && x.fwc !== null) collectNode(x.fwc, acc) // `>` takes this token and all after it
  let end = subject.indexOf('.', start)
  if (end < 0) end = subject.length
  if (x !== null && x.pwc !== null) walk(x.pwc, subject, end + 1, acc)
  if (n.children !== null) {
    const c = n.children.get(subject.slice(start, end))
    if (c !== undefined) walk(c, subject, end + 1, acc)
  }
}

// Cached results are shared with callers, so changes build new objects instead of editing.

function withSub<S extends SubLike>(m: Match<S>, sub: S): Match<S> {
  if (sub.queue === null) return { psubs: [...m.psubs, sub], qsubs: m.qsubs }
  const i = m.qsubs.findIndex((g) => g[0]!.queue === sub.queue)
  if (i < 0) return { psubs: m.psubs, qsubs: [...m.qsubs, [sub]] }
  const qsubs = m.qsubs.slice()
  qsubs[i] = [...m.qsubs[i]!, sub]
  return { psubs: m.psubs, qsubs }
}

function withoutSub<S extends SubLike>(m: Match<S>, sub: S): Match<S> {
  if (sub.queue === null) return { psubs: m.psubs.filter((s) => s !== sub), qsubs: m.qsubs }
  const qsubs = m.qsubs
    .map((g) => (g[0]!.queue === sub.queue ? g.filter((s) => s !== sub) : g))
    .filter((g) => g.length > 0) // a group never stays empty
  return { psubs: m.psubs, qsubs }
}

export class Sublist<S extends SubLike> {
  private readonly root: Node<S> = newNode()
  private readonly cache = new Map<string, Match<S>>()
  private readonly cacheMax: number
  private readonly onInterest: SublistOptions['onInterest']
  private subs = 0
  private nodes = 0
  private inserts = 0
  private removes = 0
  private matches = 0
  private cacheHits = 0

  constructor(opts: SublistOptions = {}) {
    this.cacheMax = Math.max(0, opts.cacheMax ?? 1024)
    this.onInterest = opts.onInterest
  }

  get count(): number {
    return this.subs
  }

  /**
   * Adds `sub`; its subject must already be valid (isValidSubject). Inserting an object
   * that is already present is a no-op (it does not count twice).
   */
  insert(sub: S): void {
    const subject = sub.subject
    let n = this.root
    for (let start = 0; start <= subject.length; ) {
      let end = subject.indexOf('.', start)
      if (end < 0) end = subject.length
      const tok = subject.slice(start, end)
      let c = childOf(n, tok)
      if (c === null) {
        c = newNode()
        setChild(n, tok, c)
        this.nodes++
      }
      n = c
      start = end + 1
    }
    let count: number
    if (sub.queue === null) {
      const psubs = n.x === null ? null : n.x.psubs
      if (n.psub === sub || psubs?.has(sub)) return
      if (psubs !== null) {
        psubs.add(sub)
        count = psubs.size
      } else if (n.psub !== null) {
        extra(n).psubs = new Set([n.psub, sub])
        n.psub = null
        count = 2
      } else {
        n.psub = sub
        count = 1
      }
    } else {
      const qs = (extra(n).qsubs ??= new Map())
      let set = qs.get(sub.queue)
      if (set === undefined) qs.set(sub.queue, (set = new Set()))
      if (set.has(sub)) return
      set.add(sub)
      count = set.size
    }
    this.subs++
    this.inserts++
    this.fixCache(sub, withSub)
    if (this.onInterest !== undefined && (sub.queue !== null || count === 1)) {
      this.onInterest(subject, sub.queue, count)
    }
  }

  /** Removes `sub`; false if it was not present. Prunes nodes left empty. */
  remove(sub: S): boolean {
    const subject = sub.subject
    // Remember the path so emptied nodes can be unlinked bottom-up afterwards.
    const path: Node<S>[] = []
    const toks: string[] = []
    let n = this.root
    for (let start = 0; start <= subject.length; ) {
      let end = subject.indexOf('.', start)
      if (end < 0) end = subject.length
      const tok = subject.slice(start, end)
      const c = childOf(n, tok)
      if (c === null) return false
      path.push(n)
      toks.push(tok)
      n = c
      start = end + 1
    }
    let count: number
    if (sub.queue === null) {
      if (n.psub === sub) {
        n.psub = null
        count = 0
      } else {
        const x = n.x
        if (x === null || x.psubs === null || !x.psubs.delete(sub)) return false
        count = x.psubs.size
        if (count === 1) {
          // Back to a lone subscriber: drop the Set.
          n.psub = x.psubs.values().next().value!
          x.psubs = null
          trimExtra(n)
        }
      }
    } else {
      const x = n.x
      const set = x?.qsubs?.get(sub.queue)
      if (set === undefined || !set.delete(sub)) return false
      count = set.size
      if (count === 0) {
        x!.qsubs!.delete(sub.queue)
        if (x!.qsubs!.size === 0) {
          x!.qsubs = null
          trimExtra(n)
        }
      }
    }
    for (let i = path.length - 1; i >= 0 && isEmptyNode(n); i--) {
      setChild(path[i]!, toks[i]!, null)
      this.nodes--
      n = path[i]!
    }
    this.subs--
    this.removes++
    this.fixCache(sub, withoutSub)
    if (this.onInterest !== undefined && (sub.queue !== null || count === 0)) {
      this.onInterest(subject, sub.queue, count)
    }
    return true
  }

  /** Subs interested in the literal `subject`. The result is shared: do not modify it. */
  match(subject: string): Match<S> {
    this.matches++
    const hit = this.cache.get(subject)
    if (hit !== undefined) {
      this.cacheHits++
      return hit
    }
    if (hasEmptyToken(subject)) return EMPTY
    const acc: Acc<S> = { psubs: [], qsubs: [], byName: null }
    walk(this.root, subject, 0, acc)
    const m: Match<S> =
      acc.psubs.length === 0 && acc.qsubs.length === 0 ? EMPTY : { psubs: acc.psubs, qsubs: acc.qsubs }
    if (this.cacheMax > 0) {
      this.cache.set(subject, m)
      if (this.cache.size > this.cacheMax) this.evict()
    }
    return m
  }

  stats(): SublistStats {
    return {
      subscriptions: this.subs,
      cacheEntries: this.cache.size,
      inserts: this.inserts,
      removes: this.removes,
      matches: this.matches,
      cacheHits: this.cacheHits,
      nodes: this.nodes,
    }
  }

  /** Calls fn for every subscription (monitoring: /subsz, /connz?subs=1). */
  each(fn: (sub: S) => void): void {
    eachSub(this.root, fn)
  }

  /** Largest and average fan-out of the cached match results (nats-server's /subsz). */
  fanout(): { max: number; avg: number } {
    let max = 0
    let sum = 0
    for (const m of this.cache.values()) {
      const n = m.psubs.length + m.qsubs.length
      if (n > max) max = n
      sum += n
    }
    return { max, avg: this.cache.size === 0 ? 0 : sum / this.cache.size }
  }

  /** A snapshot of the distinct (subject, queue) pairs and their counts. */
  interest(): Interest[] {
    const out: Interest[] = []
    collectInterest(this.root, '', out)
    return out
  }

  /**
   * Rewrites the cached results a changed sub affects. A literal sub can only affect the
   * entry for its own subject; a wildcard sub needs a scan of the cache.
   */
  private fixCache(sub: S, change: (m: Match<S>, sub: S) => Match<S>): void {
    const cache = this.cache
    if (cache.size === 0) return
    if (!hasWildcard(sub.subject)) {
      const m = cache.get(sub.subject)
      if (m !== undefined) cache.set(sub.subject, change(m, sub))
      return
    }
    // Overwriting existing keys while iterating is safe and keeps their eviction order.
    for (const [key, m] of cache) {
      if (subjectMatches(sub.subject, key)) cache.set(key, change(m, sub))
    }
  }

  // Drops the oldest-inserted quarter: Map order is insertion order, so this is FIFO and
  // needs no bookkeeping on hits (hits stay a single Map.get). Evicting a batch rather
  // than one entry keeps the cost to one amortized delete per miss.
  private evict(): void {
    const keep = Math.floor((this.cacheMax * 3) / 4)
    for (const key of this.cache.keys()) {
      if (this.cache.size <= keep) break
      this.cache.delete(key)
    }
  }
}

function eachSub<S>(n: Node<S>, fn: (sub: S) => void): void {
  const x = n.x
  if (n.psub !== null) fn(n.psub)
  else if (x !== null && x.psubs !== null) for (const s of x.psubs) fn(s)
  if (x !== null && x.qsubs !== null) for (const set of x.qsubs.values()) for (const s of set) fn(s)
  if (n.children !== null) for (const c of n.children.values()) eachSub(c, fn)
  if (x !== null && x.pwc !== null) eachSub(x.pwc, fn)
  if (x !== null && x.fwc !== null) eachSub(x.fwc, fn)
}

function collectInterest<S>(n: Node<S>, subject: string, out: Interest[]): void {
  const x = n.x
  if (n.psub !== null) out.push({ subject, queue: null, count: 1 })
  else if (x !== null && x.psubs !== null) out.push({ subject, queue: null, count: x.psubs.size })
  if (x !== null && x.qsubs !== null) for (const [queue, set] of x.qsubs) out.push({ subject, queue, count: set.size })
  const pre = subject === '' ? '' : subject + '.'
  if (n.children !== null) for (const [tok, c] of n.children) collectInterest(c, pre + tok, out)
  if (x !== null && x.pwc !== null) collectInterest(x.pwc, pre + '*', out)
  if (x !== null && x.fwc !== null) collectInterest(x.fwc, pre + '>', out)
}

/**
 * One member of a queue group, uniformly at random, passing over members owned by `skip`
 * (a publisher that does not want its own messages back): the walk starts at a random
 * member and goes on only past skipped ones. null when every member is skipped. `group`
 * must not be empty. The router calls this once per group per message: no allocation.
 */
export function pickQueueMember<S extends SubLike & { readonly owner?: unknown }>(group: readonly S[], skip: unknown = null): S | null {
  const len = group.length
  if (len === 0) throw new RangeError('empty queue group')
  const start = len === 1 ? 0 : Math.floor(Math.random() * len)
  for (let k = 0; k < len; k++) {
    const s = group[(start + k) % len]!
    if (skip === null || s.owner !== skip) return s
  }
  return null
}
