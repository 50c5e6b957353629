// The command line: which flags exist and which option key each one sets. Values are not
// checked here; loadOptions (config.ts) runs them through the same checks as config keys.
// (config.ts imports this module and this module imports ConfigError from config.ts; neither
// uses the other at load time, so the cycle is harmless.)

import { parseArgs } from 'node:util'
import { ConfigError, closest } from './config.ts'
import { LOG_LEVELS, MQTT_DEFAULTS, defaults, type Options } from './options.ts'

interface Flag {
  long: string
  short?: string
  /** The option key the value goes to (dotted for a block's key); none for -c, -h and -v. */
  key?: keyof Options | 'mqtt.port' | 'leafnodes.url' | 'store.dir'
  /** Placeholder for the value in the help text; no placeholder means a boolean flag. */
  arg?: string
  help: string
}

export const FLAGS: readonly Flag[] = [
  { long: 'config', short: 'c', arg: 'FILE', help: "Configuration file (JSON, or nats-server's .conf syntax)" },
  { long: 'addr', short: 'a', key: 'host', arg: 'HOST', help: 'Bind to host address' },
  { long: 'port', short: 'p', key: 'port', arg: 'PORT', help: 'Port for clients' },
  { long: 'max-payload', key: 'max_payload', arg: 'SIZE', help: 'Largest message payload' },
  { long: 'max-pending', key: 'max_pending', arg: 'SIZE', help: 'Outbound bytes queued per connection' },
  { long: 'max-memory', key: 'max_memory', arg: 'SIZE', help: 'Bytes held for messages, 0: no limit' },
  { long: 'mqtt-port', key: 'mqtt.port', arg: 'PORT', help: 'Port for MQTT clients' },
  { long: 'http-port', short: 'm', key: 'http_port', arg: 'PORT', help: 'Port for HTTP monitoring (/varz, /connz, /leafz, /healthz)' },
  { long: 'leaf', key: 'leafnodes.url', arg: 'URL', help: 'Leaf uplink to a hub, e.g. nats://user:pass@host:7422' },
  { long: 'store', key: 'store.dir', arg: 'DIR', help: 'Keep the uplink spool on disk in DIR (the store block: sync, bound)' },
  { long: 'log-level', short: 'l', key: 'log_level', arg: 'LEVEL', help: LOG_LEVELS.join(', ') },
  { long: 'help', short: 'h', help: 'Show this message' },
  { long: 'version', short: 'v', help: 'Show version' },
]

export interface CliArgs {
  help: boolean
  version: boolean
  /** The -c/--config path. */
  config?: string
  /** Option values as typed, by option key, e.g. { port: "4223" }. */
  values: Record<string, string>
  /** The flag each value came from, by option key, for error messages, e.g. { port: "--port" }. */
  flags: Record<string, string>
}

/** Parses the arguments after the program name. Throws ConfigError naming a bad flag. */
export function parseCli(argv: readonly string[]): CliArgs {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string }> = {}
  for (const f of FLAGS) options[f.long] = { type: f.arg ? 'string' : 'boolean', ...(f.short ? { short: f.short } : {}) }

  let parsed: Record<string, string | boolean | undefined>
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals: false }).values
  } catch (e) {
    throw cliError(e)
  }

  const out: CliArgs = { help: parsed.help === true, version: parsed.version === true, values: {}, flags: {} }
  if (typeof parsed.config === 'string') {
    if (parsed.config === '') throw new ConfigError('--config: expected a file name', { flag: '--config' })
    out.config = parsed.config
  }
  for (const f of FLAGS) {
    const v = parsed[f.long]
    if (f.key !== undefined && typeof v === 'string') {
      out.values[f.key] = v
      out.flags[f.key] = `--${f.long}`
    }
  }
  return out
}

// parseArgs reports problems as TypeErrors with a code; turn them into short messages that
// name the flag. The codes and wording are the same on Node, Bun and Deno.
function cliError(e: unknown): unknown {
  /* c8 ignore start */
  // Anything else (a future code, a changed message) is passed on untouched.
  const code = e instanceof Error ? (e as { code?: unknown }).code : undefined
  const quoted = e instanceof Error ? /'([^']*)'/.exec(e.message)?.[1] : undefined
  if (quoted === undefined) return e
  const message = (e as Error).message
  // For value problems the message names the flag as "-p, --port <value>" or, when ambiguous,
  // suggests "--port=-XYZ"; either way the long name is in it.
  const named = /--[\w-]+/.exec(message)?.[0] ?? quoted
  /* c8 ignore stop */
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION': {
      const flag = quoted.replace(/^(?!-)/, '-') // Bun reports "-hx" as 'x', Node as '-x'.
      const near = flag.startsWith('--') ? closest(flag.slice(2), FLAGS.map((f) => f.long)) : undefined
      const hint = near !== undefined ? ` (did you mean "--${near}"?)` : ''
      return new ConfigError(`unknown flag ${JSON.stringify(flag)}${hint}; see --help`, { flag })
    }
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return new ConfigError(`unexpected argument ${JSON.stringify(quoted)}; see --help`)
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE': {
      if (message.includes('does not take')) return new ConfigError(`${named}: takes no value`, { flag: named })
      if (message.includes('ambiguous')) {
        const hint = `to give one that starts with "-", write ${named}=-VALUE`
        return new ConfigError(`${named}: expected a value; ${hint}`, { flag: named })
      }
      return new ConfigError(`${named}: expected a value`, { flag: named })
    }
    /* c8 ignore next 2 */
    default:
      return e
  }
}

/** Help text: every flag with its default. */
export function usage(): string {
  const rows = FLAGS.map((f) => {
    const names = (f.short ? `-${f.short}, ` : '    ') + `--${f.long}` + (f.arg ? ` ${f.arg}` : '')
    const def = f.key !== undefined && f.key !== 'leafnodes.url' && f.key !== 'store.dir' ? ` (default: ${showDefault(f.key)})` : ''
    return `  ${names.padEnd(26)}${f.help}${def}`
  })
  return [
    'Usage: sprig [options]',
    '',
    'Options:',
    ...rows,
    '',
    'Sizes are bytes, or a number with a unit: 1K = 1000, 1KB = 1KiB = 1024 (likewise M/MB, G/GB).',
    'Flags override the same settings in the configuration file.',
    '',
  ].join('\n')
}

function showDefault(key: keyof Options | 'mqtt.port'): string {
  if (key === 'mqtt.port') return String(MQTT_DEFAULTS.port)
  if (key === 'max_memory') return 'RAM/8, at most 1GB'
  const v = defaults[key]
  if (key === 'max_payload' || key === 'max_pending') return showSize(v as number)
  return String(v)
}

// In nats-server's notation: "MB" is 1024 * 1024.
function showSize(n: number): string {
  const units = [['GB', 1024 ** 3], ['MB', 1024 ** 2], ['KB', 1024], ['', 1]] as const
  const [unit, scale] = units.find(([, scale]) => n >= scale && n % scale === 0) !
  return `${n / scale}${unit}`
}
