// Every option key, its check and its default; the blocks (authorization, users and
// permissions, tls, mqtt, leafnodes); one layer of raw values merged over the options below
// it (applyLayer) and the rules that span keys (crossCheck).

import {
  LOG_LEVELS,
  MQTT_DEFAULTS,
  MAX_PAYLOAD_LIMIT,
  type Authorization,
  type UserConfig,
  type LogLevel,
  type MqttOptions,
  type Options,
  type TlsOptions,
  type LeafnodeOptions,
  type RemoteOptions,
  LEAF_DEFAULTS,
  REMOTE_DEFAULTS,
  TLS_DEFAULTS,
  WEBSOCKET_DEFAULTS,
  type WebsocketOptions,
} from '../options.ts'
import { CERT_MAPS } from '../cert-identity.ts'
import { lameDuckProblem } from '../lameduck.ts'
import { isUserNkey } from '../nkey.ts'
import {
  DEFAULT_RESPONSE_EXPIRES,
  DEFAULT_RESPONSE_MAX,
  subRule,
  type Permissions,
  type ResponsePermission,
  type SubjectPermission,
} from '../permissions.ts'
import { isValidQueueName, isValidSubject } from '../subject.ts'
import { ConfigError, blame, describe, type Source } from './errors.ts'
import { unknownKey } from './suggest.ts'
import { storeOption } from '../store/config.ts'
import { boolean, checked, duration, expected, host, hostPort, integer, isObject, logLevel, nonEmpty, optionalHost, optionalPort, orZero, parseDuration, parseSize, port, secret, size, string, type Check } from './values.ts'

type Scalars = Omit<Options, 'authorization' | 'mqtt' | 'no_auth_user' | 'leafnodes' | 'websocket' | 'store'>

const OPTION_CHECKS: { [K in keyof Scalars]: Check<Scalars[K]> } = {
  host,
  port,
  server_name: string,
  max_payload: size(MAX_PAYLOAD_LIMIT, '64MB (67108864 bytes)'),
  max_pending: size(),
  max_memory: orZero(size()),
  max_control_line: size(),
  max_connections: integer(1, Number.MAX_SAFE_INTEGER, 'a positive integer'),
  ping_interval: duration,
  ping_max: integer(1, Number.MAX_SAFE_INTEGER, 'a positive integer'),
  write_deadline: duration,
  no_fast_producer_stall: boolean,
  connect_timeout: duration,
  max_subscriptions: integer(0, Number.MAX_SAFE_INTEGER, 'an integer >= 0 (0 means unlimited)'),
  log_level: logLevel,
  debug: boolean,
  trace: boolean,
  logtime: boolean,
  http_port: optionalPort('no monitoring'),
  http_host: optionalHost,
  https_port: optionalPort('no HTTPS monitoring'),
  allow_non_tls: boolean,
  pid_file: string,
  ports_file_dir: string,
  lame_duck_duration: duration,
  lame_duck_grace_period: duration,
  log_file: string,
}

// Other names nats-server accepts for the same top-level option (its opts.go).
const SPELLINGS: Record<string, string> = {
  net: 'host',
  monitor_port: 'http_port',
  max_conn: 'max_connections',
  max_subs: 'max_subscriptions',
  pidfile: 'pid_file',
  leaf: 'leafnodes',
  ws: 'websocket',
}

// nats-server's "host:port" keys, each setting two options (the host only when given).
const LISTEN_KEYS: Record<string, { host: keyof Options; port: keyof Options; check: Check<number> }> = {
  listen: { host: 'host', port: 'port', check: port },
  http: { host: 'http_host', port: 'http_port', check: OPTION_CHECKS.http_port },
  https: { host: 'http_host', port: 'https_port', check: OPTION_CHECKS.https_port },
}

// users and permissions have nested keys of their own: checked in authorization() below.
const AUTH_CHECKS: { [K in keyof Omit<Authorization, 'users' | 'permissions'>]-?: Check<NonNullable<Authorization[K]>> } = {
  user: nonEmpty,
  password: secret,
  token: secret,
  timeout: duration,
}

// nats-server's other names (opts.go parseAuthorization).
const AUTH_SPELLINGS: Record<string, string> = { username: 'user', pass: 'password', default_permission: 'permissions', default_permissions: 'permissions' }

const AUTH_KEYS = [...Object.keys(AUTH_CHECKS), 'users', 'permissions']

const MQTT_CHECKS: { [K in keyof MqttOptions]: Check<MqttOptions[K]> } = {
  enabled: boolean,
  host: optionalHost,
  port,
  max_ack_pending: integer(1, 65535, 'an integer 1-65535'),
  retained_max_msgs: integer(0, Number.MAX_SAFE_INTEGER, 'an integer >= 0 (0 keeps no retained messages)'),
  retained_max_bytes: orZero(size()),
  session_expiry: duration,
  max_offline_msgs: integer(0, Number.MAX_SAFE_INTEGER, 'an integer >= 0 (0 queues nothing offline)'),
  max_offline_bytes: orZero(size()),
  max_sessions: integer(0, Number.MAX_SAFE_INTEGER, 'an integer >= 0 (0: no limit)'),
  max_sessions_bytes: orZero(size()),
  topic_alias_maximum: integer(0, 65535, 'an integer 0-65535'),
  max_keepalive: orZero(duration),
  max_topic_length: integer(1, 65535, 'an integer 1-65535'),
  max_topic_levels: integer(0, 65535, 'an integer >= 0 (0: no limit)'),
  max_subscriptions: integer(0, Number.MAX_SAFE_INTEGER, 'an integer >= 0 (0: the top-level max_subscriptions)'),
  tls_port: port,
  plain: boolean,
}

const MQTT_SPELLINGS: Record<string, string> = { net: 'host' }

export const OPTION_KEYS = [
  ...Object.keys(OPTION_CHECKS), 'authorization', 'no_auth_user', 'mqtt', 'tls', 'leafnodes', 'websocket', 'store',
  ...Object.keys(SPELLINGS), ...Object.keys(LISTEN_KEYS),
]

/**
 * Sets `out[key]` to the checked value of `v`, or throws unknownKey (suggesting one of `known`)
 * when `checks` has no `key`. `path` is the key's full name, e.g. "mqtt.port".
 */
function setChecked(
  out: object,
  checks: Record<string, Check<unknown>>,
  key: string,
  v: unknown,
  src: Source,
  path: string,
  known?: readonly string[],
): void {
  if (!Object.hasOwn(checks, key)) throw unknownKey(src, path, known ?? Object.keys(checks), path.slice(0, path.length - key.length))
  ;(out as Record<string, unknown>)[key] = checked(checks[key]!, v, src, path)
}

/**
 * One layer over `base`: checks each key in `raw` and returns the merged options, noting in
 * `origins` that this layer (`src`, at `rank`) set each of its keys. Cross-key rules that
 * span layers are left to `crossCheck`.
 */
export function applyLayer(raw: unknown, base: Options, src: Source, rank: number, origins: Origins): Options {
  if (!isObject(raw)) {
    const where = src.file !== undefined ? `config error in ${src.file}: ` : 'config error: '
    throw new ConfigError(`${where}expected an object of options at the top level, got ${describe(raw)}`, { file: src.file })
  }
  const out: Options = { ...base }
  if (base.authorization) out.authorization = { ...base.authorization }
  if (base.mqtt) out.mqtt = { ...base.mqtt }
  const set = new Set<string>()
  const spelled = new Map<string, string>()

  for (const [written, v] of Object.entries(raw)) {
    const key = SPELLINGS[written] ?? written
    if (Object.hasOwn(LISTEN_KEYS, key)) {
      const l = LISTEN_KEYS[key]!
      const hp = checked(hostPort(l.check), v, src, written)
      if (hp.host !== '') setSpelled(out, l.host, hp.host, set, written)
      setSpelled(out, l.port, hp.port, set, written)
      continue
    }
    if (key === 'authorization') {
      out.authorization = authorization(v, src)
    } else if (key === 'tls') {
      out.tls = tlsBlock(v, src, 'tls')
    } else if (key === 'leafnodes') {
      out.leafnodes = leafnodes(v, src, written)
    } else if (key === 'websocket') {
      out.websocket = websocketBlock(v, src, written)
    } else if (key === 'leafnodes.url') {
      // --leaf: one remote, in place of the file's remotes (its reconnect settings stay).
      const remote: RemoteOptions = { ...REMOTE_DEFAULTS, urls: [leafUrl(v, src, key)] }
      out.leafnodes = { ...LEAF_DEFAULTS, ...out.leafnodes, remotes: [remote] }
    } else if (key === 'store' || key === 'store.dir') {
      out.store = storeOption(key, v, out.store, { size: parseSize, duration: parseDuration, fail: (k, d) => blame(src, k, d) })
    } else if (key === 'no_auth_user') {
      out.no_auth_user = checked(nonEmpty, v, src, key)
    } else if (key === 'mqtt') {
      if (!isObject(v)) throw blame(src, 'mqtt', `expected an object, got ${describe(v)}`)
      const m = (out.mqtt ??= { ...MQTT_DEFAULTS })
      for (const [k, x] of Object.entries(v)) set.add(`mqtt.${mqttKey(m, k, x, src)}`)
    } else if (key.startsWith('mqtt.')) {
      mqttKey((out.mqtt ??= { ...MQTT_DEFAULTS }), key.slice(5), v, src) // from a flag such as --mqtt-port
    } else {
      setChecked(out, OPTION_CHECKS, key, v, src, written, OPTION_KEYS)
    }
    set.add(key)
    if (written !== key) spelled.set(key, written)
  }

  // nats-server's `debug: true` / `trace: true` turn the level up; within one layer they win
  // over a quieter log_level, while a later layer's log_level (e.g. the -l flag) replaces both.
  let level = out.log_level
  if (set.has('debug') && out.debug) level = louder(level, 'debug')
  if (set.has('trace') && out.trace) level = louder(level, 'trace')
  out.log_level = level
  out.debug = LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf('debug')
  out.trace = level === 'trace'
  for (const key of set) origins.set(key, { src, rank, path: spelled.get(key) ?? key })
  return out

  // A value set through another spelling: noted under the option's own name.
  function setSpelled(o: Options, key: keyof Options, v: unknown, s: Set<string>, as: string): void {
    ;(o as unknown as Record<string, unknown>)[key] = v
    s.add(key)
    spelled.set(key, as)
  }
}

function louder(a: LogLevel, b: LogLevel): LogLevel {
  return LOG_LEVELS.indexOf(a) >= LOG_LEVELS.indexOf(b) ? a : b
}

// Unlike authorization, the mqtt block merges key by key: the file may set the host and a
// flag the port.
// Returns the key set (its own name for another spelling); `listen` sets host and port.
function mqttKey(m: MqttOptions, written: string, v: unknown, src: Source): string {
  const path = `mqtt.${written}`
  const key = MQTT_SPELLINGS[written] ?? written
  if (key === 'tls') {
    m.tls = tlsBlock(v, src, path)
    return key
  }
  if (key === 'listen') {
    const hp = checked(hostPort(port), v, src, path)
    if (hp.host !== '') m.host = hp.host
    m.port = hp.port
    return 'port'
  }
  setChecked(m, MQTT_CHECKS, key, v, src, path, [...Object.keys(MQTT_CHECKS), 'listen'])
  return key
}

// --- websocket (nats-server's block; a layer's block replaces the one below it) ----------------

const WS_CHECKS: { [K in keyof Omit<WebsocketOptions, 'tls' | 'allowed_origins'>]-?: Check<WebsocketOptions[K]> } = {
  host: optionalHost,
  port, // -1 (nats-server's random port) or 0: one chosen by the OS
  no_tls: boolean,
  same_origin: boolean,
  compression: boolean,
  handshake_timeout: duration,
}
const WS_KEYS = [...Object.keys(WS_CHECKS), 'tls', 'allowed_origins', 'listen']

function websocketBlock(v: unknown, src: Source, at: string): WebsocketOptions {
  if (!isObject(v)) throw blame(src, at, `expected an object like { "port": 8080, "no_tls": true }, got ${describe(v)}`)
  const out = { ...WEBSOCKET_DEFAULTS, port: -1 } as WebsocketOptions
  for (const [key, x] of Object.entries(v)) {
    const path = `${at}.${key}`
    if (key === 'tls') out.tls = tlsBlock(x, src, path)
    else if (key === 'allowed_origins') out.allowed_origins = origins(x, src, path)
    else if (key === 'listen') {
      const hp = checked(hostPort(port), x, src, path)
      if (hp.host !== '') out.host = hp.host
      out.port = hp.port
    } else setChecked(out, WS_CHECKS, key, x, src, path, WS_KEYS)
  }
  if (out.port < 0) throw blame(src, `${at}.port`, 'required (0 or -1: one chosen by the OS)')
  // nats-server: "websocket requires TLS configuration" unless no_tls says otherwise.
  if (!out.tls && !out.no_tls) throw blame(src, `${at}.tls`, 'required: set a tls block, or no_tls: true for plain ws://')
  if (out.tls?.handshake_first) throw blame(src, `${at}.tls.handshake_first`, 'does not apply: a WebSocket listener always starts with TLS')
  return out
}

/** allowed_origins: URLs with an http(s) scheme and a host ("https://hmi.example:8443"). */
function origins(v: unknown, src: Source, at: string): string[] {
  if (!Array.isArray(v)) throw blame(src, at, `expected an array of origins like ["https://hmi.example"], got ${describe(v)}`)
  return v.map((x, i) => {
    let u: URL | null = null
    try {
      if (typeof x === 'string') u = new URL(x)
    } catch {
      // reported below
    }
    if (!u || (u.protocol !== 'http:' && u.protocol !== 'https:') || u.host === '') {
      throw blame(src, `${at}[${i}]`, `expected an origin like "https://hmi.example:8443", got ${describe(x)}`)
    }
    return x as string
  })
}

// A layer's authorization replaces the one below it as a whole: mixing a user from the config
// file with a token from elsewhere would produce a combination nobody wrote.
function authorization(v: unknown, src: Source): Authorization {
  if (!isObject(v)) throw blame(src, 'authorization', `expected an object, got ${describe(v)}`)
  const auth: Authorization = {} // no timeout: its default depends on the listener (src/auth.ts authTimeout)
  for (const [written, value] of Object.entries(v)) {
    const path = `authorization.${written}`
    const key = AUTH_SPELLINGS[written] ?? written
    if (key === 'users') {
      auth.users = users(value, src)
      continue
    }
    if (key === 'permissions') {
      auth.permissions = permissions(value, src, path)
      continue
    }
    setChecked(auth, AUTH_CHECKS, key, value, src, path, AUTH_KEYS)
  }
  if (auth.token !== undefined && (auth.user !== undefined || auth.password !== undefined)) {
    throw blame(src, 'authorization', 'cannot have both a token and a user/password')
  }
  // nats-server refuses these mixes too.
  if (auth.users !== undefined && auth.token !== undefined) throw blame(src, 'authorization', 'cannot have both a token and a users array')
  if (auth.users !== undefined && auth.user !== undefined) throw blame(src, 'authorization', 'cannot have both a single user/password and a users array')
  if (auth.user !== undefined && auth.password === undefined) {
    throw blame(src, 'authorization.password', 'required when authorization.user is set')
  }
  if (auth.password !== undefined && auth.user === undefined) {
    throw blame(src, 'authorization.user', 'required when authorization.password is set')
  }
  return auth
}

// --- tls blocks (nats-server's names) ----------------------------------------------------------

/** nats-server's default TLS handshake timeout. */
export const DEFAULT_TLS_TIMEOUT = TLS_DEFAULTS.timeout

const TLS_CHECKS: { [K in keyof TlsOptions]-?: Check<NonNullable<TlsOptions[K]>> } = {
  cert_file: nonEmpty,
  key_file: nonEmpty,
  ca_file: nonEmpty,
  crl_file: nonEmpty,
  verify: boolean,
  verify_and_map: boolean,
  timeout: duration,
  handshake_first: boolean,
  insecure: boolean,
  map: (v) => CERT_MAPS.find((m) => m === v) ?? expected(`one of ${CERT_MAPS.join(', ')}`, v),
}

/**
 * A `tls { ... }` block at `at` ("tls", "mqtt.tls", "leafnodes.remotes[0].tls"): checks each
 * key and the combinations. Listeners (`server`, the default) need cert_file and key_file;
 * a client side (an uplink remote) may go without, but not with only one of them. Whether
 * the files exist and hold what they should is checked when the listener or dial starts.
 */
export function tlsBlock(v: unknown, src: Source, at: string, side: 'server' | 'client' = 'server'): TlsOptions {
  if (!isObject(v)) throw blame(src, at, `expected an object like { "cert_file": "...", "key_file": "..." }, got ${describe(v)}`)
  const out: TlsOptions = { ...TLS_DEFAULTS }
  for (const [key, x] of Object.entries(v)) setChecked(out, TLS_CHECKS, key, x, src, `${at}.${key}`)
  if (side === 'server') {
    for (const k of ['cert_file', 'key_file'] as const) {
      if (out[k] === undefined) throw blame(src, `${at}.${k}`, 'required: a listener with TLS needs its certificate and key')
    }
    if (out.insecure) throw blame(src, `${at}.insecure`, 'only applies to outgoing connections (a leafnode remote)')
  } else {
    if ((out.cert_file === undefined) !== (out.key_file === undefined)) {
      const missing = out.cert_file === undefined ? 'cert_file' : 'key_file'
      throw blame(src, `${at}.${missing}`, 'required: a client certificate needs both cert_file and key_file')
    }
    for (const k of ['verify', 'verify_and_map', 'map'] as const) {
      if (Object.hasOwn(v, k)) throw blame(src, `${at}.${k}`, 'only applies to a listener (server side)')
    }
  }
  if (out.map !== undefined && !out.verify_and_map) throw blame(src, `${at}.map`, 'needs verify_and_map: true')
  // verify_and_map verifies too (nats-server: "require and verify client certificates and map").
  if (out.verify_and_map) out.verify = true
  return out
}

// --- users and permissions (nats-server's shapes; errors name the full path) ------------------

const USER_KEYS = ['user', 'password', 'nkey', 'permissions']
const userNkey: Check<string> = (v) => (typeof v === 'string' && isUserNkey(v) ? v : expected('a user public nkey (56 characters starting with U)', v))
// nats-server's other names for a user's keys (opts.go parseUsers).
const USER_ALIASES: Record<string, string> = { username: 'user', pass: 'password', permission: 'permissions', authorization: 'permissions' }

function users(v: unknown, src: Source): UserConfig[] {
  if (!Array.isArray(v)) throw blame(src, 'authorization.users', `expected an array of users, got ${describe(v)}`)
  const seen = new Set<string>()
  return v.map((u, i) => {
    const at = `authorization.users[${i}]`
    if (!isObject(u)) throw blame(src, at, `expected an object like { "user": "...", "password": "..." }, got ${describe(u)}`)
    const out: UserConfig = { user: '' }
    for (const [key, x] of Object.entries(u)) {
      const k = USER_ALIASES[key] ?? key
      if (k === 'user') out.user = checked(nonEmpty, x, src, `${at}.${key}`)
      else if (k === 'password') out.password = checked(secret, x, src, `${at}.${key}`)
      else if (k === 'permissions') out.permissions = permissions(x, src, `${at}.${key}`)
      else if (k === 'nkey') out.nkey = checked(userNkey, x, src, `${at}.${key}`)
      else throw unknownKey(src, `${at}.${key}`, USER_KEYS, `${at}.`)
    }
    if (out.nkey !== undefined) {
      // An nkey user is named by its public key; it has no name or password of its own.
      if (out.user !== '' || out.password !== undefined) throw blame(src, `${at}.nkey`, 'an nkey user has no user or password')
      out.user = out.nkey
    }
    if (out.user === '') throw blame(src, `${at}.user`, 'required')
    if (seen.has(out.user)) throw blame(src, `${at}.user`, `duplicate user ${describe(out.user)}`)
    seen.add(out.user)
    return out
  })
}

function permissions(v: unknown, src: Source, at: string): Permissions {
  if (!isObject(v)) throw blame(src, at, `expected an object with "publish", "subscribe" or "allow_responses", got ${describe(v)}`)
  const out: Permissions = {}
  for (const [key, x] of Object.entries(v)) {
    const path = `${at}.${key}`
    // nats-server's spellings (opts.go parseUserPermissions): import/export are its route names.
    if (key === 'publish' || key === 'pub' || key === 'import') out.publish = subjectPermission(x, src, path, false)
    else if (key === 'subscribe' || key === 'sub' || key === 'export') out.subscribe = subjectPermission(x, src, path, true)
    else if (key === 'allow_responses' || key === 'publish_allow_responses') {
      const r = responsePermission(x, src, path)
      if (r) out.allow_responses = r
    } else throw unknownKey(src, path, ['publish', 'subscribe', 'allow_responses'], `${at}.`)
  }
  return out
}

/** A list (meaning allow), one subject, or { allow, deny }. */
function subjectPermission(v: unknown, src: Source, at: string, queues: boolean): SubjectPermission {
  if (typeof v === 'string' || Array.isArray(v)) return { allow: subjectList(v, src, at, queues) }
  if (!isObject(v)) throw blame(src, at, `expected a list of subjects or { "allow": [...], "deny": [...] }, got ${describe(v)}`)
  const out: SubjectPermission = {}
  for (const [key, x] of Object.entries(v)) {
    if (key === 'allow') out.allow = subjectList(x, src, `${at}.allow`, queues)
    else if (key === 'deny') out.deny = subjectList(x, src, `${at}.deny`, queues)
    else throw unknownKey(src, `${at}.${key}`, ['allow', 'deny'], `${at}.`)
  }
  return out
}

function subjectList(v: unknown, src: Source, at: string, queues: boolean): string[] {
  const list = typeof v === 'string' ? [v] : v
  if (!Array.isArray(list)) throw blame(src, at, `expected a list of subjects, got ${describe(v)}`)
  return list.map((x, i) => {
    const path = typeof v === 'string' ? at : `${at}[${i}]`
    if (typeof x !== 'string') throw blame(src, path, `expected a subject, got ${describe(x)}`)
    const t = x.trim()
    // Subscribe rules may name a queue group after the subject: "foo.> workers".
    const r = queues ? subRule(t) : { subject: t, queue: null }
    if (!isValidSubject(r.subject) || (!queues && /\s/.test(t))) throw blame(src, path, `invalid subject ${describe(x)}`)
    if (r.queue !== null && !isValidQueueName(r.queue)) throw blame(src, path, `invalid queue group ${describe(r.queue)}`)
    return t
  })
}

/** true, false, or { max, expires } (nats-server also says max_msgs, max_messages, max_responses, expiration and ttl). */
function responsePermission(v: unknown, src: Source, at: string): ResponsePermission | undefined {
  if (v === false || v === 'false') return undefined
  if (v === true || v === 'true') return { max: DEFAULT_RESPONSE_MAX, expires: DEFAULT_RESPONSE_EXPIRES }
  if (!isObject(v)) throw blame(src, at, `expected true, false or { "max": N, "expires": "1m" }, got ${describe(v)}`)
  const out: ResponsePermission = { max: DEFAULT_RESPONSE_MAX, expires: DEFAULT_RESPONSE_EXPIRES }
  for (const [key, x] of Object.entries(v)) {
    if (key === 'max' || key === 'max_msgs' || key === 'max_messages' || key === 'max_responses') {
      // nats-server: 0 means the default, a negative number no limit.
      const n = checked(integer(-1, Number.MAX_SAFE_INTEGER, 'an integer (0: the default 1, -1: no limit)'), x, src, `${at}.${key}`)
      out.max = n === 0 ? DEFAULT_RESPONSE_MAX : n < 0 ? Number.MAX_SAFE_INTEGER : n
    } else if (key === 'expires' || key === 'expiration' || key === 'ttl') {
      out.expires = checked(duration, x, src, `${at}.${key}`)
    } else throw unknownKey(src, `${at}.${key}`, ['max', 'expires'], `${at}.`)
  }
  return out
}

/** Which source last set each key, how late it came (higher wins), and the name it was written as. */
export type Origins = Map<string, { src: Source; rank: number; path: string }>

/**
 * The rules that span keys and layers, checked once every layer is in; returns the options
 * with what they imply filled in (the MQTT listeners), so nothing downstream derives it.
 */
export function crossCheck(o: Options, origins: Origins): Options {
  // The error names the key as it was written ("https" for https_port), where it was written.
  const fault = (key: string, detail: string, nameKey = true): ConfigError => {
    const at = origins.get(key)
    return blame(at?.src ?? {}, at?.path ?? key, detail, nameKey)
  }
  const ldm = lameDuckProblem(o)
  if (ldm !== null) {
    // Name whichever of the two was set last, as for max_payload below.
    const key = (origins.get('lame_duck_duration')?.rank ?? 0) > (origins.get('lame_duck_grace_period')?.rank ?? 0) ? 'lame_duck_duration' : 'lame_duck_grace_period'
    throw fault(key, ldm, false)
  }
  if (o.https_port !== 0 && o.tls === undefined) {
    throw fault('https_port', 'needs the top-level tls block (its certificate serves HTTPS)')
  }
  if (o.allow_non_tls && o.tls?.handshake_first) {
    throw fault('allow_non_tls', 'cannot be combined with tls.handshake_first (every client starts with TLS there)')
  }
  if (o.no_auth_user !== undefined && !o.authorization?.users?.some((u) => u.user === o.no_auth_user)) {
    throw fault('no_auth_user', `${describe(o.no_auth_user)} is not one of authorization.users`)
  }
  if (o.max_payload > o.max_pending) {
    // Name whichever of the two was set last: that is the value the user just changed.
    const rank = (key: string): number => origins.get(key)?.rank ?? 0
    const key = rank('max_pending') > rank('max_payload') ? 'max_pending' : 'max_payload'
    throw fault(key, `max_payload (${o.max_payload}) cannot be higher than max_pending (${o.max_pending})`, false)
  }
  return o.mqtt ? { ...o, mqtt: mqttListeners(o.mqtt, (k) => origins.has(`mqtt.${k}`), fault) } : o
}

/**
 * Which port speaks what. As in nats-server, `tls` makes `port` speak MQTT over TLS.
 * sprig's `tls_port` puts TLS on a port of its own instead; `plain: true` then keeps `port`
 * open without TLS too (serving both). `given` says which keys the configuration set. Tests
 * that build Options by hand call this too.
 */
export function mqttListeners(
  m: MqttOptions,
  given: (key: string) => boolean,
  fault: (key: string, detail: string) => Error = (key, detail) => new ConfigError(`config error: ${key}: ${detail}`, { key }),
): MqttOptions {
  if (m.tls === undefined) {
    if (given('tls_port')) throw fault('mqtt.tls_port', 'needs mqtt.tls (the certificate for that port)')
    return given('plain') ? m : { ...m, plain: true }
  }
  if (!given('tls_port')) {
    if (given('plain') && m.plain) {
      throw fault('mqtt.plain', 'with mqtt.tls, mqtt.port speaks TLS; set mqtt.tls_port to serve TLS on a port of its own and keep mqtt.port plain')
    }
    return { ...m, tls_port: m.port, plain: false }
  }
  return given('plain') ? m : { ...m, plain: false }
}

// --- leafnodes (the uplink; soliciting side only) ------------------------------------------

const LEAF_KEYS = ['remotes', 'reconnect', 'reconnect_max', 'status_interval']
const REMOTE_KEYS = [
  'urls', 'url', 'no_randomize', 'credentials', 'nkey', 'tls', 'deny_imports', 'deny_exports',
  'allow_exports', 'allow_imports', 'map', 'buffer_subjects', 'buffer_max_msgs', 'buffer_max_bytes',
  'buffer_policy', 'buffer_hold', 'replay_rate', 'replay_order', 'permissions',
]
// nats-server remote options sprig does not have: say so rather than "unknown".
const REMOTE_NOT_SUPPORTED = ['account', 'hub', 'ws_compression', 'ws_no_masking', 'compression', 'first_info_timeout', 'local']

// A layer's leafnodes block replaces the one below it as a whole (like authorization).
function leafnodes(v: unknown, src: Source, at = 'leafnodes'): LeafnodeOptions {
  if (!isObject(v)) throw blame(src, at, `expected an object like { "remotes": [ { "urls": ["nats://hub:7422"] } ] }, got ${describe(v)}`)
  const out: LeafnodeOptions = { remotes: [], ...LEAF_DEFAULTS }
  for (const [key, x] of Object.entries(v)) {
    const path = `${at}.${key}`
    if (key === 'remotes') {
      if (!Array.isArray(x)) throw blame(src, path, `expected an array of remotes, got ${describe(x)}`)
      out.remotes = x.map((r, i) => remote(r, src, `${at}.remotes[${i}]`))
    } else if (key === 'reconnect' || key === 'reconnect_max') out[key] = checked(duration, x, src, path)
    else if (key === 'status_interval') out.status_interval = checked(orZero(duration), x, src, path) // the heartbeat (src/leaf/status.ts); 0: none
    else if (key === 'listen' || key === 'port' || key === 'host' || key === 'authorization') {
      throw blame(src, path, 'sprig does not accept leaf connections (it only dials hubs: use leafnodes.remotes)', false)
    } else throw unknownKey(src, path, LEAF_KEYS, `${at}.`)
  }
  if (out.reconnect_max < out.reconnect) throw blame(src, `${at}.reconnect_max`, `cannot be lower than ${at}.reconnect (${out.reconnect} ms)`)
  return out
}

function remote(v: unknown, src: Source, at: string): RemoteOptions {
  if (!isObject(v)) throw blame(src, at, `expected an object like { "urls": ["nats://hub:7422"] }, got ${describe(v)}`)
  const out: RemoteOptions = { ...REMOTE_DEFAULTS, urls: [] }
  const subjects = (x: unknown, path: string): string[] => subjectList(x, src, path, false)
  const count = integer(0, Number.MAX_SAFE_INTEGER, 'an integer >= 0')
  for (const [key, x] of Object.entries(v)) {
    const path = `${at}.${key}`
    switch (key) {
      case 'url':
      case 'urls': {
        const list = typeof x === 'string' ? [x] : x
        if (!Array.isArray(list)) throw blame(src, path, `expected a URL or a list of URLs, got ${describe(x)}`)
        out.urls.push(...list.map((u, i) => leafUrl(u, src, typeof x === 'string' ? path : `${path}[${i}]`)))
        break
      }
      case 'no_randomize':
        out.no_randomize = checked(boolean, x, src, path)
        break
      case 'credentials':
      case 'nkey':
        out[key] = checked(nonEmpty, x, src, path)
        break
      case 'tls':
        out.tls = tlsBlock(x, src, path, 'client')
        break
      case 'deny_imports':
      case 'deny_exports':
      case 'allow_imports':
      case 'allow_exports':
      case 'buffer_subjects':
        out[key] = subjects(x, path)
        break
      case 'map':
        out.map = subjectMaps(x, src, path)
        break
      case 'buffer_max_msgs':
        out.buffer_max_msgs = checked(count, x, src, path)
        break
      case 'buffer_max_bytes':
        out.buffer_max_bytes = checked(orZero(size()), x, src, path)
        break
      case 'buffer_policy': {
        const p = typeof x === 'string' ? x.replace('-', '_') : x
        if (p !== 'drop_oldest' && p !== 'drop_newest') throw blame(src, path, `expected "drop_oldest" or "drop_newest", got ${describe(x)}`)
        out.buffer_policy = p
        break
      }
      case 'buffer_hold':
        out.buffer_hold = checked(orZero(duration), x, src, path)
        break
      case 'replay_rate': {
        // 500 or "500/s": messages per second; "1MB/s": bytes per second; 0: unlimited.
        const m = /^\s*(.+?)\s*\/\s*s\s*$/.exec(typeof x === 'string' ? x : '')
        const text = m ? m[1]! : x
        const msgs = typeof text === 'number' || /^\d+$/.test(String(text)) ? Number(text) : undefined
        const bytes = msgs === undefined ? parseSize(text) : undefined
        if ((msgs === undefined || !Number.isSafeInteger(msgs)) && bytes === undefined) throw blame(src, path, `expected messages per second (500 or "500/s"), bytes per second ("1MB/s"), or 0, got ${describe(x)}`)
        out.replay_rate = msgs ?? 0
        out.replay_rate_bytes = bytes ?? 0
        break
      }
      case 'replay_order':
        if (x !== 'interleave' && x !== 'strict') throw blame(src, path, `expected "interleave" or "strict", got ${describe(x)}`)
        out.replay_order = x
        break
      case 'permissions':
        out.permissions = permissions(x, src, path)
        break
      default:
        if (REMOTE_NOT_SUPPORTED.includes(key)) throw blame(src, path, `unknown option ${JSON.stringify(path)} (a nats-server option that sprig does not support yet)`, false)
        throw unknownKey(src, path, REMOTE_KEYS, `${at}.`)
    }
  }
  if (out.urls.length === 0) throw blame(src, `${at}.urls`, 'required: at least one hub URL, like "nats://hub.example.com:7422"')
  return out
}

function leafUrl(v: unknown, src: Source, at: string): string {
  if (typeof v !== 'string') throw blame(src, at, `expected a URL like "nats://hub:7422", got ${describe(v)}`)
  let u: URL
  try {
    u = new URL(v.includes('://') ? v : `nats://${v}`)
  } catch {
    throw blame(src, at, `not a URL: ${describe(v.replace(/\/\/[^@/]*@/, '//xxxxx@'))}`)
  }
  if (!['nats:', 'tls:', 'nats-leaf:'].includes(u.protocol)) throw blame(src, at, `unsupported scheme ${describe(u.protocol.slice(0, -1))} (use nats:// or tls://)`)
  if (u.hostname === '') throw blame(src, at, 'the URL has no host')
  return u.href
}

function subjectMaps(v: unknown, src: Source, at: string): RemoteOptions['map'] {
  if (!Array.isArray(v)) throw blame(src, at, `expected a list like [ { "local": "telemetry.>", "hub": "site.gw42.telemetry.>" } ], got ${describe(v)}`)
  return v.map((m, i) => {
    const path = `${at}[${i}]`
    if (!isObject(m)) throw blame(src, path, `expected { "local": "a.>", "hub": "site.x.a.>" }, got ${describe(m)}`)
    const side = (k: 'local' | 'hub'): string => {
      const s = m[k]
      // Both sides are literal tokens then ".>": a prefix swap, so it maps both ways.
      if (typeof s !== 'string' || s === '>' || !s.endsWith('.>') || !isValidSubject(s) || /[*]|>./.test(s.slice(0, -2))) {
        throw blame(src, `${path}.${k}`, `expected literal tokens followed by ".>" (like "telemetry.>"), got ${describe(s)}`)
      }
      return s
    }
    for (const k of Object.keys(m)) if (k !== 'local' && k !== 'hub') throw unknownKey(src, `${path}.${k}`, ['local', 'hub'], `${path}.`)
    return { local: side('local'), hub: side('hub') }
  })
}
