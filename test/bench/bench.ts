// sprig benchmark: the same raw-socket load against sprig (per runtime) and the reference
// server, one server at a time, printed side by side with ratios. See --help.
import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Kind, Scenario, ServerSpec } from './model.ts'
import { flowControlNote, MQTT_TARGETS, mqttScenarios } from './mqtt-load.ts'
import { natsScenarios } from './nats-load.ts'
import { LEAF_IDS, runLeafBench, type LeafBenchOpts } from './leaf-load.ts'
import { GATEWAY_IDS, runGatewayBench, type GatewayBenchOpts } from './gateway-load.ts'
import { runWsBench, WS_IDS, wsSelected, type WsBenchOpts } from './ws-load.ts'
import { runTlsBench, TLS_IDS, tlsSelected, type TlsBenchOpts } from './tls-load.ts'
import { runStoreBench, STORE_IDS, storeSelected, type StoreBenchOpts } from './store-load.ts'
import { BINARY_IDS, binarySelected, runBinaryBench } from './binary.ts'
import { firstLine, freePort, HOST, launch, machineBusySeconds, procCpuSeconds, procStatusBytes, sleep, stop, waitReady, which, progress, warmUp } from './proc.ts'
import { runtimeBin as projectBin } from '../helpers/bins.ts'
import { combineRounds, cpuPerMillion, scenarioTable, summaryTable, type Column, type RunResult } from './report.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const BUNDLE = process.env.SPRIG_BUNDLE || 'dist/sprig.js'
const RUNTIMES = ['bun', 'node', 'deno'] as const
type Runtime = (typeof RUNTIMES)[number]
/**
 * Socket-API variants, to check each runtime's default choice (targets/*.ts: Bun.listen on Bun,
 * node:net on Node and Deno): Bun on node:net, Deno on Deno.listen. Not run by default.
 */
const VARIANTS: Record<string, { runtime: Runtime; env: string }> = {
  'deno+native': { runtime: 'deno', env: 'SPRIG_NET=native' },
  'bun+node:net': { runtime: 'bun', env: 'SPRIG_NET=node' },
}
/** Reference server per protocol and the Debian package that provides it. */
const REFERENCE: Record<Kind, { bin: string; pkg: string }> = {
  nats: { bin: 'nats-server', pkg: 'nats-server' },
  mqtt: { bin: 'mosquitto', pkg: 'mosquitto' },
}
/** Other processes' CPU (% of one core) during a scenario above which its numbers are suspect. */
const OTHER_CPU_WARN = 25
/** Let the server settle (GC, freed buffers) between scenarios. */
const SETTLE_MS = 300

/** Temporary files (mosquitto configs), removed on exit. */
const TMP = mkdtempSync(path.join(os.tmpdir(), 'sprig-bench-'))
process.on('exit', () => rmSync(TMP, { recursive: true, force: true }))

/**
 * mosquitto's config for the MQTT rows. mosquitto 2 only allows anonymous clients if told to,
 * and by default keeps only 20 QoS 1 messages in flight and 1000 queued per client (beyond
 * that QoS 0 deliveries are dropped): lifted, since the load generator bounds what is in flight
 * itself. Connection logging off. set_tcp_nodelay stays at its default (off): mosquitto writes
 * every outgoing packet with its own send(), and with TCP_NODELAY each becomes a segment of
 * its own, which costs it ~40% of its QoS 0 rate here; Nagle is its better setting for this load.
 */
const MOSQUITTO_SETTINGS = [
  'allow_anonymous true',
  'max_connections -1',
  'max_inflight_messages 0',
  'max_queued_messages 0',
  'persistence false',
  'connection_messages false',
  'log_dest stderr',
  'log_type error',
  'log_type warning',
]

/** Writes a mosquitto config listening on HOST:port; returns its path. */
function mosquittoConf(port: string): string {
  const file = path.join(TMP, `mosquitto-${port}.conf`)
  writeFileSync(file, `# written by sprig's test/bench/bench.ts\nlistener ${port} ${HOST}\n${MOSQUITTO_SETTINGS.join('\n')}\n`)
  return file
}

const HELP = `usage: bun test/bench/bench.ts [--runtimes bun,node,deno] [--quick] [--only <substr>[,<substr>…]] [--rounds N] [--conns N]

  --runtimes   sprig runtimes to benchmark (default: every one that is installed); also
               the socket APIs each runtime does not use by default: bun+node:net (Bun's
               listeners on node:net instead of Bun.listen) and deno+native (Deno.listen)
  --quick      10× fewer messages and 1 round, for a CI smoke run
  --rounds     rounds over all servers (default 3, --quick 1); tables show the median of the
               rounds and the min–max of the headline metric. Servers take turns in every
               round, so drift on a noisy machine hits all of them alike.
  --only       run only scenarios whose id contains one of the substrings (case-insensitive),
               e.g. --only pub-sub, --only 16B, --only req-reply,fan-out; --only mqtt for
               the MQTT family (mqtt-idle-conns, mqtt-qos0, mqtt-qos1, mqtt-fan-out),
               --only nats for every NATS scenario, --only leaf for the leaf uplink rows
               (leaf-uplink, leaf-reconnect: sprig's uplink vs a nats-server leaf, same hub),
               --only gateway for the gateway path (MQTT devices → gateway → uplink → cloud
               subscriber, and cloud commands → 1,000 devices: sprig vs nats-server's MQTT
               listener + leaf remote vs mosquitto bridged to a second mosquitto),
               --only ws for the WebSocket rows (NATS pub-sub and MQTT QoS 0 over ws://:
               sprig's websocket listener vs nats-server's and mosquitto's); a substring picks
               them only if it contains "ws" (ws-mqtt, ws-nats-pub-sub 16B),
               --only tls for idle MQTT connections over mutual TLS (sprig's MQTT TLS
               port vs mosquitto with require_certificate; --conns applies),
               --only store for the on-disk store rows (MQTT QoS 1 telemetry into sprig
               with the store at sync 1s and always and without it, nats-server's MQTT with
               JetStream, mosquitto with persistence; write amplification; start-up with
               1,000,000 spooled messages): store-load.ts, also npm run bench:store,
               --only binary for the compiled binary's idle RSS (bun build --compile of the
               bundle, NATS only and NATS + MQTT, page cache dropped first; Bun's floor)
  --gw-refs    reference gateways for the gateway rows (default nats,mosquitto; none: sprig
               alone, e.g. to profile it)
  --gw-scale   telemetry messages per gateway row × this (default 1: 400,000 at QoS 0,
               150,000 at QoS 1), e.g. --gw-scale 5 for a rate phase where Bun's JIT
               warm-up weighs less in CPU per message
  --warmup     before the first NATS or MQTT rate row (publish-only, pub-sub, fan-out, QoS 0
               and QoS 1; not req-reply, which warms itself, nor the idle connections, which
               want a fresh server) each server carries every such row's load × this, not
               measured (default 1; 0: none, the rows then carry a JIT's compiling)
  --gw-warmup  before its first row each gateway carries this × 400,000 QoS 0 and × 150,000
               QoS 1 messages from one device, not measured (default 1; 0: no warm-up, the
               first row then carries Bun's JIT compiling)
  --leaf-warmup  before the leaf rate rows each spoke (sprig and the nats-server leaf alike)
               carries this × 1,000,000 16 B and × 200,000 1 KiB messages, not measured
               (default 1; 0: none, the first row then carries Bun's JIT compiling)
  --conns      idle MQTT connections for mqtt-idle-conns (default 1000), e.g. --conns 10000
               (needs ulimit -n above N + a few hundred, for this process and the servers)
  --idle-pings  after the idle reading, S seconds in which every idle connection sends a
               PINGREQ every 30 s (a device's keepalive), then RSS again (default 0: none);
               600 shows what Bun's top tier pages back in, and what sprig hands back again;
               a control server (the same, no devices) beside it gives the runtime's own growth
  --sprig-cmd  replace the sprig NATS servers by this command, {port} is substituted
               (same as env SPRIG_CMD), e.g. --sprig-cmd 'nats-server -a 127.0.0.1 -p {port}'
  --sprig-mqtt-cmd  replace the sprig MQTT servers by this command (same as env
               SPRIG_MQTT_CMD); {port} is the MQTT port, {natsPort} a second free port,
               {conf} a mosquitto config for {port} (the reference's), so mosquitto can stand
               in for sprig: --sprig-mqtt-cmd 'mosquitto -c {conf}'

Without --sprig-mqtt-cmd the MQTT rows run the bundle per runtime as
  <runtime> dist/sprig.js -p {natsPort} --mqtt-port {port}
The MQTT reference is mosquitto -c <config>, the config being
  listener {port} ${HOST}
  ${MOSQUITTO_SETTINGS.join('\n  ')}

env SPRIG_BUNDLE=<file.js> runs that bundle under each runtime instead of dist/sprig.js.

Writes the results to dist/bench.json as well.`

interface Args {
  /** Runtimes and VARIANTS names. */
  runtimes: string[] | null
  quick: boolean
  rounds: number
  only: string[]
  sprigCmd: string
  sprigMqttCmd: string
  conns: number
  idlePings: number
  gwRefs: string[] | undefined
  gwScale: number
  gwWarmup: number
  leafWarmup: number
  warmup: number
}

/** A warm-up factor: any number ≥ 0 (0: no warm-up). */
function atLeastZero(flag: string, v: string): number {
  const n = Number(v)
  if (!(n >= 0)) throw new Error(`${flag} wants a number ≥ 0`)
  return n
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    runtimes: null,
    quick: false,
    rounds: 0,
    only: [],
    sprigCmd: process.env.SPRIG_CMD ?? '',
    sprigMqttCmd: process.env.SPRIG_MQTT_CMD ?? '',
    conns: 1000,
    idlePings: 0,
    gwRefs: undefined,
    gwScale: 1,
    gwWarmup: 1,
    leafWarmup: 1,
    warmup: 1,
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const [flag, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined]
    const val = (): string => {
      const v = inline ?? argv[++i]
      if (v === undefined) throw new Error(`${flag} needs a value`)
      return v
    }
    if (flag === '--quick') a.quick = true
    else if (flag === '--only') a.only = val().split(',').map((s) => s.trim().toLowerCase()).filter(Boolean)
    else if (flag === '--sprig-cmd') a.sprigCmd = val()
    else if (flag === '--sprig-mqtt-cmd') a.sprigMqttCmd = val()
    else if (flag === '--gw-refs') a.gwRefs = val().split(',').map((s) => s.trim()).filter((s) => s && s !== 'none')
    else if (flag === '--warmup') a.warmup = atLeastZero(flag, val())
    else if (flag === '--gw-warmup') a.gwWarmup = atLeastZero(flag, val())
    else if (flag === '--leaf-warmup') a.leafWarmup = atLeastZero(flag, val())
    else if (flag === '--gw-scale') {
      a.gwScale = Number(val())
      if (!(a.gwScale > 0)) throw new Error('--gw-scale wants a positive number')
    }
    else if (flag === '--conns') {
      a.conns = Number(val())
      if (!Number.isInteger(a.conns) || a.conns < 1) throw new Error('--conns wants a positive integer')
    }
    else if (flag === '--idle-pings') a.idlePings = atLeastZero(flag, val())
    else if (flag === '--rounds') {
      a.rounds = Number(val())
      if (!Number.isInteger(a.rounds) || a.rounds < 1) throw new Error('--rounds wants a positive integer')
    } else if (flag === '--runtimes') {
      const rs = val().split(',').map((s) => s.trim()).filter(Boolean)
      const known = [...RUNTIMES, ...Object.keys(VARIANTS)]
      for (const r of rs) if (!known.includes(r)) throw new Error(`unknown runtime ${r} (want ${known.join(',')})`)
      a.runtimes = rs
    } else if (flag === '--help' || flag === '-h') {
      console.log(HELP)
      process.exit(0)
    } else throw new Error(`unknown argument ${arg}\n\n${HELP}`)
  }
  if (!a.rounds) a.rounds = a.quick ? 1 : 3
  return a
}

/** The binary for a runtime: the project's own bun/deno, node from PATH. */
function runtimeBin(r: Runtime): string {
  return r === 'node' ? which('node') : projectBin(r)
}

function runtimeVersion(r: Runtime, bin: string): string {
  const v = firstLine(bin, ['--version'])
  return r === 'bun' ? `bun ${v}` : r === 'node' ? `node ${v}` : v
}

/**
 * A server started from an argv. `argv` gets the port and a second free port (sprig's NATS
 * port for the MQTT rows); for the header, without ports, it gets the placeholders, and
 * `conf` says whether a config file path should show as {conf}.
 */
type Argv = (port: string, aux: string, conf: (port: string) => string) => string[]
function fromArgv(name: string, kind: Kind, reference: boolean, argv: Argv, version: () => string, twinArgv?: Argv): ServerSpec {
  return {
    name,
    kind,
    reference,
    describe: (port, aux) =>
      argv(port === undefined ? '{port}' : String(port), aux === undefined ? '{natsPort}' : String(aux), (p) => (port === undefined ? '{conf}' : mosquittoConfPath(p)))
        .map(shellQuote)
        .join(' '),
    start: (port, aux) => launch(argv(String(port), String(aux), mosquittoConf), ROOT),
    ...(twinArgv ? { startTwin: (port: number, aux: number) => launch(twinArgv(String(port), String(aux), mosquittoConf), ROOT) } : {}),
    version,
  }
}

/** SPRIG_PAGEOUT for the idle rows: start-up's page-out once quiet from 0.5 s (the default waits 5 s, inside the first row). */
const DEPLOYED_PAGEOUT_MS = 500

function mosquittoConfPath(port: string): string {
  return path.join(TMP, `mosquitto-${port}.conf`)
}

function shellQuote(s: string): string {
  return /^[\w@%+=:,./{}-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`
}

/** Splits a command line on whitespace, honouring simple single/double quotes. */
function splitCmd(cmd: string): string[] {
  return [...cmd.matchAll(/"([^"]*)"|'([^']*)'|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!)
}

function machine(): Record<string, string | number> {
  let model = os.cpus()[0]?.model ?? 'unknown'
  try {
    const m = readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m)
    if (m) model = m[1]!.trim()
  } catch {
    // not Linux
  }
  return {
    cores: os.cpus().length,
    model,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
  }
}

/** What the user typed, reconstructed (including SPRIG_CMD if it came from the env). */
function commandLine(): string {
  const rt = process.versions.bun ? 'bun' : 'Deno' in globalThis ? 'deno run -A' : 'node'
  const script = path.relative(process.cwd(), process.argv[1] ?? 'test/bench/bench.ts')
  const env = ['SPRIG_CMD', 'SPRIG_MQTT_CMD', 'SPRIG_BUNDLE']
    .filter((k) => process.env[k])
    .map((k) => `${k}=${shellQuote(process.env[k]!)} `)
    .join('')
  return `${env}${rt} ${[script, ...process.argv.slice(2)].map(shellQuote).join(' ')}`
}

/** The soft and hard open-files limits from /proc/self/limits, or null off Linux. */
function fdLimits(): { soft: number; hard: number } | null {
  try {
    const m = readFileSync('/proc/self/limits', 'utf8').match(/^Max open files\s+(\S+)\s+(\S+)/m)
    const num = (x: string): number => (x === 'unlimited' ? Infinity : Number(x))
    return m ? { soft: num(m[1]!), hard: num(m[2]!) } : null
  } catch {
    return null
  }
}

/**
 * The idle-connection scenario needs `want` descriptors here and in the server (which inherits
 * our limits). JS runtimes can't call setrlimit, so if the soft limit is too low this re-runs
 * the bench under `sh -c 'ulimit -n …'` (up to the hard limit) and exits with its status.
 * Returns a note for the header, or ''.
 */
function raiseFdLimit(want: number): string {
  const lim = fdLimits()
  if (!lim || lim.soft >= want) return process.env.SPRIG_BENCH_ULIMIT ? `re-run under ulimit -n ${process.env.SPRIG_BENCH_ULIMIT} for mqtt-idle-conns` : ''
  const to = Math.min(want, lim.hard)
  if (to > lim.soft && !process.env.SPRIG_BENCH_ULIMIT) {
    writeSync(2, `  … raising ulimit -n from ${lim.soft} to ${to} for the idle connections: re-running under sh -c 'ulimit -n ${to}'\n`)
    const r = spawnSync('sh', ['-c', `ulimit -n ${to} && exec "$@"`, 'sh', process.execPath, ...process.argv.slice(1)], {
      stdio: 'inherit',
      env: { ...process.env, SPRIG_BENCH_ULIMIT: String(to) },
    })
    process.exit(r.status ?? 2)
  }
  return `open-files limit ${lim.soft} (hard ${lim.hard}) is below the ${want} that mqtt-idle-conns needs: expect connection failures (raise ulimit -n -H as root, or measure in a VM: bun test/bench/conns-vm.ts --conns N)`
}

function mib(n: number): string {
  return Number.isFinite(n) ? `${(n / 2 ** 20).toFixed(1)} MiB` : 'n/a'
}

interface ServerReport {
  name: string
  kind: Kind
  reference: boolean
  command: string
  version: string
  infoVersion: string
  idleRss: number
  peakRss: number
  endRss: number
  error?: string
}

/** A server's port and its second (aux) port, two different free ones. */
async function twoPorts(): Promise<[number, number]> {
  const port = await freePort()
  let aux = await freePort()
  while (aux === port) aux = await freePort()
  return [port, aux]
}

/** Another instance of `spec` on ports of its own, ready (Addr.twin). */
async function startTwin(spec: ServerSpec): Promise<{ host: string; port: number; pid: number; stop(): Promise<void> }> {
  const [port, aux] = await twoPorts()
  const p = (spec.startTwin ?? spec.start)(port, aux)
  try {
    await waitReady(p, port, spec.kind)
  } catch (e) {
    await stop(p)
    throw new Error(`control server did not start: ${(e as Error).message.split('\n')[0]}`)
  }
  return { host: HOST, port, pid: p.pid, stop: () => stop(p) }
}

async function runServer(spec: ServerSpec, scenarios: Scenario[], results: RunResult[], round: number, tag: string, warmup: number): Promise<ServerReport> {
  const [port, aux] = await twoPorts()
  const rep: ServerReport = {
    name: spec.name,
    kind: spec.kind,
    reference: spec.reference,
    command: spec.describe(port, aux),
    version: spec.version(),
    infoVersion: '',
    idleRss: NaN,
    peakRss: NaN,
    endRss: NaN,
  }
  const proc = spec.start(port, aux)
  const failAll = (why: string): void => {
    for (const s of scenarios) results.push({ scenario: s.id, server: spec.name, round, error: why, wallMs: 0 })
  }
  try {
    const info = await waitReady(proc, port, spec.kind)
    rep.infoVersion = String(info.version ?? '')
    rep.idleRss = procStatusBytes(proc.pid, 'VmRSS')
    progress(`${tag}${spec.name}: ready on ${HOST}:${port} (${rep.command}), idle RSS ${mib(rep.idleRss)}`)
  } catch (e) {
    rep.error = (e as Error).message
    progress(`${tag}${spec.name}: FAILED to start: ${rep.error}`)
    failAll(`server did not start: ${rep.error.replace(/:\n/, ': ').split('\n')[0]}`)
    await stop(proc)
    return rep
  }
  let warmed = warmup === 0
  for (const s of scenarios) {
    if (!warmed && s.warm && !proc.exited()) {
      // Every rate row's load once, unmeasured, before the first of them: short rows (0.2 s on
      // Bun) otherwise measure how fast a runtime's JIT gets going, not the broker at work.
      warmed = true
      const addr = { host: HOST, port, pid: proc.pid }
      await warmUp(`${tag}${spec.name}`, async () => {
        for (const x of scenarios) if (x.warm) await x.warm(addr, warmup)
      })
      await sleep(SETTLE_MS)
    }
    if (proc.exited()) {
      results.push({ scenario: s.id, server: spec.name, round, error: `server ${proc.exited()}`, wallMs: 0 })
      continue
    }
    const cpu0 = procCpuSeconds(proc.pid)
    const busy0 = machineBusySeconds()
    const gen0 = process.cpuUsage()
    const t0 = performance.now()
    const r: RunResult = { scenario: s.id, server: spec.name, round, wallMs: 0 }
    try {
      r.metrics = await s.run({ host: HOST, port, pid: proc.pid, twin: () => startTwin(spec) })
    } catch (e) {
      r.error = (e as Error).message
      // A dropped connection is often the server dying: give its exit a moment to be noticed.
      await sleep(200)
      if (proc.exited()) r.error += ` (server ${proc.exited()}${proc.tail() ? `; last output: ${proc.tail().slice(-300)}` : ''})`
    }
    r.wallMs = performance.now() - t0
    const gen = process.cpuUsage(gen0)
    const cpuSecs = procCpuSeconds(proc.pid) - cpu0
    r.serverCpu = (cpuSecs * 1000 * 100) / r.wallMs
    const perM = cpuPerMillion(r.metrics, { server: cpuSecs })
    if (perM) r.cpuPerM = perM
    r.benchCpu = ((gen.user + gen.system) / 1000 / r.wallMs) * 100
    if (!Number.isFinite(r.serverCpu)) delete r.serverCpu
    // Whatever else ran meanwhile; a few % is the kernel's share of our traffic, more is noise.
    r.otherCpu = Math.max(0, ((machineBusySeconds() - busy0) * 1000 * 100) / r.wallMs - (r.serverCpu ?? 0) - r.benchCpu)
    if (!Number.isFinite(r.otherCpu)) delete r.otherCpu
    results.push(r)
    const head = s.metrics.find((m) => m.key === s.headline)!
    const hv = r.metrics?.[s.headline]
    progress(`${tag}${spec.name}: ${s.id}: ${r.error ? 'FAILED: ' + r.error : `${typeof hv === 'number' ? head.fmt(hv) : hv} ${head.label}`} (${(r.wallMs / 1000).toFixed(1)} s)`)
    await sleep(SETTLE_MS)
  }
  rep.peakRss = procStatusBytes(proc.pid, 'VmHWM')
  rep.endRss = procStatusBytes(proc.pid, 'VmRSS')
  await stop(proc)
  return rep
}

/** One line per server over all rounds: median idle RSS, highest peak, last RSS at the end. */
function combineReports(rs: ServerReport[]): ServerReport {
  const fin = (xs: number[]): number[] => xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b)
  const idle = fin(rs.map((r) => r.idleRss))
  const peak = fin(rs.map((r) => r.peakRss))
  const last = rs[rs.length - 1]!
  const errors = rs.map((r) => r.error).filter((e): e is string => !!e)
  return {
    ...last,
    infoVersion: rs.find((r) => r.infoVersion)?.infoVersion ?? '',
    idleRss: idle.length ? idle[idle.length >> 1]! : NaN,
    peakRss: peak.length ? peak[peak.length - 1]! : NaN,
    ...(errors.length ? { error: errors[0] } : {}),
  }
}


async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2))
  const notes: string[] = []
  // Bun's sprig hands start-up's code pages back once quiet, ~5 s in (targets/pageout.ts).
  // The rows run without that, unless SPRIG_PAGEOUT is set: it would land inside a row, once
  // per server. But for the binary's, and the MQTT family's (from 0.5 s, before its idle row).
  const pageOut = process.env.SPRIG_PAGEOUT
  if (pageOut === undefined) process.env.SPRIG_PAGEOUT = '0'

  // Runtimes: versions for the report, and the sprig servers to run.
  const wanted = args.runtimes ?? [...RUNTIMES]
  const versions: Record<string, string> = {}
  const sprigs: ServerSpec[] = []
  for (const r of RUNTIMES) {
    const bin = runtimeBin(r)
    versions[r] = bin ? runtimeVersion(r, bin) : 'not installed'
  }
  if (args.quick) notes.push('--quick: runs of ~0.1-0.5 s, a smoke test; ratios are noise (±30%), use a full run for numbers')
  const all = [...natsScenarios({ quick: args.quick }), ...mqttScenarios({ quick: args.quick, conns: args.conns, idlePings: args.idlePings })]
  const scenarios = args.only.length ? all.filter((s) => args.only.some((o) => s.id.toLowerCase().includes(o) || o === s.kind)) : all
  // Leaf rows need a hub and a spoke per server, so leaf-load.ts runs them, after the others.
  const wantLeaf = !args.only.length || args.only.some((o) => o === 'leaf' || LEAF_IDS.some((id) => id.toLowerCase().includes(o)))
  const leafOpts: LeafBenchOpts = { quick: args.quick, rounds: args.rounds, sprigs: leafSprigs(wanted, versions), tmp: TMP, root: ROOT, warmup: args.leafWarmup }
  // Gateway rows (MQTT devices → gateway → uplink → cloud): gateway-load.ts, last.
  const wantGw = !args.only.length || args.only.some((o) => o === 'gateway' || GATEWAY_IDS.some((id) => id.toLowerCase().includes(o)))
  const gwOpts: GatewayBenchOpts = { quick: args.quick, rounds: args.rounds, sprigs: leafSprigs(wanted, versions), tmp: TMP, root: ROOT, mosquittoSettings: MOSQUITTO_SETTINGS, refs: args.gwRefs, scale: args.gwScale, warmup: args.gwWarmup }
  // WebSocket rows: the same loads over ws://, servers configured for it: ws-load.ts.
  const wantWs = wsSelected(args.only).length > 0
  const wsOpts: WsBenchOpts = { quick: args.quick, rounds: args.rounds, sprigs: leafSprigs(wanted, versions), tmp: TMP, root: ROOT, mosquittoSettings: MOSQUITTO_SETTINGS }
  // The idle connections again, over mutual TLS: tls-load.ts.
  const wantTls = tlsSelected(args.only)
  const tlsOpts: TlsBenchOpts = { quick: args.quick, rounds: args.rounds, conns: args.conns, sprigs: leafSprigs(wanted, versions, pageOut === undefined && wantTls), tmp: TMP, root: ROOT, mosquittoSettings: MOSQUITTO_SETTINGS }
  // Store rows (MQTT QoS 1 into the on-disk store): store-load.ts, last.
  const wantStore = !args.only.length || storeSelected(args.only)
  const storeOpts: StoreBenchOpts = { quick: args.quick, rounds: args.rounds, sprigs: leafSprigs(wanted, versions), tmp: TMP, root: ROOT, startup: true }
  // The compiled binary at rest: binary.ts, after everything else.
  const wantBinary = binarySelected(args.only)
  const binaryOpts = { root: ROOT, tmp: TMP, bun: runtimeBin('bun'), bundle: path.resolve(ROOT, BUNDLE), quick: args.quick, pageOut }
  if (wantGw || wantTls) {
    const fds = raiseFdLimit(Math.max(wantGw ? 2 * 1000 : 0, wantTls ? args.conns : 0) + 500)
    if (fds) notes.push(fds)
  }
  if (!scenarios.length && (wantLeaf || wantGw || wantWs || wantTls || wantStore || wantBinary)) {
    const storeFailed = wantStore ? (await runStoreBench(storeOpts)).failed : 0
    const wsFailed = wantWs ? (await runWsBench(wsOpts, args.only)).failed : 0
    const tlsFailed = wantTls ? (await runTlsBench(tlsOpts)).failed : 0
    const leafFailed = wantLeaf ? (await runLeafBench(leafOpts, args.only)).failed : 0
    const gwFailed = wantGw ? (await runGatewayBench(gwOpts, args.only)).failed : 0
    const binFailed = wantBinary ? (await runBinaryBench(binaryOpts)).failed : 0
    for (const n of notes) console.log(`note: ${n}`)
    return leafFailed || gwFailed || wsFailed || tlsFailed || storeFailed || binFailed ? 1 : 0
  }
  if (!scenarios.length) throw new Error(`--only ${args.only.join(',')} matches none of: ${[...all.map((s) => s.id), ...WS_IDS, ...TLS_IDS, ...LEAF_IDS, ...GATEWAY_IDS, ...STORE_IDS, ...BINARY_IDS].join(', ')}`)
  const kinds = [...new Set(scenarios.map((s) => s.kind))]
  if (scenarios.some((s) => s.id.startsWith('mqtt-idle-conns'))) {
    const fds = raiseFdLimit(args.conns + 500)
    if (fds) notes.push(fds)
  }

  // sprig servers, per protocol family in use: a custom command, or the bundle per runtime.
  const bundle = path.resolve(ROOT, BUNDLE)
  const custom: Record<Kind, string> = { nats: args.sprigCmd, mqtt: args.sprigMqttCmd }
  const customEnv: Record<Kind, string> = { nats: 'SPRIG_CMD / --sprig-cmd', mqtt: 'SPRIG_MQTT_CMD / --sprig-mqtt-cmd' }
  for (const kind of kinds) {
    const cmd = custom[kind]
    if (cmd) {
      sprigs.push(
        fromArgv('sprig/cmd', kind, false, (port, aux, conf) => splitCmd(cmd).map((w) => w.replaceAll('{port}', port).replaceAll('{natsPort}', aux).replaceAll('{conf}', w.includes('{conf}') ? conf(port) : '')), () => 'custom command'),
      )
      if (args.runtimes) notes.push(`--runtimes ignored for ${kind}: ${customEnv[kind]} replaces the sprig servers`)
      continue
    }
    if (!existsSync(bundle)) {
      notes.push(`${BUNDLE} not found: run \`npm run bundle\` first (or set ${customEnv[kind]}); ${kind}: benchmarking the reference only`)
      continue
    }
    for (const name of wanted) {
      // The MQTT family opens with the idle connections: read as deployed (sprigCmd).
      const { r, cmd } = sprigCmd(name, kind === 'mqtt' && pageOut === undefined)
      if (!cmd) {
        if (kind === kinds[0]) notes.push(`runtime ${r} not installed, skipped`)
        continue
      }
      // NATS rows: -p {port}. MQTT rows: the MQTT listener on {port}, NATS on a port of its own.
      const ports = (port: string, aux: string): string[] => (kind === 'nats' ? ['-p', port, '--mqtt-port', '0'] : ['-p', aux, '--mqtt-port', port])
      const argv = (port: string, aux: string): string[] => [...cmd, ...ports(port, aux)]
      // With --idle-pings, the idle row reads a control server too: the same, from a copy of its own.
      const twin = kind === 'mqtt' && args.idlePings > 0 ? sprigCmd(name, pageOut === undefined, 'twin').cmd : null
      sprigs.push(fromArgv(`sprig/${name}`, kind, false, argv, () => versions[r]!, twin ? (port, aux) => [...twin, ...ports(port, aux)] : undefined))
    }
  }

  // Reference servers, one per protocol family in use.
  const refs: ServerSpec[] = []
  for (const kind of kinds) {
    const { bin, pkg } = REFERENCE[kind]
    const p = which(bin)
    if (!p) {
      notes.push(`reference ${bin} not found on PATH or in /usr/sbin (Debian/Ubuntu: apt-get install ${pkg}); no ratios for ${kind}`)
      continue
    }
    if (kind === 'mqtt') refs.push(fromArgv(bin, kind, true, (port, _aux, conf) => [p, '-c', conf(port)], () => firstLine(p, ['-h'])))
    else refs.push(fromArgv(bin, kind, true, (port) => [p, '-a', HOST, '-p', port], () => firstLine(p, ['--version'])))
  }

  // Reference first (in round 1), so its numbers are on screen while sprig runs.
  const servers = [...refs, ...sprigs]
  const m = machine()
  const genRuntime = process.versions.bun ? `bun ${process.versions.bun}` : 'Deno' in globalThis ? `deno ${process.versions.deno ?? ''}` : `node ${process.version}`
  const header = [
    `sprig bench  ${new Date().toISOString()}${args.quick ? '  (--quick)' : ''}, ${args.rounds} round${args.rounds > 1 ? 's' : ''}`,
    `command:   ${commandLine()}`,
    `machine:   ${m.cores} cores, ${m.model}, ${m.memGiB} GiB, ${m.os}`,
    `runtimes:  ${RUNTIMES.map((r) => versions[r]).join(' | ')}`,
    `load gen:  ${genRuntime} (this process, single-threaded, raw ${kinds.map((k) => k.toUpperCase()).join('/')} protocol over node:net, ${HOST})`,
    `servers:   ${servers.map((s) => `${s.name}${kinds.length > 1 ? ` (${s.kind})` : ''} = ${s.describe()} [${s.version()}]`).join('\n           ')}`,
    ...(kinds.includes('mqtt')
      ? [
          `mosquitto: listener {port} ${HOST}; ${MOSQUITTO_SETTINGS.join('; ')}`,
          `mqtt load: MQTT 3.1.1, clean session; ${flowControlNote()}`,
          ...(pageOut === undefined
            ? [`as deployed: sprig's MQTT servers (and the TLS row's) with the page-outs on (SPRIG_PAGEOUT=${DEPLOYED_PAGEOUT_MS}; none on Node), on Bun from a copy of the executable of their own`]
            : []),
          `targets:   sprig MQTT: ${MQTT_TARGETS}`,
        ]
      : []),
    ...(scenarios.some((s) => s.warm)
      ? [`warm-up:   ${args.warmup > 0 ? `before its first rate row each server carries every rate row's load${args.warmup !== 1 ? ` × ${args.warmup}` : ''}, not measured (--warmup)` : 'none (--warmup 0): the rate rows include a JIT\'s compiling'}`]
      : []),
    ...notes.map((n) => `note:      ${n}`),
  ]
  console.log(header.join('\n') + '\n')
  if (!servers.length) {
    console.log('nothing to benchmark')
    return 1
  }

  const raw: RunResult[] = []
  const perRound: ServerReport[] = []
  for (let round = 1; round <= args.rounds; round++) {
    const tag = args.rounds > 1 ? `[round ${round}/${args.rounds}] ` : ''
    // Rotate the order every round so no server always runs first (or right after another).
    const order = servers.map((_, i) => servers[(i + round - 1) % servers.length]!)
    for (const s of order) perRound.push(await runServer(s, scenarios.filter((x) => x.kind === s.kind), raw, round, tag, args.warmup))
  }
  const results = combineRounds(raw, scenarios)
  const reports = servers.map((s) => combineReports(perRound.filter((r) => r.name === s.name && r.kind === s.kind)))

  // Tables per protocol family: its sprig servers against its reference.
  const colsOf = (kind: Kind): Column[] => [...sprigs, ...refs].filter((s) => s.kind === kind).map((s) => ({ name: s.name, reference: s.reference }))
  console.log('')
  for (const s of scenarios) console.log(scenarioTable(s, colsOf(s.kind), results) + '\n')
  for (const kind of kinds) {
    const ref = refs.find((r) => r.kind === kind)
    if (ref && sprigs.some((x) => x.kind === kind)) {
      console.log(`ratios (x/ref, ${kind}): sprig ÷ ${ref.name} for rates, ${ref.name} ÷ sprig for latency and memory — higher is better for sprig, 1.00× = parity`)
    }
  }
  console.log('')
  for (const kind of kinds) {
    const title = kinds.length > 1 ? `== summary (${kind})` : '== summary'
    console.log(`${title}\n${summaryTable(scenarios.filter((s) => s.kind === kind), colsOf(kind), results)}\n`)
  }

  const srvRows = [['server', ...(kinds.length > 1 ? ['kind'] : []), 'version (INFO)', 'idle RSS', 'peak RSS (VmHWM)', 'RSS at end', 'command']]
  for (const r of [...reports.filter((x) => !x.reference), ...reports.filter((x) => x.reference)]) {
    srvRows.push([r.name, ...(kinds.length > 1 ? [r.kind] : []), r.infoVersion || '-', mib(r.idleRss), mib(r.peakRss), mib(r.endRss), r.command])
  }
  const w = srvRows[0]!.map((_, i) => Math.max(...srvRows.map((row) => row[i]!.length)))
  console.log(`== servers\n${srvRows.map((row) => row.map((c, i) => (i === 0 || i === row.length - 1 || (kinds.length > 1 && i === 1) ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ')).join('\n')}`)

  const ws = wantWs ? await runWsBench(wsOpts, args.only) : null
  const tlsRow = wantTls ? await runTlsBench(tlsOpts) : null
  const leaf = wantLeaf ? await runLeafBench(leafOpts, args.only) : null
  const gw = wantGw ? await runGatewayBench(gwOpts, args.only) : null
  const store = wantStore ? await runStoreBench(storeOpts) : null
  const binary = wantBinary ? await runBinaryBench(binaryOpts) : null
  const out = path.join(ROOT, 'dist/bench.json')
  mkdirSync(path.dirname(out), { recursive: true })
  const json = {
    date: new Date().toISOString(),
    command: commandLine(),
    quick: args.quick,
    rounds: args.rounds,
    warmup: args.warmup,
    machine: m,
    runtimes: versions,
    loadGenerator: genRuntime,
    notes,
    servers: reports,
    scenarios: scenarios.map((s) => ({ id: s.id, kind: s.kind, describe: s.describe, headline: s.headline, params: s.params, target: s.target?.text })),
    results,
    perRound: { results: raw, servers: perRound },
    ...(ws ? { websocket: ws.results } : {}),
    ...(tlsRow ? { tls: tlsRow.results } : {}),
    ...(leaf ? { leaf: leaf.results } : {}),
    ...(gw ? { gateway: gw.results } : {}),
    ...(store ? { store: store.results } : {}),
    ...(binary ? { binary: binary.results } : {}),
  }
  writeFileSync(out, JSON.stringify(json, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n')
  console.log(`\nresults written to ${path.relative(process.cwd(), out)}`)
  // Loss counts as a failure too: a broker must not drop messages under this load.
  const failed = raw.filter((r) => r.error).length
  const lossy = raw.filter((r) => typeof r.metrics?.lost === 'number' && r.metrics.lost > 0).length
  const busy = raw.filter((r) => (r.otherCpu ?? 0) > OTHER_CPU_WARN)
  if (busy.length) {
    const worst = Math.max(...busy.map((r) => r.otherCpu!))
    console.log(`warning: ${busy.length} of ${raw.length} scenario run(s) shared the machine with other load (> ${OTHER_CPU_WARN}% of a core, up to ${worst.toFixed(0)}%, see "other CPU"): their numbers and ratios are unreliable`)
  }
  if (failed) console.log(`${failed} scenario run(s) FAILED`)
  if (lossy) console.log(`${lossy} scenario run(s) LOST messages`)
  return failed || lossy || ws?.failed || tlsRow?.failed || leaf?.failed || gw?.failed || store?.failed || binary?.failed ? 1 : 0
}

/**
 * The command that runs the bundle under runtime (or variant) `name`, null when it is not
 * installed. `deployed`, for the idle-connection rows: memory as a gateway has it, with the
 * page-outs on (targets/pageout.ts; none on Node) and Bun run from a copy of its executable
 * in the run's directory, as the compiled binary is its own file: the load generator here
 * runs Bun too, and the kernel hands back no page that another process maps. `twin`: for a
 * control server beside it (Addr.twin), whose Bun or Deno executable is another copy, for the
 * same reason.
 */
function sprigCmd(name: string, deployed: boolean, twin?: 'twin'): { r: Runtime; cmd: string[] | null } {
  const v = VARIANTS[name]
  const r = v ? v.runtime : (name as Runtime)
  let bin = runtimeBin(r)
  if (!bin) return { r, cmd: null }
  if (deployed && (r === 'bun' || (twin && r === 'deno'))) {
    const copy = path.join(TMP, twin ? `${r}-twin` : r)
    if (!existsSync(copy)) copyFileSync(bin, copy)
    bin = copy
  }
  const vars = [...(v ? [v.env] : []), ...(deployed && r !== 'node' ? [`SPRIG_PAGEOUT=${DEPLOYED_PAGEOUT_MS}`] : [])]
  return { r, cmd: [...(vars.length ? ['env', ...vars] : []), ...(r === 'deno' ? [bin, 'run', '-A', BUNDLE] : [bin, BUNDLE])] }
}

/** The sprig spokes for the leaf rows: the bundle under each wanted runtime (as for NATS rows); `deployed`: see sprigCmd. */
function leafSprigs(wanted: string[], versions: Record<string, string>, deployed = false): LeafBenchOpts['sprigs'] {
  if (!existsSync(path.resolve(ROOT, BUNDLE))) return []
  return wanted.flatMap((name) => {
    const { r, cmd } = sprigCmd(name, deployed)
    return cmd ? [{ name: `sprig/${name}`, cmd, version: versions[r] ?? '' }] : []
  })
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`bench: ${(e as Error).message}`)
    process.exit(2)
  },
)
