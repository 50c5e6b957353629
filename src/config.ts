// Reading and checking options: the config file's syntax (JSON with comments), the value
// forms (sizes, durations), every key's type and range, and the layering
// defaults <- config file <- command-line flags. cli.ts only maps flags to option keys;
// every rule about values lives here.

import { storeOption } from './store/config.ts'
import { parseCli, usage } from './cli.ts'
import {
  LOG_LEVELS,
  MQTT_DEFAULTS,
  MAX_PAYLOAD_LIMIT,
  defaultMaxMemory,
  defaults,
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
} from './options.ts'
import { CERT_MAPS } from './cert-identity.ts'
import {
  DEFAULT_RESPONSE_EXPIRES,
  DEFAULT_RESPONSE_MAX,
  subRule,
  type Permissions,
  type ResponsePermission,
  type SubjectPermission,
} from './permissions.ts'
import { isValidQueueName, isValidSubject } from './subject.ts'
import { ConfSyntaxError, configSyntax, parseConf, positionOf, type ConfPosition } from './conf.ts'

export interface ConfigErrorInfo {
  file?: string
  /** 1-based position of a syntax error. */
  line?: number
  column?: number
  /** Dotted option path the error is about, e.g. "authorization.timeout". */
  key?: string
  /** The command-line flag the bad value came from, e.g. "--port". */
  flag?: string
}

/** Any problem with the configuration or the command line. The message is ready to show. */
export class ConfigError extends Error {
  override name = 'ConfigError'
  readonly file?: string
  readonly line?: number
  readonly column?: number
  readonly key?: string
  readonly flag?: string
  constructor(message: string, info: ConfigErrorInfo = {}) {
    super(message)
    this.file = info.file
    this.line = info.line
    this.column = info.column
    this.key = info.key
    this.flag = info.flag
  }
}

// ---------------------------------------------------------------------------------------
// Config file syntax

/**
 * Parses JSON that may also contain `//`, `/* *\/` and `#` comments and trailing commas.
 * An empty file (or one with only comments) is an empty object. Duplicate keys are errors,
 * since the silently ignored first one is nearly always a mistake.
 */
export function parseConfigText(text: string, file: string): unknown {
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0

  const fail = (msg: string, at = i): never => {
    const { line, column } = position(text, at)
    throw new ConfigError(`config error in ${file}:${line}:${column}: ${msg}`, { file, line, column })
  }
  const here = (): string =>
    i >= text.length ? 'end of file' : text[i] === '"' ? 'a string' : JSON.stringify(String.fromCodePoint(text.codePointAt(i)!))

  const skip = (): void => {
    while (i < text.length) {
      const c = text[i]
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') i++
      else if (c === '#' || (c === '/' && text[i + 1] === '/')) {
        while (i < text.length && text[i] !== '\n') i++
      } else if (c === '/' && text[i + 1] === '*') {
        const end = text.indexOf('*/', i + 2)
        if (end < 0) fail('comment is not closed (missing "*/")')
        i = end + 2
      } else break
    }
  }

  const quoted = (): string => {
    const start = i++
    let out = ''
    let from = i
    for (;;) {
      if (i >= text.length) fail('string is not closed (missing \'"\')', start)
      const c = text.charCodeAt(i)
      if (c === 0x22) break // "
      if (c === 0x0a || c === 0x0d) fail('string is not closed before the end of the line', start)
      if (c < 0x20) fail('control character in string; write it as an escape like "\\t"')
      if (c !== 0x5c) {
        i++
        continue
      }
      out += text.slice(from, i)
      const e = text[i + 1]
      if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
        out += ESCAPES[e]
        i += 2
      } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
        out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16))
        i += 6
      } else {
        fail(`invalid escape "\\${e === undefined ? '' : JSON.stringify(e).slice(1, -1)}" in string`) // a raw newline would split the one-line error
      }
      from = i
    }
    out += text.slice(from, i)
    i++
    return out
  }

  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
  const number = (): number => {
    NUMBER.lastIndex = i
    const m = NUMBER.exec(text)
    if (!m) return fail(`unexpected ${here()}, expected a value`)
    i += m[0].length
    // `max_payload: 1MB` is valid in nats-server's own format; say how to write it here.
    if (/[A-Za-z_.]/.test(text[i] ?? '')) {
      fail(`unexpected ${here()} after a number; values with units must be quoted, like "1MB" or "10s"`)
    }
    return Number(m[0])
  }

  const value = (depth: number): unknown => {
    if (depth > 64) fail('nested too deeply')
    skip()
    const c = text[i]
    if (c === '{') return object(depth)
    if (c === '[') return array(depth)
    if (c === '"') return quoted()
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return number()
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, i) && !/[\w$]/.test(text[i + word.length] ?? '')) {
        i += word.length
        return v
      }
    }
    const word = /^[\w$.-]+/.exec(text.slice(i, i + 40))
    if (word) fail(`unexpected ${JSON.stringify(word[0])}; strings must be in double quotes`)
    return fail(`unexpected ${here()}, expected a value`)
  }

  const object = (depth: number): Record<string, unknown> => {
    i++
    const obj: Record<string, unknown> = {}
    const seen = new Set<string>()
    for (;;) {
      skip()
      if (text[i] === '}') {
        i++
        return obj
      }
      if (text[i] !== '"') fail(`unexpected ${here()}, expected a key in double quotes or "}"`)
      const keyAt = i
      const key = quoted()
      if (seen.has(key)) fail(`duplicate key ${JSON.stringify(key)}`, keyAt)
      seen.add(key)
      skip()
      if (text[i] !== ':') fail(`unexpected ${here()}, expected ":" after key ${JSON.stringify(key)}`)
      i++
      // defineProperty, so a "__proto__" key is data rather than a prototype change.
      Object.defineProperty(obj, key, { value: value(depth + 1), enumerable: true, writable: true, configurable: true })
      skip()
      if (text[i] === ',') i++
      else if (text[i] === '"') fail('missing "," before this key')
      else if (text[i] !== '}') fail(`unexpected ${here()}, expected "," or "}"`)
    }
  }

  const array = (depth: number): unknown[] => {
    i++
    const arr: unknown[] = []
    for (;;) {
      skip()
      if (text[i] === ']') {
        i++
        return arr
      }
      arr.push(value(depth + 1))
      skip()
      if (text[i] === ',') i++
      else if (text[i] !== ']') fail(`unexpected ${here()}, expected "," or "]"`)
    }
  }

  skip()
  if (i >= text.length) return {}
  const result = value(0)
  skip()
  if (i < text.length) fail(`unexpected ${here()} after the end of the configuration`)
  return result
}

const ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }

function position(text: string, at: number): { line: number; column: number } {
  let line = 1
  let lineStart = 0
  for (let j = 0; j < at && j < text.length; j++) {
    if (text.charCodeAt(j) === 0x0a) {
      line++
      lineStart = j + 1
    }
  }
  return { line, column: at - lineStart + 1 }
}

// ---------------------------------------------------------------------------------------
// Value forms

// nats-server's convention: a bare letter is a power of 1000, "B"/"iB"/"i" a power of 1024.
const SIZE_UNITS: Record<string, number> = { '': 1, b: 1 }
for (const [i, letter] of ['k', 'm', 'g', 't'].entries()) {
  SIZE_UNITS[letter] = 1000 ** (i + 1)
  for (const suffix of ['b', 'i', 'ib']) SIZE_UNITS[letter + suffix] = 1024 ** (i + 1)
}

/**
 * A size in bytes: a non-negative integer, or a string like "512", "64K" (64000), "64KB" or
 * "64KiB" (65536); units are case-insensitive. Returns undefined when `v` is not a size.
 */
export function parseSize(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined
  if (typeof v !== 'string') return undefined
  const m = /^\s*(\d+)\s*([a-z]*)\s*$/i.exec(v)
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined
  if (!m || unit === undefined) return undefined
  const n = Number(m[1]) * unit
  return Number.isSafeInteger(n) ? n : undefined
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/**
 * A duration in milliseconds: a number of seconds (nats-server reads bare numbers as seconds)
 * or a Go-style string such as "500ms", "10s", "1.5m", "1h30m". Returns undefined when `v` is
 * not a duration.
 */
export function parseDuration(v: unknown): number | undefined {
  let seconds: number | undefined
  if (typeof v === 'number') seconds = v
  else if (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v)) seconds = Number(v)
  if (seconds !== undefined) return Number.isFinite(seconds) && seconds >= 0 ? Math.round(seconds * 1000) : undefined
  if (typeof v !== 'string') return undefined
  const s = v.trim()
  const part = /(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)/y
  let total = 0
  let at = 0
  while (at < s.length) {
    part.lastIndex = at
    const m = part.exec(s)
    if (!m) return undefined
    total += Number(m[1]) * DURATION_UNITS[m[2]!]!
    at = part.lastIndex
  }
  return at > 0 ? Math.round(total) : undefined
}

// Host timers (setTimeout/setInterval) overflow above 2^31-1 ms and then fire immediately.
const MAX_DURATION = 2 ** 31 - 1

// ---------------------------------------------------------------------------------------
// Checking values

/** Thrown by value checks; the caller adds where the value came from. */
class Invalid extends Error {}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v)
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'object') return 'an object'
  return String(v)
}

function expected(what: string, got: unknown): never {
  throw new Invalid(`expected ${what}, got ${describe(got)}`)
}

type Check<T> = (v: unknown) => T

// Integers and booleans may also be strings: that is how flag values and ${VAR} values arrive.
const integer =
  (min: number, max: number, what: string): Check<number> =>
  (v) => {
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*[+-]?\d+\s*$/.test(v) ? Number(v) : NaN
    if (!Number.isSafeInteger(n) || n < min || n > max) expected(what, v)
    return n
  }

const SIZE = 'a size in bytes (number, or a string like "1MB")'
const size =
  (max = Number.MAX_SAFE_INTEGER, maxText = ''): Check<number> =>
  (v) => {
    const n = parseSize(v)
    if (n === undefined) expected(SIZE, v)
    if (n === 0) expected('a size greater than 0', v)
    if (n > max) expected(`a size up to ${maxText}`, v)
    return n
  }

const DURATION = 'a duration (seconds as a number, or a string like "10s", "500ms", "2m")'
const duration: Check<number> = (v) => {
  const ms = parseDuration(v)
  if (ms === undefined) expected(DURATION, v)
  if (ms === 0) expected('a duration of at least 1ms', v)
  if (ms > MAX_DURATION) expected('a duration up to 596h (about 24 days)', v)
  return ms
}

const boolean: Check<boolean> = (v) => {
  if (v === true || v === 'true') return true
  if (v === false || v === 'false') return false
  return expected('true or false', v)
}

const string: Check<string> = (v) => (typeof v === 'string' ? v : expected('a string', v))

const nonEmpty: Check<string> = (v) => (typeof v === 'string' && v !== '' ? v : expected('a non-empty string', v))

// Passwords and tokens are never echoed back, even when they have the wrong type.
const secret: Check<string> = (v) => {
  if (typeof v === 'string' && v !== '') return v
  const got = typeof v === 'string' ? 'an empty string' : typeof v === 'object' ? describe(v) : `a ${typeof v}`
  throw new Invalid(`expected a non-empty string, got ${got}`)
}

const host: Check<string> = (v) =>
  typeof v === 'string' && /^[^\s/]+$/.test(v) ? v : expected('a host name or IP address', v)

/** A host, or '' for none. */
const optionalHost: Check<string> = (v) => (v === '' ? '' : host(v))

/** `check`, except that 0 is accepted too (it means "none" or "no limit"). */
const orZero =
  (check: Check<number>): Check<number> =>
  (v) =>
    v === 0 || v === '0' ? 0 : check(v)

const logLevel: Check<LogLevel> = (v) => {
  const level = typeof v === 'string' ? LOG_LEVELS.find((l) => l === v.toLowerCase()) : undefined
  return level ?? expected(`one of ${LOG_LEVELS.join(', ')}`, v)
}

type Scalars = Omit<Options, 'authorization' | 'mqtt' | 'no_auth_user' | 'leafnodes' | 'store'>

const OPTION_CHECKS: { [K in keyof Scalars]: Check<Scalars[K]> } = {
  host,
  port: integer(0, 65535, 'an integer 0-65535'),
  server_name: string,
  max_payload: size(MAX_PAYLOAD_LIMIT, '64MB (67108864 bytes)'),
  max_pending: size(),
  max_memory: orZero(size()),
  max_control_line: size(),
  max_connections: integer(1, Number.MAX_SAFE_INTEGER, 'a positive integer'),
  ping_interval: duration,
  ping_max: integer(1, Number.MAX_SAFE_INTEGER, 'a positive integer'),
  write_deadline: duration,
  connect_timeout: duration,
  max_subscriptions: integer(0, Number.MAX_SAFE_INTEGER, 'an integer >= 0 (0 means unlimited)'),
  log_level: logLevel,
  debug: boolean,
  trace: boolean,
  logtime: boolean,
  http_port: integer(0, 65535, 'an integer 0-65535 (0: no monitoring)'),
  http_host: optionalHost,
  https_port: integer(0, 65535, 'an integer 0-65535 (0: no HTTPS monitoring)'),
}

// users and permissions have nested keys of their own: checked in authorization() below.
const AUTH_CHECKS: { [K in keyof Omit<Authorization, 'users' | 'permissions'>]-?: Check<NonNullable<Authorization[K]>> } = {
  user: nonEmpty,
  password: secret,
  token: secret,
  timeout: duration,
}

const AUTH_KEYS = [...Object.keys(AUTH_CHECKS), 'users', 'permissions']

const MQTT_CHECKS: { [K in keyof MqttOptions]: Check<MqttOptions[K]> } = {
  enabled: boolean,
  host: optionalHost,
  port: integer(0, 65535, 'an integer 0-65535'),
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
  tls_port: integer(0, 65535, 'an integer 0-65535'),
  plain: boolean,
}

const OPTION_KEYS = [...Object.keys(OPTION_CHECKS), 'authorization', 'no_auth_user', 'mqtt', 'tls', 'leafnodes', 'store']

// nats-server options that sprig does not have (yet): worth a clearer message than "unknown".
const NOT_SUPPORTED = new Set([
  'client_advertise', 'websocket', 'cluster',
  'gateway', 'jetstream', 'accounts', 'system_account', 'no_system_account', 'operator',
  'resolver', 'http_base_path', 'pid_file',
  'ports_file_dir', 'log_file', 'log_size_limit', 'syslog', 'remote_syslog', 'max_traced_msg_len',
  'lame_duck_duration', 'lame_duck_grace_period', 'connect_error_reports',
  'reconnect_error_reports', 'include',
])

// Names people bring from nats-server's format (it accepts several spellings) or from habit.
const ALIASES: Record<string, string> = {
  net: 'host',
  addr: 'host',
  listen: 'host" and "port',
  name: 'server_name',
  http: 'http_host" and "http_port',
  monitor_port: 'http_port',
  https: 'http_host" and "https_port',
  'authorization.username': 'authorization.user',
  'authorization.pass': 'authorization.password',
}

/** Where a layer of values came from, to name it in messages. */
export interface Source {
  /** The config file the values were read from. */
  file?: string
  /** For command-line values: option key -> the flag that set it (e.g. "port" -> "--port"). */
  flags?: Readonly<Record<string, string>>
  /** Files in nats-server's syntax: where each key was written (an include's keys name that file). */
  positions?: ReadonlyMap<string, ConfPosition>
}

/** How a message about a value from `src` starts: the flag, or the file (and line, when known). */
function lead(src: Source, key: string): string {
  const flag = src.flags?.[key]
  if (flag !== undefined) return `${flag}: `
  const at = src.positions && positionOf(src.positions, key)
  if (at) return `config error in ${at.file}:${at.line}:${at.column}: `
  return src.file !== undefined ? `config error in ${src.file}: ` : 'config error: '
}

/** An error about `key`'s value; flags already say which key, file sources add it. */
function blame(src: Source, key: string, detail: string, nameKey = true): ConfigError {
  const flag = src.flags?.[key]
  const named = flag === undefined && nameKey ? `${key}: ` : ''
  const at = flag === undefined && src.positions ? positionOf(src.positions, key) : undefined
  const info = at ? { file: at.file, line: at.line, column: at.column } : { file: src.file }
  return new ConfigError(lead(src, key) + named + detail, { key, flag, ...info })
}

function unknownKey(src: Source, path: string, known: readonly string[], prefix: string): ConfigError {
  let msg = `unknown option ${JSON.stringify(path)}`
  const near = ALIASES[path] ?? closest(path.slice(prefix.length), known)
  if (NOT_SUPPORTED.has(path)) msg += ' (a nats-server option that sprig does not support yet)'
  else if (near !== undefined) msg += ` (did you mean "${ALIASES[path] ?? prefix + near}"?)`
  return blame(src, path, msg, false)
}

/** The known name that `name` most likely meant, if exactly one is clearly closest. */
export function closest(name: string, known: readonly string[]): string | undefined {
  // Case, "-" and "_" differences are always a match: maxPayload, max-payload -> max_payload.
  const norm = (s: string): string => s.toLowerCase().replace(/[-_]/g, '')
  const same = known.find((k) => norm(k) === norm(name))
  if (same !== undefined) return same
  const limit = Math.min(2, Math.floor(name.length / 3))
  const scored = known.map((k) => ({ k, d: editDistance(norm(name), norm(k)) })).filter((s) => s.d <= limit)
  const best = Math.min(...scored.map((s) => s.d))
  const top = scored.filter((s) => s.d === best)
  return top.length === 1 ? top[0]!.k : undefined
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("prot").
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1)
      d[i]![j] = v
    }
  }
  return d[a.length]![b.length]!
}

function checked<T>(check: Check<T>, v: unknown, src: Source, key: string): T {
  try {
    return check(v)
  } catch (e) {
    /* c8 ignore next */
    if (!(e instanceof Invalid)) throw e
    throw blame(src, key, e.message)
  }
}

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

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * One layer over `base`: checks each key in `raw` and returns the merged options, noting in
 * `origins` that this layer (`src`, at `rank`) set each of its keys. Cross-key rules that
 * span layers are left to `crossCheck`.
 */
function applyLayer(raw: unknown, base: Options, src: Source, rank: number, origins: Origins): Options {
  if (!isObject(raw)) {
    const where = src.file !== undefined ? `config error in ${src.file}: ` : 'config error: '
    throw new ConfigError(`${where}expected an object of options at the top level, got ${describe(raw)}`, { file: src.file })
  }
  const out: Options = { ...base }
  if (base.authorization) out.authorization = { ...base.authorization }
  if (base.mqtt) out.mqtt = { ...base.mqtt }
  const set = new Set<string>()

  for (const [key, v] of Object.entries(raw)) {
    if (key === 'authorization') {
      out.authorization = authorization(v, src)
    } else if (key === 'tls') {
      out.tls = tlsBlock(v, src, 'tls')
    } else if (key === 'leafnodes') {
      out.leafnodes = leafnodes(v, src)
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
      for (const [k, x] of Object.entries(v)) mqttKey(m, k, x, src)
    } else if (key.startsWith('mqtt.')) {
      mqttKey((out.mqtt ??= { ...MQTT_DEFAULTS }), key.slice(5), v, src) // from a flag such as --mqtt-port
    } else {
      setChecked(out, OPTION_CHECKS, key, v, src, key, OPTION_KEYS)
    }
    set.add(key)
  }

  // nats-server's `debug: true` / `trace: true` turn the level up; within one layer they win
  // over a quieter log_level, while a later layer's log_level (e.g. the -l flag) replaces both.
  let level = out.log_level
  if (set.has('debug') && out.debug) level = louder(level, 'debug')
  if (set.has('trace') && out.trace) level = louder(level, 'trace')
  out.log_level = level
  out.debug = LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf('debug')
  out.trace = level === 'trace'
  for (const key of set) origins.set(key, { src, rank })
  return out
}

function louder(a: LogLevel, b: LogLevel): LogLevel {
  return LOG_LEVELS.indexOf(a) >= LOG_LEVELS.indexOf(b) ? a : b
}

// Unlike authorization, the mqtt block merges key by key: the file may set the host and a
// flag the port.
function mqttKey(m: MqttOptions, key: string, v: unknown, src: Source): void {
  const path = `mqtt.${key}`
  if (key === 'tls') {
    m.tls = tlsBlock(v, src, path)
    return
  }
  setChecked(m, MQTT_CHECKS, key, v, src, path)
}

// A layer's authorization replaces the one below it as a whole: mixing a user from the config
// file with a token from elsewhere would produce a combination nobody wrote.
function authorization(v: unknown, src: Source): Authorization {
  if (!isObject(v)) throw blame(src, 'authorization', `expected an object, got ${describe(v)}`)
  const auth: Authorization = {} // no timeout: its default depends on the listener (src/auth.ts authTimeout)
  for (const [key, value] of Object.entries(v)) {
    const path = `authorization.${key}`
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
export const DEFAULT_TLS_TIMEOUT = 2_000

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
  const out: TlsOptions = { verify: false, verify_and_map: false, timeout: DEFAULT_TLS_TIMEOUT, handshake_first: false }
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

const USER_KEYS = ['user', 'password', 'permissions']
const USER_ALIASES: Record<string, string> = { username: 'user', pass: 'password' }

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
      else if (k === 'permissions') out.permissions = permissions(x, src, `${at}.permissions`)
      else throw unknownKey(src, `${at}.${key}`, USER_KEYS, `${at}.`)
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
    if (key === 'publish' || key === 'pub') out.publish = subjectPermission(x, src, path, false)
    else if (key === 'subscribe' || key === 'sub') out.subscribe = subjectPermission(x, src, path, true)
    else if (key === 'allow_responses') {
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

/** true, false, or { max, expires } (nats-server also says max_msgs and ttl). */
function responsePermission(v: unknown, src: Source, at: string): ResponsePermission | undefined {
  if (v === false || v === 'false') return undefined
  if (v === true || v === 'true') return { max: DEFAULT_RESPONSE_MAX, expires: DEFAULT_RESPONSE_EXPIRES }
  if (!isObject(v)) throw blame(src, at, `expected true, false or { "max": N, "expires": "1m" }, got ${describe(v)}`)
  const out: ResponsePermission = { max: DEFAULT_RESPONSE_MAX, expires: DEFAULT_RESPONSE_EXPIRES }
  for (const [key, x] of Object.entries(v)) {
    if (key === 'max' || key === 'max_msgs') {
      // nats-server: 0 means the default, a negative number no limit.
      const n = checked(integer(-1, Number.MAX_SAFE_INTEGER, 'an integer (0: the default 1, -1: no limit)'), x, src, `${at}.${key}`)
      out.max = n === 0 ? DEFAULT_RESPONSE_MAX : n < 0 ? Number.MAX_SAFE_INTEGER : n
    } else if (key === 'expires' || key === 'ttl') {
      out.expires = checked(duration, x, src, `${at}.${key}`)
    } else throw unknownKey(src, `${at}.${key}`, ['max', 'expires'], `${at}.`)
  }
  return out
}

/** Which source last set each key, and how late it came (higher wins). */
type Origins = Map<string, { src: Source; rank: number }>

function crossCheck(o: Options, origins: Origins): void {
  if (o.https_port !== 0 && o.tls === undefined) {
    throw blame(origins.get('https_port')?.src ?? {}, 'https_port', 'needs the top-level tls block (its certificate serves HTTPS)')
  }
  if (o.no_auth_user !== undefined && !o.authorization?.users?.some((u) => u.user === o.no_auth_user)) {
    const detail = `${describe(o.no_auth_user)} is not one of authorization.users`
    throw blame(origins.get('no_auth_user')?.src ?? {}, 'no_auth_user', detail)
  }
  if (o.max_payload > o.max_pending) {
    // Name whichever of the two was set last: that is the value the user just changed.
    const rank = (key: string): number => origins.get(key)?.rank ?? 0
    const key = rank('max_pending') > rank('max_payload') ? 'max_pending' : 'max_payload'
    const detail = `max_payload (${o.max_payload}) cannot be higher than max_pending (${o.max_pending})`
    throw blame(origins.get(key)?.src ?? {}, key, detail, false)
  }
}

/**
 * Checks `raw` (an object of options, as parsed from a config file) key by key and merges it
 * over `base`. Throws ConfigError naming the offending key.
 */
export function validateOptions(raw: unknown, base: Options = defaults, source: Source = {}): Options {
  const origins: Origins = new Map()
  const options = applyLayer(raw, base, source, 1, origins)
  crossCheck(options, origins)
  return options
}

/**
 * Replaces every string that is exactly "${NAME}" with the environment variable NAME, so
 * secrets can stay out of the file. Only whole strings are replaced: bcrypt hashes and
 * passwords that merely contain "$" are left alone.
 */
export function substituteEnv(raw: unknown, env: Readonly<Record<string, string | undefined>>, file?: string, path = ''): unknown {
  if (typeof raw === 'string') {
    const m = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$/.exec(raw)
    if (!m) return raw
    const value = env[m[1]!]
    if (value === undefined) {
      throw blame({ file }, path || '(top level)', `environment variable ${m[1]} is not set`)
    }
    return value
  }
  if (Array.isArray(raw)) return raw.map((v, i) => substituteEnv(v, env, file, `${path}[${i}]`))
  if (isObject(raw)) {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(raw)) {
      Object.defineProperty(out, k, {
        value: substituteEnv(v, env, file, path ? `${path}.${k}` : k),
        enumerable: true,
        writable: true,
        configurable: true,
      })
    }
    return out
  }
  return raw
}

/**
 * A config file's text to raw options, in either syntax: JSON with comments, or
 * nats-server's own (src/conf.ts), chosen by configSyntax. Content that looks like JSON
 * but is not valid JSON gets a second chance as nats-server syntax, which accepts much
 * JSON-like text; if that fails too, the JSON error is the one shown.
 */
export function parseConfigFile(
  text: string,
  file: string,
  input: Pick<LoadInput, 'readFile' | 'env'>,
): { raw: unknown; source: Source } {
  const env = input.env ?? {}
  const conf = (): { raw: unknown; source: Source } => {
    try {
      const isOption = (path: string): boolean => OPTION_KEYS.includes(path)
      const r = parseConf(text, file, { readFile: input.readFile, env, isOption })
      return { raw: r.value, source: { file, positions: r.positions } }
    } catch (e) {
      if (!(e instanceof ConfSyntaxError)) throw e
      throw new ConfigError(e.message, { file: e.file, line: e.line, column: e.column, key: e.key })
    }
  }
  const byName = /\.(conf|json)$/i.test(file)
  if (configSyntax(file, text) === 'conf') return conf()
  try {
    return { raw: substituteEnv(parseConfigText(text, file), env, file), source: { file } }
  } catch (e) {
    if (byName || !(e instanceof ConfigError) || e.line === undefined) throw e
    try {
      return conf()
    } catch {
      throw e
    }
  }
}

export interface LoadInput {
  /** The command-line arguments after the program name. */
  argv: readonly string[]
  /** Returns a file's text; may throw (the error's message is shown). */
  readFile: (path: string) => string
  /** For "${NAME}" references in the config file. */
  env?: Readonly<Record<string, string | undefined>>
  /** The machine's memory in bytes (the target's os.totalmem()): picks the default max_memory. */
  totalMemory?: number
}

export type LoadResult = { options: Options; configFile?: string } | { help: string } | { version: true }

/** defaults <- config file (-c) <- flags. Throws ConfigError for anything wrong. */
export function loadOptions(input: LoadInput): LoadResult {
  const cli = parseCli(input.argv)
  if (cli.help) return { help: usage() }
  if (cli.version) return { version: true }

  let options = input.totalMemory === undefined ? defaults : { ...defaults, max_memory: defaultMaxMemory(input.totalMemory) }
  const origins: Origins = new Map()
  const file = cli.config
  if (file !== undefined) {
    let text: string
    try {
      text = input.readFile(file)
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e)
      throw new ConfigError(`config error: cannot read ${file}: ${why}`, { file })
    }
    const { raw, source } = parseConfigFile(text, file, input)
    options = applyLayer(raw, options, source, 1, origins)
  }

  options = applyLayer(cli.values, options, { flags: cli.flags }, 2, origins)

  crossCheck(options, origins)
  return file !== undefined ? { options, configFile: file } : { options }
}

// --- leafnodes (the uplink; soliciting side only) ------------------------------------------

const LEAF_KEYS = ['remotes', 'reconnect', 'reconnect_max']
const REMOTE_KEYS = [
  'urls', 'url', 'no_randomize', 'credentials', 'nkey', 'tls', 'deny_imports', 'deny_exports',
  'allow_exports', 'allow_imports', 'map', 'buffer_subjects', 'buffer_max_msgs', 'buffer_max_bytes',
  'buffer_policy', 'buffer_hold', 'replay_rate', 'permissions',
]
// nats-server remote options sprig does not have: say so rather than "unknown".
const REMOTE_NOT_SUPPORTED = ['account', 'hub', 'ws_compression', 'ws_no_masking', 'compression', 'first_info_timeout', 'local']

// A layer's leafnodes block replaces the one below it as a whole (like authorization).
function leafnodes(v: unknown, src: Source): LeafnodeOptions {
  if (!isObject(v)) throw blame(src, 'leafnodes', `expected an object like { "remotes": [ { "urls": ["nats://hub:7422"] } ] }, got ${describe(v)}`)
  const out: LeafnodeOptions = { remotes: [], ...LEAF_DEFAULTS }
  for (const [key, x] of Object.entries(v)) {
    const path = `leafnodes.${key}`
    if (key === 'remotes') {
      if (!Array.isArray(x)) throw blame(src, path, `expected an array of remotes, got ${describe(x)}`)
      out.remotes = x.map((r, i) => remote(r, src, `leafnodes.remotes[${i}]`))
    } else if (key === 'reconnect' || key === 'reconnect_max') out[key] = checked(duration, x, src, path)
    else if (key === 'listen' || key === 'port' || key === 'host' || key === 'authorization') {
      throw blame(src, path, 'sprig does not accept leaf connections (it only dials hubs: use leafnodes.remotes)', false)
    } else throw unknownKey(src, path, LEAF_KEYS, 'leafnodes.')
  }
  if (out.reconnect_max < out.reconnect) throw blame(src, 'leafnodes.reconnect_max', `cannot be lower than leafnodes.reconnect (${out.reconnect} ms)`)
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
