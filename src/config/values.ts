// Value forms and the checks for single values: sizes, durations, integers, booleans,
// hosts, log levels. A check throws Invalid; `checked` turns that into a ConfigError that
// names where the value came from.

import { LOG_LEVELS, type LogLevel } from '../options.ts'
import { blame, describe, type Source } from './errors.ts'

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
export class Invalid extends Error {}


export function expected(what: string, got: unknown): never {
  throw new Invalid(`expected ${what}, got ${describe(got)}`)
}

export type Check<T> = (v: unknown) => T

// Integers and booleans may also be strings: that is how flag values and ${VAR} values arrive.
export const integer =
  (min: number, max: number, what: string): Check<number> =>
  (v) => {
    const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*[+-]?\d+\s*$/.test(v) ? Number(v) : NaN
    if (!Number.isSafeInteger(n) || n < min || n > max) expected(what, v)
    return n
  }

const SIZE = 'a size in bytes (number, or a string like "1MB")'
export const size =
  (max = Number.MAX_SAFE_INTEGER, maxText = ''): Check<number> =>
  (v) => {
    const n = parseSize(v)
    if (n === undefined) expected(SIZE, v)
    if (n === 0) expected('a size greater than 0', v)
    if (n > max) expected(`a size up to ${maxText}`, v)
    return n
  }

const DURATION = 'a duration (seconds as a number, or a string like "10s", "500ms", "2m")'
export const duration: Check<number> = (v) => {
  const ms = parseDuration(v)
  if (ms === undefined) expected(DURATION, v)
  if (ms === 0) expected('a duration of at least 1ms', v)
  if (ms > MAX_DURATION) expected('a duration up to 596h (about 24 days)', v)
  return ms
}

export const boolean: Check<boolean> = (v) => {
  if (v === true || v === 'true') return true
  if (v === false || v === 'false') return false
  return expected('true or false', v)
}

export const string: Check<string> = (v) => (typeof v === 'string' ? v : expected('a string', v))

export const nonEmpty: Check<string> = (v) => (typeof v === 'string' && v !== '' ? v : expected('a non-empty string', v))

// Passwords and tokens are never echoed back, even when they have the wrong type.
export const secret: Check<string> = (v) => {
  if (typeof v === 'string' && v !== '') return v
  const got = typeof v === 'string' ? 'an empty string' : typeof v === 'object' ? describe(v) : `a ${typeof v}`
  throw new Invalid(`expected a non-empty string, got ${got}`)
}

export const host: Check<string> = (v) =>
  typeof v === 'string' && /^[^\s/]+$/.test(v) ? v : expected('a host name or IP address', v)

/** A host, or '' for none. */
export const optionalHost: Check<string> = (v) => (v === '' ? '' : host(v))

// nats-server's RANDOM_PORT: -1 asks for a random free port, on every listener.
const PORT = 'an integer 0-65535, or -1 for a random free port'

/** A listener's port; -1 (nats-server's random port) becomes 0, which asks the OS for one. */
export const port: Check<number> = (v) => Math.max(0, integer(-1, 65535, PORT)(v))

/** The port of a listener that 0 turns off; -1 stays -1 (a random free port). */
export const optionalPort = (off: string): Check<number> => integer(-1, 65535, `an integer 0-65535 (0: ${off}; -1: a random free port)`)

/**
 * nats-server's `listen` (also `http`, `https`, `mqtt.listen`): a port, or "host:port"
 * ("[::1]:4222" for IPv6). The host is '' when only a port is given.
 */
export const hostPort = (checkPort: Check<number>): Check<{ host: string; port: number }> => (v) => {
  if (typeof v === 'number' || (typeof v === 'string' && /^\s*-?\d+\s*$/.test(v))) return { host: '', port: checkPort(v) }
  const m = typeof v === 'string' ? /^\s*(?:\[([^\]]+)\]|([^\s:/[\]]+)):(-?\d+)\s*$/.exec(v) : null
  if (!m) return expected('a port or "host:port"', v)
  return { host: host(m[1] ?? m[2]), port: checkPort(m[3]) }
}

/** `check`, except that 0 is accepted too (it means "none" or "no limit"). */
export const orZero =
  (check: Check<number>): Check<number> =>
  (v) =>
    v === 0 || v === '0' ? 0 : check(v)

export const logLevel: Check<LogLevel> = (v) => {
  const level = typeof v === 'string' ? LOG_LEVELS.find((l) => l === v.toLowerCase()) : undefined
  return level ?? expected(`one of ${LOG_LEVELS.join(', ')}`, v)
}

export function checked<T>(check: Check<T>, v: unknown, src: Source, key: string): T {
  try {
    return check(v)
  } catch (e) {
    /* c8 ignore next */
    if (!(e instanceof Invalid)) throw e
    throw blame(src, key, e.message)
  }
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}
