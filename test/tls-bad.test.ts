// Every bad client certificate against every TLS listener (NATS upgrade after INFO, NATS
// TLS-first, MQTT's TLS port, the HTTPS monitor): refused, with one log line naming the peer and the reason.
// Then bad input: a stalled handshake, garbage instead of a handshake and a huge certificate
// chain are refused and logged while other clients carry on.

import t from 'tap'
import net from 'node:net'
import { connect } from '@nats-io/transport-node'
import mqtt from 'mqtt'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { BAD_CLIENTS, makeCerts, serverTlsOptions, tlsAttempt } from './helpers/certs.ts'
import { freePort } from './helpers/peers.ts'

const certs = makeCerts(t)

interface Listener {
  name: string
  how: 'starttls' | 'nats-first' | 'mqtt' | 'https'
  broker: () => TestBroker
  port: () => number
  /** What the log line says between the peer and the reason (the monitor names itself). */
  tag?: string
}

if (certs) {
  let b: TestBroker // NATS upgrades after INFO; MQTT on its TLS port
  let first: TestBroker // NATS handshake_first
  t.before(async () => {
    // 4 s: long enough for the real clients below to connect on a loaded CI machine, short enough to wait for.
    const tls = serverTlsOptions(certs, { crl_file: certs.crl, timeout: 4000 })
    b = await startBroker({ tls, mqtt: { tls, tls_port: 0 }, https_port: await freePort() })
    first = await startBroker({ tls: { ...tls, handshake_first: true } })
  })
  t.teardown(async () => {
    await b?.stop()
    await first?.stop()
  })

  const listeners: Listener[] = [
    { name: 'NATS (upgrade after INFO)', how: 'starttls', broker: () => b, port: () => b.port },
    { name: 'NATS (TLS first)', how: 'nats-first', broker: () => first, port: () => first.port },
    { name: 'MQTT (TLS port)', how: 'mqtt', broker: () => b, port: () => b.mqttTlsPort },
    { name: 'HTTPS monitor', how: 'https', broker: () => b, port: () => b.httpsPort, tag: 'https - ' },
  ]

  const bad = BAD_CLIENTS

  t.test('the good certificate is accepted on every listener', async (t) => {
    for (const l of listeners) {
      const a = await tlsAttempt(l.port(), l.how, certs, certs.client)
      t.ok(a.ok, `${l.name}: ${a.error ?? 'answered'}`)
    }
  })

  for (const l of listeners) {
    t.test(`refused on ${l.name}`, async (t) => {
      for (const c of bad) {
        const from = l.broker().logs.length
        const a = await tlsAttempt(l.port(), l.how, certs, c.pair(certs))
        t.notOk(a.ok, `${c.name}: refused (${a.error})`)
        const line = await logLine(l.broker(), a.port, l.tag, from)
        t.match(line, c.reason, `${c.name}: logged with its reason`)
        t.match(line, new RegExp(`127\\.0\\.0\\.1:${a.port} - ${l.tag ?? ''}TLS handshake error: `), `${c.name}: the line names the peer`)
      }
    })
  }

  t.test('stalled handshakes and garbage do not hold up other clients', async (t) => {
    // Open a stalled connection and a garbage one on each listener, then use real clients.
    const stalled: net.Socket[] = []
    const closed: Promise<void>[] = []
    const peers: number[] = []
    const from = new Map([b, first].map((x) => [x, x.logs.length]))
    let open = 6
    for (const port of [b.port, first.port, b.mqttTlsPort]) {
      for (const garbage of [false, true]) {
        const s = net.connect(port, '127.0.0.1')
        s.on('error', () => {})
        s.resume() // read (and drop) the plaintext INFO, so the close is seen
        closed.push(new Promise<void>((r) => s.once('close', () => (open--, r()))))
        await new Promise<void>((r) => s.once('connect', () => r()))
        peers.push(s.localPort!)
        if (garbage) s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + 'x'.repeat(5000))
        stalled.push(s)
      }
    }
    t.teardown(() => stalled.forEach((s) => s.destroy()))

    const nc = await connect({ servers: b.url, reconnect: false, tls: { caFile: certs.ca, certFile: certs.client.cert, keyFile: certs.client.key } })
    t.teardown(() => nc.close())
    const got = new Promise<string>((resolve) => {
      const sub = nc.subscribe('dev.>', { callback: (_e, m) => { sub.unsubscribe(); resolve(m.string()) } })
    })
    await nc.flush()
    const dev = await mqtt.connectAsync(`mqtts://127.0.0.1:${b.mqttTlsPort}`, {
      ca: [await readText(certs.ca)],
      cert: await readText(certs.client.cert),
      key: await readText(certs.client.key),
      servername: 'localhost',
      reconnectPeriod: 0,
    })
    t.teardown(() => dev.endAsync())
    await dev.publishAsync('dev/42/temp', '21.5')
    t.equal(await got, '21.5', 'MQTT over TLS reaches NATS over TLS while handshakes stall')
    t.equal(open, 3, 'the three stalled handshakes were still open meanwhile (garbage ones already closed)')

    await Promise.all(closed)
    t.pass('every stalled or garbage connection was closed')
    for (const [i, port] of peers.entries()) {
      const broker = i < 2 ? b : i < 4 ? first : b
      const line = await logLine(broker, port, '', from.get(broker))
      t.match(line, i % 2 === 0 ? /TLS handshake timeout/ : /TLS handshake error: \S/, `peer ${i}: ${line}`)
    }
  })
}

async function readText(file: string): Promise<string> {
  const { readFile } = await import('node:fs/promises')
  return readFile(file, 'utf8')
}

/**
 * The refusal line for a peer port (waits briefly: the log follows the close), among the lines
 * logged from index `from` on: the kernel reuses ephemeral ports, so an earlier connection of
 * this file may have had the same one.
 */
async function logLine(b: TestBroker, port: number, tag = '', from = 0): Promise<string> {
  const re = new RegExp(`:${port} - ${tag}TLS handshake`)
  for (let i = 0; i < 100; i++) {
    const l = b.logs.find((x, k) => k >= from && re.test(x))
    if (l) return l
    await new Promise((r) => setTimeout(r, 20))
  }
  return `(no log line for port ${port})`
}
