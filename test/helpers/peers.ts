// Real peers (nats-server, mosquitto, qemu ...) come from Debian packages. Without them a
// test skips and names the package to install; in CI (CI=true, set by .ci/run) a missing
// peer is a failure, so no peer test can silently skip there.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { readFileSync } from 'node:fs'

export const inCI = process.env.CI === 'true' || process.env.CI === '1'

export function which(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : null
}

/** The part of a tap Test this needs: plan(0, why) marks the test skipped, with the reason. */
interface T {
  fail(msg: string): unknown
  plan(n: number, comment?: string): unknown
}

/** True when `cmd` is here; otherwise fails (CI) or skips, naming the Debian package. */
export function havePeer(t: T, cmd: string, pkg: string): boolean {
  if (which(cmd)) return true
  const msg = `${cmd} not found: install the Debian package ${pkg} (apt-get install -y ${pkg})`
  skipOrFail(t, msg)
  return false
}

/** A missing peer: a failure in CI, a skip that says what to install elsewhere. */
export function skipOrFail(t: T, msg: string): void {
  if (inCI) t.fail(msg)
  else t.plan(0, msg)
}

/**
 * A port nothing listens on, below the kernel's ephemeral range: a test that restarts a server
 * on the same port (kill loops) must not find it taken by some other test's outgoing
 * connection, which takes its local port from that range.
 */
export async function freePort(): Promise<number> {
  const low = ephemeralLow()
  if (low > 12_000) {
    for (let i = 0; i < 50; i++) {
      const p = 10_000 + Math.floor(Math.random() * (low - 10_000))
      if ((await listenOn(p)) === p) return p
    }
  }
  return listenOn(0)
}

function ephemeralLow(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 0
  } catch {
    return 0 // not Linux: the kernel's pick
  }
}

/** Listens on `port` (0: any) and closes again; the port it got, or -1 when it was taken. */
function listenOn(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', (e: NodeJS.ErrnoException) => (port !== 0 && e.code === 'EADDRINUSE' ? resolve(-1) : reject(e)))
    s.listen(port, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
}

/**
 * Resolves once something accepts TCP connections on the port. 20 s: a loaded 2-core CI
 * machine has been seen to take over 10 s to start a Node process.
 */
export async function waitForPort(port: number, ms = 20_000): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        r(true)
      })
      s.once('error', () => r(false))
    })
    if (ok) return
    if (Date.now() > end) throw new Error(`nothing listening on port ${port} after ${ms} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

export interface Proc {
  readonly proc: ChildProcess
  readonly port: number
  output(): string
  stop(): Promise<void>
}

/**
 * Waits up to `ms` for `what` (a RegExp, or a string taken literally) in a server's output from
 * offset `from` on; the match, or null.
 */
export async function waitOutput(p: Proc, what: RegExp | string, from = 0, ms = 5000): Promise<RegExpExecArray | null> {
  const re = typeof what === 'string' ? new RegExp(what.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : what
  const end = Date.now() + ms
  for (;;) {
    const m = re.exec(p.output().slice(from))
    if (m !== null || Date.now() >= end) return m
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Spawns a server process that listens on `port`, and waits until it accepts. */
export async function spawnServer(cmd: string, args: string[], port: number, env?: NodeJS.ProcessEnv): Promise<Proc> {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  let out = ''
  proc.stdout!.on('data', (d) => (out += d))
  proc.stderr!.on('data', (d) => (out += d))
  const exited = new Promise<void>((r) => proc.once('exit', () => r()))
  try {
    await Promise.race([
      waitForPort(port),
      exited.then(() => {
        throw new Error(`${cmd} exited early: ${out}`)
      }),
    ])
  } catch (e) {
    proc.kill('SIGKILL')
    throw e
  }
  return {
    proc,
    port,
    output: () => out,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return
      proc.kill('SIGTERM')
      const t = setTimeout(() => proc.kill('SIGKILL'), 3000)
      await exited
      clearTimeout(t)
    },
  }
}

/** A reference nats-server on a free loopback port. */
export async function startNatsServer(extra: string[] = []): Promise<Proc> {
  const port = await freePort()
  return spawnServer('nats-server', ['-a', '127.0.0.1', '-p', String(port), ...extra], port)
}

/** One nats-server build the leaf suites can run against. */
export interface NatsServerBin {
  readonly bin: string
  /** e.g. "2.9.10" */
  readonly version: string
}

/** Where .ci/run (and `bash .ci/fetch-nats-server DIR`) puts a current build. */
export const CURRENT_NATS_SERVER_DIR = 'node_modules/.cache/nats-server-current'

let natsBins: NatsServerBin[] | null = null

/**
 * Every nats-server available here, oldest first, one per version: the one on PATH (Debian's
 * 2.9), the current one fetched into CURRENT_NATS_SERVER_DIR, and any listed in
 * SPRIG_NATS_SERVERS (colon-separated paths). NATS_SERVER_BIN (as in hub.ts) means that one
 * build only. Suites that loop over versions use this; empty when there is none.
 */
export function natsServerBins(): NatsServerBin[] {
  if (natsBins) return natsBins
  const root = new URL('../..', import.meta.url).pathname
  const only = process.env.NATS_SERVER_BIN
  const candidates = only
    ? [only]
    : [which('nats-server'), `${root}${CURRENT_NATS_SERVER_DIR}/nats-server`, ...(process.env.SPRIG_NATS_SERVERS ?? '').split(':')]
  const seen = new Map<string, NatsServerBin>()
  for (const bin of candidates) {
    if (!bin) continue
    const r = spawnSync(bin, ['--version'], { encoding: 'utf8' })
    const m = /v?(\d+\.\d+\.\d+)/.exec(r.stdout ?? '')
    if (r.status === 0 && m && !seen.has(m[1]!)) seen.set(m[1]!, { bin, version: m[1]! })
  }
  natsBins = [...seen.values()].sort((a, b) => compareVersions(a.version, b.version))
  return natsBins
}

/** <0, 0, >0 as version a is older, the same, newer than b ("2.10.27" vs "2.9.10"). */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number)
  const pb = b.split('.').map(Number)
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) - (pb[i] ?? 0)
  return 0
}

/** A process's file-backed RSS (RssFile of /proc/PID/status), in MiB. */
export const rssFileMiB = (pid: number): number => Number(/RssFile:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024
