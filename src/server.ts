// The broker's shared state, independent of any protocol or runtime: options, the router,
// the connection registry, counters, the per-turn flush of outbound queues and the
// housekeeping tick. Protocol adapters register their connections here; targets feed it
// sockets and a clock.

import { Budget, type Evictable } from './budget.ts'
import { Stall } from './stall.ts'
import { ClosedRing } from './closed.ts'
import type { BcryptEngine, Host } from './host.ts'
import type { Logger } from './log.ts'
import type { Options } from './options.ts'
import type { Outbound, QueuePool } from './outbound.ts'
import { Router } from './router.ts'

/** What every protocol connection offers the server (and the memory budget: stuck/evict). */
export interface Session extends Evictable {
  readonly cid: number
  readonly kind: string
  /** Housekeeping: pings, deadlines, timeouts. */
  tick(now: number): void
  /** Stop: flush what can be flushed and close. */
  shutdown(): void
  /** The connection as monitoring (/connz) shows it. */
  describe?(): import('./monitor.ts').ConnInfo
  /**
   * After a reload changed users or permissions (src/auth.ts reloadAuth): check the
   * credentials again and apply the new permissions (src/lifecycle.ts Client).
   */
  reauthorize(): void
  /** Lame duck started (src/lameduck.ts): tell the client, if its protocol can (NATS: INFO ldm). */
  lameDuck?(): void
}

export interface Counters {
  /** Connections accepted since start. */
  total_connections: number
  /** Connections closed as slow consumers (over max_pending, or a blocked write past write_deadline). */
  slow_consumers: number
  /** Connections refused at accept because of max_connections. */
  refused_connections: number
  /** Publishes and subscriptions refused by permissions (including what a service would have done). */
  permission_violations: number
}

/** sprig's own release (INFO `sprig_version`, /varz `sprig.version`, --version). */
export const VERSION = '0.1.0'

/**
 * The nats-server release whose client (and leafnode) protocol sprig speaks, reported as INFO
 * and /varz `version` because clients gate features on it (nats.js `features.require`).
 * 2.10: headers and no_responders (2.2), nkey nonce auth and INFO `ldm` (2.0), TLS
 * `handshake_first` (2.10). Clients gate only JetStream features above 2.2, and sprig has no
 * JetStream at any version: a JetStream request gets a no-responders 503 either way.
 */
export const NATS_VERSION = '2.10.0'

/** starting: listeners being bound; ready: every listener up; lame_duck: draining before exit. */
export type Phase = 'starting' | 'ready' | 'lame_duck'

/** What the process tells about itself (the target fills it in: src/ never reads `process`). */
export interface ProcessStats {
  /** Resident set size in bytes. */
  mem: number
  cores: number
  /** CPU time (user + system) since start, seconds. */
  cpu_seconds?: number
  /** CPU use in percent of one core over the last interval (nats-server's `cpu`). */
  cpu?: number
}

/** ms from a memory-budget close to the garbage collection it asks for. */
const COLLECT_DELAY_MS = 50

export class Server {
  readonly router = new Router()
  readonly sessions = new Map<number, Session>()
  readonly counters: Counters = { total_connections: 0, slow_consumers: 0, refused_connections: 0, permission_violations: 0 }
  readonly id: string
  readonly name: string
  readonly started: number
  /** max_memory: every buffer that holds messages charges it (src/budget.ts). */
  readonly budget: Budget
  /** What every client's outbound queue shares (one object, not three fields per connection). */
  readonly queues: QueuePool
  /** The fast-producer stall of the client queues (src/stall.ts). */
  readonly stall: Stall
  private nextCid = 1
  private dirty: Outbound[] = []
  private flushQueued = false
  /** Queues flushed once per event-loop turn (scheduleTurn), and whether that flush is queued. */
  private turnDirty: Outbound[] = []
  private turnQueued = false
  private ticker: { cancel(): void } | null = null
  private readonly housekeeping: ((now: number) => void)[] = []
  /**
   * Sections monitoring adds to /varz under `sprig` (adapters' counters, the uplink's state),
   * and `leafz` for /leafz; each is read when a request comes in.
   */
  readonly status = new Map<string, () => unknown>()
  /** /healthz answers 200 only while 'ready' (the target sets it once every listener is bound). */
  phase: Phase = 'starting'
  /** Open connections by protocol (Session.kind), kept at add/remove: monitoring reads it often. */
  readonly byKind: Record<string, number> = { nats: 0, mqtt: 0 }
  /** Recently closed connections with their reason, for /connz?state=closed (bounded). */
  readonly closed = new ClosedRing()
  /** The process's memory and CPU; the target replaces this with a real reading. */
  proc: () => ProcessStats = () => ({ mem: 0, cores: 0, cpu_seconds: 0, cpu: 0 })
  /** The on-disk store's sync (src/store/store.ts afterSync), when a store is configured. */
  durable: { afterSync(cb: (ok: boolean) => void): void } | null = null
  /** New messages a full store dropped (an MQTT 5 publisher then gets 0x97 Quota exceeded). */
  spoolDrops = 0
  /** Where bcrypt password hashes are checked (the target's worker pool); null: on this thread. */
  bcrypt: BcryptEngine | null = null
  private readonly flushAll = (): void => {
    this.flushQueued = false
    const list = this.dirty
    this.dirty = []
    this.flushEach(list)
  }
  private readonly flushTurn = (): void => {
    this.turnQueued = false
    const list = this.turnDirty
    this.turnDirty = []
    this.flushEach(list)
  }
  private flushEach(list: { flush(now: number): void }[]): void {
    const now = this.host.now()
    for (let i = 0; i < list.length; i++) list[i]!.flush(now)
  }

  constructor(
    public opts: Options,
    readonly host: Host,
    readonly log: Logger,
  ) {
    this.id = serverId()
    this.name = opts.server_name || this.id
    this.started = host.now()
    this.budget = new Budget(opts.max_memory, {
      now: () => host.now(),
      defer: (fn) => host.defer(fn),
      log,
      candidates: () => this.sessions.values(),
      // Closed sockets let go of their buffers once their close has run: collect after that.
      collectSoon: () => {
        if (host.collect === undefined) return
        const t = host.every(COLLECT_DELAY_MS, () => {
          t.cancel()
          host.collect!()
        })
      },
    })
    this.router.budget = this.budget
    this.stall = new Stall(host)
    this.stall.off = opts.no_fast_producer_stall
    this.router.stall = this.stall
    this.queues = { schedule: this.schedule, budget: this.budget, beforeFlush: null, stall: this.stall }
  }

  /** Outbound queues call this when they get their first bytes of a batch. */
  readonly schedule = (o: Outbound): void => {
    this.dirty.push(o)
    if (!this.flushQueued) {
      this.flushQueued = true
      this.host.defer(this.flushAll)
    }
  }

  /**
   * For a queue many connections' reads feed (the uplink): its batch is written once per
   * event-loop turn, after every socket event of the turn, instead of once per read. With
   * 1,000 devices each sending one message per read, that is one write to the hub per turn
   * instead of one per message.
   */
  readonly scheduleTurn = (o: Outbound): void => {
    this.turnDirty.push(o)
    if (!this.turnQueued) {
      this.turnQueued = true
      ;(this.host.soon ?? this.host.defer)(this.flushTurn)
    }
  }

  /** A new connection id, or 0 when max_connections is reached. */
  admit(): number {
    if (this.sessions.size >= this.opts.max_connections) {
      this.counters.refused_connections++
      return 0
    }
    this.counters.total_connections++
    return this.nextCid++
  }

  add(s: Session): void {
    this.sessions.set(s.cid, s)
    this.byKind[s.kind] = (this.byKind[s.kind] ?? 0) + 1
  }

  /** Unregisters a connection; with a reason it is remembered for /connz?state=closed. */
  remove(s: Session, reason?: string): void {
    if (!this.sessions.delete(s.cid)) return
    this.byKind[s.kind]!--
    if (reason !== undefined && s.describe) this.closed.add(s.describe(), reason, this.host.now())
  }

  /** True between start() and shutdown(). */
  get running(): boolean {
    return this.ticker !== null
  }

  start(): void {
    if (this.ticker) return
    this.ticker = this.host.every(1000, () => this.tick())
  }

  /**
   * Runs `fn` (an acknowledgement to a publisher) once what was written to the store so far is
   * on disk under its sync policy; at once without a store. `ok` false: a write failed (a full
   * disk), the message was dropped.
   */
  afterStored(fn: (ok: boolean) => void): void {
    if (this.durable === null) fn(true)
    else this.durable.afterSync(fn)
  }

  /** Runs `fn` on every housekeeping tick (adapters' state that outlives connections). */
  onTick(fn: (now: number) => void): void {
    this.housekeeping.push(fn)
  }

  // Runs for every session once a second: what it calls per session is listed for the runtime
  // in targets/run.ts (keepFromTopTier), and stays cheap.
  tick(): void {
    const now = this.host.now()
    for (const s of this.sessions.values()) s.tick(now)
    for (const fn of this.housekeeping) fn(now)
    this.budget.check()
  }

  /** Closes every session after flushing what it has queued. */
  shutdown(): void {
    this.ticker?.cancel()
    this.ticker = null
    this.flushAll()
    this.flushTurn()
    for (const s of [...this.sessions.values()]) s.shutdown()
  }
}

/** nats-server ids are 56 base32 characters starting with N (an nkey's shape); so are ours. */
function serverId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
  let id = 'N'
  for (let i = 0; i < 55; i++) id += alphabet[Math.floor(Math.random() * 32)]
  return id
}
