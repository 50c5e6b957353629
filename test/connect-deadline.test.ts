// The connect deadline: every connection, NATS and MQTT, with or without authorization, must
// complete its CONNECT within a bound counted from accept. A client trickling its CONNECT one
// byte at a time is closed (it used to be kept forever), and many such clients do not disturb
// a normal one.

import t from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import { generate, type Packet } from 'mqtt-packet'
import { connect } from '@nats-io/transport-node'
import { authTimeout, connectDeadline } from '../src/auth.ts'
import type { Wire } from '../src/host.ts'
import { defaults, MQTT_DEFAULTS, type Options, type TlsOptions } from '../src/options.ts'
import { startBroker } from './helpers/broker.ts'
import { mqttClient, sleep } from './helpers/mqtt.ts'
import { makeCerts, serverTlsOptions } from './helpers/certs.ts'

interface Trickle {
  /** ms from connect to close, or -1 while open. */
  closedAfter: number
  /** Everything the server sent. */
  got: string
  stop(): void
}

/** Opens a socket and sends `bytes` one at a time, `gapMs` apart, until the server closes it. */
function trickle(port: number, bytes: Uint8Array, gapMs = 1000): Trickle {
  const s = net.connect(port, '127.0.0.1')
  const start = Date.now()
  const tr: Trickle = { closedAfter: -1, got: '', stop: () => s.destroy() }
  let i = 0
  const timer = setInterval(() => {
    if (i < bytes.length) s.write(bytes.subarray(i, ++i))
  }, gapMs)
  s.on('data', (d) => (tr.got += d.toString('latin1')))
  s.on('error', () => {})
  s.on('close', () => {
    clearInterval(timer)
    if (tr.closedAfter < 0) tr.closedAfter = Date.now() - start
  })
  return tr
}

const NATS_CONNECT = new TextEncoder().encode('CONNECT {"verbose":false,"pedantic":false,"name":"slow"}\r\nPING\r\n')
const MQTT_CONNECT = new Uint8Array(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 60, clientId: 'slow-device' } as Packet))

async function closed(list: Trickle[], ms: number): Promise<void> {
  const end = Date.now() + ms
  while (list.some((x) => x.closedAfter < 0) && Date.now() < end) await sleep(50)
}

t.test('a trickled CONNECT is closed at connect_timeout on both ports; a normal client is not disturbed', async (t) => {
  const b = await startBroker({ mqtt: true, connect_timeout: 2000 })
  t.teardown(() => b.stop())
  const N = 50
  const nats = Array.from({ length: N }, () => trickle(b.port, NATS_CONNECT))
  const mqtt = Array.from({ length: N }, () => trickle(b.mqttPort, MQTT_CONNECT))
  t.teardown(() => [...nats, ...mqtt].forEach((x) => x.stop()))
  // Meanwhile a normal NATS client and a normal MQTT device exchange messages.
  const nc = await connect({ servers: b.url, reconnect: false })
  t.teardown(() => nc.close())
  const dev = await mqttClient(t, b.mqttUrl)
  const sub = nc.subscribe('dev.ping', { max: 1 })
  await nc.flush()
  const t0 = Date.now()
  await dev.publishAsync('dev/ping', 'hi')
  for await (const m of sub) t.equal(m.string(), 'hi', `the device's message arrives (${Date.now() - t0} ms) while ${2 * N} sockets trickle`)
  await closed([...nats, ...mqtt], 6000)
  const after = (l: Trickle[]): number[] => l.map((x) => x.closedAfter)
  t.ok(after(nats).every((ms) => ms >= 1900 && ms < 4000), `NATS: all closed after about 2 s (${Math.min(...after(nats))}-${Math.max(...after(nats))} ms)`)
  t.ok(nats.every((x) => x.got.endsWith("-ERR 'Authentication Timeout'\r\n")), "NATS: with nats-server's -ERR 'Authentication Timeout'")
  t.ok(after(mqtt).every((ms) => ms >= 1900 && ms < 4000), `MQTT: all closed after about 2 s (${Math.min(...after(mqtt))}-${Math.max(...after(mqtt))} ms)`)
  t.ok(mqtt.every((x) => x.got === ''), 'MQTT: closed without a CONNACK (there is no CONNECT to answer)')
  // The clients that did finish CONNECT in time are still there.
  await nc.flush()
  t.equal(dev.connected, true, 'the device is still connected')
  t.equal(b.srv.sessions.size, 2, 'only the two normal clients remain')
})

t.test('with authorization required the bound is authorization.timeout, for MQTT too', async (t) => {
  const b = await startBroker({ mqtt: true, connect_timeout: 10_000, authorization: { timeout: 1000, users: [{ user: 'u', password: 'p' }] } })
  t.teardown(() => b.stop())
  const n = trickle(b.port, NATS_CONNECT, 300)
  const m = trickle(b.mqttPort, MQTT_CONNECT, 300)
  t.teardown(() => [n, m].forEach((x) => x.stop()))
  await closed([n, m], 4000)
  t.ok(n.closedAfter >= 900 && n.closedAfter < 2500, `NATS closed after ${n.closedAfter} ms`)
  t.ok(n.got.endsWith("-ERR 'Authentication Timeout'\r\n"))
  t.ok(m.closedAfter >= 900 && m.closedAfter < 2500, `MQTT closed after ${m.closedAfter} ms`)
})

t.test('a client that completes CONNECT in time stays, however slowly it sent it', async (t) => {
  const b = await startBroker({ mqtt: true, connect_timeout: 2000 })
  t.teardown(() => b.stop())
  const n = trickle(b.port, NATS_CONNECT, 20) // about 1.4 s
  const m = trickle(b.mqttPort, MQTT_CONNECT, 60) // about 1.5 s
  t.teardown(() => [n, m].forEach((x) => x.stop()))
  await sleep(3000)
  t.equal(n.closedAfter, -1, 'the NATS client is still connected after the deadline')
  t.match(n.got, /PONG\r\n$/, 'and got its PONG')
  t.equal(m.closedAfter, -1, 'the MQTT client too')
  t.match(m.got, /^\x20\x02\x00\x00/, 'with CONNACK 0')
})

const certs = makeCerts(t)

t.test('the deadline counts from accept: a slow TLS handshake uses it up (MQTT over TLS, certificate mapping)', async (t) => {
  if (!certs) return
  // verify_and_map: the certificate names the user; the deadline is authorization.timeout.
  const tlsOpts = serverTlsOptions(certs, { verify_and_map: true, timeout: 1500 })
  const b = await startBroker({ mqtt: { tls: tlsOpts, tls_port: 0, plain: false }, authorization: { timeout: 1200, users: [{ user: 'device-42' }] } })
  t.teardown(() => b.stop())
  const start = Date.now()
  const raw = net.connect(b.mqttTlsPort, '127.0.0.1')
  raw.on('error', () => {})
  await new Promise((r) => raw.once('connect', r))
  await sleep(800) // the TLS handshake starts late, and then no CONNECT comes
  const s = tls.connect({ socket: raw, ca: readFileSync(certs.ca), cert: readFileSync(certs.client.cert), key: readFileSync(certs.client.key), servername: 'localhost' })
  s.on('error', () => {})
  const secured = await new Promise<number>((r) => s.once('secureConnect', () => r(Date.now() - start)))
  const closedAt = await new Promise<number>((r) => s.once('close', () => r(Date.now() - start)))
  t.ok(secured >= 800 && secured < 1200, `handshake done after ${secured} ms`)
  t.ok(closedAt >= 1100 && closedAt < 1900, `closed ${closedAt} ms after accept: the handshake counted (not ${secured} + 1200 ms)`)
})

t.test('one rule for the deadline: which bound, and the auth default with TLS', async (t) => {
  const plain = { remoteAddress: '1.2.3.4', remotePort: 1, write: () => true, buffered: () => 0, end() {}, destroy() {} } as Wire
  const o: Options = { ...defaults }
  t.equal(connectDeadline(o, 'nats', plain), 5000, 'no authorization: connect_timeout, 5 s by default')
  t.equal(connectDeadline(o, 'mqtt', plain), 5000)
  const auth: Options = { ...defaults, authorization: { users: [{ user: 'u', password: 'p' }] } }
  t.equal(connectDeadline(auth, 'nats', plain), 2000, "authorization: nats-server's 2 s")
  t.equal(connectDeadline(auth, 'mqtt', plain), 2000)
  const tls: TlsOptions = { verify: false, verify_and_map: false, timeout: 2500, handshake_first: false }
  t.equal(authTimeout({ ...auth, tls }, 'nats'), 3500, 'with TLS: the handshake timeout + 1 s, as nats-server')
  t.equal(authTimeout({ ...auth, tls }, 'mqtt'), 2000, "the NATS listener's TLS does not change MQTT's")
  t.equal(authTimeout({ ...auth, mqtt: { ...MQTT_DEFAULTS, tls } }, 'mqtt'), 3500, "MQTT's own TLS does")
  t.equal(authTimeout({ ...auth, authorization: { ...auth.authorization, timeout: 700 }, tls }, 'nats'), 700, 'a configured timeout wins')
})
