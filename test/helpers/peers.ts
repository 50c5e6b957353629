// Real peers (nats-server, mosquitto, qemu ...) come from Debian packages. Without them a
// test skips and names the package to install; in CI (CI=true, set by .ci/run) a missing
// peer is a failure, so no peer test can silently skip there.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import net from 'node:net'

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

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => resolve(p))
    })
  })
}

/** Resolves once something accepts TCP connections on the port. */
export async function waitForPort(port: number, ms = 10_000): Promise<void> {
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
