// Leaf uplink rows: edge→cloud telemetry through sprig's uplink against the same load through
// a nats-server leaf (nats-server as the spoke), each spoke dialling a fresh nats-server hub of
// its own, one pair at a time. The publisher talks raw NATS to the spoke, the subscriber raw
// NATS to the hub, so the measured path is spoke → leafnode link → hub. Last, the hub is
// restarted under a steady trickle of messages: time from the hub being up again to the first
// message reaching a subscriber on it (redial wait + handshake + interest + delivery).

import { writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import type { Metrics, MetricSpec, Scenario, ServerProcess } from './model.ts'
import { close, connectNats, msgFrameSize, publish, startCounting, subscribe, waitUntil, type NatsConn } from './nats-conn.ts'
import { freePort, HOST, launch, machineBusySeconds, procCpuSeconds, sleep, stop, waitReady, which, progress, warmUp } from './proc.ts'
import { combineRounds, cpuPerMillion, fmtCount, fmtMB, fmtRate, scenarioTable, summaryTable, type Column, type RunResult } from './report.ts'

/** A spoke to benchmark: the command before its port flags (sprig: runtime + bundle). */
export interface LeafSpoke {
  name: string
  /** The nats-server spoke that sprig is compared with. */
  reference: boolean
  /** argv for a spoke listening on `port` and dialling the hub's leafnode port `hubLeaf`. */
  argv: (port: number, hubLeaf: number) => string[]
  version: string
}

export interface LeafBenchOpts {
  quick: boolean
  rounds: number
  /** sprig spokes: `<runtime> dist/sprig.js` and friends; the port and --leaf flags are added here. */
  sprigs: { name: string; cmd: string[]; version: string }[]
  /** For temporary config files. */
  tmp: string
  root: string
  /**
   * Before the rate rows each spoke carries this × one pass of each rate row's messages,
   * unmeasured (default 1; 0: none). Without it the first row also carries Bun's JIT compiling
   * the path, which nats-server, compiled ahead of time, never pays.
   */
  warmup?: number
}

const COUNTS = { 16: 1_000_000, 1024: 200_000 } as const
const SIZES = [16, 1024] as const
const IDLE_MS = 5000
const STALL_MS = 15_000
/** How long the hub stays down in the restart row. */
const HUB_DOWN_MS = 500
/** Both spokes redial after 1 s by default (nats-server `leafnodes.reconnect`, sprig the same). */
const BACKOFF_MS = 1000
/** A restart row fails if nothing flows this long after the hub is back. */
const FLOW_MS = 20_000
/** Other processes' CPU (% of one core) above which a run's numbers are suspect (as bench.ts). */
const OTHER_CPU_WARN = 25

/** The ids, so bench.ts can tell whether `--only` picks any leaf row. */
export const LEAF_IDS = [...SIZES.map((s) => `leaf-uplink ${sizeLabel(s)}`), 'leaf-reconnect']

function sizeLabel(n: number): string {
  return n >= 1024 ? `${n / 1024}KiB` : `${n}B`
}

function pingEvery(payload: number, count: number): number {
  return Math.max(1, Math.min(10_000, Math.floor((1 << 20) / (payload + 20)), count))
}

/** What a leaf row runs against: the spoke (publisher side) and the hub (subscriber side). */
interface Topology {
  spoke: { host: string; port: number }
  hub: { host: string; port: number }
  /** Stops the hub and starts it again on the same ports; resolves when it answers PING. */
  restartHub(): Promise<{ downAt: number; upAt: number }>
}

interface LeafScenario extends Scenario {
  runLeaf: (t: Topology) => Promise<Metrics>
}

export function leafScenarios(o: { quick: boolean }): LeafScenario[] {
  const scale = (n: number): number => (o.quick ? Math.max(1000, Math.round(n / 10)) : n)
  const out: LeafScenario[] = []
  const notHere = (): Promise<Metrics> => Promise.reject(new Error('leaf rows run through leaf-load.ts'))
  for (const size of SIZES) {
    const c = scale(COUNTS[size])
    out.push({
      id: `leaf-uplink ${sizeLabel(size)}`,
      kind: 'nats',
      describe: `edge publisher → spoke → leafnode link → hub → 1 subscriber, ${fmtCount(c)} msgs of ${size} B; rate at the hub subscriber`,
      metrics: [
        { key: 'msgsPerSec', label: 'msgs/s at the hub', fmt: fmtRate, better: 'higher' },
        { key: 'mbPerSec', label: 'MB/s (payload)', fmt: fmtMB, better: 'higher' },
        { key: 'pubMsgsPerSec', label: 'publisher msgs/s', fmt: fmtRate },
        { key: 'lost', label: 'lost msgs', fmt: fmtCount, agg: 'max' },
      ],
      headline: 'msgsPerSec',
      target: { ratio: 1, text: '≥ 1× nats-server leaf' },
      params: { payload: size, msgs: c },
      run: notHere,
      runLeaf: (t) => runUplink(t, size, c),
    })
  }
  out.push({
    id: 'leaf-reconnect',
    kind: 'nats',
    describe: `hub stopped for ${HUB_DOWN_MS} ms and restarted under a 200 msgs/s trickle; time from the hub accepting connections again to the first message at a subscriber on it`,
    metrics: [
      { key: 'flowMs', label: 'hub up → flowing (ms)', fmt: (v) => v.toFixed(0), better: 'lower' },
      { key: 'downMs', label: 'hub down (ms)', fmt: (v) => v.toFixed(0) },
    ],
    headline: 'flowMs',
    target: { max: 2000 + BACKOFF_MS, text: `< 2 s + ${BACKOFF_MS / 1000} s backoff` },
    params: { hubDownMs: HUB_DOWN_MS, backoffMs: BACKOFF_MS },
    run: notHere,
    runLeaf: runReconnect,
  })
  return out
}

/**
 * Waits until a message published at the spoke reaches the hub, which also proves the spoke
 * has the hub's interest in every subject subscribed before `probeSubject`'s subscription.
 */
async function linkReady(t: Topology, probeSubject: string): Promise<void> {
  const sub = await connectNats(t.hub)
  const pub = await connectNats(t.spoke)
  try {
    await subscribe(sub, probeSubject, 'p')
    let got = false
    sub.onMsg = () => (got = true)
    const end = performance.now() + STALL_MS
    while (!got) {
      if (performance.now() > end) throw new Error(`uplink not passing messages after ${STALL_MS} ms`)
      pub.sock.write(`PUB ${probeSubject} 1\r\np\r\n`)
      await waitUntil([sub], () => got || sub.err !== '', 100)
      if (sub.err) throw new Error(`hub subscriber: ${sub.err}`)
    }
  } finally {
    close(sub)
    close(pub)
  }
}

async function runUplink(t: Topology, payload: number, count: number): Promise<Metrics> {
  const subject = 'bench.up'
  const sub = await connectNats(t.hub)
  let pub: NatsConn | null = null
  try {
    await subscribe(sub, subject, '1')
    // The probe subscription comes after bench.up's, so the spoke has learnt both in order.
    await linkReady(t, 'bench.up.probe')
    const { header, frame } = msgFrameSize(subject, '1', payload)
    const k = startCounting(sub, header, frame)
    pub = await connectNats(t.spoke)
    const p = pub
    const allIn = (): boolean => k.frames >= count || k.bad !== ''
    const pubDone = publish(p, { subject, payload, count, pingEvery: pingEvery(payload, count), maxAhead: 2, timeoutMs: STALL_MS })
    pubDone.catch(() => close(sub))
    const [pr, w] = await Promise.all([pubDone, waitUntil([sub, p], allIn, IDLE_MS, true)])
    if (k.bad) throw new Error(k.bad)
    if (k.frames === 0) throw new Error(`nothing reached the hub (${sub.err || w})`)
    const secs = (k.lastAt - k.firstAt) / 1000
    const m: Metrics = {
      msgs: count,
      msgsPerSec: k.frames / secs,
      mbPerSec: (k.frames * payload) / 1e6 / secs,
      pubMsgsPerSec: count / ((pr.endAt - pr.startAt) / 1000),
      lost: count - k.frames,
    }
    if (w !== 'ok') m.note = `incomplete: ${w === 'closed' ? `hub subscriber closed: ${sub.err}` : `nothing for ${IDLE_MS} ms`}`
    return m
  } finally {
    close(sub)
    if (pub) close(pub)
  }
}

async function runReconnect(t: Topology): Promise<Metrics> {
  const subject = 'bench.tick'
  const pub = await connectNats(t.spoke)
  let sub = await connectNats(t.hub)
  // A steady trickle from the edge: one message every 5 ms, the whole time.
  const tick = setInterval(() => pub.sock.write(`PUB ${subject} 2\r\nok\r\n`), 5)
  try {
    await subscribe(sub, subject, 't')
    let got = 0
    sub.onMsg = () => got++
    if ((await waitUntil([sub], () => got > 0, STALL_MS)) !== 'ok') throw new Error('trickle not reaching the hub before the restart')
    close(sub)
    const { downAt, upAt } = await t.restartHub()
    sub = await connectNats(t.hub)
    let firstAt = 0
    sub.onMsg = () => {
      if (!firstAt) firstAt = performance.now()
    }
    await subscribe(sub, subject, 't')
    const s = sub
    const r = await waitUntil([s, pub], () => firstAt > 0 || s.err !== '' || pub.err !== '', FLOW_MS)
    if (!firstAt) throw new Error(`nothing flowed within ${FLOW_MS} ms of the hub restart (${s.err || pub.err || r})`)
    return { flowMs: firstAt - upAt, downMs: upAt - downAt }
  } finally {
    clearInterval(tick)
    close(sub)
    close(pub)
  }
}

/** When `port` first accepts a TCP connection (polled every 10 ms, for up to 15 s). */
async function accepting(port: number): Promise<number> {
  const end = performance.now() + STALL_MS
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, HOST)
      s.once('connect', () => {
        s.destroy()
        r(true)
      })
      s.once('error', () => r(false))
    })
    if (ok) return performance.now()
    if (performance.now() > end) throw new Error(`hub not accepting on ${port} after ${STALL_MS} ms`)
    await sleep(10)
  }
}

/** Hub config: a client port and a leafnode port, nothing else. */
function hubConf(tmp: string, port: number, leaf: number): string {
  const f = path.join(tmp, `leaf-hub-${port}.conf`)
  writeFileSync(f, `# written by sprig's test/bench/leaf-load.ts\nlisten: ${HOST}:${port}\nleafnodes { listen: ${HOST}:${leaf} }\n`)
  return f
}

/** The nats-server spoke: its own client port, one remote to the hub. */
function natsSpokeConf(tmp: string, port: number, hubLeaf: number): string {
  const f = path.join(tmp, `leaf-spoke-${port}.conf`)
  writeFileSync(f, `# written by sprig's test/bench/leaf-load.ts\nlisten: ${HOST}:${port}\nleafnodes { remotes = [ { url: "nats://${HOST}:${hubLeaf}" } ] }\n`)
  return f
}

/** One spoke against a fresh hub: every scenario once, the restart row last. */
async function runSpoke(spoke: LeafSpoke, scenarios: LeafScenario[], natsServer: string, o: LeafBenchOpts, round: number, out: RunResult[]): Promise<void> {
  const hubPort = await freePort()
  const hubLeaf = await freePort()
  const spokePort = await freePort()
  const conf = hubConf(o.tmp, hubPort, hubLeaf)
  const startHub = (): ServerProcess => launch([natsServer, '-c', conf], o.root)
  let hub = startHub()
  let edge: ServerProcess | null = null
  const topo: Topology = {
    spoke: { host: HOST, port: spokePort },
    hub: { host: HOST, port: hubPort },
    async restartHub() {
      await stop(hub)
      const downAt = performance.now()
      await sleep(HUB_DOWN_MS)
      hub = startHub()
      // Polled every 10 ms (waitReady's 100 ms would blur the figure), then a full handshake.
      const upAt = await accepting(hubPort)
      await waitReady(hub, hubPort, 'nats')
      return { downAt, upAt }
    },
  }
  const fail = (why: string, from = 0): void => {
    for (const s of scenarios.slice(from)) out.push({ scenario: s.id, server: spoke.name, round, error: why, wallMs: 0 })
  }
  try {
    await waitReady(hub, hubPort, 'nats')
    edge = launch(spoke.argv(spokePort, hubLeaf), o.root)
    await waitReady(edge, spokePort, 'nats')
  } catch (e) {
    fail(`did not start: ${(e as Error).message.split('\n')[0]}`)
    await Promise.all([stop(hub), edge ? stop(edge) : null])
    return
  }
  progress(`[round ${round}] ${spoke.name}: spoke on ${HOST}:${spokePort} → hub leafnode port ${hubLeaf}`)
  const warm = o.warmup ?? 1
  if (warm > 0 && scenarios.some((s) => s.id.startsWith('leaf-uplink'))) {
    await warmUp(`[round ${round}] ${spoke.name}`, async () => {
      for (const size of SIZES) await runUplink(topo, size, Math.round((o.quick ? COUNTS[size] / 10 : COUNTS[size]) * warm))
    })
  }
  // The restart row disturbs the link: run it after the rate rows.
  const ordered = [...scenarios.filter((s) => s.id !== 'leaf-reconnect'), ...scenarios.filter((s) => s.id === 'leaf-reconnect')]
  for (const s of ordered) {
    const t0 = performance.now()
    const cpu0 = procCpuSeconds(edge.pid)
    const hub0 = { pid: hub.pid, cpu: procCpuSeconds(hub.pid) }
    const busy0 = machineBusySeconds()
    const gen0 = process.cpuUsage()
    const r: RunResult = { scenario: s.id, server: spoke.name, round, wallMs: 0 }
    try {
      r.metrics = await s.runLeaf(topo)
    } catch (e) {
      r.error = (e as Error).message
      if (edge.exited()) r.error += ` (spoke ${edge.exited()}: ${edge.tail().slice(-300)})`
    }
    r.wallMs = performance.now() - t0
    // "server CPU" in the tables is the spoke's (the hub is the same nats-server for all).
    const spokeSecs = procCpuSeconds(edge.pid) - cpu0
    const cpu = (spokeSecs * 1000 * 100) / r.wallMs
    if (Number.isFinite(cpu)) r.serverCpu = cpu
    const hubSecs = hub.pid === hub0.pid ? procCpuSeconds(hub.pid) - hub0.cpu : NaN
    const perM = cpuPerMillion(r.metrics, { spoke: spokeSecs, hub: hubSecs })
    if (perM) r.cpuPerM = perM
    const gen = process.cpuUsage(gen0)
    r.benchCpu = ((gen.user + gen.system) / 1000 / r.wallMs) * 100
    // Everything but spoke, hub and load generator (the restarted hub's CPU is not known).
    const hubCpu = Number.isFinite(hubSecs) ? (hubSecs * 1000 * 100) / r.wallMs : 0
    const other = ((machineBusySeconds() - busy0) * 1000 * 100) / r.wallMs - (r.serverCpu ?? 0) - hubCpu - r.benchCpu
    if (Number.isFinite(other)) r.otherCpu = Math.max(0, other)
    out.push(r)
    const head = s.metrics.find((m) => m.key === s.headline)!
    const hv = r.metrics?.[s.headline]
    progress(`[round ${round}] ${spoke.name}: ${s.id}: ${r.error ? 'FAILED: ' + r.error : `${typeof hv === 'number' ? head.fmt(hv) : hv} ${head.label}`}`)
    await sleep(300)
  }
  await Promise.all([stop(edge), stop(hub)])
}


/**
 * Runs the leaf rows (those `only` selects; all when empty) for every sprig spoke and the
 * nats-server spoke, prints their tables, and returns the raw results and whether any failed.
 */
export async function runLeafBench(o: LeafBenchOpts, only: string[]): Promise<{ results: RunResult[]; failed: number }> {
  const natsServer = which('nats-server')
  const all = leafScenarios({ quick: o.quick })
  const scenarios = only.length ? all.filter((s) => only.some((x) => x === 'leaf' || s.id.toLowerCase().includes(x))) : all
  if (!natsServer) {
    console.log('leaf rows: nats-server not found on PATH or in /usr/sbin (Debian/Ubuntu: apt-get install nats-server); skipped\n')
    return { results: [], failed: 0 }
  }
  const ref: LeafSpoke = {
    name: 'nats-server leaf',
    reference: true,
    argv: (port, hubLeaf) => [natsServer, '-c', natsSpokeConf(o.tmp, port, hubLeaf)],
    version: '',
  }
  const sprigs: LeafSpoke[] = o.sprigs.map((s) => ({
    name: s.name,
    reference: false,
    argv: (port, hubLeaf) => [...s.cmd, '-a', HOST, '-p', String(port), '--mqtt-port', '0', '--leaf', `nats://${HOST}:${hubLeaf}`],
    version: s.version,
  }))
  const spokes = [ref, ...sprigs]
  console.log(
    [
      `\nleaf rows: hub = ${natsServer} -c <conf: listen ${HOST}:{port}; leafnodes { listen ${HOST}:{leaf} }>, a fresh one per spoke and round`,
      `           warm-up: ${(o.warmup ?? 1) > 0 ? `before the rate rows each spoke carries ${SIZES.map((z) => `${fmtCount(Math.round(COUNTS[z] * (o.warmup ?? 1) * (o.quick ? 0.1 : 1)))} × ${z} B`).join(' and ')}, not measured (--leaf-warmup)` : 'none (--leaf-warmup 0)'}`,
      `           nats-server leaf = ${natsServer} -c <conf: listen ${HOST}:{port}; leafnodes { remotes = [ { url: nats://${HOST}:{leaf} } ] }>`,
      ...o.sprigs.map((s) => `           ${s.name} = ${s.cmd.join(' ')} -a ${HOST} -p {port} --mqtt-port 0 --leaf nats://${HOST}:{leaf}`),
      '',
    ].join('\n'),
  )
  const raw: RunResult[] = []
  for (let round = 1; round <= o.rounds; round++) {
    const order = spokes.map((_, i) => spokes[(i + round - 1) % spokes.length]!)
    for (const s of order) await runSpoke(s, scenarios, natsServer, o, round, raw)
  }
  const results = combineRounds(raw, scenarios)
  const cols: Column[] = [...sprigs, ref].map((s) => ({ name: s.name, reference: s.reference }))
  for (const s of scenarios) console.log(scenarioTable(s, cols, results) + '\n')
  console.log(`== summary (leaf uplink)\n${summaryTable(scenarios, cols, results)}\n`)
  console.log(`(${os.cpus().length} cores; hub, spoke and load generator share them)`)
  const lossy = raw.filter((r) => typeof r.metrics?.lost === 'number' && r.metrics.lost > 0).length
  const busy = raw.filter((r) => (r.otherCpu ?? 0) > OTHER_CPU_WARN)
  if (busy.length) console.log(`warning: ${busy.length} of ${raw.length} leaf run(s) shared the machine with other load (> ${OTHER_CPU_WARN}% of a core): their numbers are unreliable`)
  if (lossy) console.log(`${lossy} leaf run(s) LOST messages`)
  return { results: raw, failed: raw.filter((r) => r.error).length + lossy }
}
