// Loading options: defaults <- config file (-c) <- command-line flags, with "${VAR}"
// environment references. The parts live in src/config/: the two file syntaxes (json.ts,
// conf.ts), the schema and its checks (schema.ts, values.ts, suggest.ts), the error type
// (errors.ts) and the flags (cli.ts).

import { defaultMaxMemory, defaults, type Options } from './options.ts'
import { parseCli, usage } from './config/cli.ts'
import { ConfSyntaxError, configSyntax, parseConf } from './config/conf.ts'
import { ConfigError, blame, type Source } from './config/errors.ts'
import { parseConfigText } from './config/json.ts'
import { OPTION_KEYS, applyLayer, crossCheck, type Origins } from './config/schema.ts'
import { isObject } from './config/values.ts'

// The names other modules and tests import from here.
export { ConfigError, type ConfigErrorInfo, type Source } from './config/errors.ts'
export { parseConfigText } from './config/json.ts'
export { parseDuration, parseSize } from './config/values.ts'
export { DEFAULT_TLS_TIMEOUT, mqttListeners, tlsBlock } from './config/schema.ts'
export { closest } from './config/suggest.ts'

/**
 * Checks `raw` (an object of options, as parsed from a config file) key by key and merges it
 * over `base`. Throws ConfigError naming the offending key.
 */
export function validateOptions(raw: unknown, base: Options = defaults, source: Source = {}): Options {
  const origins: Origins = new Map()
  return crossCheck(applyLayer(raw, base, source, 1, origins), origins)
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

  options = crossCheck(options, origins)
  return file !== undefined ? { options, configFile: file } : { options }
}
