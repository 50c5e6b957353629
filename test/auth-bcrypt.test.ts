// bcrypt logins under a flood of wrong passwords: checks run on worker threads (targets/bcrypt.ts)
// behind a queue that is fair per remote address (src/auth.ts), so one source cannot lock the
// others out, and the event loop never waits for a check. Also: the worker starts from the
// bundle on Node, Bun and Deno and from a `bun build --compile` binary.

import t from 'tap'
import bcrypt from 'bcryptjs'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { generate, parser, type Packet } from 'mqtt-packet'
import { identify, MAX_WAITING, PER_ADDRESS_WAITING, refusedUnchecked, sourceOf, type Credentials } from '../src/auth.ts'
import type { BcryptEngine, Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { defaults, type Options } from '../src/options.ts'
import { Server } from '../src/server.ts'
import { startBroker } from './helpers/broker.ts'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, spawnServer } from './helpers/peers.ts'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface Login {
  /** What the server sent after INFO. */
  out: string
  /** ms from connect to the answer. */
  ms: number
}

/** A raw NATS login from `localAddress`: CONNECT then PING; resolves on PONG, -ERR or close. */
function natsLogin(port: number, user: string, pass: string, localAddress = '127.0.0.1', ms = 15_000): Promise<Login> {
  return new Promise((resolve) => {
    const start = Date.now()
    const s = net.connect({ port, host: '127.0.0.1', localAddress })
    let buf = ''
    const done = (): void => {
      clearTimeout(timer)
      s.destroy()
      const i = buf.indexOf('\r\n')
      resolve({ out: i < 0 ? buf : buf.slice(i + 2), ms: Date.now() - start })
    }
    const timer = setTimeout(done, ms)
    s.on('error', () => {})
    s.on('close', done)
    s.on('connect', () => s.write(`CONNECT ${JSON.stringify({ user, pass, verbose: false })}\r\nPING\r\n`))
    s.on('data', (d) => {
      buf += d.toString('latin1')
      const after = buf.slice(buf.indexOf('\r\n') + 2)
      if (/PONG\r\n|-ERR [^\r]*\r\n/.test(after)) done()
    })
  })
}

/** A raw MQTT 3.1.1 login from `localAddress`; resolves with the CONNACK return code (-1: none). */
function mqttLogin(port: number, username: string, password: string, localAddress = '127.0.0.1', ms = 15_000): Promise<{ rc: number; ms: number }> {
  return new Promise((resolve) => {
    const start = Date.now()
    const s = net.connect({ port, host: '127.0.0.1', localAddress })
    let rc = -1
    const done = (): void => {
      clearTimeout(timer)
      s.destroy()
      resolve({ rc, ms: Date.now() - start })
    }
    const timer = setTimeout(done, ms)
    const p = parser({ protocolVersion: 4 })
    p.on('packet', (pk: Packet) => {
      if (pk.cmd === 'connack') {
        rc = pk.returnCode ?? -1
        done()
      }
    })
    p.on('error', () => {})
    s.on('data', (d: Buffer) => p.parse(d))
    s.on('error', () => {})
    s.on('close', done)
    s.on('connect', () => {
      const c = { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: `c${Math.random()}`, username, password: Buffer.from(password) }
      s.write(generate(c as Packet))
    })
  })
}

t.test('80 wrong passwords from one address do not lock out another user, and the event loop keeps running', async (t) => {
  // Cost 11, as in the report: each check keeps a core busy for a good fraction of a second.
  const users = [
    { user: 'a', password: bcrypt.hashSync('right-a', 11) },
    { user: 'b', password: bcrypt.hashSync('right-b', 11) },
  ]
  // The report saw `Authentication Timeout` at the default 2 s. This machine is shared, and a
  // cost-11 check can take half a second here: 5 s keeps the test about fairness, not speed
  // (before the fix the other user was refused at once: 64 checks were already waiting).
  const b = await startBroker({ authorization: { timeout: 5000, users } })
  t.teardown(() => b.stop())
  const lag = monitorEventLoopDelay({ resolution: 10 })
  lag.enable()
  const flood = Array.from({ length: 80 }, (_, i) => natsLogin(b.port, 'a', `wrong-${i}`))
  await sleep(100)
  // Another user, from another address (all of 127/8 is loopback).
  const good = await natsLogin(b.port, 'b', 'right-b', '127.0.0.2')
  const refused = await Promise.all(flood)
  lag.disable()
  t.equal(good.out, 'PONG\r\n', `the other user logs in (after ${good.ms} ms)`)
  t.ok(good.ms < 5000, 'within the auth timeout')
  // On a slow machine a queued wrong password may meet the auth timeout first: refused all the same.
  const outs = new Set(refused.map((r) => r.out))
  outs.delete("-ERR 'Authentication Timeout'\r\n")
  t.same(outs, new Set(["-ERR 'Authorization Violation'\r\n"]), 'every wrong password is refused')
  const maxLag = lag.max / 1e6
  t.comment(`event-loop delay during the flood: max ${maxLag.toFixed(1)} ms, p99 ${(lag.percentile(99) / 1e6).toFixed(1)} ms`)
  // A cost-11 check run on this thread would stall it for 300+ ms at once; what remains is the
  // machine's own contention (the workers keep its cores busy).
  t.ok(maxLag < 250, `the event loop never waited for a check (max delay ${maxLag.toFixed(1)} ms)`)
  const stats = b.srv.status.get('bcrypt')!() as { checks: number; refused: number; waiting: number }
  t.ok(stats.refused >= 80 - PER_ADDRESS_WAITING - 4, `most of the flood was refused unchecked (${stats.refused})`)
  t.ok(stats.checks <= 80 - stats.refused + 1, `only the rest was checked (${stats.checks})`)
  t.equal(stats.waiting, 0)
  t.equal(b.logs.filter((l) => l.includes('password checks already waiting from this address')).length, 1, 'the episode is logged once')
  t.ok(b.logs.some((l) => /\[INF\] 127\.0\.0\.1 - \d+ logins refused unchecked/.test(l)), 'and its end, with the count')
  const perAttempt = b.logs.filter((l) => /\[ERR\].*authentication error - User "a"/.test(l)).length
  t.ok(perAttempt <= stats.checks - 1, `only checked attempts get a line of their own (${perAttempt})`)
  t.ok(b.logs.some((l) => l.includes('bcrypt: worker thread 1 of')), 'checked on a worker thread')
})

t.test('MQTT: a login refused unchecked gets CONNACK 4 (bad user name or password); another address gets in', async (t) => {
  const users = [
    { user: 'a', password: bcrypt.hashSync('right-a', 10) },
    { user: 'b', password: bcrypt.hashSync('right-b', 10) },
  ]
  const b = await startBroker({ mqtt: true, authorization: { timeout: 5000, users } })
  t.teardown(() => b.stop())
  const flood = Array.from({ length: 20 }, (_, i) => mqttLogin(b.mqttPort, 'a', `wrong-${i}`))
  await sleep(100)
  const good = await mqttLogin(b.mqttPort, 'b', 'right-b', '127.0.0.2')
  const bad = await Promise.all(flood)
  t.equal(good.rc, 0, `the other user is accepted (after ${good.ms} ms)`)
  t.same(new Set(bad.map((r) => r.rc)), new Set([4]), 'every wrong password gets CONNACK 4')
  const stats = b.srv.status.get('bcrypt')!() as { refused: number }
  t.ok(stats.refused >= 20 - PER_ADDRESS_WAITING - 4, `the excess is refused unchecked (${stats.refused} of 20)`)
  t.equal(b.logs.filter((l) => l.includes('password checks already waiting from this address')).length, 1, 'logged once')
})

// --- the queue itself, with an engine the test resolves by hand --------------------------------

interface Manual extends BcryptEngine {
  readonly started: string[]
  /** Answers the oldest running check. */
  finish(ok: boolean): void
}

function manualEngine(parallel: number): Manual {
  const running: ((ok: boolean) => void)[] = []
  const started: string[] = []
  return {
    parallel,
    started,
    compare(pass) {
      started.push(pass)
      return new Promise((r) => running.push(r))
    },
    finish(ok) {
      running.shift()!(ok)
    },
  }
}

function wireFrom(addr: string): Wire {
  return { remoteAddress: addr, remotePort: 1, write: () => true, buffered: () => 0, end() {}, destroy() {} }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

function plainServer(engine: BcryptEngine): { srv: Server; logs: string[] } {
  const logs: string[] = []
  const opts: Options = { ...defaults, authorization: { users: [{ user: 'u', password: '$2a$04$' + 'x'.repeat(53) }] } }
  const host = { now: () => Date.now(), defer: (f: () => void) => queueMicrotask(f), every: () => ({ cancel() {} }) }
  const srv = new Server(opts, host, createLogger({ level: 'debug', time: false, sink: (l) => logs.push(l) }))
  srv.bcrypt = engine
  return { srv, logs }
}

t.test('the queue: round-robin across addresses, a small limit per address, refusals logged once per episode', async (t) => {
  const e = manualEngine(1)
  const { srv, logs } = plainServer(e)
  const results: Record<string, boolean | null> = {}
  const creds: Record<string, Credentials> = {}
  const ask = (addr: string, pass: string): void => {
    const c = (creds[pass] = { user: 'u', pass })
    const r = identify(srv, 'nats', wireFrom(addr), c, () => true)
    if (!(r instanceof Promise)) throw new Error('expected a check')
    void r.then((id) => (results[pass] = id !== null))
  }
  // One address asks for 1 running + PER_ADDRESS_WAITING waiting + 3 more; then two others.
  for (let i = 0; i < 1 + PER_ADDRESS_WAITING + 3; i++) ask('10.0.0.1', `a${i}`)
  ask('10.0.0.2', 'b0')
  ask('10.0.0.3', 'c0')
  ask('10.0.0.2', 'b1')
  await tick()
  t.same(e.started, ['a0'], 'one check at a time (parallel 1)')
  for (let i = 1 + PER_ADDRESS_WAITING; i < 1 + PER_ADDRESS_WAITING + 3; i++) {
    t.equal(results[`a${i}`], false, `a${i}: refused at once`)
    t.ok(refusedUnchecked(creds[`a${i}`]!), `a${i}: marked as refused unchecked`)
  }
  t.notOk(refusedUnchecked(creds.a0!))
  t.equal(logs.filter((l) => l.includes('10.0.0.1 - 4 password checks already waiting')).length, 1, 'the refusals are logged once')
  for (let i = 0; i < 8; i++) {
    e.finish(false)
    await tick()
  }
  t.same(e.started, ['a0', 'a1', 'b0', 'c0', 'a2', 'b1', 'a3', 'a4'], 'addresses take turns')
  t.ok(logs.some((l) => l.includes('[INF] 10.0.0.1 - 3 logins refused unchecked')), 'the end of the episode is logged with its count')
  t.same(srv.status.get('bcrypt')!(), { checks: 8, waiting: 0, refused: 3 }, 'counted for /varz')
  // A wrong password is remembered: asking again costs nothing.
  ask('10.0.0.9', 'a1')
  await tick()
  t.equal(e.started.length, 8, 'a remembered outcome is not checked again')
})

t.test('the queue: a connection gone before its turn is skipped; a check already running is joined', async (t) => {
  const e = manualEngine(1)
  const { srv } = plainServer(e)
  let alive = true
  const first = identify(srv, 'nats', wireFrom('10.0.0.1'), { user: 'u', pass: 'p1' }, () => true) as Promise<unknown>
  const gone = identify(srv, 'nats', wireFrom('10.0.0.2'), { user: 'u', pass: 'p2' }, () => alive) as Promise<unknown>
  const same = identify(srv, 'nats', wireFrom('10.0.0.3'), { user: 'u', pass: 'p1' }, () => true) as Promise<unknown>
  alive = false
  e.finish(true)
  t.not(await first, null)
  t.equal(await gone, null, 'the closed connection gets a refusal nobody reads')
  t.not(await same, null, 'the same password joined the running check')
  t.same(e.started, ['p1'], 'one check in all')
})

t.test('the queue: full in all is refused too', async (t) => {
  const e = manualEngine(1)
  const { srv, logs } = plainServer(e)
  const all: Promise<unknown>[] = []
  for (let i = 0; i <= MAX_WAITING + 5; i++) all.push(identify(srv, 'nats', wireFrom(`10.1.${i >> 8}.${i & 255}`), { user: 'u', pass: `full${i}` }, () => true) as Promise<unknown>)
  await tick()
  t.equal(logs.filter((l) => l.includes(`${MAX_WAITING} password checks waiting`)).length, 1, 'logged once')
  t.equal((srv.status.get('bcrypt')!() as { refused: number }).refused, 5)
  for (let i = 0; i <= MAX_WAITING; i++) {
    e.finish(false)
    await tick()
  }
  await Promise.all(all)
  t.ok(logs.some((l) => l.includes('5 logins refused unchecked while the password check queue was full')))
})

t.test('the queue: an IPv4 address is one source, an IPv6 /64 is one source', async (t) => {
  t.equal(sourceOf('192.0.2.7'), '192.0.2.7')
  t.equal(sourceOf('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64')
  t.equal(sourceOf('2001:0DB8:0001:0002::9'), '2001:db8:1:2::/64', 'leading zeros and case do not matter')
  t.equal(sourceOf('2001:db8::1'), '2001:db8:0:0::/64', ':: filled in')
  t.equal(sourceOf('2001:db8:0:0:ffff::1'), sourceOf('2001:db8::2'), 'two hosts of one /64 share')
  t.equal(sourceOf('::1'), '0:0:0:0::/64')
  t.equal(sourceOf('fe80::1%eth0'), 'fe80:0:0:0::/64')
  t.not(sourceOf('2001:db8:0:1::1'), sourceOf('2001:db8:0:2::1'), 'another /64 is another source')
})

// --- the worker from the bundle and the compiled binary --------------------------------------

t.test('the worker thread starts from the bundle (Node, Bun, Deno) and from a compiled binary', async (t) => {
  const bundle = freshBundle()
  const dir = mkdtempSync(join(tmpdir(), 'sprig-bcrypt-'))
  const config = join(dir, 'sprig.json')
  // 5 s: the first check waits for the worker to load the bundle, slow on a busy machine.
  writeFileSync(config, JSON.stringify({ debug: true, mqtt: { enabled: false }, authorization: { timeout: '5s', users: [{ user: 'h', password: bcrypt.hashSync('pw', 8) }] } }))
  const clean = { NODE_OPTIONS: '', SPRIG_NET: '' }
  const variants: [string, string, string[]][] = [
    ['node', process.execPath, [bundle]],
    ['bun', runtimeBin('bun'), [bundle]],
    ['deno (deno.json task permissions)', runtimeBin('deno'), ['run', '--allow-net', '--allow-read', '--allow-env', '--allow-sys', bundle]],
  ]
  const bin = join(dir, 'sprig')
  const c = spawnSync(runtimeBin('bun'), ['build', '--compile', bundle, '--outfile', bin], { encoding: 'utf8' })
  if (c.status === 0) variants.push(['compiled binary', bin, []])
  else t.fail(`bun build --compile failed: ${c.stderr}`)
  for (const [name, cmd, args] of variants) {
    await t.test(name, async (t) => {
      const port = await freePort()
      const p = await spawnServer(cmd, [...args, '-c', config, '-a', '127.0.0.1', '-p', String(port)], port, clean)
      t.teardown(() => p.stop())
      t.equal((await natsLogin(port, 'h', 'pw', '127.0.0.1', 10_000)).out, 'PONG\r\n', 'the right password')
      t.equal((await natsLogin(port, 'h', 'nope', '127.0.0.1', 10_000)).out, "-ERR 'Authorization Violation'\r\n", 'a wrong one')
      t.match(p.output(), /bcrypt: worker thread 1 of \d+ started/, 'checked on a worker thread')
      t.notMatch(p.output(), /cannot start a worker|worker thread ended/, 'which did not fail')
      t.equal(p.output().match(/Server is ready/g)?.length, 1, 'the worker did not start a second broker')
    })
  }
})
