// The tls blocks (top-level `tls`, `mqtt.tls`, and the client side an uplink uses): every key
// checked and named in errors; files that cannot be read or do not hold what they should stop
// start-up with a message naming the key and the file.

import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DEFAULT_TLS_TIMEOUT, tlsBlock, validateOptions } from '../src/config.ts'
import { startBroker } from './helpers/broker.ts'
import { makeCerts, serverTlsOptions } from './helpers/certs.ts'
import { errorOf } from './helpers/config.ts'

const pair = { cert_file: '/etc/sprig/server.pem', key_file: '/etc/sprig/server.key' }

t.test('a tls block with nats-server names and defaults', async (t) => {
  const o = validateOptions({ tls: { ...pair, ca_file: '/ca.pem', verify: true, timeout: 0.5 } })
  t.same(o.tls, { ...pair, ca_file: '/ca.pem', verify: true, verify_and_map: false, timeout: 500, handshake_first: false })
  t.equal(validateOptions({ tls: pair }).tls?.timeout, DEFAULT_TLS_TIMEOUT, 'timeout defaults to nats-server\'s 2s')
  t.equal(validateOptions({ tls: { ...pair, verify_and_map: true } }).tls?.verify, true, 'verify_and_map implies verify')
  t.equal(validateOptions({ tls: { ...pair, verify_and_map: true, map: 'uri' } }).tls?.map, 'uri')
  const m = validateOptions({ mqtt: { tls: pair, tls_port: 8884, plain: true } }).mqtt
  t.equal(m?.tls?.cert_file, pair.cert_file)
  t.equal(m?.tls_port, 8884)
  t.equal(m?.plain, true)
  t.match(validateOptions({ mqtt: { port: 1884, tls: pair } }).mqtt, { tls_port: 1884, plain: false }, "nats-server's meaning: mqtt.tls makes mqtt.port speak TLS")
  t.match(validateOptions({ mqtt: { tls: pair, tls_port: 8883 } }).mqtt, { port: 1883, tls_port: 8883, plain: false }, 'tls_port: TLS on its own port, port closed')
  t.match(validateOptions({ mqtt: { port: 1884 } }).mqtt, { port: 1884, plain: true }, 'no tls: port is plain')
  t.match(validateOptions({ mqtt: { plain: false } }).mqtt, { plain: false }, 'plain: false without tls: no MQTT listener')
})

t.test('mqtt listener combinations that cannot be', async (t) => {
  t.equal(
    errorOf(t, () => validateOptions({ mqtt: { tls: pair, plain: true } })),
    'config error: mqtt.plain: with mqtt.tls, mqtt.port speaks TLS; set mqtt.tls_port to serve TLS on a port of its own and keep mqtt.port plain',
  )
  t.equal(errorOf(t, () => validateOptions({ mqtt: { tls_port: 8883 } })), 'config error: mqtt.tls_port: needs mqtt.tls (the certificate for that port)')
})

t.test('bad tls values name the key', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ tls: true }, /^config error: tls: expected an object/],
    [{ tls: { cert_file: 'a' } }, /tls\.key_file: required/],
    [{ tls: { key_file: 'a' } }, /tls\.cert_file: required/],
    [{ tls: { ...pair, verfy: true } }, /unknown option "tls\.verfy" \(did you mean "tls\.verify"\?\)/],
    [{ tls: { ...pair, timeout: 'soon' } }, /tls\.timeout: expected a duration/],
    [{ tls: { ...pair, verify: 'yes' } }, /tls\.verify: expected true or false/],
    [{ tls: { ...pair, cert_file: '' } }, /tls\.cert_file: expected a non-empty string/],
    [{ tls: { ...pair, map: 'uri' } }, /tls\.map: needs verify_and_map: true/],
    [{ tls: { ...pair, verify_and_map: true, map: 'spiffe' } }, /tls\.map: expected one of auto, email, dns, uri, cn, dn, got "spiffe"/],
    [{ tls: { ...pair, insecure: true } }, /tls\.insecure: only applies to outgoing connections/],
    [{ mqtt: { tls: 'on' } }, /mqtt\.tls: expected an object/],
    [{ mqtt: { tls: { cert_file: 'a' } } }, /mqtt\.tls\.key_file: required/],
    [{ mqtt: { tls: pair, tls_port: 70000 } }, /mqtt\.tls_port: expected an integer 0-65535/],
    [{ mqtt: { plain: 'maybe' } }, /mqtt\.plain: expected true or false/],
  ]
  for (const [raw, re] of cases) t.match(errorOf(t, () => validateOptions(raw)), re, JSON.stringify(raw))
})

t.test('the client side (uplink remotes) uses the same parser', async (t) => {
  const at = 'leafnodes.remotes[0].tls'
  t.same(tlsBlock({ ca_file: '/ca.pem', handshake_first: true }, {}, at, 'client'), {
    ca_file: '/ca.pem', verify: false, verify_and_map: false, timeout: DEFAULT_TLS_TIMEOUT, handshake_first: true,
  }, 'no certificate needed on the client side')
  t.equal(tlsBlock({ insecure: true }, {}, at, 'client').insecure, true)
  t.match(errorOf(t, () => tlsBlock({ cert_file: 'a' }, {}, at, 'client')), /leafnodes\.remotes\[0\]\.tls\.key_file: required/)
  t.match(errorOf(t, () => tlsBlock({ verify: true }, {}, at, 'client')), /leafnodes\.remotes\[0\]\.tls\.verify: only applies to a listener/)
})

const certs = makeCerts(t)
if (certs) {
  t.test('Deno before 2.8.1: TLS refuses to start, saying why', async (t) => {
    const { serverTls } = await import('../targets/tls.ts')
    const g = globalThis as { Deno?: unknown }
    const had = 'Deno' in g
    for (const [version, ok] of [['2.7.14', false], ['2.8.0', false], ['2.8.1', true], ['2.9.6', true]] as const) {
      g.Deno = { version: { deno: version } }
      try {
        serverTls(serverTlsOptions(certs), 'tls', 'after-info', () => {})
        t.ok(ok, `Deno ${version}: starts`)
      } catch (e) {
        t.notOk(ok, `Deno ${version}: refused`)
        t.match((e as Error).message, new RegExp(`^TLS needs Deno 2\\.8\\.1 or newer \\(this is Deno ${version.replace(/\./g, '\\.')}`))
      } finally {
        if (!had) delete g.Deno
      }
    }
  })

  t.test('unreadable or wrong files stop start-up, naming the key and the file', async (t) => {
    const garbage = join(certs.dir, 'garbage.pem')
    writeFileSync(garbage, 'not a certificate\n')
    const base = serverTlsOptions(certs)
    const cases: [Parameters<typeof startBroker>[0], RegExp][] = [
      [{ tls: { ...base, cert_file: '/nonexistent/server.pem' } }, /^tls\.cert_file: cannot read \/nonexistent\/server\.pem: no such file$/],
      [{ tls: { ...base, cert_file: certs.server.key } }, new RegExp(`^tls\\.cert_file: ${certs.server.key} does not hold a PEM certificate$`)],
      [{ tls: { ...base, key_file: garbage } }, new RegExp(`^tls\\.key_file: ${garbage} does not hold a usable private key`)],
      [{ tls: { ...base, key_file: certs.client.key } }, new RegExp(`^tls\\.key_file: ${certs.client.key} does not match the certificate in ${certs.server.cert}`)],
      [{ tls: { ...base, ca_file: garbage } }, new RegExp(`^tls\\.ca_file: ${garbage} does not hold a PEM certificate$`)],
      [{ tls: { ...base, crl_file: certs.ca } }, new RegExp(`^tls\\.crl_file: ${certs.ca} does not hold a PEM CRL$`)],
      [{ mqtt: { tls: { ...base, ca_file: '/nonexistent/ca.pem' } } }, /^mqtt\.tls\.ca_file: cannot read \/nonexistent\/ca\.pem: no such file$/],
    ]
    for (const [opts, re] of cases) {
      const err = await startBroker(opts).then(
        async (b) => {
          await b.stop()
          return null
        },
        (e: Error) => e,
      )
      t.match(err?.message, re)
    }
  })
}
