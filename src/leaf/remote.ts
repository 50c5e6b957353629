// One configured remote: which hub URL to dial next, when to redial (jittered exponential
// backoff, nats-server's 30 s after loop / duplicate-name / permission errors), what local
// publishes go up (a router tap), and the store-and-forward buffer that holds them while the
// link is down or still learning the hub's interest.

import { isoTime, type Dial, type DialTarget, type Wire } from '../host.ts'
import { clip, quote } from '../log.ts'
import { EMPTY } from '../bytes.ts'
import { newMsg, type Msg } from '../msg.ts'
import { Paused } from '../pause.ts'
import { TLS_DEFAULTS, type LeafnodeOptions, type RemoteOptions } from '../options.ts'
import type { Owner, Sub } from '../router.ts'
import type { Server } from '../server.ts'
import { Sublist, type Match } from '../sublist.ts'
import { subjectMatches } from '../subject.ts'
import { StoreBuffer, type Spool, type Stored } from './buffer.ts'
import { compileFilters, type Filters } from './filter.ts'
import { isLongWaitError, keyOf, Link, LOW_WATER, Sent, type HubSub, type LinkOwner, type LinkStats, type LocalKey } from './link.ts'

export type RemoteState = 'connecting' | 'handshake' | 'connected' | 'disconnected' | 'stopped'

/** nats-server's wait after a loop, a duplicate name, a same cluster name or a permission error. */
export const LONG_WAIT = 30_000
/** Most hub URLs remembered (configured plus discovered). */
const MAX_URLS = 64

/** Every uplink's owner: messages from a hub are never sent to a hub again. */
const leafOwners = new WeakSet<Owner>()

/**
 * Longest a publisher is held (its socket not read) while a link drains its queue to the hub.
 * Past that the publisher runs again and what the link cannot take goes to the buffer (and may
 * be dropped, counted), so a hub that stops reading never freezes local traffic for longer.
 */
export const STALL_MAX_MS = 2000

/** The most backlog a replay_rate lets out at once (ms of its rate). */
const REPLAY_BURST_MS = 200

/**
 * The most backlog queued on the link at once while it replays (bytes, or a quarter of the
 * queue's limit if less): the rest of the queue is room for new messages, which go ahead of the
 * backlog instead of behind hours of it (replay_order "interleave").
 */
const BACKLOG_ROOM = 256 * 1024

/** How often a durable spool's copy of the hub's interest is refreshed while connected. */
const INTEREST_SAVE_MS = 2000


export class Remote implements LinkOwner {
  state: RemoteState = 'disconnected'
  link: Link | null = null
  /** The interest the last complete link had (kept while down: it picks what gets buffered). */
  hubSubs: Sublist<HubSub> | null = null
  hubKeyCount = 0
  readonly localKeys = new Map<string, LocalKey>()
  readonly buffer: Spool
  /** The last mark a confirmation PING was sent for. */
  private asked = -1
  private confirmQueued = false
  /** The newest message held when the link came up: older ones are the backlog (-1: none). */
  private backlogEnd = -1
  /** Durable spool: a live message queued behind the backlog: later ones must not overtake it. */
  private liveBehind = false
  private tokens = 0
  private byteTokens = 0
  private refilledAt = 0
  /** The hub interest last saved in the durable spool (joined keys). */
  private savedInterest = ''
  private interestSavedAt = 0
  /** Buffered messages dropped because the hub showed no interest in them within buffer_hold. */
  expired = 0
  /** Messages over the hub's max_payload, not sent. */
  oversize = 0
  readonly stats: LinkStats = { in_msgs: 0, in_bytes: 0, out_msgs: 0, out_bytes: 0 }
  /** Times a publisher was paused because the link's queue was over its high-water mark. */
  stalls = 0
  /** Stalls that ran into STALL_MAX_MS (the hub did not drain the link in time). */
  stallTimeouts = 0
  /** Publishers paused now, and since when the first of them. */
  private readonly stalled = new Paused()
  /** A stall hit its bound: no new stalls until the link drains below the low-water mark. */
  private stallSpent = false
  readonly owner: Owner
  /** Our loop-detection subject, announced to the hub on every connection. */
  readonly lds: string
  urls: URL[]
  private urlIdx = 0
  /** The first `configured` entries of `urls` are the remote's own; the rest came from INFO. */
  private readonly configured: number
  /** Failed attempts since the last good link. */
  private failures = 0
  reconnects = 0
  private everUp = false
  since = 0
  lastError = ''
  hubUrl: URL | null = null
  hubName = ''
  hubId = ''
  hubAccount = ''
  private nextDial = 0
  private readyAt = 0
  private pumping = false
  private stopped = false
  private baseFilters: Filters
  private readonly removeTap: () => void

  constructor(
    readonly srv: Server,
    /** Replaced by reconfigure() on a config reload (filters, maps, buffer_subjects, buffer_hold). */
    public opts: RemoteOptions,
    readonly leaf: LeafnodeOptions,
    readonly index: number,
    private readonly dial: Dial,
    readonly readFile: (path: string) => string,
    /** The on-disk spool when a store is configured; else an in-memory buffer. */
    spool?: Spool,
  ) {
    this.buffer = spool ?? new StoreBuffer(opts.buffer_max_msgs, opts.buffer_max_bytes, opts.buffer_policy === 'drop_newest', srv.budget)
    // What the hub publishes here, and what sprig's services do for it, pass the import
    // filters and permissions of the link in use (permissions.ts Principal).
    const filters = (): Filters => this.link?.filters ?? this.baseFilters
    this.owner = {
      cid: 0,
      echo: true,
      deliver: () => {},
      label: () => `Leafnode ${this.name}`,
      mayPublish: (s) => filters().mayImport(s),
      mayReceive: (s) => filters().mayExport(s),
    }
    leafOwners.add(this.owner)
    this.lds = `$LDS.${randomToken(22)}`
    this.urls = opts.urls.map((u) => new URL(u))
    this.configured = this.urls.length
    if (!opts.no_randomize) shuffle(this.urls)
    this.baseFilters = compileFilters(opts)
    // A durable spool remembers what the hub wanted: after a restart during an outage the
    // same subjects go on being buffered.
    const saved = this.buffer.loadInterest?.()
    if (saved) {
      const subs = new Sublist<HubSub>({ cacheMax: 1024 })
      for (const k of saved) {
        const [subject, queue] = k.split(' ')
        try {
          subs.insert({ subject: subject!, queue: queue ?? null, weight: 1 })
        } catch {
          // not a subject: ignore
        }
      }
      this.hubSubs = subs
      this.savedInterest = saved.join('\n')
    }
    for (const i of srv.router.subs.interest()) this.localKeys.set(keyOf(i.subject, i.queue), { subject: i.subject, queue: i.queue, count: i.count })
    srv.router.onInterest((s, q, n) => this.onLocalInterest(s, q, n))
    this.removeTap = srv.router.addTap((m, from, local) => this.tap(m, from, local))
  }

  /** New subject options from a config reload: the live link re-announces only what changed. */
  reconfigure(opts: RemoteOptions): void {
    this.opts = opts
    this.baseFilters = compileFilters(opts)
    this.link?.refilter()
  }

  get name(): string {
    return `remote ${this.index + 1}`
  }

  start(): void {
    this.dialNext()
  }

  stop(): void {
    this.stopped = true
    this.state = 'stopped'
    this.removeTap()
    this.unstall()
    this.link?.end()
    this.link = null
  }

  /** Housekeeping, several times a second: link timers, redial, held buffer. */
  tick(now: number): void {
    if (this.stopped) return
    if (this.stalled.size > 0 || this.stallSpent) this.checkStall(now)
    if (this.link) this.link.tick(now)
    else if (this.state === 'disconnected' && now >= this.nextDial) this.dialNext()
    if (this.state === 'connected' && this.buffer.unsent > 0) this.pump()
    if (this.state === 'connected' && this.buffer.mark() > this.asked) this.askConfirm()
    this.buffer.trim?.()
    if (this.state === 'connected' && this.buffer.saveInterest && now - this.interestSavedAt >= INTEREST_SAVE_MS) this.saveInterest(now, this.link)
  }

  /** Keeps the hub's interest in the durable spool when it changed. */
  private saveInterest(now: number, l: Link | null): void {
    this.interestSavedAt = now
    if (l === null) return
    const keys = l.hubInterestKeys()
    const joined = keys.join('\n')
    if (joined === this.savedInterest) return
    this.savedInterest = joined
    this.buffer.saveInterest!(keys)
  }

  // --- dialling

  private dialNext(): void {
    if (this.stopped || this.urls.length === 0) return
    const url = this.urls[this.urlIdx % this.urls.length]!
    this.urlIdx = (this.urlIdx + 1) % this.urls.length
    this.state = 'connecting'
    const to: DialTarget = { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 7422), tls: this.opts.tls ?? TLS_DEFAULTS }
    this.srv.log.debug(`Leafnode ${this.name}: dialling ${redact(url)}`)
    let opened = false
    this.dial(
      to,
      (wire) => {
        opened = true
        if (this.stopped) {
          wire.destroy()
          return { data() {}, drained() {}, closed() {} }
        }
        this.state = 'handshake'
        const l = new Link(this, wire, url)
        this.link = l
        return l
      },
      (reason) => {
        if (opened || this.stopped) return
        this.scheduleRedial(`cannot connect to ${redact(url)}: ${reason}`, false)
      },
    )
  }

  /**
   * Hub URLs from an INFO (`host:port`): the configured URLs plus the latest advertised list
   * (a node that left the cluster drops out), with the userinfo of the URL we dialled.
   */
  onUrls(hostPorts: string[], via: URL): void {
    const next = this.urls.slice(0, this.configured)
    for (const hp of hostPorts) {
      if (next.length >= MAX_URLS) break
      let u: URL
      try {
        u = new URL(`${via.protocol}//${hp}`)
      } catch {
        continue
      }
      if (next.some((x) => x.host === u.host)) continue
      u.username = via.username
      u.password = via.password
      next.push(u)
    }
    this.urls = next
  }

  private scheduleRedial(reason: string, long: boolean): void {
    this.state = 'disconnected'
    this.lastError = reason
    // Back off once every URL has been tried at the current delay.
    const round = Math.floor(this.failures / Math.max(1, this.urls.length))
    this.failures++
    const base = Math.min(this.leaf.reconnect * 2 ** Math.min(round, 20), this.leaf.reconnect_max)
    const wait = long ? LONG_WAIT + Math.random() * this.leaf.reconnect : base / 2 + Math.random() * (base / 2)
    this.nextDial = this.srv.host.now() + wait
    this.srv.log.info(`Leafnode ${this.name}: ${reason}; next attempt in ${(wait / 1000).toFixed(1)}s`)
  }

  // --- link events

  onUp(l: Link): void {
    this.hubUrl = l.url
    this.hubName = l.info.server_name ?? ''
    this.hubId = l.info.server_id ?? ''
    this.hubAccount = l.info.remote_account ?? ''
  }

  onInterestReady(l: Link): void {
    // The new hub interest replaces what the previous link knew.
    this.hubSubs = l.hubSubs
    this.state = 'connected'
    this.since = this.readyAt = this.srv.host.now()
    if (this.everUp) this.reconnects++
    this.everUp = true
    if (this.buffer.saveInterest) this.saveInterest(this.readyAt, l)
    this.buffer.startReplay?.()
    this.backlogEnd = this.buffer.unsent > 0 ? this.buffer.last : -1
    this.liveBehind = false
    this.tokens = this.byteTokens = 0
    this.refilledAt = this.readyAt
    this.failures = 0
    this.lastError = ''
    this.srv.log.info(
      `Leafnode ${this.name}: connected to hub ${quote(this.hubName)} (${clip(this.hubId)}) at ${redact(l.url)}, account ${clip(this.hubAccount) || '?'}` +
        (this.buffer.unsent > 0 ? `; ${this.buffer.unsent} buffered messages to send` : ''),
    )
    this.pump()
  }

  onClosed(l: Link, reason: string): void {
    if (this.link !== l) return
    this.link = null
    this.unstall()
    this.stallSpent = false
    // Sent but not confirmed: the hub may or may not have them. Send them again (at least once).
    this.buffer.rewind()
    this.asked = -1
    if (this.stopped) return
    const wasUp = this.state === 'connected'
    if (wasUp) {
      l.restoreRecent(this.srv.host.now())
      if (this.buffer.saveInterest) {
        this.savedInterest = ''
        this.saveInterest(this.srv.host.now(), l)
      }
    }
    if (wasUp) this.srv.log.info(`Leafnode ${this.name}: disconnected from hub ${quote(this.hubName)} at ${redact(l.url)}: ${reason}`)
    this.scheduleRedial(wasUp ? 'link lost' : `connection to ${redact(l.url)} failed: ${reason}`, isLongWaitError(l.hubError) || isLongWaitError(reason))
    if (wasUp) this.lastError = reason
  }

  // --- local interest -> hub

  private onLocalInterest(subject: string, queue: string | null, count: number): void {
    if (this.stopped) return
    const key = keyOf(subject, queue)
    const before = this.localKeys.get(key)?.count ?? 0
    if (count === 0) this.localKeys.delete(key)
    else this.localKeys.set(key, { subject, queue, count })
    this.link?.localChanged(subject, queue, before, count)
  }

  // --- local publishes -> hub

  private tap(m: Msg, from: Owner | null, local: Match<Sub>): number {
    if (from !== null && leafOwners.has(from)) return 0
    const l = this.link
    const live = this.state === 'connected' && l !== null && l.interestKnown
    if (this.buffer.durable) {
      // Everything for the hub goes through the spool on disk, then out from there.
      // While up, buffer_subjects are kept too when the hub has no interest yet: a cloud
      // subscriber reconnecting after the hub restarted gets them within buffer_hold.
      if (live ? !l.wants(m.subject, local) && !this.bufferSubject(m.subject) : !this.shouldBuffer(m.subject)) return 0
      if (!this.buffer.push(m)) {
        this.srv.spoolDrops++
        return 0
      }
      if (live) {
        // Live traffic goes ahead of the backlog rather than behind it (replay_order).
        if (this.interleave()) {
          const r = l.forward(m, local)
          // Not tracked, or no room: this one and every later one follow the backlog. (One
          // the hub has no interest in yet waits in the spool for buffer_hold, as before.)
          if (r === Sent.OK ? !this.buffer.sentAhead!(this.buffer.last) : r === Sent.FULL) this.liveBehind = true
        } else if (this.backlogEnd >= 0) this.liveBehind = true
        this.pump()
        if (l.overHigh) this.stall(from)
      }
      return 1
    }
    if (live) {
      // Straight out when nothing waits before it: nothing at all, or (interleaving) only the backlog.
      if (this.buffer.unsent === 0 || (this.backlogEnd >= 0 && this.buffer.liveUnsent === 0 && this.opts.replay_order !== 'strict')) {
        // Queued before the frame schedules the link's flush, so this turn's confirmation
        // PING goes out in the same write as the messages it covers.
        this.queueConfirm()
        const r = l.forward(m, local)
        if (r === Sent.OK) {
          // Kept until the hub confirms it (a link lost before that sends it again): as its
          // frame, with the rest of this turn's (onKept).
          l.keepLast()
          // Over the high-water mark: slow this publisher down before the queue fills up.
          if (l.overHigh) this.stall(from)
          return 1
        }
        if (r !== Sent.FULL) return 0
        this.stall(from)
        l.sealKept() // the frames kept so far are older: they go in first
        this.buffer.push(m) // the outbound queue is full: wait here, in order
        this.pump()
        return 1
      }
      // Behind older buffered messages: keep the order, if the hub wants it at all.
      if (!l.wants(m.subject, local)) return 0
      if (l.overHigh) this.stall(from)
    } else if (!this.shouldBuffer(m.subject)) return 0
    // A held message counts as delivered: a request waits for its reply (or its timeout)
    // rather than getting no-responders while the link is down.
    l?.sealKept()
    return this.buffer.push(m) ? 1 : 0
  }

  // --- backlog replay pace (replay_rate)

  private get paced(): boolean {
    return (this.opts.replay_rate ?? 0) > 0 || (this.opts.replay_rate_bytes ?? 0) > 0
  }

  /**
   * Durable spool: whether a live message (just pushed) may go ahead of the backlog: only while
   * a backlog replays, interleaving is on, and no live message already waits behind it (order
   * among live messages holds).
   */
  private interleave(): boolean {
    return this.backlogEnd >= 0 && !this.liveBehind && this.opts.replay_order !== 'strict' && this.buffer.unsent > 0
  }

  /** Adds the pace's allowance for the time since the last refill (at most REPLAY_BURST_MS worth). */
  private refill(now: number): void {
    const dt = Math.min(now - this.refilledAt, REPLAY_BURST_MS) / 1000
    this.refilledAt = now
    const r = this.opts.replay_rate ?? 0
    const rb = this.opts.replay_rate_bytes ?? 0
    this.tokens = r > 0 ? Math.min(this.tokens + r * dt, Math.max(1, (r * REPLAY_BURST_MS) / 1000)) : Infinity
    this.byteTokens = rb > 0 ? Math.min(this.byteTokens + rb * dt, Math.max(1, (rb * REPLAY_BURST_MS) / 1000)) : Infinity
  }

  // --- producer backpressure (nats-server stalls a fast producer the same way)

  /** Stops reading from the publisher `from` until the link drains (or STALL_MAX_MS passes). */
  private stall(from: Owner | null): void {
    if (this.stallSpent || from === null) return
    // Counted: other remotes and the memory budget may hold it too.
    if (this.stalled.add(from.wire, this.srv.host.now())) this.stalls++
  }

  /** Resumes every publisher this remote paused. */
  private unstall(): void {
    this.stalled.releaseAll()
  }

  /** Called when the link drains and on every tick: resume below the low-water mark, or on timeout. */
  private checkStall(now: number): void {
    const l = this.link
    if (l === null) return
    if (l.underLow) {
      this.stallSpent = false
      this.unstall()
    } else if (this.stalled.size > 0 && now - this.stalled.since >= STALL_MAX_MS) {
      this.stallTimeouts++
      this.stallSpent = true
      this.srv.log.warn(`Leafnode ${this.name}: the hub has not drained the link for ${STALL_MAX_MS} ms; publishers resume, and what does not fit is buffered`)
      this.unstall()
    }
  }

  onHubInterest(): void {
    this.pump()
  }

  onOversize(): void {
    this.oversize++
  }

  onConfirmed(mark: number): void {
    this.buffer.confirm(mark)
    // Sent since that PING: ask for it now that there is room among the confirmations (in
    // this turn's write to the hub).
    this.askConfirm()
  }

  onKept(l: Link, frames: Uint8Array, count: number): void {
    if (this.link === l) this.buffer.pushFrames!(frames, count)
  }

  /**
   * Something went out: ask for its confirmation once this event-loop turn is over, in the
   * link's write of the turn (one PING, so one PONG, per turn, not per message).
   */
  private queueConfirm(): void {
    if (this.confirmQueued) return
    this.confirmQueued = true
    const h = this.srv.host
    ;(h.soon ?? h.defer)(this.confirmNow)
  }

  private readonly confirmNow = (): void => {
    this.confirmQueued = false
    this.askConfirm()
  }

  /** After a batch went out: a PING whose PONG confirms it (once per I/O turn). */
  private askConfirm(): void {
    const l = this.link
    l?.sealKept() // the frames kept so far join the buffer: this PING covers them
    const mark = this.buffer.mark()
    if (l === null || mark <= this.asked) return
    if (l.confirm(mark)) this.asked = mark
  }

  /** The link's socket drained. */
  onDrained(): void {
    if (this.stalled.size > 0 || this.stallSpent) this.checkStall(this.srv.host.now())
    this.pump()
  }

  private bufferSubject(subject: string): boolean {
    const subs = this.opts.buffer_subjects
    return subs.length > 0 && this.baseFilters.up(subject) !== null && subs.some((p) => subjectMatches(p, subject))
  }

  private shouldBuffer(subject: string): boolean {
    const hub = this.baseFilters.up(subject)
    if (hub === null) return false
    const subs = this.opts.buffer_subjects
    if (subs.length > 0) return subs.some((p) => subjectMatches(p, subject))
    const h = this.hubSubs
    if (h === null) return false
    const m = h.match(hub)
    return m.psubs.length > 0 || m.qsubs.length > 0
  }

  /**
   * Sends buffered messages while the link has room: in plain order (oldest first), except
   * that while a backlog replays with replay_order "interleave", the in-memory buffer's newer
   * messages go first and the backlog takes at most BACKLOG_ROOM of the link's queue (and its
   * replay_rate). A message the hub has no interest in yet waits up to buffer_hold after the
   * link came back (subscribers on the hub may still be reconnecting), then is dropped and
   * counted as expired.
   */
  pump(): void {
    const l = this.link
    if (this.pumping || l === null || !l.interestKnown || this.state !== 'connected') return
    this.pumping = true
    let again = false
    try {
      const now = this.srv.host.now()
      const local = this.srv.router.subs
      const b = this.buffer
      const share = this.backlogEnd >= 0 && this.opts.replay_order !== 'strict'
      if (share && b.peekLive !== undefined) {
        for (let s = b.peekLive(); s !== undefined; s = b.peekLive()) {
          if (l.phase !== 'up' || l.overHigh) return // drained() calls again
          if (this.sendHeld(l, s, local, now)) b.advanceLive!()
          else return
        }
      }
      for (let s = b.peek(); s !== undefined; s = b.peek()) {
        if (l.phase !== 'up') return
        if (l.overHigh) return // drained() calls again
        if (s.seq <= this.backlogEnd) {
          if (share && l.out.pending > Math.min(BACKLOG_ROOM, l.out.limit * LOW_WATER)) {
            // Room kept for new messages: next I/O turn, or drained() once the socket takes it.
            again = !l.out.blocked
            return
          }
          if (this.paced) {
            this.refill(now)
            if (this.tokens < 1 || this.byteTokens < s.size) return // tick() calls again
            this.tokens--
            this.byteTokens -= s.size
          }
        } else if (this.backlogEnd >= 0) {
          this.backlogEnd = -1 // the backlog is out: back to plain order
          this.liveBehind = false
        }
        if (this.sendHeld(l, s, local, now)) b.advance()
        else return
      }
      if (this.backlogEnd >= 0 && b.unsent === 0) {
        this.backlogEnd = -1
        this.liveBehind = false
      }
      // Batches go out once per I/O turn; keep going after this one is handed to the socket.
      if (b.unsent > 0) again = true
    } finally {
      this.pumping = false
      if (this.buffer.mark() > this.asked) this.queueConfirm()
      // After the link's write of this turn (the link flushes per turn: srv.scheduleTurn).
      if (again) (this.srv.host.soon ?? this.srv.host.defer)(this.pumpLater)
    }
  }

  private readonly pumpLater = (): void => this.pump()

  /** The Msg a held message is sent up as (forward takes one), reused. */
  private readonly held = newMsg()

  /** Sends one held message; false: it must wait (no room, or no interest yet within buffer_hold). */
  private sendHeld(l: Link, s: Stored, local: Sublist<Sub>, now: number): boolean {
    let r: Sent
    if (s.frames !== undefined) r = l.resend(s.subject, s.payload)
    else {
      const m = this.held
      m.subject = s.subject
      m.subjectBytes = EMPTY // not known: the link encodes the hub subject
      m.reply = s.reply
      m.hdr = s.hdr
      m.payload = s.payload
      r = l.forward(m, local.match(s.subject))
      m.payload = EMPTY // not kept: the buffer's storage may be replaced
      m.hdr = null
    }
    if (r === Sent.FULL) return false
    if (r !== Sent.OK) {
      if (now - this.readyAt < this.opts.buffer_hold) return false // tick() and LS+ call again
      this.expired++
    }
    return true
  }

  // --- status

  status(): RemoteStatus {
    const l = this.link
    const up = this.state === 'connected'
    return {
      name: up ? this.hubName : '',
      id: up ? this.hubId : '',
      is_spoke: true,
      account: up ? this.hubAccount : '',
      ip: up && this.hubUrl ? this.hubUrl.hostname : '',
      port: up && this.hubUrl ? Number(this.hubUrl.port || 7422) : 0,
      in_msgs: this.stats.in_msgs,
      out_msgs: this.stats.out_msgs,
      in_bytes: this.stats.in_bytes,
      out_bytes: this.stats.out_bytes,
      subscriptions: l?.sentCount ?? 0,
      remote: this.index,
      state: this.state,
      url: this.hubUrl ? redact(this.hubUrl) : '',
      urls: this.urls.map(redact),
      since: this.since ? isoTime(this.srv.host, this.since) : '',
      reconnects: this.reconnects,
      local_interest: this.localKeys.size,
      hub_interest: up && l ? l.hubInterest : 0,
      buffered_msgs: this.buffer.unsent,
      buffered_bytes: this.buffer.bytes,
      dropped_msgs: this.buffer.dropped,
      unconfirmed_msgs: this.buffer.length - this.buffer.unsent + (this.link?.keepMsgs ?? 0),
      resent_msgs: this.buffer.resent,
      unkept_msgs: this.buffer.unkept ?? 0,
      spool: this.buffer.durable ? 'disk' : 'memory',
      stalls: this.stalls,
      stall_timeouts: this.stallTimeouts,
      expired_msgs: this.expired,
      oversize_msgs: this.oversize,
      last_error: this.lastError,
    }
  }
}

/** One remote in `$SPRIG.leafz` / `/leafz`: nats-server's leafz fields first, sprig's after. */
export interface RemoteStatus {
  name: string
  id: string
  is_spoke: true
  account: string
  ip: string
  port: number
  in_msgs: number
  out_msgs: number
  in_bytes: number
  out_bytes: number
  /** LS+ keys this link holds at the hub. */
  subscriptions: number
  remote: number
  state: RemoteState
  url: string
  urls: string[]
  since: string
  reconnects: number
  local_interest: number
  hub_interest: number
  buffered_msgs: number
  buffered_bytes: number
  dropped_msgs: number
  /** Sent to the hub, not yet confirmed by it (PONG to a later PING): resent if the link drops. */
  unconfirmed_msgs: number
  /** Sent again after a lost link: the hub may have had them (duplicates at most these). */
  resent_msgs: number
  /** Sent straight to the hub but not kept for a resend: the buffer was full (memory buffer). */
  unkept_msgs: number
  /** Where the buffer lives: "memory", or "disk" with a store. */
  spool: 'memory' | 'disk'
  /** Publishers paused while the link's queue to the hub was over its high-water mark. */
  stalls: number
  /** Stalls that hit STALL_MAX_MS. */
  stall_timeouts: number
  expired_msgs: number
  oversize_msgs: number
  last_error: string
}


/** A URL for logs and status: the password never shows. */
export function redact(u: URL): string {
  const c = new URL(u.href)
  if (c.password) c.password = 'xxxxx'
  else if (c.username) c.username = 'xxxxx' // a lone name is a token
  return c.href.replace(/\/$/, '')
}

function shuffle<T>(a: T[]): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[a[i], a[j]] = [a[j]!, a[i]!]
  }
}

function randomToken(n: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
  let s = ''
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(Math.random() * alphabet.length)]
  return s
}
