// The life of one client connection, the same for every protocol (NATS and MQTT today; the
// WebSocket listeners and anything else that takes clients next): the connect deadline from
// accept, login (src/auth.ts identify) with the operations that arrive while a bcrypt hash is
// checked held back and replayed in order, the identity and its permissions, the check again
// after a reload, and slow consumers (over max_pending, a write blocked past write_deadline,
// the memory budget). An adapter's connection extends Client and supplies the protocol's
// words: what it says when it closes for each of these reasons.

import { authNeeded, connectDeadline, identify, refusedUnchecked, type Credentials, type Identity, type Protocol } from './auth.ts'
import type { Wire } from './host.ts'
import { quote } from './log.ts'
import { Outbound } from './outbound.ts'
import type { CompiledPermissions, Replies } from './permissions.ts'
import type { Server, Session } from './server.ts'

/** What a client that presented nothing is checked with (shared: most devices on an open broker). */
export const NO_CREDS: Credentials = Object.freeze({})

/**
 * The shape every protocol's subscription has for the delivery-time deny check: a wildcard
 * that overlaps a subscribe deny rule is checked against its owner's permissions for each
 * message (permissions.ts needsDeliveryCheck / deliveryDenied). Always set, so every
 * subscription has the same shape on the delivery path.
 */
export interface DenyChecked {
  denyCheck: boolean
}

/** Operations that arrived while the login's password hash was being checked, and their bytes. */
interface Held {
  readonly ops: (() => void)[]
  bytes: number
}

/** Bytes each held operation counts for besides its payload. */
const HELD_OVERHEAD = 32

/** From accept until the login is accepted: the connect deadline, and what waits for a password check. */
interface Pending {
  deadline: { cancel(): void } | null
  held: Held | null
}

/** What only some clients have: credentials to check again on reload, reply subjects they may answer. */
interface More {
  creds: Credentials
  replies: Replies | null
}

// Client.state bits.
const DONE = 1
const CONNECTED = 2

// Every field here is on every connection (an idle device's too: 8 bytes each, and JSC rounds
// objects up to a size class), so what only some clients need, or only for a while, is in an
// object of its own: Pending until the login is accepted, More for credentials and replies.
export abstract class Client implements Session {
  /** The protocol, which is also the listener whose rules apply (its TLS block, certificate mapping). */
  abstract readonly kind: Protocol
  readonly out: Outbound
  /** DONE | CONNECTED. */
  private state = 0
  /** The authenticated user ('' for a token or no auth) and its permissions (null: none). */
  user = ''
  perms: CompiledPermissions | null = null
  private more: More | null = null
  private pending: Pending | null

  constructor(
    readonly srv: Server,
    readonly cid: number,
    wire: Wire,
    /** Which listener's rules apply (the same as `kind`: not kept, every field costs each connection 8 bytes). */
    listener: Protocol,
  ) {
    this.out = new Outbound(wire, srv.opts.max_pending, srv.queues)
    // From accept, like nats-server's auth timer: a TLS handshake, a login trickled byte by
    // byte and a password check all count; and for every client, authenticating or not.
    this.pending = { deadline: srv.host.every(connectDeadline(srv.opts, listener, wire), () => this.deadlinePassed()), held: null }
  }

  /** The socket (the outbound queue's: not kept twice). */
  get wire(): Wire {
    return this.out.wire
  }

  /** Closed (or closing): nothing more is done for this client. */
  get done(): boolean {
    return (this.state & DONE) !== 0
  }

  set done(v: boolean) {
    this.state = v ? this.state | DONE : this.state & ~DONE
  }

  /** Login accepted (CONNECT answered). */
  get connected(): boolean {
    return (this.state & CONNECTED) !== 0
  }

  set connected(v: boolean) {
    this.state = v ? this.state | CONNECTED : this.state & ~CONNECTED
  }

  /** Reply subjects this client may answer (allow_responses), when its permissions have it. */
  get replies(): Replies | null {
    return this.more === null ? null : this.more.replies
  }

  /** What the login presented, checked again on reload. */
  private get creds(): Credentials {
    return this.more === null ? NO_CREDS : this.more.creds
  }

  /** Messages and payload bytes sent to this client (/connz), counted by its queue. */
  get out_msgs(): number {
    return this.out.msgs
  }

  get out_bytes(): number {
    return this.out.bytes
  }

  /** Who it is, for log lines. */
  abstract label(): string

  // --- what the protocol says -----------------------------------------------------------------

  /** The connect deadline passed before the login was accepted: close. */
  protected abstract connectTimeout(): void
  /** A slow consumer (already counted and logged, its queue discarded): last words and close. */
  protected abstract closeSlow(): void
  /** After a reload the credentials no longer pass (`user`: the one presented): close. */
  protected abstract revoked(user: string | undefined): void
  /** After a reload: the identity's new permissions are set; apply them to subscriptions. */
  protected abstract recheck(): void
  /** Housekeeping. */
  abstract tick(now: number): void
  abstract shutdown(): void

  // --- login ----------------------------------------------------------------------------------

  /** Must a client on this wire authenticate (users or a token configured, or a mapped certificate)? */
  get authRequired(): boolean {
    return authNeeded(this.srv.opts, this.kind, this.wire)
  }

  /**
   * Decides who the client is from what it presented: `then` gets the identity (already set
   * on the connection) or null (refused), now or once a bcrypt hash is checked; until then
   * the adapter holds what arrives (hold) and it is replayed in order after `then`.
   */
  login(creds: Credentials, then: (id: Identity | null) => void): void {
    const id = identify(this.srv, this.kind, this.wire, creds, () => !this.done)
    if (!(id instanceof Promise)) return this.loggedIn(creds, id, then)
    this.setHeld({ ops: [], bytes: 0 })
    void id.then((v) => {
      const ops = this.heldOps?.ops ?? []
      this.setHeld(null)
      this.loggedIn(creds, v, then)
      for (let i = 0; i < ops.length && !this.done; i++) {
        // A held operation that starts another login (a second NATS CONNECT) holds the rest again.
        const again = this.heldOps
        if (again !== null) {
          again.ops.push(...ops.slice(i))
          break
        }
        ops[i]!()
      }
    })
  }

  /** Operations that arrived while the login's password is checked (null: none held). */
  private get heldOps(): Held | null {
    return this.pending === null ? null : this.pending.held
  }

  private setHeld(h: Held | null): void {
    const p = this.pending
    if (p === null) {
      if (h !== null) this.pending = { deadline: null, held: h } // a second login after the first was accepted
    } else if (h === null && p.deadline === null) this.pending = null
    else p.held = h
  }

  private loggedIn(creds: Credentials, id: Identity | null, then: (id: Identity | null) => void): void {
    if (this.done) return
    if (id !== null) {
      if (creds !== this.creds) this.setMore(creds, this.replies)
      this.setIdentity(id)
    }
    then(id)
  }

  private setMore(creds: Credentials, replies: Replies | null): void {
    if (creds === NO_CREDS && replies === null) this.more = null
    else if (this.more === null) this.more = { creds, replies }
    else {
      this.more.creds = creds
      this.more.replies = replies
    }
  }

  /** While a login's password is checked, operations must wait (hold). */
  get holding(): boolean {
    return this.heldOps !== null
  }

  /**
   * A keepalive's reply (PINGRESP, PONG) written at once, for the ping shortcuts of both
   * adapters: only when connected, not closing, nothing held and nothing queued
   * (Outbound.direct). Returns host.now() when written, -1 when not (the caller goes the
   * general way). The state is read here, not through the getters: on Bun this method is kept
   * from the top tier with the pings' path, and the getters, which every message reads, are not.
   */
  answerKeepalive(reply: Uint8Array): number {
    // this.heldOps, read without its getter (which every held operation runs).
    if ((this.state & (DONE | CONNECTED)) !== CONNECTED || (this.pending !== null && this.pending.held !== null)) return -1
    const now = this.srv.host.now()
    return this.out.direct(reply, now) ? now : -1
  }

  /**
   * Queues an operation that arrived while the login's password is checked; bounded like the
   * outbound queue (a client may not pile up work while it waits): past max_pending it is a
   * slow consumer.
   */
  hold(op: () => void, bytes: number): void {
    const h = this.heldOps!
    h.bytes += bytes + HELD_OVERHEAD
    const max = this.srv.opts.max_pending
    if (h.bytes > max) return this.slowConsumer(`MaxPending of ${max} Exceeded while authenticating`)
    h.ops.push(op)
  }

  /** The log line's end for a refused login, and whether it was refused unchecked (too many checks waiting: logged per episode by the queue). */
  refusal(creds: Credentials): { user: string; unchecked: boolean } {
    return { user: creds.user ? ` - User ${quote(creds.user)}` : '', unchecked: refusedUnchecked(creds) }
  }

  /** The login was accepted (about to be answered): the connect deadline is over. */
  accepted(): void {
    this.connected = true
    this.stopDeadline()
  }

  private setIdentity(id: Identity): void {
    this.user = id.user
    this.perms = id.perms
    this.setMore(this.creds, id.perms?.responses ? (this.replies ?? new Map()) : null)
  }

  /**
   * After a config reload (auth.ts reloadAuth): the credentials are checked again; a client
   * that no longer passes is closed (as nats-server does), the others get their user's new
   * permissions.
   */
  reauthorize(): void {
    if (this.done || !this.connected) return
    const creds = this.creds
    const apply = (id: Identity | null): void => {
      if (this.done) return
      if (id === null) return this.revoked(creds.user)
      this.setIdentity(id)
      this.recheck()
    }
    const id = identify(this.srv, this.kind, this.wire, creds, () => !this.done, true)
    if (id instanceof Promise) void id.then(apply)
    else apply(id)
  }

  // --- deadlines ------------------------------------------------------------------------------

  private deadlinePassed(): void {
    this.stopDeadline()
    if (this.connected || this.done) return
    this.connectTimeout()
  }

  /** Ends the connect deadline (the connection closes). */
  protected stopDeadline(): void {
    const p = this.pending
    if (p === null) return
    p.deadline?.cancel()
    p.deadline = null
    if (p.held === null) this.pending = null
  }

  /** Closes a client whose socket has not taken a write for write_deadline; true when it did. */
  protected writeDeadline(now: number): boolean {
    const limit = this.srv.opts.write_deadline
    if (this.out.blockedSince === 0 || now - this.out.blockedSince <= limit) return false
    this.slowConsumer(`Write Deadline of ${limit}ms Exceeded`)
    return true
  }

  // --- slow consumers -------------------------------------------------------------------------

  /** The outbound queue (with whatever else the protocol counts against it) went over max_pending. */
  protected overPending(): void {
    this.slowConsumer(`MaxPending of ${this.out.limit} Exceeded`)
  }

  /** Counted, logged, queue discarded (it would only delay the close), then the protocol closes. */
  protected slowConsumer(why: string): void {
    if (this.done) return
    this.srv.counters.slow_consumers++
    this.srv.log.warn(`${this.label()} Slow Consumer Detected: ${why}`)
    this.out.discard()
    this.closeSlow()
  }

  /** Payload bytes the protocol holds for the client besides its queue (MQTT's QoS 1/2 messages). */
  protected heldBytes(): number {
    return 0
  }

  /** Messages wait for the client besides a blocked socket (MQTT's QoS 1/2 window is full). */
  protected backlogged(): boolean {
    return false
  }

  /** Memory budget: bytes held for a client that is not taking them. */
  stuck(): number {
    if (this.done || (this.out.blockedSince === 0 && !this.backlogged())) return 0
    return this.out.charged + this.heldBytes()
  }

  /** Memory budget: closed as a slow consumer, its socket dropped at once (what it holds is freed now). */
  evict(why: string): void {
    if (this.done) return
    this.slowConsumer(why)
    this.wire.destroy()
  }
}
