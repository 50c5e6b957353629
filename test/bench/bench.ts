// sprig benchmark: the same raw-socket load against sprig (per runtime) and the reference
// server, one server at a time, printed side by side with ratios. See --help.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Kind, Scenario, ServerSpec } from './model.ts'
import { natsScenarios } from './nats-load.ts'
import { firstLine, freePort, HOST, launch, procCpuSeconds, procStatusBytes, sleep, stop, waitReady, which } from './proc.ts'
import { runtimeBin as projectBin } from '../helpers/bins.ts'
import { combineRounds, scenarioTable, summaryTable, type Column, type RunResult } from './report.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const BUNDLE = process.env.SPRIG_BUNDLE || 'dist/sprig.js'
const RUNTIMES = ['bun', 'node', 'deno'] as const
type Runtime = (typeof RUNTIMES)[number]
/**
 * Socket-API variants, to check each runtime's default choice (targets/*.ts, node:net on all
 * three): Bun on Bun.listen, Deno on Deno.listen. Not run by default.
 */
const VARIANTS: Record<string, { runtime: Runtime; env: string }> = {
  'bun+native': { runtime: 'bun', env: 'SPRIG_NET=native' },
  'deno+native': { runtime: 'deno', env: 'SPRIG_NET=native' },
}
/** Reference server per protocol and the Debian package that provides it. */
const REFERENCE: Record<Kind, { bin: string; pkg: string }> = {
  nats: { bin: 'nats-server', pkg: 'nats-server' },
  mqtt: { bin: 'mosquitto', pkg: 'mosquitto' },
}
/** Let the server settle (GC, freed buffers) between scenarios. */
const SETTLE_MS = 300

const HELP = `usage: bun test/bench/bench.ts [--runtimes bun,node,deno] [--quick] [--only <substr>[,<substr>…]] [--rounds N]

  --runtimes   sprig runtimes to benchmark (default: every one that is installed); also
               bun+native and deno+native, the socket APIs each runtime does not use by default
  --quick      10× fewer messages and 1 round, for a CI smoke run
  --rounds     rounds over all servers (default 3, --quick 1); tables show the median of the
               rounds and the min–max of the headline metric. Servers take turns in every
               round, so drift on a noisy machine hits all of them alike.
  --only       run only scenarios whose id contains one of the substrings (case-insensitive),
               e.g. --only pub-sub, --only 16B, --only req-reply,fan-out
  --sprig-cmd  replace the sprig servers by this command, {port} is substituted
               (same as env SPRIG_CMD), e.g. --sprig-cmd 'nats-server -a 127.0.0.1 -p {port}'

env SPRIG_BUNDLE=<file.js> runs that bundle under each runtime instead of dist/sprig.js.

Writes the results to dist/bench.json as well.`

interface Args {
  /** Runtimes and VARIANTS names. */
  runtimes: string[] | null
  quick: boolean
  rounds: number
  only: string[]
  sprigCmd: string
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runtimes: null, quick: false, rounds: 0, only: [], sprigCmd: process.env.SPRIG_CMD ?? '' }
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

function fromArgv(name: string, kind: Kind, reference: boolean, argv: (port: string) => string[], version: () => string): ServerSpec {
  return {
    name,
    kind,
    reference,
    describe: (port) => argv(port === undefined ? '{port}' : String(port)).map(shellQuote).join(' '),
    start: (port) => launch(argv(String(port)), ROOT),
    version,
  }
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
  const env = ['SPRIG_CMD', 'SPRIG_BUNDLE']
    .filter((k) => process.env[k])
    .map((k) => `${k}=${shellQuote(process.env[k]!)} `)
    .join('')
  return `${env}${rt} ${[script, ...process.argv.slice(2)].map(shellQuote).join(' ')}`
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

async function runServer(spec: ServerSpec, scenarios: Scenario[], results: RunResult[], round: number, tag: string): Promise<ServerReport> {
  const port = await freePort()
  const rep: ServerReport = {
    name: spec.name,
    kind: spec.kind,
    reference: spec.reference,
    command: spec.describe(port),
    version: spec.version(),
    infoVersion: '',
    idleRss: NaN,
    peakRss: NaN,
    endRss: NaN,
  }
  const proc = spec.start(port)
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
    failAll(`server did not start: ${rep.error.split('\n')[0]}`)
    await stop(proc)
    return rep
  }
  for (const s of scenarios) {
    if (proc.exited()) {
      results.push({ scenario: s.id, server: spec.name, round, error: `server ${proc.exited()}`, wallMs: 0 })
      continue
    }
    const cpu0 = procCpuSeconds(proc.pid)
    const gen0 = process.cpuUsage()
    const t0 = performance.now()
    const r: RunResult = { scenario: s.id, server: spec.name, round, wallMs: 0 }
    try {
      r.metrics = await s.run({ host: HOST, port })
    } catch (e) {
      r.error = (e as Error).message
      // A dropped connection is often the server dying: give its exit a moment to be noticed.
      await sleep(200)
      if (proc.exited()) r.error += ` (server ${proc.exited()}${proc.tail() ? `; last output: ${proc.tail().slice(-300)}` : ''})`
    }
    r.wallMs = performance.now() - t0
    const gen = process.cpuUsage(gen0)
    r.serverCpu = ((procCpuSeconds(proc.pid) - cpu0) * 1000 * 100) / r.wallMs
    r.benchCpu = ((gen.user + gen.system) / 1000 / r.wallMs) * 100
    if (!Number.isFinite(r.serverCpu)) delete r.serverCpu
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

function progress(msg: string): void {
  process.stderr.write(`  … ${msg}\n`)
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2))
  const notes: string[] = []

  // Runtimes: versions for the report, and the sprig servers to run.
  const wanted = args.runtimes ?? [...RUNTIMES]
  const versions: Record<string, string> = {}
  const sprigs: ServerSpec[] = []
  for (const r of RUNTIMES) {
    const bin = runtimeBin(r)
    versions[r] = bin ? runtimeVersion(r, bin) : 'not installed'
  }
  const bundle = path.resolve(ROOT, BUNDLE)
  if (args.sprigCmd) {
    const cmd = args.sprigCmd
    sprigs.push(fromArgv('sprig/cmd', 'nats', false, (port) => splitCmd(cmd.replaceAll('{port}', port)), () => 'custom command'))
    if (args.runtimes) notes.push('--runtimes ignored: SPRIG_CMD / --sprig-cmd replaces the sprig servers')
  } else if (!existsSync(bundle)) {
    notes.push(`${BUNDLE} not found: run \`npm run bundle\` first (or set SPRIG_CMD); benchmarking the reference only`)
  } else {
    for (const name of wanted) {
      const v = VARIANTS[name]
      const r = v ? v.runtime : (name as Runtime)
      const bin = runtimeBin(r)
      if (!bin) {
        notes.push(`runtime ${r} not installed, skipped`)
        continue
      }
      const env = v ? ['env', v.env] : []
      const argv = (port: string): string[] => [...env, ...(r === 'deno' ? [bin, 'run', '-A', BUNDLE, '-p', port] : [bin, BUNDLE, '-p', port])]
      sprigs.push(fromArgv(`sprig/${name}`, 'nats', false, argv, () => versions[r]!))
    }
  }

  if (args.quick) notes.push('--quick: runs of ~0.1-0.5 s, a smoke test; ratios are noise (±30%), use a full run for numbers')
  const all = natsScenarios({ quick: args.quick })
  const scenarios = args.only.length ? all.filter((s) => args.only.some((o) => s.id.toLowerCase().includes(o))) : all
  if (!scenarios.length) throw new Error(`--only ${args.only.join(',')} matches none of: ${all.map((s) => s.id).join(', ')}`)

  // Reference servers, one per protocol family in use.
  const refs: ServerSpec[] = []
  for (const kind of new Set(scenarios.map((s) => s.kind))) {
    const { bin, pkg } = REFERENCE[kind]
    const p = which(bin)
    if (!p) {
      notes.push(`reference ${bin} not found on PATH (Debian/Ubuntu: apt-get install ${pkg}); no ratios for ${kind}`)
      continue
    }
    refs.push(fromArgv(bin, kind, true, (port) => [p, '-a', HOST, '-p', port], () => firstLine(p, ['--version'])))
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
    `load gen:  ${genRuntime} (this process, single-threaded, raw NATS protocol over node:net, ${HOST})`,
    `servers:   ${servers.map((s) => `${s.name} = ${s.describe()} [${s.version()}]`).join('\n           ')}`,
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
    for (const s of order) perRound.push(await runServer(s, scenarios.filter((x) => x.kind === s.kind), raw, round, tag))
  }
  const results = combineRounds(raw, scenarios)
  const reports = servers.map((s) => combineReports(perRound.filter((r) => r.name === s.name)))

  const cols: Column[] = [...sprigs, ...refs].map((s) => ({ name: s.name, reference: s.reference }))
  console.log('')
  for (const s of scenarios) console.log(scenarioTable(s, cols, results) + '\n')
  if (refs.length && sprigs.length) console.log('ratios (x/ref): sprig ÷ nats-server for rates, nats-server ÷ sprig for latency — higher is better for sprig, 1.00× = parity\n')
  console.log(`== summary\n${summaryTable(scenarios, cols, results)}\n`)

  const srvRows = [['server', 'version (INFO)', 'idle RSS', 'peak RSS (VmHWM)', 'RSS at end', 'command']]
  for (const r of [...reports.filter((x) => !x.reference), ...reports.filter((x) => x.reference)]) {
    srvRows.push([r.name, r.infoVersion || '-', mib(r.idleRss), mib(r.peakRss), mib(r.endRss), r.command])
  }
  const w = srvRows[0]!.map((_, i) => Math.max(...srvRows.map((row) => row[i]!.length)))
  console.log(`== servers\n${srvRows.map((row) => row.map((c, i) => (i === 0 || i === row.length - 1 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ')).join('\n')}`)

  const out = path.join(ROOT, 'dist/bench.json')
  mkdirSync(path.dirname(out), { recursive: true })
  const json = {
    date: new Date().toISOString(),
    command: commandLine(),
    quick: args.quick,
    rounds: args.rounds,
    machine: m,
    runtimes: versions,
    loadGenerator: genRuntime,
    notes,
    servers: reports,
    scenarios: scenarios.map((s) => ({ id: s.id, kind: s.kind, describe: s.describe, headline: s.headline, params: s.params })),
    results,
    perRound: { results: raw, servers: perRound },
  }
  writeFileSync(out, JSON.stringify(json, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n')
  console.log(`\nresults written to ${path.relative(process.cwd(), out)}`)
  // Loss counts as a failure too: a broker must not drop messages under this load.
  const failed = raw.filter((r) => r.error).length
  const lossy = raw.filter((r) => typeof r.metrics?.lost === 'number' && r.metrics.lost > 0).length
  if (failed) console.log(`${failed} scenario run(s) FAILED`)
  if (lossy) console.log(`${lossy} scenario run(s) LOST messages`)
  return failed || lossy ? 1 : 0
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`bench: ${(e as Error).message}`)
    process.exit(2)
  },
)
