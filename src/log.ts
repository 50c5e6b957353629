// A small leveled logger. The target decides where lines go (stderr, a file, a test array);
// this module only decides whether a message is wanted and how its one line looks.

export const LEVELS = ['error', 'warn', 'info', 'debug', 'trace'] as const
export type Level = (typeof LEVELS)[number]

/** A message, or a function that builds one; the function only runs when the level is enabled. */
export type LogMessage = string | (() => string)

export interface LoggerOptions {
  level: Level
  /** Prefix each line with an ISO-8601 UTC timestamp (default true). */
  time?: boolean
  /** Receives each finished line, without a trailing newline. */
  sink: (line: string) => void
  now?: () => Date
}

export interface Logger {
  error(msg: LogMessage): void
  warn(msg: LogMessage): void
  info(msg: LogMessage): void
  debug(msg: LogMessage): void
  trace(msg: LogMessage): void
  readonly level: Level
  enabled(level: Level): boolean
}

// Same three-letter tags as nats-server, so log scrapers written for it keep working.
const TAGS: Record<Level, string> = {
  error: 'ERR',
  warn: 'WRN',
  info: 'INF',
  debug: 'DBG',
  trace: 'TRC',
}

export function createLogger(opts: LoggerOptions): Logger {
  const max = LEVELS.indexOf(opts.level)
  if (max < 0) throw new TypeError(`unknown log level ${JSON.stringify(opts.level)}`)
  const time = opts.time ?? true
  const now = opts.now ?? (() => new Date())
  const sink = opts.sink

  const emit = (level: Level, msg: LogMessage): void => {
    const text = oneLine(typeof msg === 'function' ? msg() : msg)
    const tag = `[${TAGS[level]}] `
    sink(time ? `${now().toISOString()} ${tag}${text}` : tag + text)
  }
  // One closure per level; a disabled level is a no-op function, so a call costs nothing
  // beyond the call itself and the message function is never run.
  const at = (level: Level): ((msg: LogMessage) => void) =>
    LEVELS.indexOf(level) <= max ? (msg) => emit(level, msg) : () => {}

  return {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
    trace: at('trace'),
    level: opts.level,
    enabled: (level) => LEVELS.indexOf(level) <= max,
  }
}

// Line breaks and other control characters would let one message forge or split log lines
// (client-supplied subjects and payloads end up in trace output), so they are escaped.
// Tab is left alone. U+2028/2029 count as line breaks in some viewers.
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u0008\u000a-\u001f\u007f\u0085\u2028\u2029]/g

export function oneLine(text: string): string {
  return text.replace(UNSAFE, (c) => {
    switch (c) {
      case '\n':
        return '\\n'
      case '\r':
        return '\\r'
      default: {
        const code = c.charCodeAt(0)
        return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16)}`
      }
    }
  })
}
