// TLS on the NATS listener, the nats-server way: a plaintext INFO that says tls_required (and
// tls_verify), then the same socket upgrades; TLS-first for clients that ask (handshake_first).
// Clients: nats.js with a client certificate, raw node:tls, and nats-server 2.9 as the reference.

import t from 'tap'
import net from 'node:net'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { certIdentity } from '../src/cert-identity.ts'
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { startBroker } from './helpers/broker.ts'
import { makeCerts, serverTlsOptions, tlsAttempt, type Certs } from './helpers/certs.ts'
import { freePort, havePeer, spawnServer } from './helpers/peers.ts'

const certs = makeCerts(t)

/** nats.js options for a client certificate (none: CA only). */
function natsTls(c: Certs, pair: { cert: string; key: string } | null, first = false): Parameters<typeof connect>[0] {
  return {
    reconnect: false,
    tls: { caFile: c.ca, ...(pair ? { certFile: pair.cert, keyFile: pair.key } : {}), ...(first ? { handshakeFirst: true } : {}) },
  }
}

async function roundTrip(nc: NatsConnection, subject: string): Promise<string> {
  const sub = nc.subscribe(subject, { max: 1 })
  nc.publish(subject, 'over tls')
  for await (const m of sub) return m.string()
  return ''
}

/** The first line a server sends on a plain TCP connection. */
function firstLine(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let buf = ''
    s.on('data', (d) => {
      buf += d.toString()
      if (buf.includes('\r\n')) {
        s.destroy()
        resolve(buf.slice(0, buf.indexOf('\r\n')))
      }
    })
    s.on('error', reject)
  })
}

if (certs) {
  t.test('nats.js with a client certificate over the upgraded connection', async (t) => {
    const b = await startBroker({ tls: serverTlsOptions(certs) })
    t.teardown(() => b.stop())
    const nc = await connect({ servers: b.url, ...natsTls(certs, certs.client) })
    t.teardown(() => nc.close())
    t.equal(await roundTrip(nc, 'tls.a'), 'over tls', 'publish and subscribe work after the upgrade')
    t.equal(nc.info?.tls_required, true, 'INFO says tls_required')
    t.equal(nc.info?.tls_verify, true, 'INFO says tls_verify')
    t.ok(b.logs.some((l) => /TLS required for client connections/.test(l)), 'start-up says TLS is required')
  })

  t.test("allow_non_tls: INFO says tls_available; TLS and plaintext clients share the port", async (t) => {
    const b = await startBroker({ tls: serverTlsOptions(certs, { verify: false, ca_file: undefined }), allow_non_tls: true })
    t.teardown(() => b.stop())
    const secure = await connect({ servers: b.url, ...natsTls(certs, null) })
    t.teardown(() => secure.close())
    // nats.js upgrades whenever INFO says tls_available unless told `tls: null` (against nats-server too).
    const plain = await connect({ servers: b.url, reconnect: false, tls: null })
    t.teardown(() => plain.close())
    t.equal(plain.info?.tls_available, true, 'INFO says tls_available')
    t.equal(plain.info?.tls_required, undefined, 'and not tls_required')
    t.equal(await roundTrip(secure, 'mixed.a'), 'over tls', 'a TLS client works')
    t.equal(await roundTrip(plain, 'mixed.b'), 'over tls', 'a plaintext client works')
    // Across the two: the TLS client hears what the plaintext one publishes.
    const sub = secure.subscribe('mixed.c', { max: 1 })
    await secure.flush()
    plain.publish('mixed.c', 'across')
    for await (const m of sub) t.equal(m.string(), 'across')
    const tlsConns = [...b.srv.sessions.values()].filter((s) => (s as { wire?: { tls?: unknown } }).wire?.tls !== undefined)
    t.equal(tlsConns.length, 1, 'exactly one connection is on TLS')
  })

  t.test('without verify: no client certificate needed, INFO has no tls_verify', async (t) => {
    const b = await startBroker({ tls: serverTlsOptions(certs, { verify: false, ca_file: undefined }) })
    t.teardown(() => b.stop())
    const nc = await connect({ servers: b.url, ...natsTls(certs, null) })
    t.teardown(() => nc.close())
    t.equal(await roundTrip(nc, 'tls.b'), 'over tls')
    t.equal(nc.info?.tls_required, true)
    t.equal(nc.info?.tls_verify, undefined)
  })

  t.test('handshake_first: nats.js with handshakeFirst', async (t) => {
    const b = await startBroker({ tls: serverTlsOptions(certs, { handshake_first: true }) })
    t.teardown(() => b.stop())
    const nc = await connect({ servers: b.url, ...natsTls(certs, certs.client, true) })
    t.teardown(() => nc.close())
    t.equal(await roundTrip(nc, 'tls.c'), 'over tls')
    t.equal(nc.info?.tls_required, true)
    const plain = await tlsAttempt(b.port, 'starttls', certs, certs.client, 1500)
    t.notOk(plain.ok, 'a client waiting for a plaintext INFO gets nothing')
    t.equal(plain.info, undefined)
  })

  t.test('a plaintext CONNECT instead of a handshake: closed without a reply, logged (as nats-server)', async (t) => {
    const b = await startBroker({ tls: serverTlsOptions(certs) })
    t.teardown(() => b.stop())
    const s = net.connect(b.port, '127.0.0.1')
    let got = ''
    const closed = new Promise<void>((r) => s.on('close', () => r()))
    s.on('error', () => {})
    s.on('data', (d) => {
      if (got === '') s.write('CONNECT {}\r\nPING\r\n')
      got += d.toString()
    })
    await closed
    t.match(got, /^INFO \{.*"tls_required":true.*\} \r\n$/, 'only the INFO, no PONG, no -ERR')
    t.ok(b.logs.some((l) => /127\.0\.0\.1:\d+ - TLS handshake error: /.test(l)), 'the refusal is logged with the peer address')
  })

  t.test('the adapter sees the certificate: wire.tls after the handshake', async (t) => {
    const { listenNet } = await import('../targets/net.ts')
    const { serverTls } = await import('../targets/tls.ts')
    const seen: { tls: unknown }[] = []
    const logged: string[] = []
    for (const mode of ['after-info', 'first'] as const) {
      const st = serverTls(serverTlsOptions(certs, { verify_and_map: true }), 'tls', mode, (l) => logged.push(l))
      const l = await listenNet('127.0.0.1', 0, (wire) => {
        wire.write(new TextEncoder().encode('INFO {} \r\n'))
        return {
          data: () => {
            seen.push({ tls: wire.tls })
            wire.write(new TextEncoder().encode('PONG\r\n'))
          },
          drained: () => {},
          closed: () => {},
        }
      }, st)
      const a = await tlsAttempt(l.port, mode === 'first' ? 'nats-first' : 'starttls', certs, certs.client)
      l.close()
      t.ok(a.ok, `${mode}: data reaches the same Conn after the handshake`)
    }
    t.equal(seen.length, 2)
    for (const s of seen) {
      t.match(s.tls, {
        protocol: /^TLSv1\.[23]$/,
        authorized: true,
        subject: 'CN=device-42,O=Acme',
        identities: ['dev42@example.com', 'device-42.example', 'spiffe://acme/device-42', 'CN=device-42,O=Acme', 'O=Acme,CN=device-42'],
      })
    }
    t.same(logged, [])
  })

  t.test('INFO has the fields nats-server 2.9 sends with TLS, in its order', async (t) => {
    if (!havePeer(t, 'nats-server', 'nats-server')) return
    const b = await startBroker({ tls: serverTlsOptions(certs) })
    t.teardown(() => b.stop())
    const port = await freePort()
    const conf = join(certs.dir, 'nats-info.conf')
    writeFileSync(conf, `port: ${port}\nhost: 127.0.0.1\ntls { cert_file: "${certs.server.cert}", key_file: "${certs.server.key}", ca_file: "${certs.ca}", verify: true }\n`)
    const ns = await spawnServer('nats-server', ['-c', conf], port)
    t.teardown(() => ns.stop())
    const keys = (line: string): string[] => Object.keys(JSON.parse(line.slice(5)) as object).filter((k) => k !== 'go' && k !== 'sprig_version') // sprig's own extra field
    t.same(keys(await firstLine(b.port)), keys(await firstLine(port)))
  })

  // nats-server names a certificate's subject in Go's format; users named that way (or in the
  // certificate's order) map on nats-server, and certIdentity offers exactly those names.
  t.test('certificate DN format agrees with nats-server 2.9 verify_and_map', async (t) => {
    if (!havePeer(t, 'nats-server', 'nats-server')) return
    for (const pair of [certs.client, certs.noSan, certs.manySans]) {
      const x = new X509Certificate(readFileSync(pair.cert)).toLegacyObject()
      const id = certIdentity({ raw: x.raw, subject: x.subject as never, subjectaltname: x.subjectaltname })
      const dnNames = id.identities.filter((i) => i.includes('='))
      for (const user of dnNames) {
        const port = await freePort()
        const conf = join(certs.dir, 'nats-map.conf')
        writeFileSync(
          conf,
          `port: ${port}\nhost: 127.0.0.1\ntls { cert_file: "${certs.server.cert}", key_file: "${certs.server.key}", ca_file: "${certs.ca}", verify_and_map: true }\n` +
            `authorization { users: [ { user: ${JSON.stringify(user)} } ] }\n`,
        )
        const ns = await spawnServer('nats-server', ['-c', conf], port)
        try {
          const nc = await connect({ servers: `127.0.0.1:${port}`, ...natsTls(certs, pair) })
          await nc.flush()
          await nc.close()
          t.pass(`nats-server maps ${user}`)
        } catch (e) {
          t.fail(`nats-server does not map ${user}: ${(e as Error).message}`)
        } finally {
          await ns.stop()
        }
      }
    }
  })
}
