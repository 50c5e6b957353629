// Bad input from a hub, with a raw TCP fake hub: garbage, a close in the middle of a frame, a
// hub that stops answering PING. Each time the link is dropped and redialled with backoff,
// local clients carry on, and buffered messages stay buffered. Also what sprig sends a hub
// (CONNECT fields, its own $LDS, answers to PING) and the loop-detection path.

import net from 'node:net'
import t, { type Test } from 'tap'
import { REMOTE_DEFAULTS } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { fakeHub, until } from './helpers/hub.ts'
import { natsClient, sleep } from './helpers/mqtt.ts'

async function edge(t: Test, port: number, extra: Record<string, unknown> = {}): Promise<TestBroker> {
  const b = await startBroker({
    ...extra,
    leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [{ ...REMOTE_DEFAULTS, urls: [`nats://127.0.0.1:${port}`], buffer_subjects: ['up.>'] }] },
  })
  t.teardown(() => b.stop())
  return b
}

/** A local NATS round trip still works. */
async function localOk(t: Test, b: TestBroker): Promise<void> {
  const nc = await natsClient(t, b.url)
  nc.subscribe('local.echo', { callback: (_e, m) => void m.respond('pong') })
  const r = await nc.request('local.echo', 'ping', { timeout: 1000 })
  t.equal(r.string(), 'pong', 'local clients are unaffected')
}

t.test('the CONNECT sprig sends, its $LDS, and PONG for PING', async (t) => {
  const hub = await fakeHub(t, (c) => c.sock.write('PING\r\n'))
  const b = await edge(t, hub.port, { server_name: 'edge-42' })
  await until(() => b.uplink!.remotes[0]!.state === 'connected', 5000, 'connected')
  await until(() => /PONG\r\n/.test(hub.conns[0]!.text), 2000, 'PONG')
  const text = hub.conns[0]!.text
  const connect = JSON.parse(/^CONNECT (.*)\r\n/m.exec(text)![1]!) as Record<string, unknown>
  t.equal(connect.name, 'edge-42', 'name: the server name')
  t.equal(connect.headers, true)
  t.equal(connect.compress_mode, 'off', 'no S2 compression negotiated')
  t.notOk('lang' in connect, 'no lang (the hub would refuse it as a client)')
  t.match(text, /LS\+ \$LDS\.[A-Za-z0-9]{22}\r\n/, 'announces its own loop-detection subject')
  t.ok(text.indexOf('CONNECT') === 0, 'sends nothing before CONNECT (no INFO of its own)')
})

t.test('garbage from the hub: link dropped, redialled with backoff, local clients fine', async (t) => {
  const hub = await fakeHub(t, (c) => setTimeout(() => c.sock.write('THIS IS NOT NATS\r\n'), 50))
  const b = await edge(t, hub.port)
  await until(() => hub.conns.length >= 3, 10_000, 'three attempts')
  t.ok(b.logs.some((l) => /protocol error from hub: unknown operation: THIS IS NOT NATS/.test(l)), 'the reason is logged')
  await localOk(t, b)
  const n = hub.conns.length
  await sleep(1000)
  t.ok(hub.conns.length - n <= 4, `backoff, not a tight loop (${hub.conns.length - n} attempts in 1 s)`)
})

t.test('the hub closes in the middle of a frame: buffered messages stay buffered', async (t) => {
  const hub = await fakeHub(t, (c) => setTimeout(() => c.sock.end('LMSG up.x 10\r\nabc'), 100))
  const b = await edge(t, hub.port)
  const r = b.uplink!.remotes[0]!
  await until(() => hub.conns.length >= 1 && r.state !== 'connected' && r.state !== 'handshake' && hub.conns[0]!.sock.destroyed, 5000, 'drop')
  const nc = await natsClient(t, b.url)
  for (let i = 0; i < 5; i++) nc.publish('up.data', String(i))
  await nc.flush()
  await until(() => r.buffer.length === 5 || r.state === 'connected', 2000, 'buffered')
  // Each new connection is cut mid-frame again: the buffer keeps what it could not send.
  await until(() => hub.conns.length >= 3, 10_000, 'redials')
  t.ok(r.buffer.length + r.stats.out_msgs >= 5, 'nothing lost by the link (buffered, or handed to a connection)')
  t.equal(r.buffer.dropped, 0)
  await localOk(t, b)
})

t.test('no PONG: the link is dropped as stale; buffered messages stay', async (t) => {
  let first = true
  const hub = await fakeHub(
    t,
    (c) => {
      // Answer only the first PING (the one that ends the handshake), then go silent.
      if (first) c.sock.write('PONG\r\n')
      first = false
    },
    { answerPing: false },
  )
  const b = await edge(t, hub.port, { ping_interval: 200, ping_max: 2 })
  const r = b.uplink!.remotes[0]!
  await until(() => r.state === 'connected', 5000, 'connected')
  await until(() => r.state !== 'connected', 5000, 'stale drop')
  t.ok(b.logs.some((l) => /Stale Connection/.test(l)), 'logged as a stale connection')
  const nc = await natsClient(t, b.url)
  for (let i = 0; i < 3; i++) nc.publish('up.data', String(i))
  await nc.flush()
  t.equal(r.buffer.length, 3, 'messages published meanwhile are buffered')
  await until(() => hub.conns.length >= 2, 5000, 'redial')
  await sleep(300)
  t.equal(r.buffer.length, 3, 'and stay buffered while the hub never completes a handshake')
  await localOk(t, b)
})

t.test('a hub that sends our own $LDS back: loop detected, 30 s wait', async (t) => {
  let b: TestBroker | null = null
  const hub = await fakeHub(t, (c) => {
    const lds = b!.uplink!.remotes[0]!.lds
    setTimeout(() => c.sock.write(`LS+ ${lds}\r\n`), 50)
  })
  b = await edge(t, hub.port)
  await until(() => b!.logs.some((l) => /loop detected/.test(l)), 5000, 'loop detection')
  t.ok(b.logs.some((l) => /next attempt in 3\d\.\ds/.test(l)), 'waits about 30 s, as nats-server does')
  t.equal(hub.conns.length, 1)
})

t.test('a hub -ERR is logged with its text', async (t) => {
  const hub = await fakeHub(t, (c) => c.sock.end("-ERR 'Authorization Violation'\r\n"))
  const b = await edge(t, hub.port)
  await until(() => b.logs.some((l) => /Authorization Violation/.test(l)), 5000, 'the -ERR in the log')
  t.ok(b.logs.some((l) => /\[ERR\].*reported: -ERR 'Authorization Violation'/.test(l) || /ERR.*Authorization Violation/.test(l)), 'logged at error level')
})

t.test('a client port instead of a leafnode port: clear reason', async (t) => {
  const server = net.createServer((s) => {
    s.on('error', () => {})
    s.write('INFO {"server_id":"N","version":"2.9.10","headers":true} \r\n')
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => server.close())
  const b = await edge(t, (server.address() as net.AddressInfo).port)
  await until(() => b.logs.some((l) => /not a leafnode port/.test(l)), 5000, 'the reason')
  t.pass('named in the log')
})

t.test('a hub that accepts TCP and never speaks: handshake deadline, redialled with backoff', async (t) => {
  const socks: net.Socket[] = []
  const server = net.createServer((s) => {
    s.on('error', () => {})
    socks.push(s) // holds the socket open, says nothing
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => {
    for (const s of socks) s.destroy()
    server.close()
  })
  const b = await edge(t, (server.address() as net.AddressInfo).port)
  await until(() => socks.length >= 2, 10_000, 'a second attempt after the deadline')
  t.ok(b.logs.some((l) => /no INFO from the hub in time/.test(l)), 'the reason is logged')
  t.ok(socks[0]!.destroyed || socks[0]!.readableEnded || (await new Promise((r) => socks[0]!.once('close', () => r(true)))), 'the silent link was closed')
  t.not(b.uplink!.remotes[0]!.state, 'connected', 'the remote is not up')
  await localOk(t, b)
  const n = socks.length
  await sleep(1000)
  t.ok(socks.length - n <= 1, `no tight loop (${socks.length - n} attempts in 1 s)`)
})
