// The store's benchmark row: MQTT QoS 1 telemetry from many devices into sprig with the store
// on (sync 1s and always) and off, into nats-server's MQTT (QoS 1 state in JetStream's file
// store) and into mosquitto with persistence on. Rate, write amplification from /proc/PID/io
// (write_bytes: what reached the block layer; wchar: what was passed to write()), and sprig's
// start-up time with 1,000,000 spooled 1 KiB messages on disk.
//
//   npm run bundle && bun test/bench/store.ts [--quick]
//
// sprig's uplink points at a closed port with buffer_subjects ">": every message is spooled
// (the outage case the store is for).

import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync, openSync, writeSync, closeSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { closeMqtt, connectMqtt, publishQos1 } from './mqtt-conn.ts'
import { freePort, HOST, launch, stop, waitReady, which } from './proc.ts'
type Proc = ReturnType<typeof launch>
import { encodeMsg, segmentHeader } from '../../src/store/record.ts'
import { newMsg } from '../../src/msg.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const quick = process.argv.includes('--quick')
const DEVICES = 20
const WINDOW = 10
const PAYLOAD = 256
const COUNT = quick ? 20_000 : 100_000
const TMP = mkdtempSync(path.join(process.env.STORE_BENCH_DIR || os.tmpdir(), 'sprig-store-bench-'))
process.on('exit', () => rmSync(TMP, { recursive: true, force: true }))

function io(pid: number): { write_bytes: number; wchar: number } {
  const t = readFileSync(`/proc/${pid}/io`, 'utf8')
  const f = (k: string): number => Number(new RegExp(`^${k}: (\\d+)`, 'm').exec(t)?.[1] ?? NaN)
  return { write_bytes: f('write_bytes'), wchar: f('wchar') }
}

interface Server {
  name: string
  start(dir: string, port: number): Promise<Proc>
}

function sprig(name: string, store: Record<string, unknown> | null): Server {
  return {
    name,
    async start(dir, port) {
      const conf = path.join(dir, 'sprig.json')
      const natsPort = await freePort()
      writeFileSync(
        conf,
        JSON.stringify({
          host: HOST,
          port: natsPort,
          mqtt: { port },
          ...(store ? { store: { dir: path.join(dir, 'store'), max_bytes: '8GB', ...store } } : {}),
          leafnodes: { remotes: [{ url: `nats://${HOST}:1`, buffer_subjects: ['>'], buffer_max_bytes: '4GB', buffer_max_msgs: 10_000_000 }] },
        }),
      )
      const p = launch([process.env.SPRIG_RUNTIME || 'node', path.join(ROOT, 'dist/sprig.js'), '-c', conf], ROOT)
      await waitReady(p, port, 'mqtt')
      return p
    },
  }
}

const natsServer: Server = {
  name: 'nats-server (MQTT, JetStream file store)',
  async start(dir, port) {
    const conf = path.join(dir, 'nats.conf')
    writeFileSync(conf, `server_name: bench\nlisten: ${HOST}:${await freePort()}\njetstream { store_dir: "${dir}/js" }\nmqtt { listen: ${HOST}:${port} }\n`)
    const p = launch([which('nats-server'), '-c', conf], ROOT)
    await waitReady(p, port, 'mqtt')
    return p
  },
}

const mosquitto: Server = {
  name: 'mosquitto (persistence true)',
  async start(dir, port) {
    const conf = path.join(dir, 'mosquitto.conf')
    writeFileSync(conf, `listener ${port} ${HOST}\nallow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\npersistence true\npersistence_location ${dir}/\nlog_dest stderr\nlog_type error\n`)
    const p = launch([which('mosquitto'), '-c', conf], ROOT)
    await waitReady(p, port, 'mqtt')
    return p
  },
}

interface Row {
  rate: number
  wb: number
  wc: number
}

async function load(s: Server): Promise<Row> {
  const dir = mkdtempSync(path.join(TMP, 'run-'))
  const port = await freePort()
  const p = await s.start(dir, port)
  try {
    const conns = await Promise.all(Array.from({ length: DEVICES }, (_, i) => connectMqtt({ host: HOST, port }, 5000, `dev${i}`)))
    const before = io(p.pid)
    const per = Math.floor(COUNT / DEVICES)
    const t0 = performance.now()
    await Promise.all(
      conns.map((c, i) =>
        publishQos1(c, { topic: `telemetry/dev${i}`, payload: PAYLOAD, count: per, batch: 1, maxAhead: 1, window: WINDOW, maxLag: Infinity, received: () => 0, watch: [], timeoutMs: 30_000 }),
      ),
    )
    const secs = (performance.now() - t0) / 1000
    await new Promise((r) => setTimeout(r, 1200)) // one more interval: its fsync counts
    const after = io(p.pid)
    for (const c of conns) closeMqtt(c)
    const n = per * DEVICES
    const bytes = n * PAYLOAD
    const wb = (after.write_bytes - before.write_bytes) / bytes
    const wc = (after.wchar - before.wchar) / bytes
    return { rate: n / secs, wb, wc }
  } finally {
    await stop(p)
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Writes `n` spooled 1 KiB messages as segment files, then times sprig from spawn to MQTT ready. */
async function startup(n: number): Promise<string> {
  const dir = mkdtempSync(path.join(TMP, 'startup-'))
  const spool = path.join(dir, 'store', 'uplink', 'remote-1')
  mkdirSync(spool, { recursive: true })
  writeFileSync(path.join(dir, 'store', 'sprig-store.json'), '{"format":1}\n')
  const m = newMsg()
  m.subject = 'telemetry.dev.temp'
  m.subjectBytes = new TextEncoder().encode(m.subject)
  m.payload = new Uint8Array(1024).fill(65)
  const perSeg = Math.floor((8 * 1024 * 1024 - 8) / encodeMsg(m, 1).length)
  for (let first = 1; first <= n; first += perSeg) {
    const fd = openSync(path.join(spool, `${first.toString(16).padStart(16, '0')}.seg`), 'w')
    const recs: Uint8Array[] = [segmentHeader()]
    for (let s = first; s < first + perSeg && s <= n; s++) recs.push(encodeMsg(m, s))
    writeSync(fd, Buffer.concat(recs))
    closeSync(fd)
  }
  const port = await freePort()
  const t0 = performance.now()
  const p = await sprig('', { sync_interval: '1s' }).start(dir, port)
  const ms = performance.now() - t0
  await stop(p)
  rmSync(dir, { recursive: true, force: true })
  const ok = ms < STARTUP_TARGET_MS
  if (!ok) failed = true
  return `start-up with ${n.toLocaleString('en')} spooled 1 KiB messages: MQTT ready ${Math.round(ms)} ms after spawn (target < ${STARTUP_TARGET_MS} ms: ${ok ? 'met' : 'NOT MET'})`
}

/** The start-up target: listening in under 2 s with 1,000,000 spooled 1 KiB messages. */
const STARTUP_TARGET_MS = 2000
/** Set when a target is missed: the bench exits 1. */
let failed = false

const servers = [sprig('sprig, no store (memory buffer)', null), sprig('sprig, store sync 1s', { sync_interval: '1s' }), sprig('sprig, store sync always', { sync_interval: 'always' }), natsServer, mosquitto]
console.log(`MQTT QoS 1: ${DEVICES} devices, ${WINDOW} unacked each, ${COUNT.toLocaleString('en')} msgs of ${PAYLOAD} B; ${TMP} (${os.cpus().length} cores)\n`)
console.log('| server | msgs/s | write amplification (write_bytes) | (wchar) |')
console.log('|---|---|---|---|')
const rows = new Map<Server, Row>()
for (const s of servers) {
  try {
    const r = await load(s)
    rows.set(s, r)
    console.log(`| ${s.name} | ${Math.round(r.rate).toLocaleString('en')} | ${r.wb.toFixed(2)} | ${r.wc.toFixed(2)} |`)
  } catch (e) {
    console.log(`| ${s.name} | failed: ${(e as Error).message.split('\n')[0]} | | |`)
  }
}
console.log('')
// The targets, from this run's rows.
const [mem, s1, always, nats] = [rows.get(servers[0]!), rows.get(servers[1]!), rows.get(servers[2]!), rows.get(servers[3]!)]
const target = (what: string, v: number | undefined, ok: (v: number) => boolean, goal: string): void => {
  if (v === undefined) return void console.log(`${what}: not measured`)
  const met = ok(v)
  if (!met) failed = true
  console.log(`${what}: ${v.toFixed(2)} (target ${goal}: ${met ? 'met' : 'NOT MET'})`)
}
target('sync 1s / nats-server', s1 && nats ? s1.rate / nats.rate : undefined, (v) => v >= 2, '>= 2')
target('sync 1s / sprig in memory', s1 && mem ? s1.rate / mem.rate : undefined, (v) => v >= 0.7, '>= 0.7')
target('write amplification, sync 1s', s1?.wb, (v) => v <= 1.3, '<= 1.3')
target('write amplification, sync always', always?.wb, (v) => v <= 1.3, '<= 1.3')
console.log('')
console.log(await startup(quick ? 100_000 : 1_000_000))
process.exit(failed ? 1 : 0)
