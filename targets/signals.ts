// `sprig --signal CMD[=PID]`, nats-server's --signal: sends a running sprig the signal for
// CMD and exits. PID may be a number or a pid file; without it, the one sprig process
// running is found through /proc. A PID that is not sprig is refused, by name.
// Also the log file that SIGUSR1 reopens (log_file).

import { closeSync, openSync, readdirSync, readFileSync, writeSync } from 'node:fs'
import { basename } from 'node:path'
import process from 'node:process'

/** nats-server's commands and the signals they send. */
export const SIGNAL_COMMANDS: Readonly<Record<string, NodeJS.Signals>> = {
  ldm: 'SIGUSR2',
  quit: 'SIGINT',
  stop: 'SIGKILL',
  term: 'SIGTERM',
  reload: 'SIGHUP',
  reopen: 'SIGUSR1',
}

/** The value of --signal in argv (`--signal X` or `--signal=X`), or undefined. */
export function signalArg(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--signal') return argv[i + 1] ?? ''
    if (a.startsWith('--signal=')) return a.slice('--signal='.length)
  }
  return undefined
}

/** Does this /proc/PID/cmdline (NUL-separated) run sprig (binary, bundle or source)? */
export function isSprigCmdline(cmdline: string): boolean {
  const args = cmdline.split('\0').filter((a) => a !== '')
  if (args.length === 0) return false
  if (/^sprig([-.]|$)/.test(basename(args[0]!))) return true
  // node|bun|deno [run -A ...] dist/sprig.js, or bun targets/main.ts (npm start)
  return args.slice(1, 6).some((a) => /^sprig[\w.-]*\.(js|mjs|ts)$/.test(basename(a)) || /(^|\/)targets\/main\.ts$/.test(a))
}

function cmdlineOf(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8')
  } catch {
    return null
  }
}

/** The PIDs of sprig processes other than this one. */
function findSprigs(): number[] {
  const found: number[] = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue
    const c = cmdlineOf(Number(d))
    if (c !== null && isSprigCmdline(c)) found.push(Number(d))
  }
  return found
}

/**
 * Runs `--signal VALUE`: returns '' on success or the one-line error (the caller prints it and
 * exits 1).
 */
export function sendSignal(value: string): string {
  const eq = value.indexOf('=')
  const cmd = eq < 0 ? value : value.slice(0, eq)
  const target = eq < 0 ? '' : value.slice(eq + 1)
  const sig = SIGNAL_COMMANDS[cmd]
  if (sig === undefined) return `sprig: --signal: unknown command ${JSON.stringify(cmd)} (one of ${Object.keys(SIGNAL_COMMANDS).join(', ')}, as CMD or CMD=PID)`
  let pid: number
  if (target === '') {
    const all = findSprigs()
    if (all.length === 0) return 'sprig: --signal: no running sprig process found; give its PID (CMD=PID)'
    if (all.length > 1) return `sprig: --signal: several sprig processes are running (${all.join(', ')}); give the PID (CMD=PID)`
    pid = all[0]!
  } else if (/^\d+$/.test(target)) {
    pid = Number(target)
  } else {
    // A pid file, as nats-server allows.
    let text: string
    try {
      text = readFileSync(target, 'utf8').trim()
    } catch (e) {
      return `sprig: --signal: cannot read pid file ${target}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`
    }
    if (!/^\d+$/.test(text)) return `sprig: --signal: ${target} does not hold a PID`
    pid = Number(text)
  }
  const cmdline = cmdlineOf(pid)
  if (cmdline === null) return `sprig: --signal: no process with PID ${pid}`
  if (!isSprigCmdline(cmdline)) {
    const what = cmdline.split('\0').filter((a) => a !== '').join(' ').slice(0, 120)
    return `sprig: --signal: PID ${pid} is not sprig (${JSON.stringify(what)})`
  }
  try {
    process.kill(pid, sig)
  } catch (e) {
    return `sprig: --signal: cannot signal PID ${pid}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`
  }
  return ''
}

/** Set once stderr has failed (its reader is gone): log lines are dropped from then on. */
let stderrGone = false
let stderrWatched = false

/**
 * Writes a log line to stderr, or drops it once stderr is gone (a closed pipe: EPIPE, when
 * `sprig | head` or a log collector goes away). Without the 'error' listener the failed write
 * is an uncaught exception, whose log line fails the same way: on Node and Deno a loop that
 * took a whole core and stopped the broker serving.
 */
export function stderrLine(line: string): void {
  if (stderrGone) return
  if (!stderrWatched) {
    stderrWatched = true
    process.stderr.on('error', () => void (stderrGone = true))
  }
  try {
    process.stderr.write(line + '\n')
  } catch {
    stderrGone = true
  }
}

/**
 * log_file: lines appended to a file; reopen() (SIGUSR1) closes and opens it again, so
 * logrotate can move it away. A write that fails goes to stderr instead (never thrown).
 */
export function logFile(path: string): { sink: (line: string) => void; reopen: () => string | null } {
  let fd = openSync(path, 'a', 0o640)
  return {
    sink: (line) => {
      try {
        writeSync(fd, line + '\n')
      } catch {
        stderrLine(line)
      }
    },
    reopen: () => {
      let next: number
      try {
        next = openSync(path, 'a', 0o640)
      } catch (e) {
        return `cannot reopen ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`
      }
      const old = fd
      fd = next
      try {
        closeSync(old)
      } catch {
        // already closed
      }
      return null
    },
  }
}
