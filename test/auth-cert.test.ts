// Certificate-mapped users (`verify_and_map`): the first of the certificate's identities that
// names a user is that client's user, and its permissions apply; a certificate that names no
// user is refused. Sans-I/O with a fake `wire.tls` (the rule itself), then over real TLS with
// openssl-made certificates, nats.js and MQTT.js.

import t from 'tap'
import { readFileSync } from 'node:fs'
import mqtt from 'mqtt'
import { connect } from '@nats-io/transport-node'
import { NatsClient } from '../adapters/nats/client.ts'
import { authenticate, authOf } from '../src/auth.ts'
import type { Host, PeerTls, Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { defaults, type Options } from '../src/options.ts'
import { validateOptions } from '../src/config.ts'
import { Server } from '../src/server.ts'
import { startBroker } from './helpers/broker.ts'
import { makeCerts, serverTlsOptions } from './helpers/certs.ts'

const AUTH = validateOptions({
  authorization: {
    users: [
      { user: 'dev42@example.com', permissions: { publish: ['dev42.>'], subscribe: ['cmd.dev42.>'] } },
      { user: 'spiffe://acme/multi' },
      { user: 'CN=plain-device,O=Acme', permissions: { publish: ['plain.>'] } },
      { user: 'pw', password: 'pw' },
    ],
  },
}).authorization

const peer = (identities: string[], authorized = true): PeerTls => ({ protocol: 'TLSv1.3', authorized, identities, subject: '' })

t.test('the mapping rule: first identity that names a user', async (t) => {
  const auth = authOf({ ...defaults, authorization: AUTH })
  const who = (tls: PeerTls | undefined, creds = {}): string | null => {
    const r = authenticate(auth, creds, tls, true)
    if (r instanceof Promise) throw new Error('no bcrypt here')
    return r === null ? null : r.user
  }
  t.equal(who(peer(['dev42@example.com', 'device-42.example'])), 'dev42@example.com')
  t.equal(who(peer(['multi@example.com', 'multi.example', 'spiffe://acme/multi', 'CN=multi'])), 'spiffe://acme/multi', 'a later identity when earlier ones name nobody')
  t.equal(who(peer(['CN=plain-device,O=Acme'])), 'CN=plain-device,O=Acme', 'the subject DN')
  t.equal(who(peer(['nobody.example', 'CN=nobody'])), null, 'a certificate that names no user is refused')
  t.equal(who(peer([])), null, 'no identities: refused')
  t.equal(who(peer(['dev42@example.com'], false)), null, 'an unverified certificate is refused')
  t.equal(who(peer(['nobody']), { user: 'pw', pass: 'pw' }), null, 'with verify_and_map the certificate decides, not a password')
})

/** A NATS client on a fake wire, for the sans-I/O test. */
function fakeClient(opts: Options, tls: PeerTls | undefined): { c: NatsClient; out: () => string; closed: () => boolean } {
  const host: Host = { now: () => Date.now(), defer: (f) => queueMicrotask(f), every: () => ({ cancel() {} }) }
  const srv = new Server(opts, host, createLogger({ level: 'error', time: false, sink: () => {} }))
  let text = ''
  let ended = false
  const wire: Wire = {
    write: (d) => ((text += Buffer.from(d).toString('latin1')), true),
    buffered: () => 0,
    end: () => void (ended = true),
    destroy: () => void (ended = true),
    remoteAddress: '127.0.0.1',
    remotePort: 1,
    ...(tls ? { tls } : {}),
  }
  const c = new NatsClient(srv, 1, wire)
  return { c, out: () => text.slice(text.indexOf('\r\n') + 2), closed: () => ended }
}

const flushed = (): Promise<void> => new Promise((r) => setTimeout(r, 10))

t.test('sans-I/O: a NATS client with a fake wire.tls becomes the mapped user', async (t) => {
  const opts: Options = { ...defaults, authorization: AUTH, tls: { verify: true, verify_and_map: true, timeout: 2000, handshake_first: false } }
  const a = fakeClient(opts, peer(['device-42.example', 'dev42@example.com']))
  a.c.data(Buffer.from('CONNECT {"verbose":false}\r\nPUB dev42.temp 1\r\nx\r\nPUB other 1\r\nx\r\nSUB cmd.> 1\r\nPING\r\n'))
  await flushed()
  t.equal(a.out(), `-ERR 'Permissions Violation for Publish to "other"'\r\n-ERR 'Permissions Violation for Subscription to "cmd.>"'\r\nPONG\r\n`, "the mapped user's permissions apply")
  t.equal(a.c.user, 'dev42@example.com')
  const b = fakeClient(opts, peer(['CN=stranger']))
  b.c.data(Buffer.from('CONNECT {"verbose":false}\r\nPING\r\n'))
  await flushed()
  t.equal(b.out(), "-ERR 'Authorization Violation'\r\n", 'no user for this certificate')
  t.equal(b.closed(), true)
})

t.test('over real TLS: nats.js and MQTT.js with client certificates', async (t) => {
  const certs = makeCerts(t)
  if (!certs) return
  const map = serverTlsOptions(certs, { verify_and_map: true })
  const b = await startBroker({ tls: map, authorization: AUTH, mqtt: { tls: map, tls_port: 0 } })
  t.teardown(() => b.stop())
  const tlsOpts = (pair: { cert: string; key: string }) => ({ tls: { caFile: certs.ca, certFile: pair.cert, keyFile: pair.key } })

  const nc = await connect({ servers: b.url, reconnect: false, ...tlsOpts(certs.client) })
  t.teardown(() => nc.close())
  const admin = await connect({ servers: b.url, reconnect: false, ...tlsOpts(certs.noSan) })
  t.teardown(() => admin.close())
  nc.publish('dev42.t', 'x')
  nc.publish('elsewhere', 'x') // denied: no subscriber could see it anyway, but it must not kill the connection
  await nc.flush()
  t.equal(nc.isClosed(), false, 'mapped user connected; a denied publish leaves the connection open')
  admin.publish('plain.x', 'y')
  await admin.flush()
  t.equal(admin.isClosed(), false, 'a certificate without SANs maps by its subject DN')
  t.ok(b.logs.some((l) => l.includes('Publish Violation - User "dev42@example.com", Subject "elsewhere"')), 'the violation names the mapped user')

  // A certificate whose identities name no user: refused.
  const refused = await connect({ servers: b.url, reconnect: false, ...tlsOpts(certs.expired) }).then(
    (c) => (c.close(), 'connected'),
    (e: Error) => e.message,
  )
  t.not(refused, 'connected', 'an expired certificate never gets as far as a user')
  const nobody = await connect({ servers: b.url, reconnect: false, ...tlsOpts(certs.revoked) }).then(
    (c) => (c.close(), 'connected'),
    (e: Error) => e.message,
  )
  t.match(nobody, /Authorization Violation|closed|refused/i, 'a valid certificate that names no user is refused')

  // MQTT over TLS: the same users, from the certificate.
  const mqttOk = async (pair: { cert: string; key: string }): Promise<boolean> => {
    try {
      const c = await mqtt.connectAsync(`mqtts://127.0.0.1:${b.mqttTlsPort}`, {
        reconnectPeriod: 0, connectTimeout: 3000, ca: readFileSync(certs.ca), cert: readFileSync(pair.cert), key: readFileSync(pair.key), servername: 'localhost',
      })
      await c.endAsync(true)
      return true
    } catch {
      return false
    }
  }
  t.equal(await mqttOk(certs.client), true, 'MQTT: the client certificate maps to dev42@example.com')
  t.equal(await mqttOk(certs.manySans), true, 'MQTT: a later identity (URI SAN) maps to spiffe://acme/multi')
  t.equal(await mqttOk(certs.revoked), false, 'MQTT: a certificate naming no user is refused')
})
