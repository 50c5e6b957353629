// The store's benchmark rows alone (store-load.ts; `npm run bench -- --only store` runs the
// same inside bench.ts):
//
//   npm run bundle && bun test/bench/store.ts [--quick] [--runtimes bun,node,deno] [--rounds N]
//                                             [--no-startup] [--no-refs]
//
// Default: sprig under Bun (the issue's targets are for Bun), one round. env SPRIG_RUNTIME
// replaces the runtime command, e.g. SPRIG_RUNTIME='bun --cpu-prof-md --cpu-prof-dir=/tmp/p';
// env SPRIG_BUNDLE=<file.js> runs that bundle instead of dist/sprig.js (A/B runs).

import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { runtimeBin } from '../helpers/bins.ts'
import { firstLine } from './proc.ts'
import { runStoreBench } from './store-load.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const argv = process.argv.slice(2)
const flag = (f: string): boolean => argv.includes(f)
const value = (f: string): string | undefined => {
  const i = argv.indexOf(f)
  return i >= 0 ? argv[i + 1] : undefined
}
const quick = flag('--quick')
const rounds = Number(value('--rounds') ?? 1)
const runtimes = (value('--runtimes') ?? 'bun').split(',').filter(Boolean) as ('bun' | 'node' | 'deno')[]
const TMP = mkdtempSync(path.join(process.env.STORE_BENCH_DIR || os.tmpdir(), 'sprig-store-bench-'))
process.on('exit', () => rmSync(TMP, { recursive: true, force: true }))

const bundle = path.resolve(ROOT, process.env.SPRIG_BUNDLE || 'dist/sprig.js')
const custom = process.env.SPRIG_RUNTIME?.split(/\s+/).filter(Boolean)
const sprigs = custom
  ? [{ name: `sprig/${path.basename(custom[0]!)}`, cmd: [...custom, ...(custom[0]!.endsWith('deno') ? ['run', '-A'] : []), bundle], version: '' }]
  : runtimes.flatMap((r) => {
      const bin = runtimeBin(r)
      if (!bin) return []
      return [{ name: `sprig/${r}`, cmd: r === 'deno' ? [bin, 'run', '-A', bundle] : [bin, bundle], version: firstLine(bin, ['--version']) }]
    })
console.log(`store bench ${new Date().toISOString()}: ${sprigs.map((s) => `${s.name} ${s.version}`).join(', ')}; load generator ${process.versions.bun ? `bun ${process.versions.bun}` : `node ${process.version}`}; load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`)
const r = await runStoreBench({ quick, rounds, sprigs, tmp: TMP, root: ROOT, startup: !flag('--no-startup'), noRefs: flag('--no-refs') })
process.exit(r.failed ? 1 : 0)
