// One connection to a hub, as a sans-I/O Conn: read the hub's INFO, upgrade to TLS when asked,
// CONNECT, wait for the second INFO (permissions), then LS+/LS- and LMSG/HMSG both ways and
// PING/PONG. Lifecycle (which URL, when to redial, the buffer) belongs to the Remote.
// Protocol notes: docs/leafnode-protocol.md.

import { EMPTY, put, uintLength, utf8, writeUint } from '../bytes.ts'
import type { Conn, Wire } from '../host.ts'
import { clip, quote } from '../log.ts'
import { newMsg, putPayload, type Msg } from '../msg.ts'
import type { RemoteOptions } from '../options.ts'
import { Outbound } from '../outbound.ts'
import type { Owner, Sub } from '../router.ts'
import type { Server } from '../server.ts'
import { Sublist, type Match, type SubLike } from '../sublist.ts'
import { leafAuthFields } from './creds.ts'
import { compileFilters, type Filters, type HubPerm } from './filter.ts'
import { frameSize } from './frames.ts'
import { LeafParser } from './parser.ts'
import { NATS_VERSION } from '../server.ts'

/** What the hub told us about itself (first INFO, updated by later ones). */
export interface HubInfo {
  server_id?: string
  server_name?: string
  version?: string
  nonce?: string
  max_payload?: number
  tls_required?: boolean
  leafnode_urls?: string[]
  cluster?: string
  connect_info?: boolean
  remote_account?: string
  import?: HubPerm
  export?: HubPerm
  client_id?: number
}

export interface HubSub extends SubLike {
  weight: number
}

export interface LinkStats {
  in_msgs: number
  in_bytes: number
  out_msgs: number
  out_bytes: number
}

/** One local interest key with its subscription count. */
export interface LocalKey {
  subject: string
  queue: string | null
  count: number
}

/**
 * What a Link reads from the remote that owns it, and the events it reports to it. The link
 * never touches anything else of its owner; the owner uses only the Link's public methods.
 */
export interface LinkOwner {
  readonly srv: Server
  /** Current options (a reload may replace them; refilter() picks them up). */
  readonly opts: RemoteOptions
  /** Our loop-detection subject. */
  readonly lds: string
  readonly localKeys: ReadonlyMap<string, LocalKey>
  readonly readFile: (path: string) => string
  readonly stats: LinkStats
  /** Who messages from the hub are published as (the link's filters and permissions). */
  readonly owner: Owner
  /** The hub advertised these leafnode URLs (`host:port`). */
  onUrls(hostPorts: string[], via: URL): void
  /** The handshake finished (second INFO). */
  onUp(l: Link): void
  /** The PONG to our first PING: the hub's interest is complete. */
  onInterestReady(l: Link): void
  /** A new hub interest arrived after onInterestReady. */
  onHubInterest(l: Link): void
  /** The socket drained. */
  onDrained(l: Link): void
  /** The link is gone (with why); called once. */
  onClosed(l: Link, reason: string): void
  /** The hub processed everything sent before confirm(mark): PONG to that PING. */
  onConfirmed(mark: number): void
  /** `count` kept messages (keepLast) went into the outbound queue as these frames (a view: copy it). */
  onKept(l: Link, frames: Uint8Array, count: number): void
  /** A message over the hub's max_payload was not sent. */
  onOversize(): void
}

/**
 * What forward() did with a message: framed for the hub; the outbound queue has no room (the
 * caller keeps it); the hub has no interest (or the link is not up); the export filters keep it.
 */
export const Sent = { OK: 0, FULL: 1, NO_INTEREST: 2, FILTERED: 3 } as const
export type Sent = (typeof Sent)[keyof typeof Sent]

/**
 * Watermarks of the link's outbound queue, as fractions of its limit. Over HIGH_WATER a publish
 * for the hub stalls its publisher and the buffer stops pumping; at LOW_WATER stalled publishers
 * resume.
 */
export const HIGH_WATER = 1 / 2
export const LOW_WATER = 1 / 4
/**
 * Most confirmation PINGs unanswered at once (each covers every message sent before it). Two:
 * while the hub works through one the next is on its way, and a busy link sends one per round
 * trip instead of one per event-loop turn (each costs the hub a PONG and us a read). The
 * Remote asks again when a PONG comes back (onConfirmed).
 */
const MAX_CONFIRMS = 2
/** Longest run of kept frames handed over as one (the buffer's records stay small against its bounds). */
const KEEP_RUN = 64 * 1024

/** An interest key: "subject", or "subject queue" for a queue group. */
export function keyOf(subject: string, queue: string | null): string {
  return queue === null ? subject : `${subject} ${queue}`
}

/** A hub -ERR that calls for nats-server's long (30 s) wait before redialling. */
export function isLongWaitError(text: string): boolean {
  return /loop detected|same cluster name|duplicate remote leafnode|permissions violation/i.test(text)
}

// nats-server's spoke waits 1 s for the hub's INFO and 2 s for the INFO that answers CONNECT;
// sprig gives the first INFO 2 s too (a gateway's CPU may be busy when it redials).
const INFO_WAIT = 2000
const CONNECT_WAIT = 2000
const MAX_LINE = 256 * 1024
/** LS- this recent when the link drops still count as the hub's interest (see restoreRecent). */
const RECENT_MS = 5000
const MAX_REMOVED = 10_000
const CRLF = '\r\n'

type Phase = 'info' | 'tls' | 'connect' | 'up' | 'closed'

export class Link implements Conn {
  phase: Phase = 'info'
  info: HubInfo = {}
  /** The hub's interest, built from its LS+ burst; the Remote adopts it once it is complete. */
  readonly hubSubs = new Sublist<HubSub>({ cacheMax: 1024 })
  readonly hubKeys = new Map<string, HubSub>()
  /** Set once our first PING after CONNECT is answered: the hub's LS+ snapshot came before it. */
  interestKnown = false
  filters: Filters
  readonly out: Outbound
  /** LS+ we sent: hub key ("subject" or "subject queue") -> count / weight. */
  private readonly sent = new Map<string, number>()
  /** Hub subjects each local interest key stands for (filters are per connection). */
  private readonly contrib = new Map<string, string[]>()
  private readonly parser: LeafParser
  private readonly openedAt: number
  private phaseAt: number
  private lastPing: number
  private pingsOut = 0
  private readonly msg = newMsg()
  /** The -ERR text the hub sent last, which explains the close that follows. */
  hubError = ''
  tlsDone = false
  private readonly removed = new Map<string, { sub: HubSub; at: number }>()
  /** One entry per PING we sent, in order: the confirmation mark it carries, or -1. */
  private readonly pongMarks: number[] = []
  /** The last mapped hub subject sent and its bytes (a gateway forwards the same few subjects). */
  private hubSubj = ''
  private hubSubjBytes: Uint8Array = EMPTY
  /** queuesFor's last answer and the matches it was for. */
  private lastHubMatch: Match<HubSub> | null = null
  private lastLocalMatch: Match<Sub> | null = null
  private lastQueues: readonly string[] | null = null
  /** The last hub queue list framed and its bytes. */
  private queueList: readonly string[] = NO_QUEUES
  private queueListBytes: Uint8Array = EMPTY
  /** Where in out.buf the last frame send() wrote starts (-1: none) and ends. */
  private frameAt = -1
  private frameTo = 0
  /** The run of kept frames in out.buf not yet handed to the owner (sealKept), and its messages. */
  private keepFrom = 0
  private keepTo = 0
  /** Kept frames in the current run, not yet handed to the owner (status counts them as unconfirmed). */
  keepMsgs = 0

  constructor(
    private readonly remote: LinkOwner,
    readonly wire: Wire,
    readonly url: URL,
  ) {
    const srv = remote.srv
    this.openedAt = this.phaseAt = this.lastPing = srv.host.now()
    // Written once per event-loop turn: every device read of the turn in one write to the hub.
    // The batch is about to go (and its buffer may be written over): the owner copies the run (beforeFlush).
    const pool = { schedule: srv.scheduleTurn, budget: srv.budget, beforeFlush: () => this.sealKept() }
    this.out = new Outbound(wire, Math.max(srv.opts.max_pending, 2 * srv.opts.max_payload), pool)
    this.filters = compileFilters(remote.opts)
    this.tlsDone = wire.tls !== undefined
    this.parser = new LeafParser(
      {
        info: (j) => this.onInfo(j),
        ping: () => this.write('PONG' + CRLF),
        pong: () => this.onPong(),
        err: (t) => this.onErr(t),
        sub: (s, q, w) => this.onSub(s, q, w),
        unsub: (s, q) => this.onUnsub(s, q),
        msg: (s, r, q, h, p) => this.onMsg(s, r, q, h, p),
      },
      MAX_LINE,
      srv.opts.max_payload,
    )
    this.parser.budget = srv.budget
  }

  // --- Conn

  data(chunk: Uint8Array): void {
    if (this.phase === 'closed') return
    const err = this.parser.feed(chunk)
    if (err !== null && (this.phase as Phase) !== 'closed') this.fail(`protocol error from hub: ${clip(err)}`)
  }

  drained(): void {
    this.out.drained(this.remote.srv.host.now())
    this.remote.onDrained(this)
  }

  closed(reason?: string): void {
    this.sealKept()
    this.out.closed()
    this.parser.release()
    if (this.phase === 'closed') return
    this.phase = 'closed'
    this.remote.onClosed(this, this.hubError !== '' ? `hub error: ${this.hubError}` : (reason ?? 'connection closed by hub'))
  }

  // --- lifecycle

  /** Drops the connection (bad input, timeouts, stop); the Remote decides what comes next. */
  fail(reason: string): void {
    if (this.phase === 'closed') return
    this.sealKept() // before the owner rewinds its buffer
    this.phase = 'closed'
    this.wire.destroy()
    this.remote.onClosed(this, reason)
  }

  /** Clean close on shutdown: flush what is queued. */
  end(): void {
    if (this.phase === 'closed') return
    this.sealKept()
    this.phase = 'closed'
    this.out.flush(this.remote.srv.host.now())
    this.wire.end()
  }

  tick(now: number): void {
    const o = this.remote.srv.opts
    if (this.phase === 'info' && now - this.openedAt > INFO_WAIT + (this.remote.opts.tls?.timeout ?? 0)) {
      this.fail('no INFO from the hub in time (is this a leafnode port?)')
    } else if ((this.phase === 'connect' || this.phase === 'tls') && now - this.phaseAt > CONNECT_WAIT + (this.remote.opts.tls?.timeout ?? 0)) {
      this.fail('Stale Leaf Node Connection: no answer to CONNECT')
    } else if (this.phase === 'up' && now - this.lastPing >= o.ping_interval) {
      if (this.pingsOut >= o.ping_max) return this.fail('Stale Connection: the hub stopped answering PING')
      this.lastPing = now
      this.pingsOut++
      this.pongMarks.push(-1)
      this.write('PING' + CRLF)
    }
  }

  private write(line: string): void {
    if (this.phase === 'closed') return
    this.sealKept() // the queue may grow into a new buffer
    if (!this.out.push(utf8(line))) this.fail('outbound queue to the hub is full (hub not reading)')
  }

  // --- from the hub

  private onInfo(json: string): void {
    let i: HubInfo
    try {
      i = JSON.parse(json) as HubInfo
      if (typeof i !== 'object' || i === null) throw new Error('not an object')
    } catch {
      return this.fail('protocol error from hub: INFO is not valid JSON')
    }
    if (Array.isArray(i.leafnode_urls)) this.remote.onUrls(i.leafnode_urls.filter((u) => typeof u === 'string'), this.url)
    if (this.phase === 'info') {
      if (i.client_id === undefined && i.leafnode_urls === undefined) {
        return this.fail('the first INFO has neither client_id nor leafnode_urls: connected to a client port, not a leafnode port?')
      }
      this.info = i
      if (typeof i.max_payload === 'number' && i.max_payload > 0) {
        this.parser.maxPayload = Math.max(this.remote.srv.opts.max_payload, i.max_payload)
      }
      const wantTls = !this.tlsDone && (i.tls_required === true || this.remote.opts.tls !== undefined || this.url.protocol === 'tls:')
      if (wantTls) {
        if (!this.wire.startTls) return this.fail('the hub requires TLS, but this connection cannot start it')
        this.phase = 'tls'
        this.phaseAt = this.remote.srv.host.now()
        this.wire.startTls((err) => {
          if (this.phase !== 'tls') return
          if (err !== null) return this.fail(`TLS handshake with the hub failed: ${err}`)
          this.tlsDone = true
          this.connect()
        })
        return
      }
      return this.connect()
    }
    if (this.phase === 'connect' && i.connect_info === true) {
      this.info = { ...this.info, ...i }
      this.filters = compileFilters(this.remote.opts, i.import, i.export)
      this.phase = 'up'
      this.lastPing = this.remote.srv.host.now()
      // Our interest, our loop-detection subject, then a PING: its PONG follows the hub's
      // LS+ snapshot, so it tells us when the hub's interest is complete.
      let lines = ''
      for (const [key, l] of this.remote.localKeys) {
        for (const h of this.hubSubjectsFor(key, l.subject, l.queue)) lines += this.account(h, l.queue, 0, l.count)
      }
      lines += `LS+ ${this.remote.lds}${CRLF}PING${CRLF}`
      this.pingsOut++
      this.pongMarks.push(-1)
      this.write(lines)
      this.remote.onUp(this)
      return
    }
    // An async INFO: only the URL list matters (taken above).
  }

  private connect(): void {
    let auth
    try {
      auth = leafAuthFields(this.remote.opts, this.url, this.info.nonce, this.remote.readFile)
    } catch (e) {
      return this.fail(`credentials: ${(e as Error).message}`)
    }
    const c = {
      ...auth,
      name: this.remote.srv.name,
      headers: true,
      compress_mode: 'off',
      remote_account: '$G',
      // Hubs with leafnodes.min_version compare this with nats-server versions (server.ts).
      version: NATS_VERSION,
      tls_required: this.tlsDone,
    }
    this.phase = 'connect'
    this.phaseAt = this.remote.srv.host.now()
    this.write(`CONNECT ${JSON.stringify(c)}${CRLF}`)
  }

  private onPong(): void {
    this.pingsOut = 0
    const mark = this.pongMarks.shift()
    if (this.phase === 'up' && !this.interestKnown) {
      this.interestKnown = true
      this.remote.onInterestReady(this)
    }
    if (mark !== undefined && mark >= 0 && this.phase === 'up') this.remote.onConfirmed(mark)
  }

  /**
   * Asks the hub to confirm everything sent so far: a PING whose PONG (a hub handles one
   * connection's frames in order) reports `mark` back through onConfirmed. False when too
   * many confirmations are already outstanding (the caller asks again later).
   */
  confirm(mark: number): boolean {
    if (this.phase !== 'up') return false
    let n = 0
    for (const m of this.pongMarks) if (m >= 0) n++
    if (n >= MAX_CONFIRMS) return false
    this.pongMarks.push(mark)
    this.write('PING' + CRLF)
    return true
  }

  private onErr(text: string): void {
    this.hubError = text
    this.remote.srv.log.error(`Leafnode hub ${this.url.host} reported: -ERR '${clip(text)}'`)
  }

  private onSub(subject: string, queue: string | null, weight: number): void {
    if (subject === this.remote.lds) {
      // Our own loop-detection subject came back: we reach this hub through another path.
      this.hubError = 'Loop detected'
      return this.fail(`loop detected: the hub sent back our own ${subject}`)
    }
    const key = keyOf(subject, queue)
    const have = this.hubKeys.get(key)
    if (have !== undefined) {
      have.weight = weight
      return
    }
    const s: HubSub = { subject, queue, weight }
    try {
      this.hubSubs.insert(s)
    } catch {
      return this.fail(`protocol error from hub: invalid subject in LS+ ${quote(key)}`)
    }
    this.hubKeys.set(key, s)
    if (this.interestKnown) this.remote.onHubInterest(this)
  }

  private onUnsub(subject: string, queue: string | null): void {
    const key = keyOf(subject, queue)
    const s = this.hubKeys.get(key)
    if (s === undefined) return
    this.hubKeys.delete(key)
    this.hubSubs.remove(s)
    if (this.removed.size >= MAX_REMOVED) this.removed.delete(this.removed.keys().next().value!)
    this.removed.set(key, { sub: s, at: this.remote.srv.host.now() })
  }

  /**
   * A hub that shuts down closes its clients first, so their LS- arrive just before the link
   * drops. For choosing what to buffer, put back what went in the last moments before `now`.
   */
  restoreRecent(now: number): void {
    for (const [key, r] of this.removed) {
      if (now - r.at > RECENT_MS || this.hubKeys.has(key)) continue
      this.hubKeys.set(key, r.sub)
      this.hubSubs.insert(r.sub)
    }
    this.removed.clear()
  }

  private onMsg(subject: string, reply: string, queues: string[] | null, hdr: Uint8Array | null, payload: Uint8Array): void {
    if (this.phase !== 'up') return this.fail('protocol error from hub: message before the handshake finished')
    const r = this.remote
    r.stats.in_msgs++
    r.stats.in_bytes += payload.length + (hdr ? hdr.length : 0)
    const local = this.filters.down(subject)
    if (local === null || subject.startsWith('$LDS.')) return
    const m = this.msg
    // A hub sends the same few subjects over and over: keep the last one's bytes.
    if (m.subject !== local) {
      m.subject = local
      m.subjectBytes = utf8(local)
    }
    m.reply = reply === '' ? '' : this.filters.replyDown(reply)
    m.replyBytes = m.reply === '' ? EMPTY : utf8(m.reply)
    m.hdr = hdr
    m.payload = payload
    // No queue list: the hub picked another member for every queue group, plain subscribers only.
    r.srv.router.publish(m, r.owner, queues ?? NO_QUEUES)
  }

  // --- to the hub

  /** Hub subjects for a local interest key (cached per connection: filters are). */
  private hubSubjectsFor(key: string, subject: string, queue: string | null): string[] {
    let h = this.contrib.get(key)
    if (h === undefined) {
      h = this.filters.interestUp(subject, queue)
      this.contrib.set(key, h)
    }
    return h
  }

  /** Adds `delta` to a hub key's count and returns the LS+/LS- line that change needs, if any. */
  private account(subject: string, queue: string | null, before: number, after: number): string {
    const key = keyOf(subject, queue)
    const cur = this.sent.get(key) ?? 0
    const next = cur - before + after
    if (next <= 0) this.sent.delete(key)
    else this.sent.set(key, next)
    if (queue === null) {
      if (cur === 0 && next > 0) return `LS+ ${subject}${CRLF}`
      if (cur > 0 && next <= 0) return `LS- ${subject}${CRLF}`
      return ''
    }
    if (next > 0 && next !== cur) return `LS+ ${subject} ${queue} ${next}${CRLF}`
    if (next <= 0 && cur > 0) return `LS- ${subject} ${queue}${CRLF}`
    return ''
  }

  /** Local interest changed (sublist counts): tell the hub what that changes there. */
  localChanged(subject: string, queue: string | null, before: number, after: number): void {
    if (this.phase !== 'up') return
    const key = keyOf(subject, queue)
    let lines = ''
    for (const h of this.hubSubjectsFor(key, subject, queue)) lines += this.account(h, queue, before, after)
    if (after === 0) this.contrib.delete(key)
    if (lines !== '') this.write(lines)
  }

  /**
   * The remote's filters changed (config reload): recompile them and tell the hub only what
   * that changes. New LS+ go out before the LS- of what is no longer wanted, so interest that
   * both old and new filters keep never drops at the hub.
   */
  refilter(): void {
    this.filters = compileFilters(this.remote.opts, this.info.import, this.info.export)
    const was = new Map(this.contrib)
    this.contrib.clear()
    if (this.phase !== 'up') return
    let adds = ''
    let dels = ''
    for (const [key, l] of this.remote.localKeys) {
      const before = was.get(key) ?? []
      const after = this.hubSubjectsFor(key, l.subject, l.queue)
      for (const h of after) if (!before.includes(h)) adds += this.account(h, l.queue, 0, l.count)
      for (const h of before) if (!after.includes(h)) dels += this.account(h, l.queue, l.count, 0)
    }
    if (adds + dels !== '') this.write(adds + dels)
  }

  /** LS+ keys we hold at the hub. */
  get sentCount(): number {
    return this.sent.size
  }

  /** The hub's interest keys ("subject" or "subject queue"). */
  hubInterestKeys(): string[] {
    return [...this.hubKeys.keys()]
  }

  /** Hub interest keys known on this link. */
  get hubInterest(): number {
    return this.hubKeys.size
  }

  /** The outbound queue is over HIGH_WATER: stall publishers, stop pumping. */
  get overHigh(): boolean {
    return this.out.pending > this.out.limit * HIGH_WATER
  }

  /** The outbound queue is down to LOW_WATER: stalled publishers may resume. */
  get underLow(): boolean {
    return this.out.pending <= this.out.limit * LOW_WATER
  }

  /**
   * The one send-up path: export filter and map, the hub's interest, the hub queue groups the
   * message should serve (those with no local member), then the frame. `local`: the local
   * subscribers of the subject (a local queue group keeps its messages here). The subject's
   * bytes, when `m` has them (a live Msg), save their encoding; the payload is copied from
   * its lent range (putPayload), with no view made for it.
   */
  forward(m: Msg, local: Match<Sub>): Sent {
    if (this.phase !== 'up') return Sent.NO_INTEREST
    const subject = m.subject
    const hub = this.filters.up(subject)
    if (hub === null) return Sent.FILTERED
    const queues = this.queuesFor(this.hubSubs.match(hub), local)
    if (queues === null) return Sent.NO_INTEREST
    const sb = hub === subject && m.subjectBytes.length > 0 ? m.subjectBytes : null
    return this.send(hub, sb, m.reply === '' ? '' : this.filters.replyUp(m.reply), queues, m) ? Sent.OK : Sent.FULL
  }

  /** Whether forward() would find interest at the hub for this message. */
  wants(subject: string, local: Match<Sub>): boolean {
    const hub = this.filters.up(subject)
    return hub !== null && this.queuesFor(this.hubSubs.match(hub), local) !== null
  }

  /**
   * hubQueues, the last answer again when both matches are the same objects (sublists share
   * cached results and replace them when they change: a gateway sends the same subject over
   * and over, and a hub queue group would otherwise cost an array per message).
   */
  private queuesFor(h: Match<HubSub>, local: Match<Sub>): readonly string[] | null {
    if (h !== this.lastHubMatch || local !== this.lastLocalMatch) {
      this.lastHubMatch = h
      this.lastLocalMatch = local
      this.lastQueues = hubQueues(h, local)
    }
    return this.lastQueues
  }

  /**
   * Frames one message for the hub; false when the outbound queue has no room (the caller
   * keeps it). `queues`: hub queue groups this message should also serve. `sb`: the hub
   * subject's bytes, if known.
   */
  private send(hubSubject: string, sb: Uint8Array | null, reply: string, queues: readonly string[], m: Msg): boolean {
    const hdr = m.hdr
    const size = m.size + (hdr ? hdr.length : 0)
    this.frameAt = -1
    const max = this.info.max_payload
    if (max !== undefined && max > 0 && size > max) {
      // Newer hubs close the link over this; older ones pass it on. Neither is worth it.
      this.remote.onOversize()
      return true
    }
    if (sb === null) {
      if (hubSubject !== this.hubSubj) {
        this.hubSubj = hubSubject
        this.hubSubjBytes = utf8(hubSubject)
      }
      sb = this.hubSubjBytes
    }
    const rb = reply === '' ? EMPTY : utf8(reply)
    const qb = queues.length === 0 ? EMPTY : this.queueBytes(queues)
    return this.frame(sb, rb, qb, m, size)
  }

  /** The bytes of a queue list (space-separated): the last one's, when it repeats. */
  private queueBytes(queues: readonly string[]): Uint8Array {
    const last = this.queueList
    let same = last.length === queues.length
    for (let i = 0; same && i < queues.length; i++) same = last[i] === queues[i]
    if (!same) {
      this.queueList = queues.slice()
      this.queueListBytes = utf8(queues.join(' '))
    }
    return this.queueListBytes
  }

  /**
   * An LMSG/HMSG framed straight into the outbound buffer, without building a string:
   * `LMSG subject[ + reply queues| | queues| reply][ hdrlen] size`, headers, payload.
   * `rb`, `qb`: the reply's and the queue list's bytes (empty: none).
   */
  private frame(sb: Uint8Array, rb: Uint8Array, qb: Uint8Array, m: Msg, size: number): boolean {
    const hdr = m.hdr
    const hl = hdr ? hdr.length : 0
    const mid = qb.length > 0 ? (rb.length > 0 ? 4 + rb.length : 3) + qb.length : rb.length > 0 ? 1 + rb.length : 0
    const head = 6 + sb.length + mid + (hdr ? uintLength(hl) + 1 : 0) + uintLength(size) + 2
    const at = this.reserve(head + size + 2)
    if (at < 0) return false
    const b = this.out.buf
    b[at] = hdr ? 72 : 76 // H / L
    b[at + 1] = 77 // M
    b[at + 2] = 83 // S
    b[at + 3] = 71 // G
    b[at + 4] = 32
    let p = put(b, at + 5, sb)
    if (qb.length > 0) {
      b[p++] = 32
      b[p++] = rb.length > 0 ? 43 : 124 // + / |
      b[p++] = 32
      if (rb.length > 0) {
        p = put(b, p, rb)
        b[p++] = 32
      }
      p = put(b, p, qb)
    } else if (rb.length > 0) {
      b[p++] = 32
      p = put(b, p, rb)
    }
    b[p++] = 32
    if (hdr) {
      p = writeUint(b, p, hl)
      b[p++] = 32
    }
    p = writeUint(b, p, size)
    b[p++] = 13
    b[p++] = 10
    if (hdr) p = put(b, p, hdr)
    this.endFrame(b, p, m, size)
    return true
  }
  /** The payload and CRLF that end an LMSG/HMSG at b[p], counted. */
  private endFrame(b: Uint8Array, p: number, m: Msg, size: number): void {
    p = putPayload(b, p, m)
    b[p] = 13
    b[p + 1] = 10
    this.frameTo = p + 2
    const st = this.remote.stats
    st.out_msgs++
    st.out_bytes += size
    if (this.out.len >= EARLY_FLUSH && !this.early) {
      this.early = true
      this.remote.srv.host.defer(this.flushEarly)
    }
  }

  /** Set while an early flush is queued. */
  private early = false

  /**
   * A batch this big is worth a write of its own: it goes when this read's work is done, as
   * before the per-turn flush, instead of growing by copies until the turn ends. The queue
   * stays on the turn's list (scheduled), which writes whatever comes after.
   */
  private readonly flushEarly = (): void => {
    this.early = false
    const o = this.out
    if (o.len < EARLY_FLUSH || this.phase === 'closed') return
    const scheduled = o.scheduled
    o.flush(this.remote.srv.host.now())
    o.scheduled = scheduled
  }

  /**
   * out.reserve for one frame (noted for keepLast); a queue about to grow first hands over the kept run.
   * A batch already EARLY_FLUSH long goes to the wire first, between two frames: one large read
   * (Bun hands over up to 512 KiB) then never grows the buffer by copies to the read's whole
   * output, and a wire that takes the batch at once lends the buffer back for the next one.
   */
  private reserve(n: number): number {
    if (this.out.len >= EARLY_FLUSH && this.out.blockedSince === 0) this.flushEarly()
    if (this.keepMsgs > 0 && this.out.len + n > this.out.buf.length) this.sealKept()
    const at = this.out.reserve(n)
    this.frameAt = at
    return at
  }

  /**
   * The frame forward() just wrote is a message the owner keeps until the hub confirms it:
   * it joins the run of kept frames, which goes to the owner as one (onKept) when it ends:
   * before anything else is queued, before the queue grows or flushes, at KEEP_RUN, on close.
   */
  keepLast(): void {
    const at = this.frameAt
    if (at < 0) return // nothing written (over max_payload)
    this.frameAt = -1
    if (this.keepMsgs > 0 && (at !== this.keepTo || this.keepTo - this.keepFrom >= KEEP_RUN)) this.sealKept()
    if (this.keepMsgs === 0) this.keepFrom = at
    this.keepTo = this.frameTo
    this.keepMsgs++
  }

  /** Hands the run of kept frames to the owner (a confirmation PING must follow it). */
  sealKept(): void {
    const n = this.keepMsgs
    if (n === 0) return
    this.keepMsgs = 0
    if (this.phase !== 'closed') this.remote.onKept(this, this.out.buf.subarray(this.keepFrom, this.keepTo), n)
  }

  /**
   * Sends a frame again as it was written (a kept message after a lost link): when this
   * connection's filters still let it go up and this hub has interest in its subject.
   * `frame`: one whole LMSG/HMSG; `hubSubject`: its subject.
   */
  resend(hubSubject: string, frame: Uint8Array): Sent {
    if (this.phase !== 'up') return Sent.NO_INTEREST
    if (!this.filters.mayResend(hubSubject)) return Sent.FILTERED // a reload or this hub's permissions
    const h = this.hubSubs.match(hubSubject)
    if (h.psubs.length === 0 && h.qsubs.length === 0) return Sent.NO_INTEREST
    const size = frameSize(frame, 0)
    const max = this.info.max_payload
    if (max !== undefined && max > 0 && size > max) {
      this.remote.onOversize()
      return Sent.OK
    }
    const at = this.reserve(frame.length)
    this.frameAt = -1
    if (at < 0) return Sent.FULL
    this.out.buf.set(frame, at)
    const st = this.remote.stats
    st.out_msgs++
    st.out_bytes += size
    return Sent.OK
  }

}

const NO_QUEUES: readonly string[] = Object.freeze([])

/** Bytes queued for the hub that are written after the read that queued them, not at the turn's end. */
const EARLY_FLUSH = 64 * 1024

/**
 * The hub queue groups a message should serve (those with no local member), or null when
 * the hub has no interest at all. An LMSG without a queue list reaches only plain subscribers.
 */
function hubQueues(h: Match<HubSub>, local: Match<Sub>): readonly string[] | null {
  if (h.qsubs.length === 0) return h.psubs.length === 0 ? null : NO_QUEUES
  const out: string[] = []
  for (const g of h.qsubs) {
    const q = g[0]!.queue!
    if (local.qsubs.some((lg) => lg[0]!.queue === q)) continue
    out.push(q)
  }
  if (h.psubs.length === 0 && out.length === 0) return null
  return out
}
