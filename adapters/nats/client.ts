// One NATS client connection, sans-I/O: the target feeds it bytes (`data`) and it writes
// frames to its Wire through a bounded Outbound queue. It behaves as nats-server 2.9+ does
// towards clients: the same INFO fields, the same -ERR strings, and the same choice of which
// errors close the connection (see ERR and `fail`).

import type { Conn, Wire } from '../../src/host.ts'
import { put, utf8, writeUint, uintLength } from '../../src/bytes.ts'
import { newMsg, putPayload, type Msg } from '../../src/msg.ts'
import type { Credentials, Identity } from '../../src/auth.ts'
import { Client, type DenyChecked } from '../../src/lifecycle.ts'
import { authOf } from '../../src/auth.ts'
import { newNonce } from '../../src/nkey.ts'
import { clip, quote } from '../../src/log.ts'
import {
  canSubscribe, deliveryDenied, needsDeliveryCheck, noteRequest, publishAllowed, publishViolation, subscribeViolation,
} from '../../src/permissions.ts'
import type { ConnInfo } from '../../src/monitor.ts'
import { FANOUT_PER_READ, yieldTurn } from '../../src/pause.ts'
import type { Owner, Sub } from '../../src/router.ts'
import type { Server } from '../../src/server.ts'
import { isSpace, isValidLiteralSubject, isValidQueueName, isValidSubject } from '../../src/subject.ts'
import { Parser, type Failure, type Handler, type PubArgs } from './parser.ts'
import { ERR, errLine, infoLine, noResponders, OK, PING, PONG } from './proto.ts'
import { tracedHandler, traceOutgoing } from './trace.ts'

export interface NatsSub extends Sub, DenyChecked {
  readonly owner: NatsClient
  readonly sid: string
  readonly sidBytes: Uint8Array
  /** Auto-unsubscribe after this many deliveries (0 = none). */
  max: number
  delivered: number
}

/** What a client may say in CONNECT (nats-server's field names). */
interface ConnectOpts {
  verbose?: boolean
  pedantic?: boolean
  echo?: boolean
  headers?: boolean
  no_responders?: boolean
  protocol?: number
  name?: string
  lang?: string
  version?: string
  user?: string
  pass?: string
  auth_token?: string
  nkey?: string
  sig?: string
  account?: string
  new_account?: boolean
}

/** The JSON type of each field of nats-server's ClientOpts; a mismatch fails its CONNECT. */
const CONNECT_FIELDS: Record<string, 'boolean' | 'string' | 'int' | 'object'> = {
  echo: 'boolean',
  verbose: 'boolean',
  pedantic: 'boolean',
  tls_required: 'boolean',
  new_account: 'boolean',
  headers: 'boolean',
  no_responders: 'boolean',
  nkey: 'string',
  jwt: 'string',
  sig: 'string',
  auth_token: 'string',
  user: 'string',
  pass: 'string',
  name: 'string',
  lang: 'string',
  version: 'string',
  account: 'string',
  protocol: 'int',
  import: 'object',
  export: 'object',
}

export class NatsClient extends Client implements Owner, Conn, Handler {
  // A getter, on the prototype: a field would cost each connection 8 bytes.
  get kind(): 'nats' {
    return 'nats'
  }
  readonly parser: Parser
  readonly subs = new Map<string, NatsSub>()
  readonly start: number
  // Before CONNECT nats-server assumes verbose and pedantic; CONNECT then sets them as given.
  verbose = true
  pedantic = true
  echo = true
  headers = false
  noResponders = false
  name = ''
  lang = ''
  version = ''
  lastIn: number
  pingsOut = 0
  nextPing: number
  in_msgs = 0
  /** The nonce this client's INFO carried (nkey users configured), for it to sign; '' without. */
  readonly nonce: string
  in_bytes = 0
  /** What earlier CONNECTs said: nats-server decodes each CONNECT over the previous one. */
  private given: ConnectOpts = {}
  private readonly msg: Msg = newMsg()
  /** The last publish subject that passed validation (same string object when it repeats). */
  private okSubject = ''

  constructor(srv: Server, cid: number, wire: Wire) {
    super(srv, cid, wire, 'nats') // the outbound queue, the connect deadline (src/lifecycle.ts)
    const o = srv.opts
    // log_level trace: this connection's operations are logged as nats-server does (trace.ts).
    const tracing = srv.log.enabled('trace')
    this.parser = new Parser(tracing ? tracedHandler(this) : this, { maxPayload: o.max_payload, maxControlLine: o.max_control_line })
    if (tracing) traceOutgoing(this)
    this.parser.connectFirst = this.authRequired
    this.parser.budget = srv.budget
    this.start = this.lastIn = srv.host.now()
    this.nextPing = this.start + o.ping_interval
    srv.add(this)
    this.nonce = authOf(o).nkeys ? newNonce() : ''
    this.send(utf8(infoLine(srv, this)))
    srv.log.debug(() => `${this.label()} client connection created`)
  }

  label(): string {
    return `${this.wire.remoteAddress}:${this.wire.remotePort} - cid:${this.cid}`
  }

  // --- bytes in ---------------------------------------------------------------------------

  /**
   * Bytes read. A read that is just `PING\r\n` (an idle client keeping alive; nats.js and
   * nats.go every 2 minutes) is answered here, straight to the wire, as MQTT's PINGREQ is
   * (adapters/mqtt/conn.ts data): on Bun this entry is kept from the top tier and the rest
   * of the read path is not reached (targets/run.ts, the list).
   */
  data(chunk: Uint8Array): void {
    if (chunk.length === 6 && chunk[0] === 0x50 && chunk[1] === 0x49 && chunk[2] === 0x4e && chunk[3] === 0x47 && chunk[4] === 0x0d && chunk[5] === 0x0a && this.quickPong()) return
    this.read(chunk)
  }

  /** `PING` alone in a read: PONG at once if nothing waits before it and nothing is traced. */
  private quickPong(): boolean {
    const now = this.parser.atLineStart() && this.srv.log.level !== 'trace' ? this.answerKeepalive(PONG) : -1
    if (now < 0) return false
    this.lastIn = now
    return true
  }

  /** Every other read: a function of its own (noInline on Bun), so it tiers up on its own. */
  read(chunk: Uint8Array): void {
    if (this.done) return
    this.lastIn = this.srv.host.now()
    const t = this.srv.router.traffic
    const before = t.out_bytes
    this.parser.feed(chunk)
    // A read that fanned out to a lot of bytes lets the other connections go first.
    if (t.out_bytes - before > FANOUT_PER_READ) yieldTurn(this.srv.host, this.wire)
  }

  drained(): void {
    this.out.drained(this.srv.host.now())
  }

  closed(reason?: string): void {
    this.teardown(reason ?? 'Client Closed')
    this.out.closed()
    this.parser.release()
  }

  // --- parser callbacks -------------------------------------------------------------------

  connect(json: string): void {
    if (this.holding) return this.hold(() => this.connect(json), json.length)
    let o: ConnectOpts
    try {
      o = { ...this.given, ...decodeConnect(json) }
    } catch (e) {
      this.srv.log.error(`${this.label()} CONNECT parse error: ${clip((e as Error).message)}`)
      return this.teardown('Protocol Violation')
    }
    // nats-server's order: credentials, then account fields (refused), then the protocol.
    const creds: Credentials = { user: o.user, pass: o.pass, token: o.auth_token, nkey: o.nkey, sig: o.sig, nonce: this.nonce || undefined }
    this.login(creds, (id) => this.finishConnect(o, creds, id))
    if (this.holding) {
      // A bcrypt hash: what follows CONNECT waits until it is checked.
      this.parser.connectFirst = false
      this.parser.headers = bool(o.headers, this.headers) // so an HPUB right behind CONNECT can wait too
    }
  }

  /** CONNECT, once the credentials are decided (`id` null: refused). */
  private finishConnect(o: ConnectOpts, creds: Credentials, id: Identity | null): void {
    if (id === null) {
      // A login refused unchecked (too many password checks waiting) was logged with its episode.
      const r = this.refusal(creds)
      const line = `${this.label()} authentication error${r.user}`
      if (r.unchecked) this.srv.log.debug(() => `${line} (refused unchecked: too many password checks waiting)`)
      else this.srv.log.error(line)
      return this.closeWithErr(ERR.authViolation, 'Authorization Violation')
    }
    if (o.new_account || o.account) return this.closeWithErr(ERR.authViolation, 'Authorization Violation')
    const proto = o.protocol ?? 0
    if (proto < 0 || proto > 1) return this.closeWithErr(ERR.badProtocol, 'Bad Client Protocol')
    this.given = o
    // Like nats-server, a field the client leaves out keeps its current value.
    this.verbose = bool(o.verbose, this.verbose)
    this.pedantic = bool(o.pedantic, this.pedantic)
    this.echo = bool(o.echo, this.echo)
    this.headers = bool(o.headers, this.headers)
    this.noResponders = bool(o.no_responders, this.noResponders)
    if (this.noResponders && !this.headers) return this.closeWithErr(ERR.noRespondersNeedHeaders, 'Protocol Violation')
    this.name = str(o.name)
    this.lang = str(o.lang)
    this.version = str(o.version)
    this.parser.headers = this.headers
    this.parser.connectFirst = false
    this.accepted()
    if (this.verbose) this.send(OK)
  }

  protected connectTimeout(): void {
    this.closeWithErr(ERR.authTimeout, 'Authentication Timeout')
  }

  /** After a reload: credentials that no longer pass close the connection, as in nats-server. */
  protected revoked(user: string | undefined): void {
    this.srv.log.error(`${this.label()} authentication error after reload${user ? ` - User ${quote(user)}` : ''}`)
    this.closeWithErr(ERR.authViolation, 'Authorization Violation')
  }

  /** After a reload: subscriptions the new permissions refuse go, with nats-server's -ERR and log line. */
  protected recheck(): void {
    const perms = this.perms
    for (const s of [...this.subs.values()]) {
      if (perms === null || canSubscribe(perms, s.subject, s.queue)) {
        s.denyCheck = needsDeliveryCheck(perms, s.subject)
        continue
      }
      this.dropSub(s)
      this.send(errLine(`Permissions Violation for Subscription to ${JSON.stringify(s.subject)} (sid ${JSON.stringify(s.sid)})`))
      this.srv.log.info(`Removed sub ${quote(s.subject)} (sid ${quote(s.sid)}) for User ${quote(this.user)} - not authorized`)
    }
  }

  pub(p: PubArgs, buf: Uint8Array, at: number): void {
    if (this.holding) {
      const args = { ...p } // the parser reuses p and buf: copy both now
      const body = buf.slice(at, at + p.size)
      return this.hold(() => this.pub(args, body, 0), p.size)
    }
    this.in_msgs++
    this.in_bytes += p.size
    const subject = p.subject
    if (subject !== this.okSubject) {
      if (isValidLiteralSubject(subject)) this.okSubject = subject
      else {
        // nats-server only warns (pedantic) and routes it anyway: wildcard tokens then match
        // only wildcard subscriptions, and a subject with an empty token matches nothing.
        if (this.pedantic) this.send(ERR.invalidPublishSubject)
        // Whitespace, which no subscription can name, stays out (nats-server 2.9 routes it).
        if (hasSpace(subject)) {
          if (this.verbose) this.send(OK)
          return
        }
      }
    }
    if (this.perms !== null && !publishAllowed(this.perms, this.replies, subject, this.srv.host.now())) {
      this.srv.counters.permission_violations++
      this.srv.log.error(`${this.label()} Publish Violation - User ${quote(this.user)}, Subject ${quote(subject)}`)
      return this.send(errLine(publishViolation(subject)))
    }
    // nats-server acknowledges before it delivers, so +OK precedes any echoed MSG.
    if (this.verbose) this.send(OK)
    const router = this.srv.router
    const reach = router.reach(subject, p.hdr > 0)
    if (reach === null) {
      // Nobody would see it: counted, and no message built.
      router.unheard(p.size)
    } else {
      const m = this.msg
      m.subject = subject
      m.subjectBytes = p.subjectBytes
      m.reply = p.reply
      m.replyBytes = p.replyBytes
      // The payload is lent as a range of the read (no view made: src/msg.ts).
      if (p.hdr > 0) { // an empty header block goes out as a plain MSG, as from nats-server
        const h = at + p.hdr
        m.hdr = buf.subarray(at, h)
        m.lend(buf, h, p.size - p.hdr)
      } else {
        m.hdr = null
        m.lend(buf, at, p.size)
      }
      if (router.publish(m, this, undefined, reach) > 0) return
    }
    if (this.noResponders && p.reply !== '') this.noRespondersReply(p.reply)
  }

  /**
   * A service refused what this client's publish to `subject` asked of it (services.ts, which
   * logs and counts it): the client gets the -ERR of a refused publish, and stays connected.
   */
  refused(subject: string): void {
    this.send(errLine(publishViolation(subject)))
  }

  /**
   * A request nobody received: a 503 status to the requester's own reply subscription. Like
   * nats-server: plain subscriptions only, and it does not count toward an UNSUB max.
   */
  private noRespondersReply(reply: string): void {
    for (const s of this.srv.router.subs.match(reply).psubs) if (s.owner === this) return this.send(noResponders(reply, (s as NatsSub).sid))
  }

  sub(subject: string, queue: string | null, sid: string): void {
    if (this.holding) return this.hold(() => this.sub(subject, queue, sid), subject.length)
    const max = this.srv.opts.max_subscriptions
    if (max > 0 && this.subs.size >= max) {
      this.srv.log.error(`${this.label()} Maximum Subscriptions Exceeded (${max})`)
      this.send(ERR.maxSubscriptions)
      return
    }
    // A repeated sid keeps the original subscription and is not checked again, as in nats-server.
    if (!this.subs.has(sid)) {
      if (!isValidSubject(subject) || (queue !== null && !isValidQueueName(queue))) {
        this.send(ERR.invalidSubject)
        return
      }
      if (this.perms !== null && !canSubscribe(this.perms, subject, queue)) {
        const q = queue === null ? '' : `, Queue: ${quote(queue)}`
        this.srv.counters.permission_violations++
        this.srv.log.error(`${this.label()} Subscription Violation - User ${quote(this.user)}, Subject ${quote(subject)}${q}, SID ${clip(sid)}`)
        return this.send(errLine(subscribeViolation(subject, queue)))
      }
      // denyCheck always set, so every sub has the same shape on the delivery path.
      const s: NatsSub = { subject, queue, owner: this, sid, sidBytes: utf8(sid), max: 0, delivered: 0, denyCheck: needsDeliveryCheck(this.perms, subject) }
      this.subs.set(sid, s)
      this.srv.router.subscribe(s)
    }
    if (this.verbose) this.send(OK)
  }

  unsub(sid: string, max: number): void {
    if (this.holding) return this.hold(() => this.unsub(sid, max), sid.length)
    const s = this.subs.get(sid)
    if (s) {
      if (max > 0 && s.delivered < max) s.max = max
      else this.dropSub(s)
    }
    if (this.verbose) this.send(OK)
  }

  private dropSub(s: NatsSub): void {
    this.subs.delete(s.sid)
    this.srv.router.unsubscribe(s)
  }

  ping(): void {
    if (this.holding) return this.hold(() => this.ping(), 0)
    this.send(PONG)
  }

  pong(): void {
    if (this.holding) return this.hold(() => this.pong(), 0)
    this.pingsOut = 0
  }

  err(text: string): void {
    this.srv.log.debug(() => `${this.label()} client sent -ERR ${clip(text)}`)
    this.teardown('Client Closed')
  }

  fail(why: Failure, detail: string): void {
    switch (why) {
      case 'unknown_op':
        this.srv.log.error(`${this.label()} Client parser ERROR: ${quote(detail)}`)
        return this.closeWithErr(ERR.unknownOp, 'Protocol Violation')
      case 'control_line':
        this.srv.log.error(`${this.label()} maximum control line exceeded (${this.srv.opts.max_control_line})`)
        return this.closeWithErr(ERR.maxControlLine, 'Max Control Line Exceeded')
      case 'auth_first':
        this.srv.log.error(`${this.label()} Authorization Violation: ${quote(detail)} before CONNECT`)
        return this.closeWithErr(ERR.authViolation, 'Authorization Violation')
      case 'max_payload':
        this.srv.log.error(`${this.label()} Maximum Payload Violation: ${detail}`)
        return this.closeWithErr(ERR.maxPayload, 'Max Payload Exceeded')
      default:
        this.srv.log.error(`${this.label()} protocol error: ${clip(detail)}`)
        return this.teardown('Protocol Violation')
    }
  }

  // --- bytes out --------------------------------------------------------------------------

  /** Router delivery: frame MSG/HMSG straight into the outbound buffer. */
  deliver(sub: Sub, m: Msg): void {
    if (this.done) return
    const s = sub as NatsSub
    // Wildcards overlapping a deny rule never deliver what the rule denies (nats-server's check).
    if (s.denyCheck === true && deliveryDenied(this.perms, m.subject, s.queue)) return
    if (this.out.shedding()) return // no_fast_producer_stall: dropped for a crowded queue
    if (this.replies !== null && m.reply !== '') noteRequest(this.perms!, this.replies, m.reply, this.srv.host.now())
    const hdr = this.headers ? m.hdr : null // header-less clients get the payload only
    const hlen = hdr ? hdr.length : 0
    const total = hlen + m.size
    const subj = m.subjectBytes
    const sid = s.sidBytes
    const rlen = m.replyBytes.length
    let n = (hdr ? 5 : 4) + subj.length + 1 + sid.length + 1 + (rlen > 0 ? rlen + 1 : 0) + uintLength(total) + 2 + total + 2
    if (hdr) n += uintLength(hlen) + 1
    const out = this.out
    let p = out.reserve(n)
    if (p < 0) return this.overPending()
    const b = out.buf
    if (hdr) {
      b[p++] = 72 // H
    }
    b[p++] = 77 // M
    b[p++] = 83 // S
    b[p++] = 71 // G
    b[p++] = 32
    p = put(b, p, subj)
    b[p++] = 32
    p = put(b, p, sid)
    b[p++] = 32
    if (rlen > 0) {
      p = put(b, p, m.replyBytes)
      b[p++] = 32
    }
    if (hdr) {
      p = writeUint(b, p, hlen)
      b[p++] = 32
    }
    p = writeUint(b, p, total)
    b[p++] = 13
    b[p++] = 10
    if (hdr) p = put(b, p, hdr)
    p = putPayload(b, p, m)
    b[p++] = 13
    b[p] = 10
    this.out.msgs++
    this.out.bytes += total
    if (++s.delivered === s.max) this.dropSub(s)
  }

  describe(): ConnInfo {
    return {
      cid: this.cid,
      type: 'nats',
      ip: this.wire.remoteAddress,
      port: this.wire.remotePort,
      start: this.start,
      last_activity: this.lastIn,
      pending_bytes: this.out.pending,
      in_msgs: this.in_msgs,
      out_msgs: this.out_msgs,
      in_bytes: this.in_bytes,
      out_bytes: this.out_bytes,
      subscriptions: this.subs.size,
      name: this.name,
      lang: this.lang,
      version: this.version,
      ...(this.wire.tls ? { tls_version: this.wire.tls.protocol } : {}),
    }
  }

  /** Queues a protocol line (INFO, +OK, PONG, -ERR ...). */
  send(bytes: Uint8Array): void {
    if (this.done) return
    if (!this.out.push(bytes)) this.overPending()
  }

  /** Slow consumer (src/lifecycle.ts): nats-server's -ERR, past the discarded queue, then close. */
  protected closeSlow(): void {
    this.wire.write(ERR.slowConsumer)
    this.teardown('Slow Consumer', true)
  }

  private closeWithErr(err: Uint8Array, reason: string): void {
    if (this.done) return
    this.send(err)
    this.teardown(reason)
  }

  // --- housekeeping -----------------------------------------------------------------------

  tick(now: number): void {
    if (this.done) return
    if (this.writeDeadline(now)) return
    const o = this.srv.opts
    if (now < this.nextPing) return
    this.nextPing = now + o.ping_interval
    // Like nats-server: no PING while the client is talking to us anyway.
    if (now - this.lastIn < o.ping_interval && this.pingsOut === 0) return
    if (this.pingsOut + 1 > o.ping_max) {
      this.srv.log.debug(() => `${this.label()} Stale Client Connection - Closing`)
      return this.closeWithErr(ERR.stale, 'Stale Connection')
    }
    this.pingsOut++
    this.send(PING)
  }

  shutdown(): void {
    this.teardown('Server Shutdown')
  }

  /** Lame duck (src/lameduck.ts): INFO with `ldm: true`, as nats-server sends connected clients. */
  lameDuck(): void {
    // Like nats-server: only to clients that said they take asynchronous INFO (protocol 1).
    if (this.connected && this.given.protocol === 1) this.send(utf8(infoLine(this.srv, this, true)))
  }

  /**
   * Ends the connection once: drops its subscriptions, unregisters, and closes the wire
   * after flushing what is queued (unless that was discarded already).
   */
  private teardown(reason: string, discarded = false): void {
    if (this.done) return
    this.done = true
    this.parser.stopped = true
    this.stopDeadline()
    this.srv.remove(this, reason) // first: /connz?state=closed keeps it as it was
    for (const s of this.subs.values()) this.srv.router.unsubscribe(s)
    this.subs.clear()
    if (!discarded) this.out.flush(this.srv.host.now())
    this.wire.end()
    this.srv.log.debug(() => `${this.label()} client closed: ${reason}`)
  }
}

/**
 * Reads CONNECT's JSON as Go's encoding/json fills nats-server's ClientOpts: an object or
 * null, keys matched case-insensitively, a known field of the wrong type is an error (null
 * leaves it unset), unknown fields are ignored.
 */
function decodeConnect(json: string): ConnectOpts {
  const v: unknown = JSON.parse(json)
  const o: Record<string, unknown> = {}
  if (v === null) return o
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object')
  for (const [k, x] of Object.entries(v)) {
    const key = k.toLowerCase()
    const type = CONNECT_FIELDS[key]
    if (type === undefined || x === null) continue
    const ok =
      type === 'int' ? Number.isSafeInteger(x)
      : type === 'object' ? typeof x === 'object' && !Array.isArray(x)
      : typeof x === type
    if (!ok) throw new Error(`bad type for ${key}`)
    o[key] = x
  }
  return o
}

/** Does the subject contain whitespace (which no subscription can name)? */
function hasSpace(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (isSpace(s.charCodeAt(i))) return true
  return false
}

function bool(v: unknown, current: boolean): boolean {
  return typeof v === 'boolean' ? v : current
}

function str(v: unknown): string {
  return typeof v === 'string' ? v : ''
}
