// The shipped artefacts: the single binaries from `npm run compile` (the arm64 one run under
// qemu-aarch64-static, as on a Raspberry-Pi-class gateway) and the systemd unit.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { freePort, havePeer, skipOrFail, spawnServer } from './helpers/peers.ts'
import { exchange } from './helpers/raw.ts'
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

t.test('arm64 binary starts under qemu-aarch64-static and answers PING', async (t) => {
  if (!havePeer(t, 'qemu-aarch64-static', 'qemu-user-static')) return
  if (!existsSync('/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1')) {
    return skipOrFail(t, 'the arm64 loader is missing: install the Debian package libc6-arm64-cross')
  }
  const file = spawnSync('file', [arm64], { encoding: 'utf8' })
  if (file.status === 0) t.match(file.stdout, /ARM aarch64/)
  const port = await freePort()
  const p = await spawnServer('qemu-aarch64-static', ['-L', '/usr/aarch64-linux-gnu', arm64, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0'], port)
  t.teardown(() => p.stop())
  const r = await exchange(port, 'PING\r\n', 1000)
  t.equal(r.out, 'PONG\r\n')
  t.match(p.output(), /Starting sprig version .* on bun/)
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
