// Crash safety with real processes and real SIGKILLs: MQTT.js QoS 1 publishers send numbered
// telemetry through sprig (store on) to a subscriber on a real nats-server hub, while sprig is
// killed -9 at random moments and restarted, and the hub is stopped and started too. Every
// PUBACKed message must reach the hub subscriber, per publisher in order (first arrivals);
// duplicates come only from resends (counted, reported). Node (bundle), Bun and Deno.
// The remote runs with replay_order "strict", the setting for per-publisher order across an
// outage (by default new messages go ahead of a backlog: leaf-replay.test.ts).

import t, { type Test } from 'tap'
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import mqtt from 'mqtt'
import { connect } from '@nats-io/transport-node'
import { newestSource, privateBundle, runtimeBin } from './helpers/bins.ts'
import { haveHub, startHub, until } from './helpers/hub.ts'
import { freePort, skipOrFail, spawnServer, type Proc } from './helpers/peers.ts'
import { sleep } from './helpers/mqtt.ts'

const main = path.resolve(import.meta.dirname, '..', 'targets', 'main.ts')
const PUBLISHERS = 3

interface Run {
  /** binary: dist/sprig-linux-x64 from `npm run compile`, when it is newer than the sources. */
  runtime: 'node' | 'bun' | 'deno' | 'binary'
  sync: 'always' | '1s'
  kills: number
}

async function crashLoop(t: Test, run: Run): Promise<void> {
  const binary = path.resolve(import.meta.dirname, '..', 'dist', 'sprig-linux-x64')
  if (run.runtime === 'binary' && !(existsSync(binary) && statSync(binary).mtimeMs >= newestSource())) {
    return void t.comment(`skip: no ${binary} newer than the sources (npm run compile builds it)`)
  }
  const bin = run.runtime === 'binary' ? binary : runtimeBin(run.runtime)
  if (!bin) return skipOrFail(t, `${run.runtime} not found: run npm ci (it installs ${run.runtime === 'bun' ? 'bun' : '@deno/linux-x64-glibc'})`)
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-crash-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const hub = await startHub()
  t.teardown(() => hub.close())
  const port = await freePort()
  const mqttPort = await freePort()
  const conf = path.join(dir, 'sprig.json')
  writeFileSync(
    conf,
    JSON.stringify({
      host: '127.0.0.1',
      port,
      mqtt: { port: mqttPort },
      store: { dir: path.join(dir, 'store'), sync_interval: run.sync },
      leafnodes: { reconnect: '100ms', reconnect_max: '300ms', remotes: [{ urls: [hub.leafUrl], buffer_subjects: ['telemetry.>'], replay_order: 'strict' }] },
    }),
  )
  const args =
    run.runtime === 'binary'
      ? ['-c', conf]
      : run.runtime === 'node' ? [privateBundle(path.join(dir, 'sprig.js')), '-c', conf] : run.runtime === 'bun' ? [main, '-c', conf] : ['run', '-A', main, '-c', conf]
  let sprig: Proc | null = await spawnServer(bin, args, mqttPort)
  const logs: string[] = []
  const kill = async (): Promise<void> => {
    const p = sprig!
    sprig = null
    logs.push(p.output())
    const exited = new Promise<void>((r) => (p.proc.exitCode !== null || p.proc.signalCode !== null ? r() : p.proc.once('exit', () => r())))
    p.proc.kill('SIGKILL')
    await exited
  }
  t.teardown(async () => {
    if (sprig) await sprig.stop()
  })

  // The cloud: one subscriber on the hub, reconnecting by itself.
  const cloud = await connect({ servers: hub.url, reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 50 })
  t.teardown(() => cloud.close())
  const got: string[][] = Array.from({ length: PUBLISHERS }, () => [])
  cloud.subscribe('telemetry.>', {
    callback: (_e, m) => {
      const [p, n] = m.string().split(':')
      got[Number(p)]!.push(n!)
    },
  })
  await cloud.flush()

  // Publishers: one message at a time, resent (same number) until PUBACKed.
  const acked: number[][] = Array.from({ length: PUBLISHERS }, () => [])
  let running = true
  const clients: mqtt.MqttClient[] = []
  const publisher = async (p: number): Promise<void> => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, { clientId: `pub${p}`, reconnectPeriod: 50, connectTimeout: 2000, clean: true })
    c.on('error', () => {})
    clients.push(c)
    for (let n = 0; running; ) {
      if (!c.connected) {
        await sleep(20)
        continue
      }
      const ok = await Promise.race([
        c.publishAsync(`telemetry/p${p}`, `${p}:${n}`, { qos: 1 }).then(
          () => true,
          () => false,
        ),
        sleep(3000).then(() => false),
      ])
      if (ok) acked[p]!.push(n++)
    }
    c.end(true)
  }
  const pubs = Array.from({ length: PUBLISHERS }, (_, p) => publisher(p))

  // The chaos: SIGKILL sprig at random moments; every 5th round stop the hub for a while too.
  let hubStops = 0
  for (let k = 0; k < run.kills; k++) {
    await sleep(150 + Math.random() * 350)
    await kill()
    if (k % 5 === 2) {
      await hub.stop()
      hubStops++
    }
    await sleep(Math.random() * 100)
    sprig = await spawnServer(bin, args, mqttPort)
    if (k % 5 === 2) {
      await sleep(300 + Math.random() * 300) // spooling with the hub down
      await hub.restart()
    }
  }
  await sleep(500)
  running = false
  await Promise.all(pubs)
  for (const c of clients) c.end(true)

  const total = acked.reduce((n, a) => n + a.length, 0)
  const present = (p: number): Set<string> => new Set(got[p])
  await until(() => acked.every((a, p) => a.every((n) => present(p).has(String(n)))), 20_000, 'every PUBACKed message at the hub').catch(() => {})
  logs.push(sprig?.output() ?? '')
  let lost = 0
  let dups = 0
  let disorder = 0
  for (let p = 0; p < PUBLISHERS; p++) {
    const have = present(p)
    for (const n of acked[p]!) if (!have.has(String(n))) lost++
    dups += got[p]!.length - have.size
    // Per publisher in order: first arrivals only ever increase.
    let max = -1
    const seen = new Set<string>()
    for (const s of got[p]!) {
      if (seen.has(s)) continue
      seen.add(s)
      if (Number(s) < max) disorder++
      max = Math.max(max, Number(s))
    }
  }
  const all = logs.join('\n')
  if (lost > 0) {
    for (let p = 0; p < PUBLISHERS; p++) {
      const have = present(p)
      const miss = acked[p]!.filter((n) => !have.has(String(n)))
      t.comment(`publisher ${p}: acked ${acked[p]!.length}, missing ${miss.length}: ${miss.slice(0, 10).join(',')}...${miss.slice(-3).join(',')}`)
    }
    t.comment(all.slice(-6000))
  }
  t.ok(total > 20 * PUBLISHERS, `${total} messages PUBACKed across ${run.kills} kills and ${hubStops} hub stops`)
  t.equal(lost, 0, 'every PUBACKed message reached the hub subscriber')
  t.equal(disorder, 0, 'per publisher, in order')
  t.comment(`${run.runtime} sync ${run.sync}: ${total} acked, ${dups} duplicates at the hub (resent after a kill or a lost link)`)
  t.notMatch(all, /internal error|uncaught|TypeError|RangeError/i, 'no internal errors in any run')
}

const only = process.env.CRASH_ONLY
if (haveHub(t)) {
  if (only) t.test(only, (t) => crashLoop(t, { runtime: only.split(':')[0] as Run['runtime'], sync: only.split(':')[1] as Run['sync'], kills: Number(only.split(':')[2]) }))
  else t.test('bun, sync always: 20 kills -9, hub restarts; nothing acknowledged is lost', (t) => crashLoop(t, { runtime: 'bun', sync: 'always', kills: 20 }))
  if (!only) t.test('node (bundle), sync always', (t) => crashLoop(t, { runtime: 'node', sync: 'always', kills: 4 }))
  if (!only) t.test('node (bundle), sync 1s: kills -9 lose nothing either (a kill keeps the page cache)', (t) => crashLoop(t, { runtime: 'node', sync: '1s', kills: 3 }))
  if (!only) t.test('deno, sync always', (t) => crashLoop(t, { runtime: 'deno', sync: 'always', kills: 3 }))
  if (!only) t.test('compiled x64 binary, sync always', (t) => crashLoop(t, { runtime: 'binary', sync: 'always', kills: 3 }))
}
