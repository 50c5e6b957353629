// Who a client is: the one rule both adapters use to turn credentials (CONNECT's user/pass or
// token, MQTT's username/password, a verified client certificate) into a user and that user's
// compiled permissions. nats-server's model: `authorization { user/password | token | users }`,
// `no_auth_user`, and `verify_and_map` certificates. Also the reload of all that (SIGHUP).

import type { BcryptEngine, PeerTls, Wire } from './host.ts'
import { DEFAULT_AUTH_TIMEOUT, restartNeeded, type Options, type UserConfig } from './options.ts'
import { compilePermissions, type CompiledPermissions, type Permissions } from './permissions.ts'
import type { Server } from './server.ts'
import { verifyNonce } from './nkey.ts'

/** What a client presented. MQTT has no token field: its password is offered as both. */
export interface Credentials {
  user?: string
  pass?: string
  token?: string
  /** NATS nkey login: the public key, its signature of the nonce, and the nonce INFO carried. */
  nkey?: string
  sig?: string
  nonce?: string
}

/** An authenticated client: its user name ('' for a token or no auth) and permissions. */
export interface Identity {
  readonly user: string
  /** null: no permission checks at all. */
  readonly perms: CompiledPermissions | null
}

interface UserEntry {
  readonly password: string | undefined
  /** Named by a public nkey: only a signed nonce logs it in. */
  readonly nkey: boolean
  readonly perms: CompiledPermissions | null
}

/** The compiled `authorization` and `no_auth_user` of one options object. */
export interface Auth {
  readonly required: boolean
  readonly users: ReadonlyMap<string, UserEntry>
  readonly token: string | undefined
  readonly tokenPerms: CompiledPermissions | null
  readonly noAuthUser: string | undefined
  /** Some user is an nkey: INFO carries a nonce. */
  readonly nkeys: boolean
}

export const OPEN: Identity = Object.freeze({ user: '', perms: null })

const compiled = new WeakMap<Options, Auth>()

/** The compiled authorization for these options (compiled once per options object). */
export function authOf(opts: Options): Auth {
  let a = compiled.get(opts)
  if (!a) compiled.set(opts, (a = compileAuth(opts)))
  return a
}

function compileAuth(opts: Options): Auth {
  const a = opts.authorization
  const defaults = a?.permissions
  const perms = (p: Permissions | undefined): CompiledPermissions | null => {
    const q = p ?? defaults
    return q ? compilePermissions(q) : null
  }
  const list: UserConfig[] = a?.users ? [...a.users] : []
  if (a?.user !== undefined) list.push({ user: a.user, password: a.password })
  const users = new Map<string, UserEntry>()
  for (const u of list) users.set(u.user, { password: u.password, nkey: u.nkey !== undefined, perms: perms(u.permissions) })
  return {
    required: users.size > 0 || a?.token !== undefined,
    users,
    token: a?.token,
    tokenPerms: perms(undefined),
    noAuthUser: opts.no_auth_user,
    nkeys: list.some((u) => u.nkey !== undefined),
  }
}

/** Is authorization required for clients of these options? */
export function authRequired(opts: Options): boolean {
  return authOf(opts).required
}

/**
 * Decides who the client is: an Identity, null when refused, or a Promise of either when a
 * bcrypt hash has to be checked (`check`: the server's fair queue, see identify; without one,
 * on this thread). `tls` is the wire's finished handshake, and `mapCert` says the listener has
 * `verify_and_map`: then the certificate alone decides, as in nats-server (the first of its
 * identities that names a user).
 */
export function authenticate(
  auth: Auth,
  c: Credentials,
  tls: PeerTls | undefined,
  mapCert: boolean,
  check: BcryptCheck = checkHere,
): Identity | null | Promise<Identity | null> {
  if (mapCert && tls) {
    if (!tls.authorized) return null
    for (const id of tls.identities) {
      const u = auth.users.get(id)
      if (u) return { user: id, perms: u.perms }
    }
    return null
  }
  if (!auth.required) return OPEN
  if (auth.token !== undefined) {
    if (c.token !== undefined && same(c.token, auth.token)) return { user: '', perms: auth.tokenPerms }
  }
  // An nkey login is decided by its signature alone (nats-server checks nkeys first).
  if (c.nkey && auth.nkeys) {
    const u = auth.users.get(c.nkey)
    if (!u?.nkey || !c.sig || !c.nonce || !verifyNonce(c.nkey, c.nonce, c.sig)) return null
    return { user: c.nkey, perms: u.perms }
  }
  const none = !c.user && !c.pass && !c.token
  if (none && auth.noAuthUser !== undefined) {
    const u = auth.users.get(auth.noAuthUser)
    return u ? { user: auth.noAuthUser, perms: u.perms } : null
  }
  if (c.user === undefined || c.pass === undefined) return null
  const u = auth.users.get(c.user)
  // A user without a password can only be reached by certificate or no_auth_user.
  if (!u || u.password === undefined) return null
  const id: Identity = { user: c.user, perms: u.perms }
  if (!isBcrypt(u.password)) return same(c.pass, u.password) ? id : null
  return check(c.pass, u.password).then((ok) => (ok ? id : null))
}

/**
 * Who the user name `user` stands for under `opts` now, for state kept while its client is
 * away (MQTT persistent sessions): that identity with the permissions in force, or null when
 * it no longer exists. '' is everyone on a server without authorization, or the token.
 */
export function userIdentity(opts: Options, user: string): Identity | null {
  const auth = authOf(opts)
  if (user === '') {
    if (!auth.required) return OPEN
    return auth.token !== undefined ? { user: '', perms: auth.tokenPerms } : null
  }
  const u = auth.users.get(user)
  return u ? { user, perms: u.perms } : null
}

export function isBcrypt(s: string): boolean {
  return /^\$2[aby]\$\d\d\$/.test(s)
}

export type Protocol = 'nats' | 'mqtt'

/** Must a client on this wire authenticate: users or a token are configured, or its certificate is mapped? */
export function authNeeded(opts: Options, kind: Protocol, wire: Wire): boolean {
  return authRequired(opts) || (wire.tls !== undefined && mapsCertificates(opts, kind, wire))
}

/**
 * Who a client on `wire` is, from what it presented: the one identify step of every protocol
 * (CONNECT, and again after a reload with `reload` set). A bcrypt check waits in the server's
 * fair queue under the client's address (reload checks are not limited per address); `alive`
 * says whether the connection still wants the answer when its turn comes.
 */
export function identify(srv: Server, kind: Protocol, wire: Wire, creds: Credentials, alive: () => boolean, reload = false): Identity | null | Promise<Identity | null> {
  const o = srv.opts
  if (!authNeeded(o, kind, wire)) return OPEN
  const mapCert = wire.tls !== undefined && mapsCertificates(o, kind, wire)
  return authenticate(authOf(o), creds, wire.tls, mapCert, (pass, hash) =>
    gateOf(srv).check(reload ? '' : sourceOf(wire.remoteAddress), pass, hash, alive).then((r) => {
      if (r !== 'busy') return r
      unchecked.add(creds)
      return false
    }),
  )
}

/**
 * Was this login refused without its password being checked, because too many checks were
 * waiting? Its refusal is then not logged per attempt (the queue logs each episode once).
 */
export function refusedUnchecked(creds: Credentials): boolean {
  return unchecked.has(creds)
}

const unchecked = new WeakSet<Credentials>()

/**
 * Whose turn a check waits for: the IPv4 address, or the /64 prefix of an IPv6 one (one
 * site's share; a single host can hold a whole /64).
 */
export function sourceOf(addr: string): string {
  if (!addr.includes(':')) return addr
  const [head = '', tail] = addr.split('::')
  const groups = head === '' ? [] : head.split(':')
  // `a:b::c` leaves out zero groups: fill them in up to the fourth.
  if (tail !== undefined) {
    const after = tail === '' ? 0 : tail.split(':').length
    while (groups.length < 8 - after) groups.push('0')
    if (tail !== '') groups.push(...tail.split(':'))
  }
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '').toLowerCase()).join(':')}::/64`
}

/**
 * ms a new connection has from accept to a completed CONNECT: its TLS handshake, CONNECT and
 * any password check all count. `authorization.timeout` when it has to authenticate
 * (nats-server's auth timer), else `connect_timeout`.
 */
export function connectDeadline(opts: Options, kind: Protocol, wire: Wire): number {
  return authNeeded(opts, kind, wire) ? authTimeout(opts, kind, wire) : opts.connect_timeout
}

/**
 * `authorization.timeout`, or nats-server's default for it: 2 s, or the listener's TLS
 * handshake timeout plus 1 s when it has TLS (the auth timer runs during the handshake).
 */
export function authTimeout(opts: Options, kind: Protocol, wire?: Pick<Wire, 'websocket'>): number {
  const t = opts.authorization?.timeout
  if (t !== undefined) return t
  const tls = listenerTls(opts, kind, wire)
  return tls ? tls.timeout + 1000 : DEFAULT_AUTH_TIMEOUT
}

// --- bcrypt -----------------------------------------------------------------------------------

// bcrypt is slow by design (a cost-11 check keeps a core busy for 100s of ms), so checks must neither
// block the event loop nor let one source starve the others:
// - they run on the server's BcryptEngine (worker threads, targets/bcrypt.ts), at most
//   `parallel` at once; without one, on this thread, one at a time, in chunks;
// - the rest wait in one queue per remote address, served round-robin, so a source guessing
//   passwords delays another client by at most one check per address ahead of it;
// - an address with PER_ADDRESS_WAITING checks waiting, or a full queue, has further logins
//   refused unchecked, as a wrong password is (logged once per episode, counted in /varz);
// - both outcomes are remembered per (hash, password), so a device reconnecting, or a client
//   repeating a wrong password, costs nothing more; a check already running is joined.
// A changed hash (reload) is a different key.

/** Checks one password against one hash; 'busy': refused unchecked. */
type BcryptCheck = (pass: string, hash: string) => Promise<boolean | 'busy'>

const verified = new Set<string>()
const wrong = new Set<string>()
const MAX_REMEMBERED = 1024
/** Checks that may wait per remote address; more are refused unchecked. */
export const PER_ADDRESS_WAITING = 4
/** Checks that may wait in all. */
export const MAX_WAITING = 256

function remember(ok: boolean, key: string): void {
  const set = ok ? verified : wrong
  if (set.size >= MAX_REMEMBERED) set.clear()
  set.add(key)
}

function known(key: string): boolean | undefined {
  return verified.has(key) ? true : wrong.has(key) ? false : undefined
}

/**
 * bcryptjs on this thread; it yields between chunks, so I/O still runs during a check. Loaded
 * on the first check: a broker without bcrypt users never pays its memory.
 */
const HERE: BcryptEngine = { parallel: 1, compare: async (pass, hash) => (await import('bcryptjs')).default.compare(pass, hash) }

/** A check without a server (tests that call authenticate directly): remembered, on this thread. */
function checkHere(pass: string, hash: string): Promise<boolean> {
  const key = `${hash}\n${pass}`
  const k = known(key)
  if (k !== undefined) return Promise.resolve(k)
  return HERE.compare(pass, hash).then(
    (ok) => {
      remember(ok, key)
      return ok
    },
    () => false,
  )
}

interface Job {
  readonly key: string
  readonly pass: string
  readonly hash: string
  readonly alive: () => boolean
  readonly done: (ok: boolean) => void
}

/** One remote address's waiting checks, and what was refused from it in this episode. */
interface Source {
  readonly jobs: Job[]
  refused: number
}

/** The bcrypt queue of one server. */
class Gate {
  /** Addresses with checks waiting; Map order is the round-robin ring. */
  private readonly sources = new Map<string, Source>()
  private readonly running = new Map<string, Promise<boolean>>()
  private waiting = 0
  /** Refused because the whole queue was full, in this episode. */
  private refusedFull = 0
  checks = 0
  refused = 0

  constructor(
    private readonly srv: Server,
    private readonly engine: BcryptEngine,
  ) {}

  check(from: string, pass: string, hash: string, alive: () => boolean): Promise<boolean | 'busy'> {
    const key = `${hash}\n${pass}`
    const k = known(key)
    if (k !== undefined) return Promise.resolve(k)
    const joined = this.running.get(key)
    if (joined) return joined
    let src = this.sources.get(from)
    if (src !== undefined && from !== '' && src.jobs.length >= PER_ADDRESS_WAITING) {
      this.refused++
      if (src.refused++ === 0) {
        this.srv.log.warn(`${from} - ${PER_ADDRESS_WAITING} password checks already waiting from this address: its further logins are refused unchecked until they are done`)
      }
      return BUSY
    }
    if (this.waiting >= MAX_WAITING) {
      this.refused++
      if (this.refusedFull++ === 0) this.srv.log.warn(`${MAX_WAITING} password checks waiting: further logins are refused unchecked until the queue empties`)
      return BUSY
    }
    if (src === undefined) this.sources.set(from, (src = { jobs: [], refused: 0 }))
    const p = new Promise<boolean>((done) => src.jobs.push({ key, pass, hash, alive, done }))
    this.waiting++
    this.pump()
    return p
  }

  /** Starts waiting checks while the engine has room, one address after another. */
  private pump(): void {
    while (this.running.size < this.engine.parallel && this.waiting > 0) {
      const job = this.next()
      if (!job.alive()) {
        job.done(false) // the connection is gone: nobody wants the answer
        continue
      }
      const k = known(job.key)
      const joined = k === undefined ? this.running.get(job.key) : undefined
      if (k !== undefined) job.done(k)
      else if (joined) void joined.then(job.done)
      else this.start(job)
    }
  }

  private start(job: Job): void {
    this.checks++
    const p = this.engine.compare(job.pass, job.hash).then(
      (ok) => {
        remember(ok, job.key)
        return ok
      },
      () => false,
    )
    this.running.set(job.key, p)
    void p.then((ok) => {
      this.running.delete(job.key)
      job.done(ok)
      this.pump()
    })
  }

  /** The next job, round-robin across addresses (waiting > 0). */
  private next(): Job {
    const [from, src] = this.sources.entries().next().value as [string, Source]
    const job = src.jobs.shift()!
    this.waiting--
    this.sources.delete(from)
    if (src.jobs.length > 0) this.sources.set(from, src) // to the back of the ring
    else if (src.refused > 0) this.srv.log.info(`${from} - ${src.refused} logins refused unchecked while its password checks waited`)
    if (this.waiting === 0 && this.refusedFull > 0) {
      this.srv.log.info(`${this.refusedFull} logins refused unchecked while the password check queue was full`)
      this.refusedFull = 0
    }
    return job
  }

  get queued(): number {
    return this.waiting
  }
}

const BUSY: Promise<'busy'> = Promise.resolve('busy')

const gates = new WeakMap<Server, Gate>()

/** The server's bcrypt queue, made on its first check (its counters then show in /varz). */
function gateOf(srv: Server): Gate {
  let g = gates.get(srv)
  if (g === undefined) {
    const gate = (g = new Gate(srv, srv.bcrypt ?? HERE))
    gates.set(srv, gate)
    srv.status.set('bcrypt', () => ({ checks: gate.checks, waiting: gate.queued, refused: gate.refused }))
  }
  return g
}

/** Equality that takes the same time wherever equal-length strings differ. */
function same(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let d = 0
  for (let i = 0; i < b.length; i++) d |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return d === 0
}

/** Does this listener map certificates to users (`verify_and_map` in `tls`, `mqtt.tls` or `websocket.tls`)? */
export function mapsCertificates(opts: Options, kind: 'nats' | 'mqtt', wire?: Pick<Wire, 'websocket'>): boolean {
  return listenerTls(opts, kind, wire)?.verify_and_map === true
}

/** The tls block of the listener a wire came in on: WebSocket wires share one for both protocols. */
function listenerTls(opts: Options, kind: Protocol, wire?: Pick<Wire, 'websocket'>): Options['tls'] {
  if (wire?.websocket) return opts.websocket?.tls
  return kind === 'nats' ? opts.tls : opts.mqtt?.tls
}

// --- reload -----------------------------------------------------------------------------------

const reloadHooks = new WeakMap<Server, (() => void)[]>()

/**
 * Runs `fn` after each reload that changed users or permissions, once live connections were
 * checked: for what an adapter keeps beyond its connections (MQTT's parked sessions).
 */
export function onAuthReload(srv: Server, fn: () => void): void {
  let list = reloadHooks.get(srv)
  if (!list) reloadHooks.set(srv, (list = []))
  list.push(fn)
}

/**
 * Prepares a reload of a running server with a re-read configuration: checks first (throws an
 * Error naming the key when `next` changes something that cannot change while running, so the
 * old configuration stays), then returns the step that applies it: new users, tokens and
 * permissions for new connections, and every live connection checked again (one whose
 * credentials no longer pass is closed; subscriptions its new permissions refuse are
 * removed). The step returns what changed, for "Reloaded: ..." lines.
 */
export function reloadAuth(srv: Server, next: Options): () => string[] {
  // Anything a reload does not apply is refused by name, as nats-server does, rather than
  // reported as reloaded while the old value stays in force.
  const key = restartNeeded(srv.opts, next)
  if (key !== null) throw new Error(`${key}: config reload not supported for this option (restart to change it)`)
  return () => {
    const cur = srv.opts
    const changed: string[] = []
    if (JSON.stringify(cur.authorization) !== JSON.stringify(next.authorization)) changed.push('authorization')
    if (cur.no_auth_user !== next.no_auth_user) changed.push('no_auth_user')
    if (changed.length === 0) return changed
    srv.opts = { ...cur, authorization: next.authorization, no_auth_user: next.no_auth_user }
    for (const s of [...srv.sessions.values()]) s.reauthorize()
    for (const fn of reloadHooks.get(srv) ?? []) fn()
    return changed
  }
}
