// Number formatting and the side-by-side tables.
import type { Metrics, MetricSpec, Scenario } from './model.ts'

export interface RunResult {
  scenario: string
  server: string
  /** 1-based round for raw results; absent once rounds are combined. */
  round?: number
  /** Combined results: how many rounds, and min/max of the headline metric over them. */
  rounds?: number
  range?: [number, number]
  metrics?: Metrics
  error?: string
  /** CPU used during the scenario, in % of one core. */
  serverCpu?: number
  benchCpu?: number
  /** CPU used by everything else on the machine meanwhile (other processes, kernel): noise. */
  otherCpu?: number
  /**
   * CPU seconds (user + system, from /proc/PID/stat) per million messages, per broker process
   * of the row: `server` for a single server, `spoke`/`hub`, `gateway`/`hub`/`cloud` for the
   * multi-process rows. "Messages" is the row's `cpuMsgs` metric, else its `msgs` (published).
   */
  cpuPerM?: Record<string, number>
  wallMs: number
}

/** The message count a row's CPU is divided by: `cpuMsgs` if the scenario set one, else `msgs`. */
export function cpuMsgs(m: Metrics | undefined): number {
  const n = m?.cpuMsgs ?? m?.msgs
  return typeof n === 'number' && n > 0 ? n : NaN
}

/**
 * Per process role, CPU seconds per million messages from CPU seconds used during the row;
 * roles whose CPU is unknown (NaN) are left out.
 */
export function cpuPerMillion(m: Metrics | undefined, cpuSecs: Record<string, number>): Record<string, number> | undefined {
  const n = cpuMsgs(m)
  if (!Number.isFinite(n)) return undefined
  const out: Record<string, number> = {}
  for (const [role, s] of Object.entries(cpuSecs)) if (Number.isFinite(s)) out[role] = (s * 1e6) / n
  return Object.keys(out).length ? out : undefined
}

/** A server column: its name and, for sprig, the reference server it is compared with. */
export interface Column {
  name: string
  reference: boolean
}

export function fmtCount(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

export function fmtRate(n: number): string {
  if (!Number.isFinite(n)) return '-'
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}k`
  return n.toFixed(0)
}

export function fmtMB(n: number): string {
  return Number.isFinite(n) ? n.toFixed(n >= 100 ? 0 : 1) : '-'
}

export function fmtUs(n: number): string {
  return n >= 100 ? n.toFixed(0) : n.toFixed(1)
}

export function fmtPct(n: number): string {
  return `${(n * 100).toFixed(n >= 1 || n === 0 ? 0 : 1)}%`
}

export function fmtRatio(n: number): string {
  return Number.isFinite(n) && n > 0 ? `${n.toFixed(2)}×` : '-'
}

/** sprig relative to the reference so that higher is always better for sprig. */
export function ratio(spec: MetricSpec, sprig: number | string | undefined, ref: number | string | undefined): number {
  if (typeof sprig !== 'number' || typeof ref !== 'number' || !sprig || !ref) return NaN
  return spec.better === 'lower' ? ref / sprig : sprig / ref
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Combines the rounds of each scenario × server: medians, worst case where the spec says so. */
export function combineRounds(raw: RunResult[], scenarios: Scenario[]): RunResult[] {
  const groups = new Map<string, RunResult[]>()
  for (const r of raw) {
    const key = `${r.scenario}\0${r.server}`
    groups.set(key, [...(groups.get(key) ?? []), r])
  }
  const out: RunResult[] = []
  for (const rs of groups.values()) {
    const s = scenarios.find((x) => x.id === rs[0]!.scenario)!
    const ok = rs.filter((r) => r.metrics && !r.error)
    const failed = rs.filter((r) => r.error)
    const c: RunResult = { scenario: s.id, server: rs[0]!.server, rounds: rs.length, wallMs: rs.reduce((a, r) => a + r.wallMs, 0) }
    if (!ok.length) {
      c.error = failed[0]?.error ?? 'no result'
      out.push(c)
      continue
    }
    const m: Metrics = {}
    for (const [key, v] of Object.entries(ok[ok.length - 1]!.metrics!)) {
      const nums = ok.map((r) => r.metrics![key]).filter((x): x is number => typeof x === 'number')
      if (typeof v !== 'number' || !nums.length) m[key] = v
      else m[key] = s.metrics.find((x) => x.key === key)?.agg === 'max' ? Math.max(...nums) : median(nums)
    }
    const notes = ok.map((r) => r.metrics!.note).filter((x): x is string => typeof x === 'string')
    if (failed.length) notes.unshift(`${failed.length} of ${rs.length} rounds failed: ${failed[0]!.error}`)
    if (notes.length) m.note = [...new Set(notes)].join('; ')
    c.metrics = m
    const cpu = ok.map((r) => r.serverCpu).filter((x): x is number => typeof x === 'number')
    if (cpu.length) c.serverCpu = median(cpu)
    c.benchCpu = median(ok.map((r) => r.benchCpu ?? 0))
    const roles = [...new Set(ok.flatMap((r) => Object.keys(r.cpuPerM ?? {})))]
    if (roles.length) c.cpuPerM = Object.fromEntries(roles.map((role) => [role, median(ok.map((r) => r.cpuPerM?.[role]).filter((x): x is number => typeof x === 'number'))]))
    const other = ok.map((r) => r.otherCpu).filter((x): x is number => typeof x === 'number')
    if (other.length) c.otherCpu = Math.max(...other)
    const hl = ok.map((r) => r.metrics![s.headline]).filter((x): x is number => typeof x === 'number')
    if (hl.length) c.range = [Math.min(...hl), Math.max(...hl)]
    out.push(c)
  }
  return out
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)))
  return rows.map((r) => r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ')).join('\n')
}

function shortName(n: string): string {
  return n.replace(/^sprig\//, '')
}

/** Ratio column names: `bun/ref` against one reference, `bun/<ref>` against several. */
function ratioNames(sprigs: Column[], refs: Column[]): string[] {
  return refs.flatMap((r) => sprigs.map((c) => `${shortName(c.name)}/${refs.length > 1 ? r.name.split(' ')[0] : 'ref'}`))
}

/** The CPU-per-message rows: one per process role present in `results`, `server` first. */
function cpuPerMSpecs(results: RunResult[]): MetricSpec[] {
  const roles = [...new Set(results.flatMap((r) => Object.keys(r.cpuPerM ?? {})))].sort((a, b) => (a === 'server' ? -1 : b === 'server' ? 1 : 0))
  return roles.map((role) => ({ key: `cpu:${role}`, label: `CPU s / 1M msgs${role === 'server' ? '' : ` (${role})`}`, fmt: fmtCpu, better: 'lower' as const }))
}

export function fmtCpu(n: number): string {
  return Number.isFinite(n) ? (n >= 10 ? n.toFixed(1) : n.toFixed(2)) : '-'
}

const cpuSpecs: MetricSpec[] = [
  { key: 'serverCpu', label: 'server CPU (% of 1 core)', fmt: (v) => v.toFixed(0) },
  { key: 'benchCpu', label: 'load gen CPU (% of 1 core)', fmt: (v) => v.toFixed(0) },
  { key: 'otherCpu', label: 'other CPU (% of 1 core)', fmt: (v) => v.toFixed(0) },
]

function value(r: RunResult | undefined, key: string): number | string | undefined {
  if (!r?.metrics) return undefined
  if (key === 'serverCpu') return r.serverCpu
  if (key === 'benchCpu') return r.benchCpu
  if (key === 'otherCpu') return r.otherCpu
  if (key.startsWith('cpu:')) return r.cpuPerM?.[key.slice(4)]
  return r.metrics[key]
}

function cell(spec: MetricSpec, v: number | string | undefined): string {
  if (v === undefined) return '-'
  return typeof v === 'number' ? spec.fmt(v) : v
}

/** One scenario: metrics as rows, one column per server, then one ratio column per sprig. */
export function scenarioTable(s: Scenario, cols: Column[], results: RunResult[]): string {
  const refs = cols.filter((c) => c.reference)
  const sprigs = cols.filter((c) => !c.reference)
  const by = new Map(results.filter((r) => r.scenario === s.id).map((r) => [r.server, r]))
  const header = ['', ...cols.map((c) => c.name), ...ratioNames(sprigs, refs)]
  const rows: string[][] = [header]
  const mine = results.filter((r) => r.scenario === s.id)
  for (const spec of [...s.metrics, ...cpuPerMSpecs(mine), ...cpuSpecs]) {
    if (!cols.some((c) => value(by.get(c.name), spec.key) !== undefined)) continue
    const row = [spec.label, ...cols.map((c) => (by.get(c.name)?.error ? 'FAIL' : cell(spec, value(by.get(c.name), spec.key))))]
    for (const ref of refs) {
      for (const c of sprigs) {
        row.push(spec.better ? fmtRatio(ratio(spec, value(by.get(c.name), spec.key), value(by.get(ref.name), spec.key))) : '')
      }
    }
    rows.push(row)
    if (spec.key === s.headline && cols.some((c) => (by.get(c.name)?.rounds ?? 1) > 1)) {
      const rangeRow = [`  min–max of ${Math.max(...cols.map((c) => by.get(c.name)?.rounds ?? 1))} rounds`]
      for (const c of cols) {
        const rg = by.get(c.name)?.range
        rangeRow.push(rg && !by.get(c.name)?.error ? `${spec.fmt(rg[0])}–${spec.fmt(rg[1])}` : '')
      }
      rows.push(rangeRow)
    }
  }
  if (rows.length === 1) rows.push(['(no results)', ...cols.map((c) => (by.get(c.name)?.error ? 'FAIL' : '-'))])
  const notes: string[] = []
  for (const c of cols) {
    const r = by.get(c.name)
    if (r?.error) notes.push(`  ${c.name}: FAILED: ${r.error}`)
    else if (typeof r?.metrics?.note === 'string') notes.push(`  ${c.name}: ${r.metrics.note}`)
  }
  return `== ${s.id} — ${s.describe}\n${table(rows)}${notes.length ? '\n' + notes.join('\n') : ''}`
}

/** Headline metric of every scenario in one table, with the target and whether each sprig meets it. */
export function summaryTable(scenarios: Scenario[], cols: Column[], results: RunResult[]): string {
  const refs = cols.filter((c) => c.reference)
  const ref = refs[0]
  const sprigs = cols.filter((c) => !c.reference)
  const targets = scenarios.some((s) => s.target)
  // Beside the rate: the CPU seconds per million messages of the row's main broker process.
  const main = results.some((r) => r.cpuPerM?.server !== undefined) ? 'server' : results.some((r) => r.cpuPerM?.gateway !== undefined) ? 'gateway' : results.some((r) => r.cpuPerM?.spoke !== undefined) ? 'spoke' : ''
  const cpuSpec: MetricSpec = { key: `cpu:${main}`, label: '', fmt: fmtCpu, better: 'lower' }
  const rows: string[][] = [
    [
      'scenario',
      'metric',
      ...cols.map((c) => c.name),
      ...ratioNames(sprigs, refs),
      ...(main ? [...cols.map((c) => `${shortName(c.name)} CPU s/1M`), ...ratioNames(sprigs, refs)] : []),
      ...(targets ? ['target'] : []),
    ],
  ]
  for (const s of scenarios) {
    const spec = s.metrics.find((m) => m.key === s.headline)!
    const by = new Map(results.filter((r) => r.scenario === s.id).map((r) => [r.server, r]))
    const row = [s.id, spec.label, ...cols.map((c) => (by.get(c.name)?.error ? 'FAIL' : cell(spec, value(by.get(c.name), spec.key))))]
    for (const r of refs) for (const c of sprigs) row.push(fmtRatio(ratio(spec, value(by.get(c.name), spec.key), value(by.get(r.name), spec.key))))
    if (main) {
      for (const c of cols) row.push(by.get(c.name)?.error ? 'FAIL' : cell(cpuSpec, value(by.get(c.name), cpuSpec.key)))
      for (const r of refs) for (const c of sprigs) row.push(fmtRatio(ratio(cpuSpec, value(by.get(c.name), cpuSpec.key), value(by.get(r.name), cpuSpec.key))))
    }
    if (targets) row.push(s.target ? `${s.target.text}${verdicts(s, spec, sprigs, refs, by)}` : '')
    rows.push(row)
  }
  return table(rows)
}

/** " met"/" missed" per sprig column (names shown when there are several); '' if unknown. */
function verdicts(s: Scenario, spec: MetricSpec, sprigs: Column[], refs: Column[], by: Map<string, RunResult>): string {
  const t = s.target!
  const ref = refs[0]
  const out: string[] = []
  for (const c of sprigs) {
    const v = value(by.get(c.name), spec.key)
    if (typeof v !== 'number' || by.get(c.name)?.error) continue
    let ok = true
    if (t.max !== undefined) ok &&= v <= t.max
    if (t.ratio !== undefined) {
      const r = ref ? ratio(spec, v, value(by.get(ref.name), spec.key)) : NaN
      if (!Number.isFinite(r)) continue
      ok &&= r >= t.ratio
    }
    let unknown = false
    for (const [name, want] of Object.entries(t.perRef ?? {})) {
      const r = refs.some((x) => x.name === name) ? ratio(spec, v, value(by.get(name), spec.key)) : NaN
      if (!Number.isFinite(r)) unknown = true
      else ok &&= r >= want
    }
    if (unknown && ok) continue
    out.push(`${sprigs.length > 1 ? shortName(c.name) + ' ' : ''}${ok ? 'met' : 'MISSED'}`)
  }
  return out.length ? `: ${out.join(', ')}` : ''
}
