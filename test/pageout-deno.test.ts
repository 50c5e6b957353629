// Deno hands memory back like Bun (targets/pageout.ts): start-up's code pages once quiet, and
// after an accept burst glibc's free memory (malloc_trim) and the pages the burst paged in.
// Both go through Deno's FFI and need its permission: without it sprig says so at debug level
// and serves as before (and Deno never stops to prompt for it).

import t, { type Test } from 'tap'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, rssFileMiB, spawnServer, waitOutput, type Proc } from './helpers/peers.ts'
import { connectRaw, exchange } from './helpers/raw.ts'

const bundle = freshBundle()
const deno = runtimeBin('deno')
// As in production: without tap's coverage loader.
const env = { NODE_OPTIONS: '', SPRIG_NET: '', SPRIG_PAGEOUT: '300' }

const until = (p: Proc, re: RegExp): Promise<RegExpExecArray | null> => waitOutput(p, re, 0, 8000)

/** 150 NATS connections at once: a burst (targets/runtime.ts afterAccept). */
async function burst(t: Test, port: number): Promise<void> {
  const socks = await Promise.all(Array.from({ length: 150 }, () => connectRaw(port)))
  t.teardown(() => socks.forEach((s) => s.destroy()))
}

t.test('deno run -A: start-up pages, then after a burst free heap and pages, handed back', async (t) => {
  const port = await freePort()
  const p = await spawnServer(deno, ['run', '-A', bundle, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0', '-l', 'debug'], port, env)
  t.teardown(() => p.stop())
  const start = await until(p, /Start-up done: ([\d.]+) MiB of the executable's pages handed back to the kernel \(file-backed RSS ([\d.]+) → ([\d.]+) MiB/)
  t.ok(start, `logged at info once quiet: ${p.output().slice(-300)}`)
  if (start !== null) {
    t.ok(Number(start[2]) - Number(start[3]) > 5, `file-backed RSS ${start[2]} → ${start[3]} MiB`)
    t.ok(rssFileMiB(p.proc.pid!) < Number(start[2]), `and still under it now (${rssFileMiB(p.proc.pid!).toFixed(1)} MiB)`)
  }
  t.equal((await exchange(port, 'PING\r\n')).out, 'PONG\r\n', 'the broker answers after it')

  await burst(t, port)
  const trim = await until(p, /Accept burst over: ([\d.]+) MiB of free heap handed back \(anonymous RSS ([\d.]+) → ([\d.]+) MiB\)/)
  t.ok(trim, 'malloc_trim ran once the burst was over (debug)')
  if (trim !== null) t.ok(Number(trim[3]) <= Number(trim[2]) + 0.5, `anonymous RSS ${trim[2]} → ${trim[3]} MiB`)
  const pages = await until(p, /Accept burst over: ([\d.]+) MiB of the executable's pages handed back \(file-backed RSS ([\d.]+) → ([\d.]+) MiB/)
  t.ok(pages, 'and the page-out')
  if (pages !== null) t.ok(Number(pages[2]) > Number(pages[3]), `file-backed RSS ${pages[2]} → ${pages[3]} MiB`)
  t.ok(p.output().indexOf('free heap handed back') < p.output().indexOf("Accept burst over: " + (pages?.[1] ?? '')), 'trimmed first, then paged out')
  t.equal((await exchange(port, 'PING\r\n')).out, 'PONG\r\n', 'and answers after the burst')
})

t.test('SPRIG_PAGEOUT=0 on Deno: no page-out, the trim still runs', async (t) => {
  const port = await freePort()
  const p = await spawnServer(deno, ['run', '-A', bundle, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0', '-l', 'debug'], port, { ...env, SPRIG_PAGEOUT: '0' })
  t.teardown(() => p.stop())
  await burst(t, port)
  t.ok(await until(p, /Accept burst over: [\d.]+ MiB of free heap handed back/), 'trimmed')
  await new Promise((r) => setTimeout(r, 700))
  t.notMatch(p.output(), /Start-up done|executable's pages/, 'no page-out at all')
})

t.test('Deno without --allow-ffi: says why at debug level and serves on', async (t) => {
  const port = await freePort()
  const args = ['run', '--allow-net', '--allow-read', '--allow-env', '--allow-sys', bundle, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0', '-l', 'debug']
  const p = await spawnServer(deno, args, port, env)
  t.teardown(() => p.stop())
  t.ok(await until(p, /Start-up pages kept: Deno runs without --allow-ffi/), `start-up: ${p.output().slice(-300)}`)
  await burst(t, port)
  t.ok(await until(p, /Accept burst over, malloc_trim: Deno runs without --allow-ffi/), 'the burst: the trim says why')
  t.ok(await until(p, /Accept burst over, pages kept: Deno runs without --allow-ffi/), 'and the page-out')
  t.equal((await exchange(port, 'PING\r\n')).out, 'PONG\r\n', 'the broker answers')
  t.notMatch(p.output(), /\[ERR\]|\[FTL\]|prompt/i, 'no error, no prompt')
})

t.test('Deno with --allow-ffi but not -A: trims, says what it could not read', async (t) => {
  const port = await freePort()
  const args = ['run', '--allow-net', '--allow-read', '--allow-env', '--allow-sys', '--allow-ffi', bundle, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0', '-l', 'debug']
  const p = await spawnServer(deno, args, port, env)
  t.teardown(() => p.stop())
  t.ok(await until(p, /Start-up pages kept: .*\/proc\/self\/maps/), 'the page-out needs /proc/self/maps, which Deno gives only with -A')
  await burst(t, port)
  t.ok(await until(p, /Accept burst over, malloc_trim: trimmed, not measured: .*\/proc\/self\/status/), 'trimmed all the same')
  t.equal((await exchange(port, 'PING\r\n')).out, 'PONG\r\n', 'the broker answers')
})
