// systemd's notify protocol over a real AF_UNIX datagram socket (test/helpers/notify.ts) under
// every runtime and the compiled binary: READY=1 once the listeners accept, WATCHDOG=1 at
// half of WATCHDOG_USEC and none while the process cannot run, RELOADING=1 (with
// MONOTONIC_USEC) then READY=1 at SIGHUP, STOPPING=1 at SIGTERM and exit 0.

import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { freshBundle, newestSource, runtimeBin } from './helpers/bins.ts'
import { freePort, havePeer, inCI, skipOrFail } from './helpers/peers.ts'
import { notifySocket, type Datagram } from './helpers/notify.ts'
import { startBroker } from './helpers/broker.ts'
import { createLogger } from '../src/log.ts'
import { sockaddr, startSystemd } from '../targets/notify.ts'

const root = resolve(import.meta.dirname, '..')
const binary = join(root, 'dist/sprig-linux-x64')
const clean: NodeJS.ProcessEnv = { NODE_OPTIONS: '', SPRIG_NET: '' }
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

let bundle = ''
t.before(() => {
  bundle = freshBundle()
})

const variants: { name: string; cmd: () => string; args: () => string[]; abstract?: boolean; via: string }[] = [
  { name: 'node', cmd: () => process.execPath, args: () => [bundle], via: 'systemd-notify' },
  { name: 'bun', cmd: () => runtimeBin('bun'), args: () => [bundle], via: 'ffi' },
  { name: 'bun, abstract socket', cmd: () => runtimeBin('bun'), args: () => [bundle], abstract: true, via: 'ffi' },
  { name: 'deno -A', cmd: () => runtimeBin('deno'), args: () => ['run', '-A', bundle], via: 'ffi' },
  { name: 'deno without --allow-ffi', cmd: () => runtimeBin('deno'), args: () => ['run', '--allow-net', '--allow-read', '--allow-env', '--allow-sys', '--allow-run', bundle], via: 'systemd-notify' },
  { name: 'x64 binary', cmd: () => binary, args: () => [], abstract: true, via: 'ffi' },
]

const count = (got: Datagram[], line: string, from = 0, to = Infinity): number =>
  got.filter((g) => g.t >= from && g.t <= to && g.msg.split('\n').includes(line)).length

for (const v of variants) {
  t.test(v.name, async (t: Test) => {
    if (!havePeer(t, 'python3', 'python3')) return
    if (v.name === 'x64 binary' && !(existsSync(binary) && statSync(binary).mtimeMs >= newestSource())) {
      return inCI ? t.fail('dist/sprig-linux-x64 is missing or stale (npm run compile)') : t.plan(0, 'no fresh dist/sprig-linux-x64: npm run compile')
    }
    const cmd = v.cmd()
    if (!cmd) return skipOrFail(t, `${v.name}: runtime not installed`)
    const ns = await notifySocket(v.abstract)
    t.teardown(() => ns.close())
    const dir = mkdtempSync(join(tmpdir(), 'sprig-sd-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const port = await freePort()
    const conf = join(dir, 'sprig.json')
    writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port, mqtt: { enabled: false } }))
    // systemd-notify runs one process per message (20-500 ms each on a loaded machine): pings
    // every 500 ms there, every 150 ms through FFI.
    const slow = v.via === 'systemd-notify'
    const env: NodeJS.ProcessEnv = { ...process.env, ...clean, NOTIFY_SOCKET: ns.path, WATCHDOG_USEC: slow ? '1000000' : '300000' }
    delete env.WATCHDOG_PID
    const p = spawn(cmd, [...v.args(), '-c', conf], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (out += d))
    const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)))
    t.teardown(() => {
      if (p.exitCode === null) p.kill('SIGKILL')
    })

    await ns.wait('READY=1', 15_000)
    // READY=1 means the listener accepts: a connection made at once gets INFO.
    const info = await new Promise<string>((res, rej) => {
      const s = net.connect(port, '127.0.0.1')
      s.once('data', (d) => {
        s.destroy()
        res(String(d))
      })
      s.once('error', rej)
    })
    t.match(info, /^INFO /, 'the listener accepts when READY=1 arrives')
    t.match(out, new RegExp(`systemd notify via ${v.via}`), `notifications via ${v.via}`)
    t.match(ns.got.find((g) => g.msg.includes('READY=1'))!.msg, /STATUS=Ready: \d+ connections.*no uplink/, 'READY carries a STATUS line')

    // The watchdog: every 150 ms while the process runs.
    const t0 = Date.now()
    await sleep(slow ? 2000 : 1000)
    const pings = count(ns.got, 'WATCHDOG=1', t0, Date.now())
    t.ok(pings >= 2 && pings <= 10, `WATCHDOG=1 periodic: ${pings} in ${slow ? 2 : 1} s at WATCHDOG_USEC=${env.WATCHDOG_USEC}`)

    // A process that cannot run its loop sends none (systemd would restart it).
    p.kill('SIGSTOP')
    const s0 = Date.now()
    await sleep(slow ? 2500 : 1500)
    const s1 = Date.now()
    p.kill('SIGCONT')
    // A systemd-notify child started just before the stop may still deliver: a margin.
    const late = ns.got.filter((g) => g.t >= s0 && g.msg.startsWith('WATCHDOG=1')).map((g) => Math.round(g.t - s0))
    t.equal(count(ns.got, 'WATCHDOG=1', s0 + (slow ? 1000 : 500), s1), 0, `no WATCHDOG=1 while stopped (arrivals after the stop, ms: ${late.join(', ')})`)
    await ns.wait('WATCHDOG=1', 5000, ns.got.length)
    t.pass('WATCHDOG=1 again after SIGCONT')

    // Reload: RELOADING=1 with the monotonic clock, then READY=1 again.
    const from = ns.got.length
    p.kill('SIGHUP')
    const rl = await ns.wait('RELOADING=1', 5000, from)
    const mono = /MONOTONIC_USEC=(\d+)/.exec(rl.msg)
    if (v.via === 'ffi' || v.name === 'node') {
      t.ok(mono, 'RELOADING=1 carries MONOTONIC_USEC')
      const us = Number(mono?.[1])
      t.ok(us <= rl.mono && rl.mono - us < 5_000_000, `MONOTONIC_USEC is CLOCK_MONOTONIC (${us} vs ${rl.mono} at arrival)`)
    }
    const again = await ns.wait('READY=1', 5000, from)
    t.ok(ns.got.indexOf(again) > ns.got.indexOf(rl), 'READY=1 follows RELOADING=1')

    p.kill('SIGTERM')
    await ns.wait('STOPPING=1', 5000)
    t.equal(await exited, 0, 'exit 0')
  })
}

t.test('in process: a blocked event loop sends no WATCHDOG=1', async (t) => {
  if (!havePeer(t, 'python3', 'python3')) return
  const ns = await notifySocket()
  t.teardown(() => ns.close())
  const b = await startBroker()
  t.teardown(() => b.stop())
  // Node: systemd-notify from a worker thread (pings every 500 ms).
  const sd = await startSystemd(b.srv, null, { NOTIFY_SOCKET: ns.path, WATCHDOG_USEC: '1000000', WATCHDOG_PID: String(process.pid) }, b.srv.log)
  t.ok(sd, 'notifier started')
  t.teardown(() => sd?.stopping())
  await ns.wait('READY=1')
  await sleep(1600)
  t.ok(count(ns.got, 'WATCHDOG=1') >= 2, 'pings before the block')
  const s0 = Date.now()
  while (Date.now() < s0 + 2500) {
    // block the loop, as a runaway computation would
  }
  const s1 = Date.now()
  await sleep(300)
  const late = ns.got.filter((g) => g.t >= s0 && g.msg.startsWith('WATCHDOG=1')).map((g) => Math.round(g.t - s0))
  t.equal(count(ns.got, 'WATCHDOG=1', s0 + 1000, s1), 0, `none while the loop was blocked (arrivals after it began, ms: ${late.join(', ')})`)
  await ns.wait('WATCHDOG=1', 3000, ns.got.length)
  t.pass('pings resume')
})

t.test('WATCHDOG_PID naming another process: no pings', async (t) => {
  if (!havePeer(t, 'python3', 'python3')) return
  const ns = await notifySocket()
  t.teardown(() => ns.close())
  const b = await startBroker()
  t.teardown(() => b.stop())
  const logs: string[] = []
  const log = createLogger({ level: 'debug', time: false, sink: (l) => logs.push(l) })
  const sd = await startSystemd(b.srv, null, { NOTIFY_SOCKET: ns.path, WATCHDOG_USEC: '100000', WATCHDOG_PID: '1' }, log)
  t.teardown(() => sd?.stopping())
  await ns.wait('READY=1')
  await sleep(500)
  t.equal(count(ns.got, 'WATCHDOG=1'), 0)
})

t.test('NOTIFY_SOCKET addresses', async (t) => {
  t.equal(sockaddr('/run/systemd/notify')!.len, 2 + 19 + 1, 'a path is NUL-terminated')
  t.equal(sockaddr('@abc')!.len, 2 + 4, 'abstract: leading NUL, no terminator')
  t.equal(sockaddr('@abc')!.addr[2], 0)
  t.equal(sockaddr('vsock:2:1234'), null, 'vsock is not supported')
  t.equal(sockaddr('/' + 'x'.repeat(200)), null, 'too long for sun_path')
  const logs: string[] = []
  const log = createLogger({ level: 'info', time: false, sink: (l) => logs.push(l) })
  const b = await startBroker()
  t.teardown(() => b.stop())
  t.equal(await startSystemd(b.srv, null, {}, log), null, 'no NOTIFY_SOCKET: nothing')
  t.equal(await startSystemd(b.srv, null, { NOTIFY_SOCKET: 'vsock:2:1' }, log), null)
  t.match(logs.join('\n'), /not a unix socket path/)
})
