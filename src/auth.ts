// Who a client is: the one rule both adapters use to turn credentials (CONNECT's user/pass or
// token, MQTT's username/password, a verified client certificate) into a user and that user's
// compiled permissions. nats-server's model: `authorization { user/password | token | users }`,
// `no_auth_user`, and `verify_and_map` certificates. Also the reload of all that (SIGHUP).

import bcrypt from 'bcryptjs'
import type { PeerTls } from './host.ts'
import { mqttOptions, type Options, type UserConfig } from './options.ts'
import { compilePermissions, type CompiledPermissions, type Permissions } from './permissions.ts'
import type { Server } from './server.ts'

/** What a client presented. MQTT has no token field: its password is offered as both. */
export interface Credentials {
  user?: string
  pass?: string
  token?: string
}

/** An authenticated client: its user name ('' for a token or no auth) and permissions. */
export interface Identity {
  readonly user: string
  /** null: no permission checks at all. */
  readonly perms: CompiledPermissions | null
}

interface UserEntry {
  readonly password: string | undefined
  readonly perms: CompiledPermissions | null
}

/** The compiled `authorization` and `no_auth_user` of one options object. */
export interface Auth {
  readonly required: boolean
  readonly users: ReadonlyMap<string, UserEntry>
  readonly token: string | undefined
  readonly tokenPerms: CompiledPermissions | null
  readonly noAuthUser: string | undefined
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
  for (const u of list) users.set(u.user, { password: u.password, perms: perms(u.permissions) })
  return {
    required: users.size > 0 || a?.token !== undefined,
    users,
    token: a?.token,
    tokenPerms: perms(undefined),
    noAuthUser: opts.no_auth_user,
  }
}

/** Is authorization required for clients of these options? */
export function authRequired(opts: Options): boolean {
  return authOf(opts).required
}

/**
 * Decides who the client is: an Identity, null when refused, or a Promise of either when a
 * bcrypt hash has to be checked (see checkBcrypt: one at a time, I/O in between, outcomes
 * remembered, so a client trying passwords does not stall the others). `tls` is the wire's finished
 * handshake, and `mapCert` says the listener has `verify_and_map`: then the certificate alone
 * decides, as in nats-server (the first of its identities that names a user).
 */
export function authenticate(auth: Auth, c: Credentials, tls: PeerTls | undefined, mapCert: boolean): Identity | null | Promise<Identity | null> {
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
  return checkBcrypt(c.pass, u.password).then((ok) => (ok ? id : null))
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

// bcrypt is slow by design and bcryptjs runs on this thread (in chunks of up to 100 ms), so:
// checks run one at a time, with I/O between them; a bounded number wait; and both outcomes
// are remembered per (hash, password), so a device reconnecting, or a client repeating a
// wrong password, costs nothing more. A changed hash (reload) is a different key.
const verified = new Set<string>()
const wrong = new Set<string>()
const MAX_REMEMBERED = 1024
const MAX_WAITING = 64
const waiting: (() => void)[] = []
let checking = false

function remember(set: Set<string>, key: string): void {
  if (set.size >= MAX_REMEMBERED) set.clear()
  set.add(key)
}

function checkBcrypt(pass: string, hash: string): Promise<boolean> {
  const key = `${hash}\n${pass}`
  if (verified.has(key)) return Promise.resolve(true)
  if (wrong.has(key)) return Promise.resolve(false)
  // Too many waiting: refuse rather than let a flood of guesses delay everyone's login.
  if (waiting.length >= MAX_WAITING) return Promise.resolve(false)
  return new Promise((resolve) => {
    const run = (): void => {
      bcrypt.compare(pass, hash).then(
        (ok) => {
          remember(ok ? verified : wrong, key)
          resolve(ok)
        },
        () => resolve(false),
      ).finally(() => {
        // bcryptjs starts each check with setImmediate, so I/O runs between two checks.
        const next = waiting.shift()
        if (next) next()
        else checking = false
      })
    }
    if (checking) waiting.push(run)
    else {
      checking = true
      run()
    }
  })
}

/** Equality that takes the same time wherever equal-length strings differ. */
function same(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let d = 0
  for (let i = 0; i < b.length; i++) d |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return d === 0
}

/** Does this listener map certificates to users (`verify_and_map` in `tls` or `mqtt.tls`)? */
export function mapsCertificates(opts: Options, kind: 'nats' | 'mqtt'): boolean {
  const block = kind === 'nats' ? opts.tls : opts.mqtt?.tls
  return block?.verify_and_map === true
}

// --- reload -----------------------------------------------------------------------------------

/** A connection that can check itself again after a reload (the adapters implement it). */
interface Reauthorizable {
  reauthorize?(): void
}

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

/** Options whose change a reload cannot apply (the listeners are open); nats-server refuses these too. */
function fixed(o: Options): Record<string, unknown> {
  const m = mqttOptions(o)
  return { host: o.host, port: o.port, 'mqtt.enabled': m.enabled, 'mqtt.host': m.host, 'mqtt.port': m.port, http_host: o.http_host, http_port: o.http_port }
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
  const was = fixed(srv.opts)
  const now = fixed(next)
  for (const key of Object.keys(was)) {
    // Port 0 (pick one) at start is recorded as the real port: asking for 0 again is no change.
    if (was[key] !== now[key] && !(key.endsWith('port') && now[key] === 0)) {
      throw new Error(`${key}: config reload not supported for this option (restart to change it)`)
    }
  }
  return () => {
    const cur = srv.opts
    const changed: string[] = []
    if (JSON.stringify(cur.authorization) !== JSON.stringify(next.authorization)) changed.push('authorization')
    if (cur.no_auth_user !== next.no_auth_user) changed.push('no_auth_user')
    if (changed.length === 0) return changed
    srv.opts = { ...cur, authorization: next.authorization, no_auth_user: next.no_auth_user }
    for (const s of [...srv.sessions.values()]) (s as Reauthorizable).reauthorize?.()
    for (const fn of reloadHooks.get(srv) ?? []) fn()
    return changed
  }
}
