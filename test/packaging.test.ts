// The shipped artefacts: the single binaries from `npm run compile` (the arm64 one run under
// qemu-aarch64-static, as on a Raspberry-Pi-class gateway) and the systemd unit.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { freePort, havePeer, rssFileMiB, skipOrFail, spawnServer } from './helpers/peers.ts'
import { connectRaw, exchange } from './helpers/raw.ts'
import { newestSource } from './helpers/bins.ts'

const root = resolve(import.meta.dirname, '..')
const x64 = join(root, 'dist/sprig-linux-x64')
const arm64 = join(root, 'dist/sprig-linux-arm64')


t.before(() => {
  const fresh = (f: string): boolean => existsSync(f) && statSync(f).mtimeMs >= newestSource()
  if (fresh(x64) && fresh(arm64)) return
  const r = spawnSync('npm', ['run', 'compile'], { cwd: root, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`npm run compile failed:\n${r.stdout}\n${r.stderr}`)
})

t.test('x64 binary answers PING and reports its idle memory', async (t) => {
  const port = await freePort()
  const p = await spawnServer(x64, ['-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0'], port, { MIMALLOC_PURGE_DELAY: undefined })
  t.teardown(() => p.stop())
  const r = await exchange(port, 'PING\r\n')
  t.equal(r.out, 'PONG\r\n')
  t.equal(r.info.port, port)
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p.proc.pid}/status`, 'utf8'))
  t.comment(`idle RSS of the x64 binary: ${rss?.[1]} kB`)
  t.ok(rss, 'RSS is readable')
  // The binary starts itself again with the allocator's purge delay (targets/bun.ts), keeping
  // its process id and arguments: the port answered above came from the arguments.
  const env = readFileSync(`/proc/${p.proc.pid}/environ`, 'utf8').split('\0')
  t.ok(env.includes('MIMALLOC_PURGE_DELAY=1000'), 'the spawned process serves, with MIMALLOC_PURGE_DELAY=1000')
})

t.test('x64 binary hands its start-up pages back once quiet, and serves on', async (t) => {
  const port = await freePort()
  const p = await spawnServer(x64, ['-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0'], port, { SPRIG_PAGEOUT: '300' })
  t.teardown(() => p.stop())
  const line = /Start-up done: ([\d.]+) MiB of the executable's pages handed back to the kernel \(file-backed RSS ([\d.]+) → ([\d.]+) MiB/
  for (let i = 0; i < 100 && !line.test(p.output()); i++) await new Promise((r) => setTimeout(r, 50))
  const m = line.exec(p.output())
  t.ok(m, 'logged once quiet')
  if (m === null) return
  const [before, after] = [Number(m[2]), Number(m[3])]
  t.ok(before - after > 5, `file-backed RSS ${before} → ${after} MiB`)
  t.ok(rssFileMiB(p.proc.pid!) < before, `and still under it now (${rssFileMiB(p.proc.pid!).toFixed(1)} MiB)`)
  const r = await exchange(port, 'PING\r\n')
  t.equal(r.out, 'PONG\r\n', 'the broker answers after it')
  t.equal((p.output().match(/Start-up done/g) ?? []).length, 1, 'once')
})

t.test('x64 binary: after a burst of 150 connections, the pages it paged in go back too', async (t) => {
  const port = await freePort()
  const p = await spawnServer(x64, ['-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0', '-l', 'debug'], port, { SPRIG_PAGEOUT: '300' })
  t.teardown(() => p.stop())
  for (let i = 0; i < 100 && !/Start-up done/.test(p.output()); i++) await new Promise((r) => setTimeout(r, 50))
  const socks = await Promise.all(Array.from({ length: 150 }, () => connectRaw(port)))
  t.teardown(() => socks.forEach((s) => s.destroy()))
  const line = /Accept burst over: ([\d.]+) MiB of the executable's pages handed back \(file-backed RSS ([\d.]+) → ([\d.]+) MiB/
  for (let i = 0; i < 100 && !line.test(p.output()); i++) await new Promise((r) => setTimeout(r, 50))
  const m = line.exec(p.output())
  t.ok(m, 'logged (debug) once the burst was over')
  if (m !== null) t.ok(Number(m[2]) > Number(m[3]), `file-backed RSS ${m[2]} → ${m[3]} MiB`)
  const r = await exchange(port, 'PING\r\n')
  t.equal(r.out, 'PONG\r\n', 'the broker answers after it')
})

t.test('x64 binary with SPRIG_PAGEOUT=0 keeps its pages', async (t) => {
  const port = await freePort()
  const p = await spawnServer(x64, ['-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0'], port, { SPRIG_PAGEOUT: '0' })
  t.teardown(() => p.stop())
  await exchange(port, 'PING\r\n')
  const socks = await Promise.all(Array.from({ length: 150 }, () => connectRaw(port)))
  t.teardown(() => socks.forEach((s) => s.destroy()))
  await new Promise((r) => setTimeout(r, 1500))
  t.notMatch(p.output(), /Start-up done|Accept burst over/, 'nothing handed back, after start-up or a burst')
  t.ok(rssFileMiB(p.proc.pid!) > 20, `file-backed RSS ${rssFileMiB(p.proc.pid!).toFixed(1)} MiB`)
})

t.test('arm64 binary starts under qemu-aarch64-static and answers PING', async (t) => {
  if (!havePeer(t, 'qemu-aarch64-static', 'qemu-user-static')) return
  if (!existsSync('/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1')) {
    return skipOrFail(t, 'the arm64 loader is missing: install the Debian package libc6-arm64-cross')
  }
  const file = spawnSync('file', [arm64], { encoding: 'utf8' })
  if (file.status === 0) t.match(file.stdout, /ARM aarch64/)
  const port = await freePort()
  // With the page-out early: madvise through qemu either works or is refused, never fatal.
  const p = await spawnServer('qemu-aarch64-static', ['-L', '/usr/aarch64-linux-gnu', arm64, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0', '-l', 'debug'], port, { SPRIG_PAGEOUT: '200' })
  t.teardown(() => p.stop())
  const r = await exchange(port, 'PING\r\n', 1000)
  t.equal(r.out, 'PONG\r\n')
  t.match(p.output(), /Starting sprig version .* on bun/)
  for (let i = 0; i < 100 && !/Start-up (done|pages kept)/.test(p.output()); i++) await new Promise((r) => setTimeout(r, 50))
  t.match(p.output(), /Start-up (done|pages kept)/, 'the page-out ran (or said why not)')
  t.comment(/Start-up (done|pages kept).*/.exec(p.output())?.[0] ?? '')
  const again = await exchange(port, 'PING\r\n', 1000)
  t.equal(again.out, 'PONG\r\n', 'and the broker answers after it')
})

t.test('systemd unit passes systemd-analyze verify', async (t) => {
  if (!havePeer(t, 'systemd-analyze', 'systemd')) return
  const unit = readFileSync(join(root, 'systemd/sprig.service'), 'utf8')
  t.match(unit, /^DynamicUser=yes$/m, 'runs unprivileged')
  t.match(unit, /^Restart=on-failure$/m)
  // verify wants ExecStart to exist: point it at the binary we just built.
  const dir = mkdtempSync(join(tmpdir(), 'sprig-unit-'))
  writeFileSync(join(dir, 'sprig.service'), unit.replace('/usr/local/bin/sprig', x64))
  const r = spawnSync('systemd-analyze', ['verify', join(dir, 'sprig.service')], { encoding: 'utf8' })
  t.equal(r.status, 0, r.stderr)
  t.equal(r.stderr.trim(), '', 'no warnings')
})
