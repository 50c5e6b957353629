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

// --- what peers send, in log lines -------------------------------------------------------------

/** Characters of a peer's string (user name, client id, subject, filter, topic) a log line keeps. */
export const PEER_TEXT_MAX = 200

/**
 * A peer's string for a log line, JSON-quoted as nats-server quotes them, and cut after
 * PEER_TEXT_MAX characters with the full size after the quote: a 60 KB user name must not
 * be written whole into every line about it.
 */
export function quote(s: string): string {
  if (s.length <= PEER_TEXT_MAX) return JSON.stringify(s)
  return JSON.stringify(s.slice(0, PEER_TEXT_MAX)) + cutMark(s)
}

/** The same cut for text that goes into a line unquoted (a hub's -ERR text, parser details). */
export function clip(s: string): string {
  return s.length <= PEER_TEXT_MAX ? s : s.slice(0, PEER_TEXT_MAX) + cutMark(s)
}

function cutMark(s: string): string {
  let bytes = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    // A surrogate pair is 4 bytes in UTF-8: 2 for each half.
    bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdfff ? 2 : 3
  }
  return `…(${bytes} bytes)`
}
