// Bun: sprig starts itself again at once with MIMALLOC_PURGE_DELAY=1000 (targets/bun.ts
// tuneAllocator), by execve, so the process keeps its id and its arguments. mimalloc prints
// the options it read at start when MIMALLOC_VERBOSE=1: the first image reads the default
// Bun's mimalloc was built with (100 ms in Bun 1.4.5), the second 1000. An operator's own
// value is kept, and no second start happens then.

import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, skipOrFail, spawnServer } from './helpers/peers.ts'
import { exchange } from './helpers/raw.ts'

const bun = runtimeBin('bun')

t.before(() => {
  freshBundle()
})

/** The environment and command line of a running process, from /proc. */
function procView(pid: number): { env: string[]; cmdline: string[] } {
  const split = (f: string): string[] => readFileSync(`/proc/${pid}/${f}`, 'utf8').split('\0').filter(Boolean)
  return { env: split('environ'), cmdline: split('cmdline') }
}

async function start(t: Test, flags: string[], env: NodeJS.ProcessEnv) {
  const port = await freePort()
  const args = [...flags, freshBundle(), '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0']
  const p = await spawnServer(bun, args, port, { NODE_OPTIONS: '', MIMALLOC_VERBOSE: '1', ...env })
  t.teardown(() => p.stop())
  const r = await exchange(port, 'PING\r\n')
  t.equal(r.out, 'PONG\r\n', 'the broker answers on the port its arguments named')
  return { p, port, view: procView(p.proc.pid!) }
}

const purgeDelays = (out: string): string[] => [...out.matchAll(/option 'purge_delay': (-?\d+)/g)].map((m) => m[1]!)

t.test('without MIMALLOC_PURGE_DELAY, Bun runs sprig with 1000 ms, in the same process', async (t) => {
  if (!bun) return skipOrFail(t, 'bun is not installed (npm package bun)')
  const { p, view } = await start(t, [], { MIMALLOC_PURGE_DELAY: undefined })
  t.ok(view.env.includes('MIMALLOC_PURGE_DELAY=1000'), 'the serving process (the spawned pid) has the variable')
  const read = purgeDelays(p.output())
  t.equal(read.length, 2, `two images started: ${read.join(', ')}`)
  t.not(read[0], '1000', `the first read the built-in default (${read[0]})`)
  t.equal(read[1], '1000', 'the second read 1000')
  t.equal((p.output().match(/Starting sprig version/g) ?? []).length, 1, 'sprig itself started once')
  t.ok(view.cmdline.includes('--mqtt-port'), `the arguments are kept: ${view.cmdline.join(' ')}`)
})

t.test("Bun's own flags go to the second start too", async (t) => {
  if (!bun) return skipOrFail(t, 'bun is not installed (npm package bun)')
  const { view } = await start(t, ['--smol'], { MIMALLOC_PURGE_DELAY: undefined })
  t.ok(view.cmdline.includes('--smol'), `--smol kept: ${view.cmdline.join(' ')}`)
  t.ok(view.env.includes('MIMALLOC_PURGE_DELAY=1000'))
})

t.test("an operator's MIMALLOC_PURGE_DELAY is kept and nothing is started again", async (t) => {
  if (!bun) return skipOrFail(t, 'bun is not installed (npm package bun)')
  const { p, view } = await start(t, [], { MIMALLOC_PURGE_DELAY: '250' })
  t.ok(view.env.includes('MIMALLOC_PURGE_DELAY=250'))
  t.same(purgeDelays(p.output()), ['250'], 'one image, with the operator’s value')
})
