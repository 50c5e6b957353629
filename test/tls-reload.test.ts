// SIGHUP and TLS: the tls blocks and their files are read again; new handshakes use them,
// connections already up stay. A bad file, or a change that needs a restart, refuses the reload
// and the old settings stay.

import t from 'tap'
import { connect } from '@nats-io/transport-node'
import type { Options } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { makeCerts, serverTlsOptions, tlsAttempt } from './helpers/certs.ts'

const certs = makeCerts(t)

/** What reloadConfig does with re-read options: every check first, then every step. */
function reload(b: TestBroker, next: Options): string[] {
  const steps = b.reloaders.map((f) => f(next))
  return steps.flatMap((s) => s())
}

if (certs) {
  t.test('verify turned on by a reload: new clients need a certificate, open ones stay', async (t) => {
    const tls = serverTlsOptions(certs, { verify: false })
    const b = await startBroker({ tls, mqtt: { tls, tls_port: 0 } })
    t.teardown(() => b.stop())
    const old = await connect({ servers: b.url, reconnect: false, tls: { caFile: certs.ca } })
    t.teardown(() => old.close())
    t.ok((await tlsAttempt(b.port, 'starttls', certs, null)).ok, 'before: no certificate needed')

    const on = serverTlsOptions(certs, { verify: true })
    const changed = reload(b, { ...b.srv.opts, tls: on, mqtt: { ...b.srv.opts.mqtt!, tls: on } })
    t.same(changed, ['tls', 'mqtt.tls'])
    t.notOk((await tlsAttempt(b.port, 'starttls', certs, null)).ok, 'after: NATS refuses a client without a certificate')
    t.notOk((await tlsAttempt(b.mqttTlsPort, 'mqtt', certs, null)).ok, 'after: MQTT too')
    const good = await tlsAttempt(b.port, 'starttls', certs, certs.client)
    t.ok(good.ok, 'after: a client certificate works')
    t.match(good.info, /"tls_verify":true/, 'INFO now says tls_verify')
    await old.flush()
    t.notOk(old.isClosed(), 'the connection made before the reload is still up')
    t.same(reload(b, { ...b.srv.opts }), [], 'the same files again: nothing changes')
  })

  t.test('a bad file or a restart-only change refuses the reload; the old settings stay', async (t) => {
    const tls = serverTlsOptions(certs)
    const b = await startBroker({ tls })
    t.teardown(() => b.stop())
    const refusedWith = (next: Options): string => {
      try {
        reload(b, next)
        return ''
      } catch (e) {
        return (e as Error).message
      }
    }
    t.match(refusedWith({ ...b.srv.opts, tls: { ...tls, cert_file: '/nonexistent.pem' } }), /^tls\.cert_file: cannot read \/nonexistent\.pem/)
    t.match(refusedWith({ ...b.srv.opts, tls: undefined }), /^tls: config reload not supported for this option \(restart to change it\)/)
    t.match(refusedWith({ ...b.srv.opts, tls: { ...tls, handshake_first: true } }), /^tls\.handshake_first: config reload not supported/)
    t.ok((await tlsAttempt(b.port, 'starttls', certs, certs.client)).ok, 'still serving with the old settings')
    t.notOk((await tlsAttempt(b.port, 'starttls', certs, null)).ok, 'and still verifying')
  })
}
