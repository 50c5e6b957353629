// 50,000 idle MQTT connections where the open-file limit cannot be raised
// (`bun test/bench/conns-vm.ts [--conns 50000] [--refs mosquitto|none]`).
//
// Holding N connections takes N descriptors in the broker and N in the client, and on a machine
// whose hard limit is below that (a container without CAP_SYS_RESOURCE) `ulimit -n` cannot be
// raised: `--only mqtt-idle --conns N` in bench.ts stops at the limit. This runs the same
// measurement inside a small virtual machine on the same host: qemu (software emulation, no
// KVM needed), the host's Debian kernel, an initramfs holding a static busybox, the compiled
// sprig binary (`bun build --compile` of dist/sprig.js) and a compiled client
// (conns-vm-client.ts), with the libraries they link. In the VM the limit is set to 200,000;
// the client opens the connections 10,000 at a time and reads the broker's memory at rest after
// each step. Memory per connection does not depend on CPU speed; the connection rate under
// emulation does, so it is shown but not compared. Run it alone: with the host busy (a test run
// beside it) the emulated broker once reset one of its first handshakes, most likely its 5 s
// connect deadline passing before it had read the CONNECT.
//
// Needs (Debian): qemu-system-x86, linux-image-amd64 (a /boot/vmlinuz-*), busybox-static, cpio;
// mosquitto for the reference. x86_64 hosts only.

import { spawnSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { runtimeBin } from '../helpers/bins.ts'
import { compile } from './binary.ts'
import { which } from './proc.ts'

const ROOT = path.resolve(import.meta.dirname, '../..')
const BUNDLE = process.env.SPRIG_BUNDLE ? path.resolve(process.env.SPRIG_BUNDLE) : path.join(ROOT, 'dist/sprig.js')
const FD_LIMIT = 200_000
const STEP = 10_000
const MQTT_PORT = 1883

interface Reading {
  conns: number
  rssKiB: number
  anonKiB: number
  secs: number
}

interface Run {
  broker: string
  readings: Reading[]
  closed: Reading | null
  pings: string
  error: string
}

function fail(why: string): never {
  console.log(`conns-vm: ${why}`)
  process.exit(1)
}

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 })
  if (r.error) throw r.error
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`)
  return r.stdout
}

/** The newest kernel in /boot. */
function kernel(): string | null {
  if (!existsSync('/boot')) return null
  const k = readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).sort()
  return k.length ? path.join('/boot', k[k.length - 1]!) : null
}

/** Copies a dynamically linked program and every library it loads into the VM's root, at the same paths. */
function install(root: string, file: string, as: string): void {
  copyFileSync(file, path.join(root, as))
  chmodSync(path.join(root, as), 0o755)
  const r = spawnSync('ldd', [file], { encoding: 'utf8' })
  for (const m of (r.stdout ?? '').matchAll(/(\/\S+) \(0x/g)) {
    const lib = m[1]!
    const to = path.join(root, lib)
    if (existsSync(to)) continue
    mkdirSync(path.dirname(to), { recursive: true })
    copyFileSync(lib, to)
  }
}

function initScript(): string {
  return `#!/bin/busybox sh
# written by sprig's test/bench/conns-vm.ts
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
ip link set lo up
echo 4096 > /proc/sys/net/core/somaxconn
ulimit -n ${FD_LIMIT}
arg() { sed -n "s/.* $1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
N=$(arg conns)
B=$(arg broker)
echo "vm: $(nproc) cpus, $(grep MemTotal /proc/meminfo | tr -s ' '), nofile $(ulimit -n), $(uname -r)"
if [ "$B" = mosquitto ]; then
  /mosquitto -c /mosquitto.conf > /tmp/broker.log 2>&1 &
else
  HOME=/tmp /sprig -a 127.0.0.1 -p 4222 --mqtt-port ${MQTT_PORT} > /tmp/broker.log 2>&1 &
fi
sleep 5
P=$(pidof $B)
[ -n "$P" ] || { echo "vm: broker did not start"; cat /tmp/broker.log; poweroff -f; }
HOME=/tmp /client 127.0.0.1 ${MQTT_PORT} $N $P ${STEP}
echo "vm: broker log"
grep -v -e "Client Closed" -e "mqtt connection closed" /tmp/broker.log | tail -5
echo "vm: done"
poweroff -f
`
}

function parse(broker: string, out: string): Run {
  const run: Run = { broker, readings: [], closed: null, pings: '', error: '' }
  for (const line of out.split('\n')) {
    const m = /^(conns (\d+)|closed) (\{.*\})(?: ([\d.]+))?/.exec(line.trim())
    if (m) {
      const j = JSON.parse(m[3]!) as { rssKiB: number; anonKiB: number }
      const r = { conns: m[2] === undefined ? 0 : Number(m[2]), rssKiB: j.rssKiB, anonKiB: j.anonKiB, secs: Number(m[4] ?? 0) }
      if (m[1] === 'closed') run.closed = r
      else run.readings.push(r)
      continue
    }
    const p = /^pingresp (\d+ of \d+)/.exec(line.trim())
    if (p) run.pings = p[1]!
    const e = /^(client error: .*|vm: broker did not start)/.exec(line.trim())
    if (e) run.error = e[1]! + (/ECONNRESET|closed after/.test(e[1]!) ? ' (under emulation on a busy host the broker\'s connect deadline can pass: run it alone)' : '')
  }
  return run
}

function table(runs: Run[], n: number): void {
  const kb = (k: number): string => (k / 1024).toFixed(1)
  console.log(`\n== idle MQTT connections in a VM (${n.toLocaleString('en')} target; RSS at rest, ${STEP.toLocaleString('en')} per step)`)
  console.log('broker      conns   RSS MiB  anon MiB  KB/conn since 0  anon KB/conn  KB/conn this step  opened (s, emulated)')
  for (const r of runs) {
    const z = r.readings[0]
    if (!z) {
      console.log(`${r.broker.padEnd(10)}  FAILED: ${r.error || 'no reading'}`)
      continue
    }
    let prev = z
    for (const x of r.readings) {
      const per = x.conns ? ((x.rssKiB - z.rssKiB) / x.conns).toFixed(2) : '-'
      const anon = x.conns ? ((x.anonKiB - z.anonKiB) / x.conns).toFixed(2) : '-'
      const step = x.conns > prev.conns ? ((x.rssKiB - prev.rssKiB) / (x.conns - prev.conns)).toFixed(2) : '-'
      console.log(`${r.broker.padEnd(10)}  ${String(x.conns).padStart(6)}  ${kb(x.rssKiB).padStart(7)}  ${kb(x.anonKiB).padStart(8)}  ${per.padStart(15)}  ${anon.padStart(12)}  ${step.padStart(17)}  ${x.secs.toFixed(1).padStart(8)}`)
      prev = x
    }
    const last = r.readings[r.readings.length - 1]!
    const held = last.conns >= n ? `${last.conns.toLocaleString('en')} held` : `only ${last.conns.toLocaleString('en')} held`
    console.log(`${r.broker.padEnd(10)}  ${held}; PINGREQ answered on ${r.pings || '?'} sampled; after all closed ${r.closed ? kb(r.closed.rssKiB) : '?'} MiB${r.error ? `; ERROR: ${r.error}` : ''}`)
  }
}

function main(): void {
  const { values } = parseArgs({ options: { conns: { type: 'string', default: '50000' }, refs: { type: 'string', default: 'mosquitto' }, mem: { type: 'string', default: '6144' } } })
  const n = Number(values.conns)
  if (!Number.isInteger(n) || n < 1 || n > 55_000) fail('--conns: 1 to 55,000 (one source port each)')
  if (os.arch() !== 'x64' || os.platform() !== 'linux') fail('x86_64 Linux hosts only')
  const qemu = which('qemu-system-x86_64')
  const vmlinuz = kernel()
  const busybox = which('busybox')
  const bun = runtimeBin('bun')
  const missing = [!qemu && 'qemu-system-x86 (qemu-system-x86_64)', !vmlinuz && 'linux-image-amd64 (/boot/vmlinuz-*)', !busybox && 'busybox-static', !which('cpio') && 'cpio', !bun && 'bun (npm ci)'].filter(Boolean)
  if (missing.length) fail(`skipped: install ${missing.join(', ')}`)
  const linked = spawnSync('ldd', [busybox], { encoding: 'utf8' })
  if (!/not a dynamic|statically linked/.test(`${linked.stdout}${linked.stderr}`)) fail(`${busybox} is not static: install busybox-static`)
  if (!existsSync(BUNDLE)) fail(`${path.relative(ROOT, BUNDLE)} missing: npm run bundle`)
  const mosquitto = values.refs === 'none' ? '' : which('mosquitto')

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'sprig-conns-vm-'))
  try {
    const root = path.join(tmp, 'root')
    for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc']) mkdirSync(path.join(root, d), { recursive: true })
    copyFileSync(busybox, path.join(root, 'bin/busybox'))
    chmodSync(path.join(root, 'bin/busybox'), 0o755)
    compile(bun, BUNDLE, path.join(tmp, 'sprig'), ROOT)
    compile(bun, path.join(ROOT, 'test/bench/conns-vm-client.ts'), path.join(tmp, 'client'), ROOT)
    install(root, path.join(tmp, 'sprig'), 'sprig')
    install(root, path.join(tmp, 'client'), 'client')
    if (mosquitto) {
      install(root, mosquitto, 'mosquitto')
      writeFileSync(path.join(root, 'mosquitto.conf'), `listener ${MQTT_PORT} 127.0.0.1\nallow_anonymous true\nmax_connections -1\nuser root\npersistence false\n`)
    }
    writeFileSync(path.join(root, 'init'), initScript())
    chmodSync(path.join(root, 'init'), 0o755)
    const initrd = path.join(tmp, 'initrd.gz')
    sh('sh', ['-c', `cd '${root}' && find . | cpio -o -H newc 2>/dev/null | gzip -1 > '${initrd}'`])

    const brokers = ['sprig', ...(mosquitto ? ['mosquitto'] : [])]
    console.log(`conns-vm: ${qemu} (TCG, 2 vCPUs, ${values.mem} MiB), kernel ${path.basename(vmlinuz!)}, ${brokers.join(' and ')}, ${n.toLocaleString('en')} connections, nofile ${FD_LIMIT.toLocaleString('en')} in the VM`)
    const runs: Run[] = []
    for (const b of brokers) {
      const t0 = performance.now()
      const r = spawnSync(qemu, ['-accel', 'tcg,thread=multi', '-cpu', 'max', '-smp', '2', '-m', values.mem!, '-nographic', '-no-reboot', '-kernel', vmlinuz!, '-initrd', initrd, '-append', `console=ttyS0 quiet panic=-1 conns=${n} broker=${b}`], { encoding: 'utf8', maxBuffer: 64 << 20, timeout: (120 + n / 100) * 1000 })
      const out = r.stdout ?? ''
      const run = parse(b, out)
      if (r.error) run.error ||= `qemu: ${r.error.message}`
      if (run.readings.length === 0 && !run.error) run.error = out.split('\n').filter((l) => l.startsWith('vm:')).join(' | ') || 'no output from the VM'
      console.log(`  … ${b}: ${((performance.now() - t0) / 1000).toFixed(0)} s${run.error ? `, ${run.error}` : ''}`)
      runs.push(run)
    }
    table(runs, n)
    const bad = runs.some((r) => r.error || r.readings.length === 0 || r.readings[r.readings.length - 1]!.conns < n)
    process.exitCode = bad ? 1 : 0
  } finally {
    rmSync(tmp, { recursive: true, force: true })
  }
}

main()
