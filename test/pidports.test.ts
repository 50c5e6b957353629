// nats-server's pid file and ports file, on a real sprig process (Bun running
// targets/main.ts) started from a .conf file with `port: -1` style listeners: the ports file
// lists every listener with the port it got, in nats-server's format, and nats-server itself
// loads the same file and writes the same shape. Bad paths stop start-up with one line that
// names the key and the file.

import t, { type Test } from 'tap'
import net from 'node:net'
import http from 'node:http'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { runtimeBin } from './helpers/bins.ts'
import { havePeer, skipOrFail } from './helpers/peers.ts'

const MAIN = resolve(import.meta.dirname, '..', 'targets', 'main.ts')

function tmp(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'sprig-ports-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

async function until<T>(f: () => T | undefined, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = f()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

function firstLine(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((res, rej) => {
    const s = net.connect(port, host)
    let buf = ''
    s.on('data', (d) => {
      buf += d.toString()
      if (buf.includes('\r\n')) {
        s.destroy()
        res(buf.slice(0, buf.indexOf('\r\n')))
      }
    })
    s.on('error', rej)
  })
}

function get(url: string): Promise<number> {
  return new Promise((res, rej) => http.get(url, (r) => (r.resume(), res(r.statusCode ?? 0))).on('error', rej))
}

/** The ports file a process with `pid` wrote in `dir` (nats-server's name: <exe>_<pid>.ports). */
function portsFile(dir: string, pid: number): string | undefined {
  const f = readdirSync(dir).find((n) => n.endsWith(`_${pid}.ports`))
  return f && join(dir, f)
}

const bun = runtimeBin('bun')

t.test('pid_file and ports_file_dir with random ports, and nats-server on the same file', async (t) => {
  if (!bun) return skipOrFail(t, 'bun not found (npm package bun)')
  const dir = tmp(t)
  const conf = join(dir, 'server.conf')
  writeFileSync(
    conf,
    [
      'listen: "127.0.0.1:-1"',
      'http: "127.0.0.1:-1"',
      `pid_file: "${join(dir, 'server.pid')}"`,
      `ports_file_dir: "${dir}"`,
      'authorization { users = [ { username: a, pass: b, permission: { publish: ">", subscribe: ">" } } ] }',
      '',
    ].join('\n'),
  )
  const p = spawn(bun, [MAIN, '-c', conf, '--mqtt-port=-1'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  p.stdout.on('data', (d) => (out += d))
  p.stderr.on('data', (d) => (out += d))
  const exited = new Promise<number | null>((r) => p.once('exit', (c) => r(c)))
  t.teardown(() => void p.kill('SIGKILL'))
  const file = await until(() => portsFile(dir, p.pid!), 15_000, `the ports file (output: ${out})`)
  t.equal(file, join(dir, `sprig_${p.pid}.ports`))
  t.equal(readFileSync(join(dir, 'server.pid'), 'utf8'), String(p.pid), 'the pid file holds the process id')
  const ports = JSON.parse(readFileSync(file, 'utf8')) as Record<string, string[]>
  t.same(Object.keys(ports), ['nats', 'monitoring', 'mqtt'])
  t.match(ports.nats, [/^nats:\/\/127\.0\.0\.1:\d+$/])
  t.match(ports.monitoring, [/^http:\/\/127\.0\.0\.1:\d+$/])
  t.match(ports.mqtt, [/^mqtt:\/\/127\.0\.0\.1:\d+$/])
  const natsPort = Number(new URL(ports.nats![0]!).port)
  t.not(natsPort, 4222, 'a random port, not the default')
  t.match(await firstLine(natsPort), /^INFO \{.*"auth_required":true/, 'the NATS port from the file answers INFO')
  t.equal(await get(`${ports.monitoring![0]}/varz`), 200, 'the monitoring URL answers /varz')
  const mqttPort = Number(ports.mqtt![0]!.split(':').pop())
  await new Promise<void>((res, rej) => net.connect(mqttPort, '127.0.0.1', function (this: net.Socket) { this.destroy(); res() }).on('error', rej))
  p.kill('SIGTERM')
  t.equal(await exited, 0)
  t.notOk(existsSync(file), 'the ports file is removed at stop, as nats-server does')

  // nats-server reads the same file and writes the same shape (no mqtt: it needs JetStream for that).
  if (!havePeer(t, 'nats-server', 'nats-server')) return
  const ns = spawn('nats-server', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] })
  let nsOut = ''
  ns.stderr.on('data', (d) => (nsOut += d))
  t.teardown(() => void ns.kill('SIGKILL'))
  const nsFile = await until(() => portsFile(dir, ns.pid!), 15_000, `nats-server's ports file (${nsOut})`)
  const nsPorts = JSON.parse(readFileSync(nsFile, 'utf8')) as Record<string, string[]>
  t.same(Object.keys(nsPorts).sort(), ['monitoring', 'nats'])
  t.match(nsPorts.nats, [/^nats:\/\/127\.0\.0\.1:\d+$/])
  t.match(nsPorts.monitoring, [/^http:\/\/127\.0\.0\.1:\d+$/])
  t.equal(readFileSync(join(dir, 'server.pid'), 'utf8').trim(), String(ns.pid), 'nats-server wrote its pid to the same pid_file')
  ns.kill('SIGTERM')
})

t.test('a pid_file or ports_file_dir that cannot be written: one line naming the key and the path', async (t) => {
  if (!bun) return skipOrFail(t, 'bun not found (npm package bun)')
  const dir = tmp(t)
  const missing = join(dir, 'no', 'such', 'dir')
  for (const [args, key] of [
    [['-P', join(missing, 'x.pid')], 'pid_file'],
    [['--ports_file_dir', missing], 'ports_file_dir'],
  ] as const) {
    const r = spawnSync(bun, [MAIN, '-a', '127.0.0.1', '--port=-1', '--mqtt-port=-1', ...args], { encoding: 'utf8', timeout: 20_000 })
    t.equal(r.status, 1, `${key}: exit 1`)
    // Start-up's [INF] lines may come first; the failure is one line of its own.
    const lines = r.stderr.trim().split('\n').filter((l) => !/ \[INF\] /.test(l))
    t.equal(lines.length, 1, `${key}: one line (${r.stderr})`)
    t.match(lines[0], key)
    t.match(lines[0], missing)
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
  }
})
