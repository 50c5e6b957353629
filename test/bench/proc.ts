// Server processes: free ports, readiness, /proc readings, shutdown.
import { spawn, spawnSync } from 'node:child_process'
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { closeMqtt, connectMqtt } from './mqtt-conn.ts'
import { close, connectNats } from './nats-conn.ts'
import type { Kind, ServerProcess as Proc } from './model.ts'

export const HOST = '127.0.0.1'

/** A progress line on stderr (the tables go to stdout). */
export function progress(msg: string): void {
  process.stderr.write(`  … ${msg}\n`)
}

/**
 * Carries a warm-up through a server's whole path before its measured rows (`label` names the
 * server and round): says how long it took, or why it failed, and the rows run either way.
 */
export async function warmUp(label: string, run: () => Promise<void>): Promise<void> {
  const t0 = performance.now()
  try {
    await run()
    progress(`${label}: warm-up done (${((performance.now() - t0) / 1000).toFixed(1)} s, not measured)`)
  } catch (e) {
    progress(`${label}: warm-up failed (${(e as Error).message}); the rows run anyway`)
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.on('error', reject)
    srv.listen(0, HOST, () => {
      const a = srv.address()
      const port = typeof a === 'object' && a ? a.port : 0
      srv.close(() => resolve(port))
    })
  })
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms))
}

/**
 * Absolute path of an executable found on PATH, or else in /usr/sbin or /sbin (where Debian
 * installs nats-server and mosquitto, off a normal user's PATH), or ''.
 */
export function which(name: string): string {
  for (const dir of [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin']) {
    if (!dir) continue
    const p = path.join(dir, name)
    if (isExecutable(p)) return p
  }
  return ''
}

export function isExecutable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** First line of `cmd args`, or '' if it can't run. */
export function firstLine(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10_000 })
  return `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n')[0] ?? ''
}

// Servers we started and that are still running: killed if the bench itself exits early.
const running = new Set<Proc>()
process.on('exit', () => {
  for (const p of running) p.child.kill('SIGKILL')
})
// Signals would skip 'exit' handlers; turn them into a normal exit.
process.on('SIGINT', () => process.exit(130))
process.on('SIGTERM', () => process.exit(143))

/** Starts `argv`, keeping (and draining) its output so a chatty server never blocks on a full pipe. */
/** `env`: variables to set (a value) or take away (undefined) for this process only. */
export function launch(argv: string[], cwd: string, env?: Record<string, string | undefined>): Proc {
  const child = spawn(argv[0]!, argv.slice(1), { cwd, stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env: { ...process.env, ...env } } : {}) })
  let out = ''
  let exit = ''
  const keep = (d: Buffer): void => {
    out = (out + d.toString('utf8')).slice(-4000)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const p: Proc = { child, pid: child.pid ?? 0, tail: () => out.trim(), exited: () => exit }
  running.add(p)
  child.on('error', (e) => {
    exit = `spawn failed: ${e.message}`
    running.delete(p)
  })
  child.on('exit', (code, sig) => {
    exit = `exited (${sig ?? `code ${code}`})`
    running.delete(p)
  })
  return p
}

/**
 * Waits until the server accepts a connection and completes a handshake: NATS PING/PONG (returns
 * its INFO), MQTT CONNECT/CONNACK (returns {}).
 */
export async function waitReady(p: Proc, port: number, kind: Kind, timeoutMs = 15_000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < deadline) {
    if (p.exited()) {
      const how = p.exited().startsWith('spawn') ? p.exited() : `server ${p.exited()} before it was ready`
      throw new Error(p.tail() ? `${how}:\n${p.tail()}` : how)
    }
    try {
      if (kind === 'mqtt') {
        closeMqtt(await connectMqtt({ host: HOST, port }, 2000, `sprig-bench-probe-${process.pid}`))
        return {}
      }
      const c = await connectNats({ host: HOST, port }, 2000)
      close(c)
      return c.info
    } catch (e) {
      last = (e as Error).message
    }
    await sleep(100)
  }
  throw new Error(`server not ready after ${timeoutMs} ms (${last})${p.tail() ? `:\n${p.tail()}` : ''}`)
}

/** A memory field of /proc/<pid>/status in bytes, or NaN off Linux. */
export function procStatusBytes(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon' | 'RssFile'): number {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))
    return m ? Number(m[1]) * 1024 : NaN
  } catch {
    return NaN
  }
}

// USER_HZ is 100 on every Linux we care about; asking getconf once keeps it honest.
const CLK_TCK = Number(firstLine('getconf', ['CLK_TCK'])) || 100

/** CPU seconds (user + system, all threads) the process has used so far, or NaN. */
export function procCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / CLK_TCK
  } catch {
    return NaN
  }
}

/** Busy CPU seconds of the whole machine (all cores, everything but idle and iowait), or NaN. */
export function machineBusySeconds(): number {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal (guest time is already in user)
    const busy = f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!
    return busy / CLK_TCK
  } catch {
    return NaN
  }
}

/** SIGTERM, then SIGKILL if it is still there after `graceMs`. Only ever the child we started. */
export async function stop(p: Proc, graceMs = 3000): Promise<void> {
  if (p.exited()) return
  const gone = new Promise<void>((r) => p.child.once('exit', () => r()))
  p.child.kill('SIGTERM')
  const t = setTimeout(() => p.child.kill('SIGKILL'), graceMs)
  await gone
  clearTimeout(t)
}

/** Writes a server's config file into `dir`, headed with the tool that wrote it; returns its path. */
export function confFile(dir: string, name: string, text: string, by: string): string {
  const f = path.join(dir, name)
  writeFileSync(f, `# written by sprig's ${by}\n${text}\n`)
  return f
}
