// The log goes to stderr; when whoever read it goes away (a closed pipe: `sprig | head`, a log
// collector restarted), writes fail with EPIPE. The broker must then drop its log lines and
// go on serving, not spin: on Node the stream's 'error' became an uncaught exception whose
// own log line failed the same way, a loop that kept an orphaned server at 15% of a core.

import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, skipOrFail } from './helpers/peers.ts'

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** CPU seconds (user + system) the process has used so far. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

/** A NATS connection that logs (at debug) and is answered: CONNECT, PING → PONG. */
function pingPong(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    let got = ''
    const done = (ok: boolean): void => {
      s.destroy()
      resolve(ok)
    }
    s.on('data', (d) => {
      got += d.toString('latin1')
      if (got.includes('PONG')) done(true)
    })
    s.on('error', () => done(false))
    s.write('CONNECT {"verbose":false}\r\nPING\r\n')
    setTimeout(() => done(false), 3000)
  })
}

for (const [name, args] of [
  ['node', [] as string[]],
  ['bun', []],
  ['deno', ['run', '-A']],
] as const) {
  t.test(`${name}: stderr closed under the broker: log lines dropped, no spinning, still serving`, async (t) => {
    const bin = runtimeBin(name)
    if (bin === '') return skipOrFail(t, `${name} is not installed (npm ci installs it: package ${name === 'bun' ? 'bun' : '@deno/linux-x64-glibc'})`)
    const bundle = freshBundle()
    const port = await freePort()
    const p = spawn(bin, [...args, bundle, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0', '-l', 'debug'], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, NODE_OPTIONS: '' },
    })
    t.teardown(() => void p.kill('SIGKILL'))
    let log = ''
    p.stderr!.on('data', (d) => (log += d))
    for (let i = 0; i < 100 && !log.includes('Server is ready'); i++) await sleep(100)
    t.ok(log.includes('Server is ready'), 'started')
    p.stderr!.destroy() // the reader goes away: every later write to stderr fails (EPIPE)
    // Each connection logs at debug level: the first writes into the closed pipe.
    for (let i = 0; i < 5; i++) t.ok(await pingPong(port), `connection ${i + 1} answered after stderr closed`)
    await sleep(500)
    const before = cpuSeconds(p.pid!)
    await sleep(2000)
    const used = cpuSeconds(p.pid!) - before
    t.ok(used < 0.2, `idle for 2 s after stderr closed: ${used.toFixed(2)} CPU s (a loop logging its own EPIPE takes ~0.3 and more)`)
    t.ok(await pingPong(port), 'still serving')
    t.equal(p.exitCode, null, 'still running')
  })
}
