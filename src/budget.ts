// The global memory budget (`max_memory`): one number, `held`, counts every byte sprig keeps
// for messages (outbound queues and what their sockets have not sent, MQTT in-flight and
// offline queues, retained messages, uplink buffers, partial frames). Each buffer adds and
// subtracts its own bytes as they come and go, so the hot path costs one addition and one
// comparison. Approaching the budget, in this order:
//   1. pause: over 3/4 of max_memory, a publisher whose message just went to a congested queue
//      (its socket not draining) stops being read, until usage is back under the low-water
//      mark (5/8 of max_memory); the last quarter is room for what is already being delivered:
//      the pause takes effect at the next read, and one read (64 KiB of small messages) fanned
//      out to hundreds of stuck subscribers adds megabytes before it does;
//   2. close: at max_memory, or when pausing has not brought usage under the low-water mark
//      within a second, the connections holding the most bytes their peers do not take are
//      closed as slow consumers, largest first, until usage is under the low-water mark;
//   3. drop: over 3/4 of max_memory, buffers that have no reader to wait for (retained store,
//      offline queues, uplink buffer) do not grow: each applies its own overflow policy as if
//      it were full.
// Each step is counted; the start of an episode is logged, its closes and drops once, and so
// is its end.

import type { Wire } from './host.ts'
import { Paused } from './pause.ts'

/** A connection as step 2 sees it. */
export interface Evictable {
  /** Bytes held for this connection that its peer is not taking (0: it keeps up). */
  stuck?(): number
  /** Close it as a slow consumer at once (nothing more is flushed to it). */
  evict?(why: string): void
}

export interface BudgetEnv {
  now(): number
  /** Runs fn after the current batch of I/O (the check never runs inside a delivery). */
  defer(fn: () => void): void
  log: { warn(msg: string): void; info(msg: string): void }
  /** The connections that may be closed in step 2. */
  candidates(): Iterable<Evictable>
  /** Soon after closes: ask the runtime to collect the garbage they left (Host.collect). */
  collectSoon?(): void
}

/** How long pausing publishers may take to bring usage down before step 2 closes consumers. */
export const GRACE_MS = 1000
/** Closed sockets give their memory back a moment later: no second round of closes before then. */
const EVICT_GAP_MS = 250

export class Budget {
  /** Bytes held for messages now. */
  held = 0
  /** Over this, step 1 and 3: 3/4 of max_memory (Infinity: no budget). */
  readonly high: number
  /** Under this an episode ends: paused publishers resume. 5/8 of max_memory. */
  readonly low: number
  /** At this, step 2 does not wait for GRACE_MS: max_memory. */
  readonly hard: number
  /** A queue that is not draining grew while over: the publish in progress pauses its sender. */
  hot = false
  /** Counters for /varz. */
  pauses = 0
  closes = 0
  drops = 0
  episodes = 0
  private overSince = 0
  private evictedAt = -Infinity
  private readonly paused = new Paused()
  private checkQueued = false
  private dropLogged = false

  constructor(
    readonly limit: number,
    private readonly env: BudgetEnv,
  ) {
    this.high = limit > 0 ? Math.floor(limit * 0.75) : Infinity
    this.low = limit > 0 ? Math.floor(limit * 0.625) : Infinity
    this.hard = limit > 0 ? limit : Infinity
  }

  /** Publishers paused by the budget now. */
  get pausedCount(): number {
    return this.paused.size
  }

  /** Near max_memory: buffers without a reader apply their overflow policy instead of growing. */
  get full(): boolean {
    return this.held > this.high
  }

  /** Adds (or with a negative n, releases) bytes held by a buffer. */
  charge(n: number): void {
    const h = (this.held += n)
    if (h > this.high) {
      if (n > 0) this.over(false)
    } else if (this.overSince !== 0 && h <= this.low) this.soon()
  }

  private soon(): void {
    if (this.checkQueued) return
    this.checkQueued = true
    this.env.defer(this.check)
  }

  /** Called when `held` went over `high`; `congested`: the bytes went to a queue not draining. */
  over(congested: boolean): void {
    if (congested) this.hot = true
    if (this.overSince === 0) {
      this.overSince = this.env.now()
      this.episodes++
      this.dropLogged = false
      this.env.log.warn(`Memory budget: ${this.held} bytes held for messages, over 3/4 of max_memory (${this.limit}); pausing publishers to stuck consumers`)
    }
    this.soon()
  }

  /** The router, after a publish that fed a congested queue while over: step 1 for its sender. */
  pause(w: Wire | undefined): void {
    this.hot = false
    if (this.paused.add(w)) this.pauses++
  }

  /** A buffer dropped a message because of the budget (step 3). */
  dropped(what: string): void {
    this.drops++
    if (this.dropLogged) return
    this.dropLogged = true
    this.env.log.warn(`Memory budget: ${what} drops messages by its overflow policy until usage is under ${this.low} bytes`)
  }

  /** After the I/O turn that went over, and on every housekeeping tick. */
  readonly check = (): void => {
    this.checkQueued = false
    if (this.overSince === 0) return
    const now = this.env.now()
    if (this.held <= this.low) {
      this.overSince = 0
      this.resumeAll()
      this.env.log.info(`Memory budget: back under ${this.low} bytes (${this.held} held)`)
      return
    }
    // Pausing had its chance: a second into the episode, still over 3/4, or over the low-water
    // mark with publishers paused; at max_memory, at once.
    const late = now - this.overSince >= GRACE_MS && (this.held > this.high || this.paused.size > 0)
    if ((late || this.held >= this.hard) && now - this.evictedAt >= EVICT_GAP_MS) {
      this.evictedAt = now
      this.evict()
      // Whoever still feeds a stuck queue is paused again by its next publish; with nothing
      // left to close, a pause never outlasts the grace period.
      this.resumeAll()
    }
  }

  /** Step 2: closes the connections holding the most unsent bytes until usage is under `low`. */
  private evict(): void {
    const list: { n: number; c: Evictable }[] = []
    for (const c of this.env.candidates()) {
      const n = c.stuck?.() ?? 0
      if (n > 0 && c.evict !== undefined) list.push({ n, c })
    }
    list.sort((a, b) => b.n - a.n)
    let left = this.held
    let closed = 0
    for (const { n, c } of list) {
      if (left <= this.low) break
      left -= n
      closed++
      this.closes++
      c.evict!(`Max Memory of ${this.limit} Exceeded, ${n} bytes pending`)
    }
    if (closed > 0) this.env.collectSoon?.()
    if (closed > 0) this.env.log.warn(`Memory budget: closed ${closed} slow consumer${closed === 1 ? '' : 's'} holding the most bytes (${this.held} held, max_memory ${this.limit})`)
  }

  private resumeAll(): void {
    this.paused.releaseAll()
  }

  /** What /varz shows. */
  status(): BudgetStatus {
    return {
      max_memory: this.limit,
      mem_held: this.held,
      mem_paused: this.paused.size,
      mem_pauses: this.pauses,
      mem_closes: this.closes,
      mem_drops: this.drops,
      mem_episodes: this.episodes,
    }
  }
}

export interface BudgetStatus {
  max_memory: number
  mem_held: number
  /** Publishers paused by the budget now. */
  mem_paused: number
  mem_pauses: number
  /** Connections closed by the budget (also counted in slow_consumers). */
  mem_closes: number
  /** Messages dropped by buffers because of the budget. */
  mem_drops: number
  /** Times usage went over max_memory. */
  mem_episodes: number
}
