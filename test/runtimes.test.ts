// The bundle (dist/sprig.js) as a real process on every runtime it supports: Node, Bun (its
// Bun.listen, and node:net via SPRIG_NET=node) and Deno (node:net, and Deno.listen via SPRIG_NET=native). A smoke subset over real sockets
// with nats.js, a clean SIGTERM shutdown, and the command-line error paths.

import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { connect, headers, type Msg, type NatsConnection } from '@nats-io/transport-node'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, spawnServer, type Proc } from './helpers/peers.ts'
import { subscribedRaw } from './helpers/raw.ts'
import { procStatusBytes } from './bench/proc.ts'

const root = resolve(import.meta.dirname, '..')
const bundle = join(root, 'dist', 'sprig.js')
const bin = (name: 'bun' | 'deno'): string => runtimeBin(name)

interface Variant {
  name: string
  cmd: string
  args: string[]
  env?: NodeJS.ProcessEnv
  /** What the broker says it runs on ("Starting sprig version ... on <this>"). */
  banner: RegExp
}

// The broker runs as it would in production: without tap's coverage loader (NODE_OPTIONS).
const clean: NodeJS.ProcessEnv = { NODE_OPTIONS: '', SPRIG_NET: '' }

const variants: Variant[] = [
  { name: 'node', cmd: process.execPath, args: [bundle], env: clean, banner: / on node \d/ },
  { name: 'bun', cmd: bin('bun'), args: [bundle], env: clean, banner: / on bun \d[\d.]*$/m },
  { name: 'deno', cmd: bin('deno'), args: ['run', '-A', bundle], env: clean, banner: / on deno \d/ },
  { name: 'bun (node:net)', cmd: bin('bun'), args: [bundle], env: { ...clean, SPRIG_NET: 'node' }, banner: / on bun \d[\d.]* \(node:net\)/ },
  { name: 'deno (Deno.listen)', cmd: bin('deno'), args: ['run', '-A', bundle], env: { ...clean, SPRIG_NET: 'native' }, banner: / on deno \d[\d.]* \(Deno\.listen\)/ },
]


t.before(() => {
  // Build when missing or older than the sources, so the test runs what the tree says.
  freshBundle()
})

interface Ran {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Runs a variant to completion (for the flag and error paths). */
function run(v: Variant, args: string[], ms = 10_000): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const p = spawn(v.cmd, [...v.args, ...args], { env: { ...process.env, ...v.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (d) => (stdout += d))
    p.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      p.kill('SIGKILL')
      reject(new Error(`${v.name} ${args.join(' ')}: still running after ${ms} ms; stderr: ${stderr}`))
    }, ms)
    p.once('error', reject)
    p.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

/** stderr without the startup banner lines (INF), which come before any listen error. */
const errorLines = (s: string): string[] => s.split('\n').filter((l) => l !== '' && !/\[INF\]/.test(l))

async function smoke(t: Test, url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, reconnect: false, timeout: 5000 })
  const other = await connect({ servers: url, reconnect: false, timeout: 5000 })
  t.teardown(async () => {
    if (!other.isClosed()) await other.close()
  })
  t.equal(nc.info?.proto, 1, 'INFO proto 1')
  t.equal(nc.info?.headers, true, 'INFO headers')
  t.equal(nc.info?.client_ip, '127.0.0.1', 'INFO client_ip without the ::ffff: prefix')

  // pub/sub across connections
  const got: Msg[] = []
  other.subscribe('smoke.>', { callback: (_e, m) => void got.push(m) })
  await other.flush()
  nc.publish('smoke.a', 'one')
  nc.publish('smoke.b.c', 'two')
  nc.publish('nope', 'x')
  await nc.flush()
  await other.flush()
  t.same(got.map((m) => `${m.subject}=${m.string()}`), ['smoke.a=one', 'smoke.b.c=two'], 'pub/sub with a wildcard')

  // queue group
  const q = [0, 0]
  nc.subscribe('smoke.q', { queue: 'g', callback: () => void q[0]!++ })
  other.subscribe('smoke.q', { queue: 'g', callback: () => void q[1]!++ })
  await nc.flush()
  await other.flush()
  for (let i = 0; i < 200; i++) nc.publish('smoke.q')
  await nc.flush()
  await other.flush()
  t.equal(q[0]! + q[1]!, 200, `queue group: each message once (${q.join('/')})`)
  t.ok(q[0]! > 0 && q[1]! > 0, 'both members got some')

  // request/reply and headers
  other.subscribe('smoke.svc', {
    callback: (_e, m) => {
      const h = headers()
      for (const v of m.headers?.values('X-In') ?? []) h.append('X-Out', v)
      m.respond(`re:${m.string()}`, { headers: h })
    },
  })
  await other.flush()
  const h = headers()
  h.append('X-In', 'a')
  h.append('X-In', 'b')
  const r = await nc.request('smoke.svc', 'q', { timeout: 3000, headers: h })
  t.equal(r.string(), 're:q', 'request/reply')
  t.same(r.headers?.values('X-Out'), ['a', 'b'], 'multi-value headers both ways')
  const nr = await nc.request('nobody.here', '', { timeout: 3000 }).catch((e: Error & { isNoResponders?: () => boolean }) => e)
  t.ok(nr instanceof Error && nr.isNoResponders?.(), 'no responders')

  // 64 KiB payload
  const big = new Uint8Array(64 * 1024)
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff
  const bigSub = other.subscribe('smoke.big', { max: 1 })
  await other.flush()
  nc.publish('smoke.big', big)
  let bigGot: Uint8Array | null = null
  for await (const m of bigSub) bigGot = m.data
  t.ok(bigGot !== null && Buffer.compare(Buffer.from(bigGot), Buffer.from(big)) === 0, '64 KiB payload intact')

  // 10k messages in order
  let n = 0
  let inOrder = true
  const done = new Promise<void>((res) => {
    other.subscribe('smoke.seq', {
      callback: (_e, m) => {
        if (Number(m.string()) !== n) inOrder = false
        if (++n === 10_000) res()
      },
    })
  })
  await other.flush()
  for (let i = 0; i < 10_000; i++) nc.publish('smoke.seq', String(i))
  await nc.flush()
  await Promise.race([done, new Promise((r) => setTimeout(r, 10_000))])
  t.equal(n, 10_000, '10k messages arrive')
  t.ok(inOrder, 'in order')
  await other.close()
  return nc
}

/** Starts the variant on `port` with NATS only; a failure to start fails the test. */
async function start(t: Test, v: Variant, port: number): Promise<Proc | null> {
  try {
    return await spawnServer(v.cmd, [...v.args, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0'], port, v.env)
  } catch (e) {
    t.fail(`did not start: ${(e as Error).message}`)
    return null
  }
}

/** Opens n NATS connections into `into`, each subscribed once, 20 at a time. */
async function openIdle(into: net.Socket[], port: number, n: number): Promise<void> {
  const first = into.length
  for (let i = 0; i < n; i += 20) {
    const opens = Array.from({ length: Math.min(20, n - i) }, (_, k) => subscribedRaw(port, `SUB idle.${first + i + k} 1\r\n`).then((s) => void into.push(s)))
    await Promise.all(opens)
  }
}

/** A process's anonymous RSS, in KB. */
const rssAnonKB = (pid: number): number => procStatusBytes(pid, 'RssAnon') / 1024

for (const v of variants) {
  t.test(v.name, async (t) => {
    if (!existsSync(v.cmd)) {
      t.fail(`${v.cmd} not found: it is a devDependency, run npm install`)
      return
    }

    t.test('serves NATS clients, exits cleanly on SIGTERM', async (t) => {
      const port = await freePort()
      const p = await start(t, v, port)
      if (!p) return
      t.teardown(() => p.stop())
      const nc = await smoke(t, `nats://127.0.0.1:${port}`)
      t.match(p.output(), v.banner, `runs on ${v.name}`)
      t.match(p.output(), `Listening for client connections on 127.0.0.1:${port}`)

      // SIGTERM with a client still connected: exit 0 within 3 s, the client is disconnected.
      const closed = nc.closed()
      const started = Date.now()
      const exited = new Promise<{ code: number | null; signal: string | null }>((r) => p.proc.once('exit', (code, signal) => r({ code, signal })))
      p.proc.kill('SIGTERM')
      const res = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 3000))])
      const took = Date.now() - started
      t.ok(res, `exited within 3 s (${took} ms)`)
      t.same(res, { code: 0, signal: null }, 'exit code 0')
      await new Promise((r) => setTimeout(r, 50)) // the last stderr bytes
      t.match(p.output(), /Trapped "SIGTERM" signal/)
      t.match(p.output(), /Server Exiting/)
      await Promise.race([closed, new Promise((r) => setTimeout(r, 2000))])
      t.ok(nc.isClosed(), 'the connected client was disconnected')
      t.notMatch(p.output(), /\[ERR\]|\n\s+at /, 'no errors or stack traces in the log')
    })

    t.test('an idle connection holds a few KB, not a read buffer', async (t) => {
      const port = await freePort()
      const p = await start(t, v, port)
      if (!p) return
      const socks: net.Socket[] = []
      t.teardown(async () => {
        for (const s of socks) s.destroy()
        await p.stop()
      })
      // The first batch pays most one-time costs (compiled code, the heap grown); the second
      // shows what each connection keeps, plus what is still one-time (Node: up to ~16 KB). A
      // 64 KiB read buffer per connection (Deno.listen before its reads were sized) read
      // 64–76 KB here.
      const batch = 300
      await openIdle(socks, port, batch)
      await new Promise((r) => setTimeout(r, 1500))
      const before = rssAnonKB(p.proc.pid!)
      await openIdle(socks, port, batch)
      await new Promise((r) => setTimeout(r, 1500))
      const each = (rssAnonKB(p.proc.pid!) - before) / batch
      t.ok(each < 40, `anonymous RSS per idle connection after the first ${batch}: ${each.toFixed(1)} KB (< 40)`)
    })

    t.test('--help, --version', async (t) => {
      const h = await run(v, ['--help'])
      t.equal(h.code, 0, '--help exits 0')
      for (const flag of ['--config', '--addr', '--port', '--max-payload', '--max-pending', '--log-level', '--help', '--version']) {
        t.match(h.stdout, flag, `lists ${flag}`)
      }
      t.match(h.stdout, /^Usage: sprig/)
      t.equal(h.stderr, '', 'nothing on stderr')
      const ver = await run(v, ['--version'])
      t.equal(ver.code, 0, '--version exits 0')
      t.match(ver.stdout, /^sprig \d+\.\d+\.\d+\n$/)
      const short = await run(v, ['-v'])
      t.equal(short.stdout, ver.stdout, '-v is --version')
    })

    t.test('bad flags and config values: one line naming them, exit 1', async (t) => {
      const bad = await run(v, ['--bogus'])
      t.equal(bad.code, 1, 'unknown flag: exit 1')
      t.equal(bad.stdout, '')
      t.same(errorLines(bad.stderr), ['unknown flag "--bogus"; see --help'], 'one line naming the flag')

      const badValue = await run(v, ['-p', 'notaport'])
      t.equal(badValue.code, 1)
      t.equal(errorLines(badValue.stderr).length, 1, 'one line')
      t.match(badValue.stderr, /^--port: .*"notaport"/, 'names the flag and the value')

      const dir = mkdtempSync(join(tmpdir(), 'sprig-rt-'))
      t.teardown(() => rmSync(dir, { recursive: true, force: true }))
      const conf = join(dir, 'bad.json')
      writeFileSync(conf, '{\n  // comment\n  "max_payload": "lots"\n}\n')
      const c = await run(v, ['-c', conf])
      t.equal(c.code, 1, 'bad config value: exit 1')
      t.equal(errorLines(c.stderr).length, 1, 'one line')
      t.match(c.stderr, `config error in ${conf}: max_payload: `, 'names the file and the key')
      t.match(c.stderr, /"lots"/, 'and the value')
      t.notMatch(c.stderr, /\n\s+at /, 'no stack trace')
    })

    t.test('port in use: one line, exit 1', async (t) => {
      const blocker = net.createServer()
      await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r))
      t.teardown(() => new Promise<void>((r) => blocker.close(() => r())))
      const port = (blocker.address() as net.AddressInfo).port
      const r = await run(v, ['-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0'])
      t.equal(r.code, 1, 'exit code 1')
      t.same(errorLines(r.stderr), [`sprig: cannot listen on 127.0.0.1:${port}: address already in use`], 'one line, no stack trace')
      t.notMatch(r.stderr, /Server is ready/)
    })
  })
}
