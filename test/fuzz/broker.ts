// Starts the bundle (dist/sprig.js) as a separate process for the socket fuzzer and the soak:
// NATS, MQTT and monitoring listeners on loopback ports, a config file in a temp dir, its log
// kept (the tail) for the report. A crash is a process exit nobody asked for.

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { freshBundle, runtimeBin } from '../helpers/bins.ts'
import { freePort, waitForPort } from '../helpers/peers.ts'

export interface Sprig {
  readonly pid: number
  readonly port: number
  readonly mqttPort: number
  readonly httpPort: number
  /** Set once the process is gone: how it ended. */
  exit: string | null
  /** The last lines it logged. */
  tail(): string
  /** Everything it logged, when `keepLog` was set; otherwise the tail. */
  log(): string
  /** RSS in bytes, from /proc (0 when gone). */
  rss(): number
  stop(): Promise<void>
  onExit(fn: (how: string) => void): void
}

export interface SprigOptions {
  runtime?: 'node' | 'bun' | 'deno'
  /** Extra top-level options (merged over the listeners). */
  config?: Record<string, unknown>
  keepLog?: boolean
}

export async function startSprig(o: SprigOptions = {}): Promise<Sprig> {
  const bundle = freshBundle()
  const [port, mqttPort, httpPort] = [await freePort(), await freePort(), await freePort()]
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-fuzz-'))
  const conf = path.join(dir, 'sprig.json')
  const { mqtt, ...rest } = o.config ?? {}
  writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port, http_port: httpPort, log_level: 'info', ...rest, mqtt: { port: mqttPort, ...(mqtt as object) } }, null, 2))
  const runtime = o.runtime ?? 'node'
  // runtimeBin('node') is this process's binary, which is Bun when the fuzzer runs on Bun.
  const bin = runtime === 'node' && process.versions.bun ? 'node' : runtimeBin(runtime)
  if (!bin) throw new Error(`${runtime} is not installed`)
  const args = runtime === 'deno' ? ['run', '-A', bundle, '-c', conf] : [bundle, '-c', conf]
  // As in production: without tap's loader in NODE_OPTIONS.
  const child: ChildProcess = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
  let tail = ''
  let all = ''
  const keep = (d: Buffer): void => {
    const s = d.toString('utf8')
    tail = (tail + s).slice(-8000)
    if (o.keepLog) all += s
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const exitFns: ((how: string) => void)[] = []
  let stopping = false
  const s: Sprig = {
    pid: child.pid ?? 0,
    port,
    mqttPort,
    httpPort,
    exit: null,
    tail: () => tail,
    log: () => (o.keepLog ? all : tail),
    rss: () => rssOf(child.pid ?? 0),
    onExit: (fn) => void exitFns.push(fn),
    async stop() {
      stopping = true
      if (s.exit === null) {
        const gone = new Promise<void>((r) => child.once('exit', () => r()))
        child.kill('SIGTERM')
        const t = setTimeout(() => child.kill('SIGKILL'), 5000)
        await gone
        clearTimeout(t)
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
  child.on('exit', (code, sig) => {
    s.exit = sig ? `killed by ${sig}` : `exited with code ${code}`
    if (!stopping) for (const fn of exitFns) fn(s.exit)
  })
  try {
    for (const p of [port, mqttPort, httpPort]) await waitForPort(p, 15_000)
  } catch (e) {
    child.kill('SIGKILL')
    throw new Error(`sprig did not start: ${(e as Error).message}\n${tail}`)
  }
  return s
}

function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}
