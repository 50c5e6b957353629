// The two page-outs that come a minute on (targets/pageout.ts), as targets/run.ts wires them,
// each in a process of its own, the two side by side (two minutes at most): a follow-up
// page-out at the first settled check a minute or more after start-up's, and, after a burst
// paged out, another burst within the minute paged out once the minute is over. Both need the
// process quiet, as an idle one is. Bun, each from a copy of its executable, as the compiled
// binary is its own file (the kernel pages out nothing another process maps).

import t from 'tap'
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { privateBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, skipOrFail, spawnServer, waitOutput } from './helpers/peers.ts'
import { connectRaw, exchange } from './helpers/raw.ts'

const bun = runtimeBin('bun')
const dir = mkdtempSync(join(tmpdir(), 'sprig-pageout-minute-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const bundle = privateBundle(join(dir, 'sprig.js'))
// As in production: without tap's coverage loader.
const env = { NODE_OPTIONS: '', SPRIG_PAGEOUT: '300' }

const copyOf = (bin: string, name: string): string => {
  const to = join(dir, `bun-${name}`)
  copyFileSync(bin, to)
  return to
}

t.test('a minute on: the follow-up page-out after start-up, and a burst within the minute paged out later', async (t) => {
  if (!bun) return skipOrFail(t, 'bun not found: run npm ci (the package bun)')
  const debug = ['-a', '127.0.0.1', '--mqtt-port', '0', '-l', 'debug']
  const [pa, pb] = [await freePort(), await freePort()]
  const a = await spawnServer(copyOf(bun, 'a'), [bundle, ...debug, '-p', String(pa)], pa, env)
  t.teardown(() => a.stop())
  const b = await spawnServer(copyOf(bun, 'b'), [bundle, ...debug, '-p', String(pb)], pb, env)
  t.teardown(() => b.stop())
  const at = (line: string): number => Date.parse(line.slice(0, 24))
  const start = await waitOutput(a, /^(\S+) \[INF\] Start-up done: .*→ ([\d.]+) MiB/m, 0, 8000)
  t.ok(start, 'a: start-up page-out')
  t.ok(await waitOutput(b, /Start-up done/, 0, 8000), 'b: start-up page-out')

  // b: a burst pages out at once; its close and a reopen come within the minute.
  const burstLine = /^(\S+) \[DBG\] Accept burst over: [\d.]+ MiB of the executable's pages handed back \(file-backed RSS ([\d.]+) → ([\d.]+) MiB/gm
  const bursts = (): RegExpExecArray[] => [...b.output().matchAll(burstLine)]
  let socks = await Promise.all(Array.from({ length: 150 }, () => connectRaw(pb)))
  for (let i = 0; i < 100 && bursts().length < 1; i++) await new Promise((r) => setTimeout(r, 50))
  t.equal(bursts().length, 1, 'b: the first burst paged out at once')
  socks.forEach((s) => s.destroy())
  await new Promise((r) => setTimeout(r, 2000))
  socks = await Promise.all(Array.from({ length: 150 }, () => connectRaw(pb)))
  t.teardown(() => socks.forEach((s) => s.destroy()))
  await new Promise((r) => setTimeout(r, 3000))
  t.equal(bursts().length, 1, 'b: the close and the reopen within the minute: not yet')

  const followUp = /^(\S+) \[DBG\] Code paged in since the last page-out: [\d.]+ MiB of the executable's pages handed back \(file-backed RSS ([\d.]+) → ([\d.]+) MiB/m
  const [later, follow] = await Promise.all([
    (async () => {
      for (let i = 0; i < 1400 && bursts().length < 2; i++) await new Promise((r) => setTimeout(r, 50))
      return bursts()
    })(),
    waitOutput(a, followUp, 0, 130_000),
  ])
  t.equal(later.length, 2, "b: the reopen's page-out came once the minute was over")
  if (later.length !== 2) t.comment(b.output().slice(-600))
  if (later.length === 2) {
    const gap = (at(later[1]![0]) - at(later[0]![0])) / 1000
    t.ok(gap >= 55 && gap < 70, `b: ${gap.toFixed(1)} s after the first`)
    t.ok(Number(later[1]![3]) < Number(later[1]![2]), `b: file-backed RSS ${later[1]![2]} → ${later[1]![3]} MiB`)
  }
  t.ok(follow, 'a: the follow-up page-out (debug)')
  if (follow === null) t.comment(a.output().slice(-600))
  if (start !== null && follow !== null) {
    t.ok(at(follow[0]) - at(start[0]) >= 60_000, 'a: a minute or more after start-up\'s')
    t.ok(Number(follow[2]) - Number(start[2]) >= 2, `a: it came when 2 MiB or more were back (${start[2]} → ${follow[2]} MiB)`)
    t.ok(Number(follow[3]) < Number(follow[2]), `a: file-backed RSS ${follow[2]} → ${follow[3]} MiB`)
  }
  t.equal((await exchange(pa, 'PING\r\n')).out, 'PONG\r\n', 'a answers after it')
  t.equal((await exchange(pb, 'PING\r\n')).out, 'PONG\r\n', 'b answers after it')
})

