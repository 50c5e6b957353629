// Lame duck mode (src/lameduck.ts) on a real process: `sprig --signal ldm=PID` (SIGUSR2)
// stops the listeners, nats.js clients get INFO ldm and reconnect to a second sprig when
// closed, an MQTT 5 client gets DISCONNECT 0x8B, a 3.1.1 one is closed, the uplink-less
// broker exits 0. Also --signal's errors, SIGUSR1 log reopen, and the config checks.

import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from '@nats-io/transport-node'
import mqtt from 'mqtt'
import { freshBundle } from './helpers/bins.ts'
import { freePort, waitForPort } from './helpers/peers.ts'
import { haveHub, startHub } from './helpers/hub.ts'
import { sleep } from './helpers/mqtt.ts'
import { isSprigCmdline } from '../targets/signals.ts'
import { errorOf } from './helpers/config.ts'
import { validateOptions } from '../src/config.ts'
import { startBroker } from './helpers/broker.ts'

let bundle = ''
t.before(() => {
  bundle = freshBundle()
})

const clean: NodeJS.ProcessEnv = { ...process.env, NODE_OPTIONS: '', SPRIG_NET: '' }

interface Sprig {
  pid: number
  port: number
  mqttPort: number
  out(): string
  exit: Promise<number | null>
  kill(): void
}

async function sprig(dir: string, name: string, extra: Record<string, unknown> = {}): Promise<Sprig> {
  const port = await freePort()
  const mqttPort = await freePort()
  const conf = join(dir, `${name}.json`)
  writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port, server_name: name, mqtt: { port: mqttPort }, ...extra }))
  const p = spawn(process.execPath, [bundle, '-c', conf], { env: clean, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  p.stdout.on('data', (d) => (out += d))
  p.stderr.on('data', (d) => (out += d))
  const exit = new Promise<number | null>((r) => p.once('exit', (code) => r(code)))
  await waitForPort(port)
  await waitForPort(mqttPort)
  return { pid: p.pid!, port, mqttPort, out: () => out, exit, kill: () => p.exitCode === null && p.kill('SIGKILL') }
}

function runSprig(args: string[]): { code: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [bundle, ...args], { env: clean, encoding: 'utf8', timeout: 10_000 })
  return { code: r.status, stderr: r.stderr }
}

t.test('lame duck: ldm to NATS, 0x8B to MQTT 5, gradual close, exit 0', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sprig-ldm-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const a = await sprig(dir, 'A', { lame_duck_duration: '3s', lame_duck_grace_period: '1s' })
  t.teardown(a.kill)
  const b = await sprig(dir, 'B')
  t.teardown(b.kill)

  const nc = await connect({ servers: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], noRandomize: true, reconnectTimeWait: 100, maxReconnectAttempts: -1 })
  t.teardown(() => nc.close())
  t.equal(nc.info?.server_name, 'A')
  const seen: string[] = []
  void (async () => {
    for await (const s of nc.status()) seen.push(s.type)
  })()
  const m5 = await mqtt.connectAsync(`mqtt://127.0.0.1:${a.mqttPort}`, { protocolVersion: 5, reconnectPeriod: 0, clientId: 'ldm-v5' })
  t.teardown(() => m5.endAsync(true))
  const m3 = await mqtt.connectAsync(`mqtt://127.0.0.1:${a.mqttPort}`, { protocolVersion: 4, reconnectPeriod: 0, clientId: 'ldm-v3' })
  t.teardown(() => m3.endAsync(true))
  let reason = -1
  m5.on('disconnect', (p) => (reason = p.reasonCode ?? 0))
  let m3closed = false
  m3.on('close', () => (m3closed = true))

  const t0 = Date.now()
  const r = runSprig(['--signal', `ldm=${a.pid}`])
  t.equal(r.code, 0, `--signal ldm=PID exits 0 ${r.stderr}`)

  // INFO ldm arrives at once; nobody is closed during the grace period.
  const until = async (cond: () => boolean, ms: number, what: string): Promise<void> => {
    const end = Date.now() + ms
    while (!cond()) {
      if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms; A said:\n${a.out()}`)
      await sleep(20)
    }
  }
  await until(() => seen.includes('ldm'), 2000, 'nats.js ldm status')
  t.pass('nats.js saw INFO ldm')
  const refused = await new Promise<boolean>((res) => {
    const s = net.connect(a.port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      res(false)
    })
    s.once('error', () => res(true))
  })
  t.ok(refused, 'the NATS listener is closed')
  t.notOk(m3closed, 'MQTT 3.1.1 client still connected in the grace period')
  t.equal(reason, -1, 'MQTT 5 client still connected in the grace period')

  await until(() => reason !== -1 && m3closed, 5000, 'MQTT clients closed')
  t.equal(reason, 0x8b, 'MQTT 5: DISCONNECT 0x8B (server shutting down)')
  t.ok(Date.now() - t0 >= 900, `the first close came after the grace period (${Date.now() - t0} ms)`)
  await until(() => seen.includes('reconnect'), 6000, 'nats.js reconnect')
  t.equal(nc.info?.server_name, 'B', 'nats.js reconnected to the second sprig')
  t.equal(await a.exit, 0, 'lame duck ends with exit 0')
  const took = Date.now() - t0
  t.ok(took < 8000, `done in ${took} ms (lame_duck_duration 3s + flush)`)
  t.match(a.out(), /Entering lame duck mode/)
  // And traffic goes on through B.
  const sub = nc.subscribe('after.ldm', { max: 1 })
  nc.publish('after.ldm', 'x')
  for await (const m of sub) t.equal(m.string(), 'x', 'pub/sub through B')
})

t.test('lame duck with an uplink: what edge clients published reaches the hub, then exit 0', async (t) => {
  if (!haveHub(t)) return
  const hub = await startHub()
  t.teardown(() => hub.close())
  const dir = mkdtempSync(join(tmpdir(), 'sprig-ldm-up-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const a = await sprig(dir, 'E', { lame_duck_duration: '2s', lame_duck_grace_period: '500ms', leafnodes: { remotes: [{ urls: [hub.leafUrl] }] } })
  t.teardown(a.kill)
  const cloud = await connect({ servers: hub.url })
  t.teardown(() => cloud.close())
  const got: string[] = []
  const sub = cloud.subscribe('edge.>')
  void (async () => {
    for await (const m of sub) got.push(m.string())
  })()
  await cloud.flush()
  const edge = await connect({ servers: `127.0.0.1:${a.port}`, reconnect: false })
  // Wait until the hub's interest reached the edge: a probe crosses.
  const end = Date.now() + 10_000
  while (!got.includes('probe')) {
    if (Date.now() > end) throw new Error(`the uplink did not come up: ${a.out()}`)
    edge.publish('edge.probe', 'probe')
    await edge.flush()
    await sleep(100)
  }
  for (let i = 0; i < 200; i++) edge.publish('edge.data', String(i))
  await edge.flush()
  process.kill(a.pid, 'SIGUSR2')
  t.equal(await a.exit, 0, 'exit 0')
  await sleep(300)
  const data = got.filter((g) => g !== 'probe')
  t.equal(data.length, 200, 'every message published before lame duck reached the hub')
  t.match(a.out(), /Entering lame duck mode[\s\S]*Server Exiting/)
})

t.test('--signal errors', async (t) => {
  const other = runSprig(['--signal', `ldm=${process.pid}`])
  t.equal(other.code, 1)
  t.match(other.stderr, new RegExp(`PID ${process.pid} is not sprig`), 'a PID that is not sprig: clear error')
  t.equal(other.stderr.trim().split('\n').length, 1, 'one line')
  const none = runSprig(['--signal', 'ldm=999999999'])
  t.match(none.stderr, /no process with PID 999999999/)
  const bad = runSprig(['--signal', 'explode=1'])
  t.match(bad.stderr, /unknown command "explode"/)
  const dir = mkdtempSync(join(tmpdir(), 'sprig-sig-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const pf = join(dir, 'x.pid')
  writeFileSync(pf, 'not a pid\n')
  t.match(runSprig(['--signal', `reload=${pf}`]).stderr, /does not hold a PID/)
  t.match(runSprig(['--signal', `reload=${join(dir, 'missing.pid')}`]).stderr, /cannot read pid file .*ENOENT/)
})

t.test('--signal reopen=PIDFILE: SIGUSR1 reopens log_file (logrotate)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sprig-log-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const log = join(dir, 'sprig.log')
  const s = await sprig(dir, 'L', { log_file: log })
  t.teardown(s.kill)
  t.match(readFileSync(log, 'utf8'), /\[INF\] Starting sprig/, 'lines go to log_file')
  t.equal(s.out(), '', 'nothing on stderr')
  renameSync(log, log + '.1')
  const pf = join(dir, 'sprig.pid')
  writeFileSync(pf, `${s.pid}\n`)
  t.equal(runSprig(['--signal', `reopen=${pf}`]).code, 0)
  const end = Date.now() + 3000
  while (!existsSync(log) && Date.now() < end) await sleep(20)
  await sleep(100)
  t.match(readFileSync(log, 'utf8'), /Reopened log file/, 'a new file after reopen')
  t.match(readFileSync(log + '.1', 'utf8'), /Trapped "SIGUSR1" signal/, 'the old file got the lines before')
  process.kill(s.pid, 'SIGTERM')
  t.equal(await s.exit, 0)
})

t.test('which processes are sprig', async (t) => {
  const c = (...a: string[]): string => a.join('\0') + '\0'
  t.ok(isSprigCmdline(c('/usr/local/bin/sprig', '--config', '/etc/sprig/sprig.json')))
  t.ok(isSprigCmdline(c('./dist/sprig-linux-x64')))
  t.ok(isSprigCmdline(c('node', '/opt/sprig/dist/sprig.js', '-c', 'x')))
  t.ok(isSprigCmdline(c('deno', 'run', '-A', 'dist/sprig.js')))
  t.ok(isSprigCmdline(c('bun', 'targets/main.ts')))
  t.notOk(isSprigCmdline(c('nats-server', '-c', 'sprig.conf')))
  t.notOk(isSprigCmdline(c('bash', '-c', 'echo sprig')))
  t.notOk(isSprigCmdline(''))
})

t.test('lame duck options', async (t) => {
  const o = validateOptions({ lame_duck_duration: '30s', lame_duck_grace_period: '5s' })
  t.equal(o.lame_duck_duration, 30_000)
  t.equal(o.lame_duck_grace_period, 5_000)
  t.equal(validateOptions({}).lame_duck_duration, 120_000, "nats-server's default: 2m")
  t.equal(validateOptions({}).lame_duck_grace_period, 10_000, "nats-server's default: 10s")
  t.match(errorOf(t, () => validateOptions({ lame_duck_duration: '5s' })), /lame_duck_grace_period \(10000ms\) must be lower than lame_duck_duration \(5000ms\)/)
  t.match(errorOf(t, () => validateOptions({ lame_duck_duration: 'soon' })), /lame_duck_duration: expected a duration/)
})

t.test('SIGHUP reload applies new lame duck timings', async (t) => {
  const b = await startBroker()
  t.teardown(() => b.stop())
  const next = { ...b.srv.opts, lame_duck_duration: 60_000, lame_duck_grace_period: 5_000 }
  const changed = b.reloaders.map((f) => f(next)).flatMap((apply) => apply())
  t.same(changed, ['lame_duck_duration: 60000ms', 'lame_duck_grace_period: 5000ms'])
  t.equal(b.srv.opts.lame_duck_duration, 60_000)
  t.equal(b.srv.opts.lame_duck_grace_period, 5_000)
})
