// The store rows (`--only store` in bench.ts, or test/bench/store.ts alone): MQTT QoS 1
// telemetry from many devices into sprig with the store on (sync 1s and always) and off, into
// nats-server's MQTT (QoS 1 state in JetStream's file store) and into mosquitto with
// persistence on. Per row: rate, broker CPU seconds per 1M messages (/proc/PID/stat), the load
// generator's CPU, write amplification from /proc/PID/io (write_bytes: what reached the block
// layer; wchar: what was passed to write()); then sprig's start-up time with 1,000,000
// spooled 1 KiB messages on disk.
//
// sprig's uplink points at a closed port with buffer_subjects ">": every message is spooled
// (the outage case the store is for). Without a store that spool is the in-memory buffer.

import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { closeMqtt, connectMqtt, publishQos1 } from './mqtt-conn.ts'
import { firstLine, freePort, HOST, launch, machineBusySeconds, procCpuSeconds, procStatusBytes, sleep, stop, waitReady, which, progress } from './proc.ts'
import type { ServerProcess } from './model.ts'
import { encodeMsg, segmentHeader } from '../../src/store/record.ts'
import { newMsg } from '../../src/msg.ts'

export const STORE_IDS = ['store']

export interface StoreBenchOpts {
  quick: boolean
  rounds: number
  /** sprig under each runtime: `<runtime> dist/sprig.js`; the config is added here. */
  sprigs: { name: string; cmd: string[]; version: string }[]
  tmp: string
  root: string
  /** Time start-up with 1,000,000 spooled messages (100,000 with quick) under the first sprig. */
  startup: boolean
  /** Skip the reference servers (profiling sprig alone). */
  noRefs?: boolean
}

/** `--only store` (or `storage`, `store-…`). */
export function storeSelected(only: string[]): boolean {
  return only.some((o) => o.startsWith('store'))
}

/**
 * The load: DEVICES publishers, each keeping up to WINDOW QoS 1 PUBLISHes unacknowledged and
 * refilling REFILL freed slots in one write. Batches of that size keep the load generator
 * (one single-threaded process) under the brokers: with an eager refill of a window of 10 the
 * exchange degenerates into a write per message on both sides and measures syscalls.
 */
const DEVICES = 20
/** env STORE_BENCH_WINDOW / STORE_BENCH_REFILL: another load (10 and 1: MQTT.js-like, eager). */
const WINDOW = Number(process.env.STORE_BENCH_WINDOW) || 64
const REFILL = Number(process.env.STORE_BENCH_REFILL) || 32
const PAYLOAD = 256
/** The issue's start-up target: listening in under 2 s with 1,000,000 spooled 1 KiB messages. */
const STARTUP_TARGET_MS = 2000
const OTHER_CPU_WARN = 25

export interface StoreRow {
  server: string
  round: number
  rate: number
  /** Broker CPU s per 1M messages (from /proc/PID/stat). */
  cpu: number
  /** Load generator (this process) CPU s per 1M messages, and its share of one core. */
  gen: number
  genPct: number
  /** Broker's share of one core. */
  cpuPct: number
  /** Other processes' CPU during the run, % of one core. */
  other: number
  wb: number
  wc: number
  /** Peak RSS (VmHWM), MiB. */
  peak: number
  error?: string
}

interface Server {
  name: string
  /** sprig's rows, for the targets: null for the references. */
  sync: 'memory' | '1s' | 'always' | null
  runtime: string
  describe: string
  start(dir: string, port: number): Promise<ServerProcess>
}

function io(pid: number): { write_bytes: number; wchar: number } {
  const t = readFileSync(`/proc/${pid}/io`, 'utf8')
  const f = (k: string): number => Number(new RegExp(`^${k}: (\\d+)`, 'm').exec(t)?.[1] ?? NaN)
  return { write_bytes: f('write_bytes'), wchar: f('wchar') }
}

function sprigConf(dir: string, port: number, natsPort: number, store: Record<string, unknown> | null): string {
  const conf = path.join(dir, 'sprig.json')
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
  return conf
}

function sprig(name: string, cmd: string[], sync: 'memory' | '1s' | 'always', o: StoreBenchOpts): Server {
  const store = sync === 'memory' ? null : { sync_interval: sync }
  return {
    name: `${name} ${sync === 'memory' ? 'no store (memory buffer)' : `store sync ${sync}`}`,
    sync,
    runtime: name,
    describe: `${cmd.join(' ')} -c <mqtt.port; ${store ? `store { sync_interval: ${sync}, max_bytes: 8GB }; ` : ''}uplink to a closed port, buffer_subjects ">">`,
    async start(dir, port) {
      const p = launch([...cmd, '-c', sprigConf(dir, port, await freePort(), store)], o.root)
      await waitReady(p, port, 'mqtt')
      return p
    },
  }
}

function references(): { list: Server[]; notes: string[] } {
  const list: Server[] = []
  const notes: string[] = []
  const nats = which('nats-server')
  if (nats) {
    list.push({
      name: 'nats-server (MQTT, JetStream file store)',
      sync: null,
      runtime: '',
      describe: `${nats} [${firstLine(nats, ['--version'])}] -c <jetstream { store_dir }; mqtt { listen }>`,
      async start(dir, port) {
        const conf = path.join(dir, 'nats.conf')
        writeFileSync(conf, `server_name: bench\nlisten: ${HOST}:${await freePort()}\njetstream { store_dir: "${dir}/js" }\nmqtt { listen: ${HOST}:${port} }\n`)
        const p = launch([nats, '-c', conf], dir)
        await waitReady(p, port, 'mqtt')
        return p
      },
    })
  } else notes.push('nats-server not on PATH: no nats-server row')
  const mosq = which('mosquitto')
  if (mosq) {
    list.push({
      name: 'mosquitto (persistence true)',
      sync: null,
      runtime: '',
      describe: `${mosq} [${firstLine(mosq, ['-h'])}] -c <persistence true; max_inflight_messages 0; max_queued_messages 0>`,
      async start(dir, port) {
        const conf = path.join(dir, 'mosquitto.conf')
        writeFileSync(conf, `listener ${port} ${HOST}\nallow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\npersistence true\npersistence_location ${dir}/\nlog_dest stderr\nlog_type error\n`)
        const p = launch([mosq, '-c', conf], dir)
        await waitReady(p, port, 'mqtt')
        return p
      },
    })
  } else notes.push('mosquitto not found: no mosquitto row')
  return { list, notes }
}

async function load(s: Server, o: StoreBenchOpts, round: number): Promise<StoreRow> {
  const count = o.quick ? 20_000 : 200_000
  const dir = mkdtempSync(path.join(o.tmp, 'store-run-'))
  const port = await freePort()
  const row: StoreRow = { server: s.name, round, rate: NaN, cpu: NaN, gen: NaN, genPct: NaN, cpuPct: NaN, other: NaN, wb: NaN, wc: NaN, peak: NaN }
  let p: ServerProcess | null = null
  try {
    p = await s.start(dir, port)
    const conns = await Promise.all(Array.from({ length: DEVICES }, (_, i) => connectMqtt({ host: HOST, port }, 5000, `dev${i}`)))
    const before = io(p.pid)
    const per = Math.floor(count / DEVICES)
    const cpu0 = procCpuSeconds(p.pid)
    const gen0 = process.cpuUsage()
    const busy0 = machineBusySeconds()
    const t0 = performance.now()
    await Promise.all(
      conns.map((c, i) =>
        publishQos1(c, { topic: `telemetry/dev${i}`, payload: PAYLOAD, count: per, batch: 1, maxAhead: 1, window: WINDOW, refill: REFILL, maxLag: Infinity, received: () => 0, watch: [], timeoutMs: 30_000 }),
      ),
    )
    const secs = (performance.now() - t0) / 1000
    const cpu = procCpuSeconds(p.pid) - cpu0
    const g = process.cpuUsage(gen0)
    const gen = (g.user + g.system) / 1e6
    row.other = Math.max(0, ((machineBusySeconds() - busy0 - cpu - gen) / secs) * 100)
    await sleep(1200) // one more interval: its fsync counts
    const after = io(p.pid)
    row.peak = procStatusBytes(p.pid, 'VmHWM') / 2 ** 20
    for (const c of conns) closeMqtt(c)
    const n = per * DEVICES
    Object.assign(row, {
      rate: n / secs,
      cpu: (cpu * 1e6) / n,
      cpuPct: (cpu / secs) * 100,
      gen: (gen * 1e6) / n,
      genPct: (gen / secs) * 100,
      wb: (after.write_bytes - before.write_bytes) / (n * PAYLOAD),
      wc: (after.wchar - before.wchar) / (n * PAYLOAD),
    })
  } catch (e) {
    row.error = (e as Error).message.split('\n')[0]
  } finally {
    if (p) await stop(p)
    rmSync(dir, { recursive: true, force: true })
  }
  progress(`[round ${round}] ${s.name}: ${row.error ? `FAILED: ${row.error}` : `${Math.round(row.rate)} msgs/s, ${row.cpu.toFixed(1)} CPU s/1M (${row.cpuPct.toFixed(0)}%), load gen ${row.genPct.toFixed(0)}%, other ${row.other.toFixed(0)}%`}`)
  return row
}

/** Writes `n` spooled 1 KiB messages as segment files, then times sprig from spawn to MQTT ready. */
async function startup(cmd: string[], n: number, o: StoreBenchOpts): Promise<{ ms: number; ok: boolean }> {
  const dir = mkdtempSync(path.join(o.tmp, 'store-startup-'))
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
  const p = launch([...cmd, '-c', sprigConf(dir, port, await freePort(), { sync_interval: '1s' })], o.root)
  try {
    await waitReady(p, port, 'mqtt')
    const ms = performance.now() - t0
    return { ms, ok: ms < STARTUP_TARGET_MS }
  } finally {
    await stop(p)
    rmSync(dir, { recursive: true, force: true })
  }
}

function median(xs: number[]): number {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b)
  const h = v.length >> 1
  return v.length === 0 ? NaN : v.length % 2 ? v[h]! : (v[h - 1]! + v[h]!) / 2
}


const fmt = (n: number, d = 0): string => (Number.isFinite(n) ? n.toLocaleString('en', { minimumFractionDigits: d, maximumFractionDigits: d }) : '-')

/** Runs the store rows, prints the table and the targets; `failed` counts errors and targets missed. */
export async function runStoreBench(o: StoreBenchOpts): Promise<{ results: StoreRow[]; failed: number }> {
  const { list: refs, notes } = o.noRefs ? { list: [], notes: [] } : references()
  const servers: Server[] = []
  for (const s of o.sprigs) for (const sync of ['memory', '1s', 'always'] as const) servers.push(sprig(s.name, s.cmd, sync, o))
  servers.push(...refs)
  const count = o.quick ? 20_000 : 200_000
  console.log(
    [
      '',
      `store rows: MQTT 3.1.1 QoS 1, ${DEVICES} devices, each up to ${WINDOW} unacknowledged, refilled ${REFILL} at a time; ${fmt(count)} msgs of ${PAYLOAD} B per row; ${o.rounds} round(s), median; data in ${o.tmp}`,
      ...servers.map((s) => `           ${s.name} = ${s.describe}`),
      ...notes.map((n) => `note:      ${n}`),
      '',
    ].join('\n'),
  )
  const raw: StoreRow[] = []
  for (let round = 1; round <= o.rounds; round++) {
    const order = servers.map((_, i) => servers[(i + round - 1) % servers.length]!)
    for (const s of order) raw.push(await load(s, o, round))
  }
  let failed = raw.filter((r) => r.error).length
  const med = new Map<Server, StoreRow>()
  console.log('| server | msgs/s (min-max) | broker CPU s/1M | broker % of a core | load gen CPU s/1M (% of a core) | other CPU % | peak RSS MiB | write amplification (write_bytes) | (wchar) |')
  console.log('|---|---|---|---|---|---|---|---|---|')
  for (const s of servers) {
    const rs = raw.filter((r) => r.server === s.name && !r.error)
    if (!rs.length) {
      console.log(`| ${s.name} | failed: ${raw.find((r) => r.server === s.name)?.error ?? '?'} | | | | | | | |`)
      continue
    }
    const m = (k: keyof StoreRow): number => median(rs.map((r) => r[k] as number))
    const row: StoreRow = { server: s.name, round: 0, rate: m('rate'), cpu: m('cpu'), cpuPct: m('cpuPct'), gen: m('gen'), genPct: m('genPct'), other: m('other'), wb: m('wb'), wc: m('wc'), peak: m('peak') }
    med.set(s, row)
    const rates = rs.map((r) => r.rate)
    const range = rs.length > 1 ? ` (${fmt(Math.min(...rates))}-${fmt(Math.max(...rates))})` : ''
    console.log(`| ${s.name} | ${fmt(row.rate)}${range} | ${fmt(row.cpu, 1)} | ${fmt(row.cpuPct)} | ${fmt(row.gen, 1)} (${fmt(row.genPct)}%) | ${fmt(row.other)} | ${fmt(row.peak)} | ${s.sync === 'memory' ? '-' : fmt(row.wb, 2)} | ${s.sync === 'memory' ? '-' : fmt(row.wc, 2)} |`)
  }
  console.log(`(${os.cpus().length} cores; brokers and load generator share them)`)
  const busy = raw.filter((r) => r.other > OTHER_CPU_WARN)
  if (busy.length) console.log(`warning: ${busy.length} of ${raw.length} store run(s) shared the machine with other load (> ${OTHER_CPU_WARN}% of a core, up to ${fmt(Math.max(...busy.map((r) => r.other)))}%): rates are unreliable, CPU s/1M less so`)
  console.log('')
  // The issue's targets, per sprig runtime, from this run's rows.
  const nats = med.get(refs.find((r) => r.name.startsWith('nats-server'))!)
  const target = (what: string, v: number | undefined, ok: (v: number) => boolean, goal: string): void => {
    if (v === undefined || !Number.isFinite(v)) return void console.log(`${what}: not measured`)
    const met = ok(v)
    if (!met) failed++
    console.log(`${what}: ${v.toFixed(2)} (target ${goal}: ${met ? 'met' : 'NOT MET'})`)
  }
  for (const sp of o.sprigs) {
    const get = (sync: string): StoreRow | undefined => med.get(servers.find((s) => s.runtime === sp.name && s.sync === sync)!)
    const [mem, s1, always] = [get('memory'), get('1s'), get('always')]
    target(`${sp.name}: sync 1s / nats-server (rate)`, s1 && nats ? s1.rate / nats.rate : undefined, (v) => v >= 2, '>= 2')
    target(`${sp.name}: sync 1s / sprig in memory (rate)`, s1 && mem ? s1.rate / mem.rate : undefined, (v) => v >= 0.7, '>= 0.7')
    target(`${sp.name}: write amplification, sync 1s`, s1?.wb, (v) => v <= 1.3, '<= 1.3')
    target(`${sp.name}: write amplification, sync always`, always?.wb, (v) => v <= 1.3, '<= 1.3')
  }
  if (o.startup && o.sprigs.length) {
    const n = o.quick ? 100_000 : 1_000_000
    const sp = o.sprigs[0]!
    try {
      const r = await startup(sp.cmd, n, o)
      if (!r.ok) failed++
      console.log(`${sp.name}: start-up with ${fmt(n)} spooled 1 KiB messages: MQTT ready ${fmt(r.ms)} ms after spawn (target < ${STARTUP_TARGET_MS} ms: ${r.ok ? 'met' : 'NOT MET'})`)
    } catch (e) {
      failed++
      console.log(`${sp.name}: start-up with ${fmt(n)} spooled messages FAILED: ${(e as Error).message.split('\n')[0]}`)
    }
  }
  return { results: raw, failed }
}
