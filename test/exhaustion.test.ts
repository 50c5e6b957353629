// Exhaustion (issue 9, point 12): out of file descriptors, the broker refuses new
// connections (logged once per episode) and accepts again once some close; no single
// monitoring request or retained query holds the event loop for long.

import t, { type Test } from 'tap'
import net from 'node:net'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { makeCerts, serverTlsOptions } from './helpers/certs.ts'
import { freePort, spawnServer, type Proc } from './helpers/peers.ts'
import { startBroker } from './helpers/broker.ts'
import { monitorTarget } from '../src/monitor.ts'
import { newMsg } from '../src/msg.ts'
import { RETAINED_GET } from '../adapters/mqtt/services.ts'
import { mqttState } from '../adapters/mqtt/state.ts'
import { retain } from '../adapters/mqtt/retained.ts'

const FD_LIMIT = 64
const CLIENTS = 120

/** Waits until `cond` holds or `ms` pass. */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 50))
  return cond()
}

/** Connects and resolves with the first bytes the server sends ('' if none within ms). */
function firstBytes(port: number, ms = 2000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    let got = ''
    const done = (): void => {
      s.destroy()
      resolve(got)
    }
    s.on('error', () => {})
    s.on('data', (d) => {
      got += d.toString()
      if (got.includes('\r\n')) done()
    })
    s.on('close', done)
    setTimeout(done, ms)
  })
}

/** The server command `cmd` under `ulimit -n FD_LIMIT`, stopped at the end of `t`; null (and a failure) if it did not start. */
async function startLimited(t: Test, cmd: string, port: number, sprigNet: string): Promise<Proc | null> {
  try {
    const p = await spawnServer('bash', ['-c', `ulimit -n ${FD_LIMIT}; ${cmd}`], port, { NODE_OPTIONS: '', SPRIG_NET: sprigNet })
    t.teardown(() => p.stop())
    return p
  } catch (e) {
    t.fail(`did not start: ${(e as Error).message}`)
    return null
  }
}

/** CLIENTS connections to `port`, all at once, errors ignored. */
function openMany(port: number): net.Socket[] {
  return Array.from({ length: CLIENTS }, () => net.connect(port, '127.0.0.1').on('error', () => {}))
}

t.test(`out of file descriptors (ulimit -n ${FD_LIMIT}): refuse, log once, recover`, async (t) => {
  const bundle = freshBundle()
  const variants = [
    ['node', process.execPath, '', ''],
    ['bun', runtimeBin('bun'), '', ''],
    ['bun (node:net)', runtimeBin('bun'), '', 'node'],
    ['deno (Deno.listen)', runtimeBin('deno'), 'run -A', 'native'],
    ['deno (node:net)', runtimeBin('deno'), 'run -A', ''],
  ] as const
  for (const [name, bin, pre, sprigNet] of variants) {
    // Deno's node:net server stops accepting for good once accept() fails with EMFILE (its
    // accept loop runs ahead of our check); with Deno.listen sprig retries itself.
    const todo = name === 'deno (node:net)' ? "Deno's node:net listener never accepts again after EMFILE (a Deno bug); use SPRIG_NET=native" : false
    t.test(name, { todo }, async (t) => {
      if (!existsSync(bin)) return t.fail(`${bin} not found: it is a devDependency, run npm install`)
      const port = await freePort()
      const p = await startLimited(t, `exec '${bin}' ${pre} '${bundle}' -a 127.0.0.1 -p ${port} --mqtt-port 0`, port, sprigNet)
      if (!p) return
      const socks = openMany(port)
      const warned = await until(() => /Too many open files|Temporary accept error/.test(p.output()), 5000)
      t.ok(warned, 'the episode is logged')
      t.equal(p.output().match(/Too many open files|Temporary accept error/g)?.length, 1, 'once')
      t.equal(p.proc.exitCode, null, 'still running')
      for (const s of socks) s.destroy()
      // Recovery: a new client gets its INFO (retry while the closes are processed).
      let info = ''
      await until(() => false, 300)
      for (let i = 0; i < 20 && !info.startsWith('INFO '); i++) info = await firstBytes(port, 500)
      t.match(info, /^INFO /, 'a new client gets in after the others closed')
      t.ok(await until(() => /accepting connections/.test(p.output()), 3000), 'the end of the episode is logged')
      t.notMatch(p.output(), /\[ERR\]|\n\s+at /, 'no errors or stack traces')
    })
  }
})

t.test(`out of file descriptors on a TLS port: the turned-away sockets are not each logged as failed handshakes`, async (t) => {
  const certs = makeCerts(t)
  if (!certs) return
  const bundle = freshBundle()
  // Node: node:net + node:tls; Bun: Bun.listen's own TLS.
  for (const [name, bin] of [['node', process.execPath], ['bun', runtimeBin('bun')]] as const) {
    t.test(name, async (t) => {
      if (!existsSync(bin)) return t.fail(`${bin} not found: it is a devDependency, run npm install`)
      const port = await freePort()
      const tlsPort = await freePort()
      const conf = join(certs.dir, `exhaustion-tls-${name}.json`)
      const tls = serverTlsOptions(certs, { verify: false, timeout: 30 }) // seconds in a file
      writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port, mqtt: { tls, tls_port: tlsPort } }))
      const p = await startLimited(t, `exec '${bin}' '${bundle}' -c '${conf}'`, port, '')
      if (!p) return
      const socks = openMany(tlsPort)
      t.ok(await until(() => /Too many open files/.test(p.output()), 5000), 'the episode is logged')
      await until(() => false, 500)
      for (const s of socks) s.destroy()
      await until(() => false, 1000)
      const lines = p.output().match(/TLS handshake error/g)?.length ?? 0
      // Only sockets that were let in can fail a handshake, and fewer than FD_LIMIT were.
      t.ok(lines < FD_LIMIT, `${lines} handshake lines for ${CLIENTS} connections, fewer than the ${FD_LIMIT} descriptors`)
      t.equal(p.output().match(/Too many open files/g)?.length, 1, 'the refusals are logged once')
      t.equal(p.proc.exitCode, null, 'still running')
    })
  }
})

/**
 * The least CPU time (ms) of `runs` calls of fn: CPU time, not wall time, so a machine busy
 * with other work does not count against us; the least, as noise only ever adds.
 */
function fastest(runs: number, fn: () => void): number {
  let best = Infinity
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage()
    fn()
    const c = process.cpuUsage(c0)
    best = Math.min(best, (c.user + c.system) / 1000)
  }
  return best
}

// The bound is 50 ms of event-loop time per request; these allow for a loaded
// 2-core test machine (a regression to quadratic work blows far past them).
const BUDGET_MS = 50

t.test('/connz with 10,000 connections: pages are cheap and capped', async (t) => {
  const b = await startBroker()
  t.teardown(() => b.stop())
  const N = 10_000
  let described = 0
  for (let i = 0; i < N; i++) {
    const cid = 1_000_000 + i
    b.srv.sessions.set(cid, {
      cid,
      kind: 'fake',
      tick() {},
      shutdown() {},
      reauthorize() {},
      describe: () => {
        described++
        return { cid, type: 'nats', ip: '10.0.0.1', port: 40000 + (i % 20000), start: b.srv.host.now(), last_activity: b.srv.host.now(), pending_bytes: 0, subscriptions: 1, name: `dev-${i}` }
      },
    })
  }
  t.teardown(() => {
    for (let i = 0; i < N; i++) b.srv.sessions.delete(1_000_000 + i)
  })
  const proc = { mem: 0, cores: 1 }
  const page = (target: string): Record<string, any> => monitorTarget(b.srv, target, proc).body as Record<string, any>
  described = 0
  const first = page('/connz')
  t.equal(first.total, N)
  t.equal(first.connections.length, 1024, "nats-server's default page")
  t.equal(described, 1024, 'only the page is described')
  const last = page('/connz?offset=9990&limit=50')
  t.same(last.connections.map((c: { cid: number }) => c.cid), Array.from({ length: 10 }, (_, i) => 1_000_000 + 9990 + i), 'the last page, in cid order')
  const dPage = fastest(5, () => JSON.stringify(page('/connz'), null, 2))
  t.ok(dPage < BUDGET_MS, `default page served in ${dPage.toFixed(1)} ms`)
  const big = page('/connz?limit=10000')
  t.equal(big.limit, 1024, 'a bigger limit is capped at 1024 (page with offset)')
  t.equal(big.connections.length, 1024)
  const dBig = fastest(5, () => JSON.stringify(page('/connz?limit=10000&offset=5000'), null, 2))
  t.ok(dBig < BUDGET_MS, `limit=10000 served in ${dBig.toFixed(1)} ms`)
})

t.test('$SPRIG.mqtt.retained.get over 10,000 topics: bounded reply, built once', async (t) => {
  const b = await startBroker({ mqtt: { retained_max_msgs: 20_000 }, max_payload: 256 * 1024 })
  t.teardown(() => b.stop())
  const store = mqttState(b.srv).retained
  for (let i = 0; i < 10_000; i++) retain(store, `fleet/${i}/state`, `fleet.${i}.state`, new TextEncoder().encode(`{"on":${i % 2}}`.padEnd(64, ' ')), 0)
  let reply: Uint8Array | null = null
  const inbox = '_INBOX.rg'
  b.srv.router.subscribe({ subject: inbox, queue: null, owner: { cid: 0, echo: true, deliver: (_s, m) => void (reply = m.payload.slice()) } })
  const ask = (): void => {
    const m = newMsg()
    m.subject = RETAINED_GET
    m.subjectBytes = new TextEncoder().encode(RETAINED_GET)
    m.reply = inbox
    m.replyBytes = new TextEncoder().encode(inbox)
    m.payload = new TextEncoder().encode('fleet/#')
    b.srv.router.publish(m, null)
  }
  const d = fastest(5, ask)
  t.ok(reply !== null, 'answered')
  t.ok(reply!.length <= 256 * 1024, `the reply fits max_payload (${reply!.length} bytes)`)
  t.ok(reply!.length > 0.95 * 256 * 1024, 'and is filled up to it (built message by message, not halved)')
  const body = JSON.parse(new TextDecoder().decode(reply!)) as { messages: unknown[]; truncated: boolean }
  t.equal(body.truncated, true, 'marked truncated')
  t.ok(body.messages.length > 1000, `as many as fit (${body.messages.length})`)
  t.ok(d < BUDGET_MS, `answered in ${d.toFixed(1)} ms`)
})
