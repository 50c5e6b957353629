// Bun.listen's own TLS (targets/bun.ts listenBunTls): on Bun the MQTT TLS port and NATS with
// handshake_first do not go through node:tls. The bundle runs under Bun as a real process, and
// what tls-bad.test.ts and auth-cert.test.ts check in process on node:tls is checked here on
// Bun's TLS: every bad certificate refused and logged with its reason and the peer; stalled,
// garbage and abandoned handshakes closed and logged while other clients carry on; the
// certificate's identity mapped to a user whose permissions apply; and a SIGHUP that changes
// the CA, which Bun builds into the listener (it listens again; open connections stay).

import t from 'tap'
import net from 'node:net'
import { readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { connect } from '@nats-io/transport-node'
import mqtt from 'mqtt'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { BAD_CLIENTS, makeCerts, serverTlsOptions, tlsAttempt, type CertPair, type Certs } from './helpers/certs.ts'
import { freePort, skipOrFail, spawnServer, waitOutput, type Proc } from './helpers/peers.ts'

const bundle = join(resolve(import.meta.dirname, '..'), 'dist', 'sprig.js')
const certs = makeCerts(t)
const bun = runtimeBin('bun')
const env: NodeJS.ProcessEnv = { NODE_OPTIONS: '', SPRIG_NET: '' }

const USERS = [
  { user: 'dev42@example.com', permissions: { publish: ['dev42.>'], subscribe: ['cmd.dev42.>'] } },
  { user: 'CN=plain-device,O=Acme', permissions: { publish: ['plain.>'] } },
]

/** The log line for a peer's port from `from` on (it follows the close), or '' after 3 s. */
async function lineFor(p: Proc, port: number, from: number): Promise<string> {
  return (await waitOutput(p, new RegExp(`127\\.0\\.0\\.1:${port} - TLS handshake[^\\n]*`), from, 3000))?.[0] ?? ''
}

function mqttTls(c: Certs, port: number, pair: CertPair, ca = c.ca): Promise<mqtt.MqttClient> {
  return mqtt.connectAsync(`mqtts://127.0.0.1:${port}`, {
    reconnectPeriod: 0,
    connectTimeout: 3000,
    ca: readFileSync(ca),
    cert: readFileSync(pair.cert),
    key: readFileSync(pair.key),
    servername: 'localhost',
  })
}

if (certs) {
  t.before(() => {
    freshBundle()
  })

  t.test('Bun.listen TLS: refusals, bad input, identities and permissions', async (t) => {
    if (!bun) return skipOrFail(t, 'bun not found: run npm ci (the bun package)')
    const port = await freePort()
    const mqttPort = await freePort()
    // A config file gives tls.timeout in seconds, as nats-server's does.
    const tls = serverTlsOptions(certs, { crl_file: certs.crl, timeout: 1.5, verify_and_map: true })
    const conf = join(certs.dir, 'sprig-bun-tls.json')
    writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port, tls: { ...tls, handshake_first: true }, authorization: { users: USERS }, mqtt: { tls, tls_port: mqttPort } }))
    const p = await spawnServer(bun, [bundle, '-c', conf], port, env)
    t.teardown(() => p.stop())
    t.match(p.output(), /TLS-first listeners on the runtime's own TLS/, 'the Bun.listen path is the one in use')

    t.ok((await tlsAttempt(mqttPort, 'mqtt', certs, certs.client)).ok, 'MQTT TLS port: the good certificate gets CONNACK')
    t.ok((await tlsAttempt(port, 'nats-first', certs, certs.client)).ok, 'NATS handshake_first: INFO waits for the handshake, then PONG')

    for (const [name, lport, how] of [['MQTT', mqttPort, 'mqtt'], ['NATS', port, 'nats-first']] as const) {
      for (const c of BAD_CLIENTS) {
        const from = p.output().length
        const a = await tlsAttempt(lport, how, certs, c.pair(certs))
        t.notOk(a.ok, `${name}, ${c.name}: refused (${a.error})`)
        const line = await lineFor(p, a.port, from)
        t.match(line, c.reason, `${name}, ${c.name}: logged with its reason: ${line}`)
        t.match(line, /TLS handshake error: /, `${name}, ${c.name}: the line names the peer`)
      }
    }

    // A stalled handshake, garbage and one closed half-way, on both listeners, while real
    // clients work: MQTT.js (device-42, mapped to dev42@example.com) to nats.js (plain-device).
    const from = p.output().length
    const kinds = ['stalled', 'garbage', 'abandoned'] as const
    const peers: { kind: (typeof kinds)[number]; port: number }[] = []
    const closed: Promise<void>[] = []
    const socks: net.Socket[] = []
    for (const lport of [mqttPort, port]) {
      for (const kind of kinds) {
        const s = net.connect(lport, '127.0.0.1')
        s.on('error', () => {})
        s.resume()
        closed.push(new Promise<void>((r) => s.once('close', () => r())))
        await new Promise<void>((r) => s.once('connect', () => r()))
        peers.push({ kind, port: s.localPort! })
        if (kind === 'garbage') s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n' + 'x'.repeat(5000))
        // The first bytes of a ClientHello, then gone.
        if (kind === 'abandoned') s.end(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
        socks.push(s)
      }
    }
    t.teardown(() => socks.forEach((s) => s.destroy()))
    const nc = await connect({ servers: `127.0.0.1:${port}`, reconnect: false, tls: { caFile: certs.ca, certFile: certs.noSan.cert, keyFile: certs.noSan.key, handshakeFirst: true } })
    t.teardown(() => nc.close())
    const got: string[] = []
    nc.subscribe('>', { callback: (_e, m) => void got.push(`${m.subject} ${m.string()}`) })
    await nc.flush()
    const dev = await mqttTls(certs, mqttPort, certs.client)
    t.teardown(() => dev.endAsync(true))
    await dev.publishAsync('elsewhere/x', 'denied')
    await dev.publishAsync('dev42/temp', '21.5')
    for (let i = 0; i < 100 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 20))
    t.same(got, ['dev42.temp 21.5'], "the mapped user's permissions apply: its allowed publish arrives, the denied one does not")
    t.ok(await waitOutput(p, 'Publish Violation - User "dev42@example.com"', from), 'the violation names the user the certificate maps to')
    t.equal(nc.isClosed(), false, 'while handshakes stall, a NATS client over handshake_first works')

    await Promise.all(closed)
    t.pass('every stalled, garbage or abandoned connection was closed')
    for (const x of peers) {
      const line = await lineFor(p, x.port, from)
      t.match(line, x.kind === 'stalled' ? /TLS handshake timeout/ : /TLS handshake error: \S/, `${x.kind}: ${line}`)
    }
    t.notMatch(p.output(), /internal error|Unhandled|TypeError/, 'no internal error on the way')
  })

  t.test('Bun.listen TLS: a SIGHUP with a new CA listens again; open connections stay', async (t) => {
    if (!bun) return skipOrFail(t, 'bun not found: run npm ci (the bun package)')
    const port = await freePort()
    const mqttPort = await freePort()
    const conf = join(certs.dir, 'sprig-bun-tls-reload.json')
    const write = (ca: string): void => {
      const tls = serverTlsOptions(certs, { ca_file: ca, timeout: 2 })
      writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port, mqtt: { tls, tls_port: mqttPort } }))
    }
    write(certs.otherCaCert)
    const p = await spawnServer(bun, [bundle, '-c', conf], port, env)
    t.teardown(() => p.stop())
    t.ok((await tlsAttempt(mqttPort, 'mqtt', certs, certs.otherCa)).ok, 'before: a certificate of the other CA is accepted')
    t.notOk((await tlsAttempt(mqttPort, 'mqtt', certs, certs.client)).ok, 'before: one of the test CA is refused')
    const old = await mqttTls(certs, mqttPort, certs.otherCa)
    t.teardown(() => old.endAsync(true))

    const mark = p.output().length
    write(certs.ca)
    p.proc.kill('SIGHUP')
    t.ok(await waitOutput(p, 'Reloaded server configuration', mark), 'reloaded')
    t.match(p.output().slice(mark), /Reloaded: mqtt\.tls/, 'says the MQTT TLS settings changed')
    t.ok((await tlsAttempt(mqttPort, 'mqtt', certs, certs.client)).ok, 'after: the test CA is trusted')
    t.notOk((await tlsAttempt(mqttPort, 'mqtt', certs, certs.otherCa)).ok, 'after: the other CA is not')
    await old.subscribeAsync('still/here')
    const echo = new Promise<string>((r) => old.once('message', (_topic, m) => r(m.toString())))
    await old.publishAsync('still/here', 'up')
    t.equal(await echo, 'up', 'the connection made before the reload still works')
    t.notMatch(p.output(), /cannot listen/, 'no listen error')
  })
}
