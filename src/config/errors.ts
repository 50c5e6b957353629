// Configuration errors: one error type that names the file, the key and (for nats-server
// syntax) the line, and the helpers every check uses to build its one-line message.

import { positionOf, type ConfPosition } from './conf.ts'

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

/** Where a layer of values came from, to name it in messages. */
export interface Source {
  /** The config file the values were read from. */
  file?: string
  /** For command-line values: option key -> the flag that set it (e.g. "port" -> "--port"). */
  flags?: Readonly<Record<string, string>>
  /** Files in nats-server's syntax: where each key was written (an include's keys name that file). */
  positions?: ReadonlyMap<string, ConfPosition>
}

export function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 57)}...` : v)
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'an array'
  if (typeof v === 'object') return 'an object'
  return String(v)
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
export function blame(src: Source, key: string, detail: string, nameKey = true): ConfigError {
  const flag = src.flags?.[key]
  const named = flag === undefined && nameKey ? `${key}: ` : ''
  const at = flag === undefined && src.positions ? positionOf(src.positions, key) : undefined
  const info = at ? { file: at.file, line: at.line, column: at.column } : { file: src.file }
  return new ConfigError(lead(src, key) + named + detail, { key, flag, ...info })
}
