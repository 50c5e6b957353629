// TLS on every runtime: the bundle (dist/sprig.js) with a TLS config under Node, Bun and Deno
// (Bun's TLS-first listeners on Bun.listen's own TLS, and with SPRIG_NET=node on node:tls; Deno
// with SPRIG_NET=native, where TLS listeners still go through node:tls). nats.js with a
// client certificate works; a self-signed, a revoked (CRL) and a missing certificate are refused
// and logged, on the NATS listener and on the MQTT TLS port.

import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { connect } from '@nats-io/transport-node'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { makeCerts, serverTlsOptions, tlsAttempt } from './helpers/certs.ts'
import { freePort, skipOrFail, spawnServer } from './helpers/peers.ts'

const root = resolve(import.meta.dirname, '..')
const bundle = join(root, 'dist', 'sprig.js')
const certs = makeCerts(t)


const clean: NodeJS.ProcessEnv = { NODE_OPTIONS: '', SPRIG_NET: '' }
const variants = [
  { name: 'node', cmd: process.execPath, args: [bundle], env: clean },
  { name: 'bun', cmd: runtimeBin('bun'), args: [bundle], env: clean },
  { name: 'bun (SPRIG_NET=node)', cmd: runtimeBin('bun'), args: [bundle], env: { ...clean, SPRIG_NET: 'node' } },
  { name: 'deno', cmd: runtimeBin('deno'), args: ['run', '-A', bundle], env: clean },
  { name: 'deno (SPRIG_NET=native)', cmd: runtimeBin('deno'), args: ['run', '-A', bundle], env: { ...clean, SPRIG_NET: 'native' } },
]

if (certs) {
  t.before(() => {
    freshBundle()
  })

  for (const v of variants) {
    t.test(v.name, async (t) => {
      if (v.cmd === '') return skipOrFail(t, `${v.name.split(' ')[0]} not found: run npm ci (it installs bun and deno)`)
      const port = await freePort()
      const mqttTlsPort = await freePort()
      const conf = join(certs.dir, `sprig-${v.name.replace(/\W+/g, '-')}.json`)
      const tls = serverTlsOptions(certs, { crl_file: certs.crl, timeout: 1000 })
      writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port, tls, mqtt: { tls, tls_port: mqttTlsPort } }))
      const p = await spawnServer(v.cmd, [...v.args, '-c', conf], port, v.env)
      t.teardown(() => p.stop())

      const nc = await connect({
        servers: `127.0.0.1:${port}`,
        reconnect: false,
        tls: { caFile: certs.ca, certFile: certs.client.cert, keyFile: certs.client.key },
      })
      const sub = nc.subscribe('rt.x', { max: 1 })
      nc.publish('rt.x', v.name)
      for await (const m of sub) t.equal(m.string(), v.name, 'nats.js with a client certificate: pub/sub over TLS')
      t.equal(nc.info?.tls_required, true)
      await nc.close()

      t.ok((await tlsAttempt(mqttTlsPort, 'mqtt', certs, certs.client)).ok, 'MQTT TLS port: good certificate gets CONNACK')
      const refusals: [string, number, number][] = []
      for (const [name, pair] of [['self-signed', certs.selfSigned], ['revoked', certs.revoked], ['none', null]] as const) {
        for (const [listener, lport, how] of [['NATS', port, 'starttls'], ['MQTT', mqttTlsPort, 'mqtt']] as const) {
          const a = await tlsAttempt(lport, how, certs, pair)
          t.notOk(a.ok, `${listener}: ${name} certificate refused`)
          refusals.push([`${listener} ${name}`, a.port, 0])
        }
      }
      // One log line per refusal, naming the peer (reasons are worded by each runtime's TLS library).
      for (const [what, peer] of refusals) {
        let found = false
        for (let i = 0; i < 50 && !found; i++) {
          found = new RegExp(`127\\.0\\.0\\.1:${peer} - TLS handshake error: \\S`).test(p.output())
          if (!found) await new Promise((r) => setTimeout(r, 20))
        }
        t.ok(found, `${what}: logged`)
      }
      t.match(p.output(), /certificate revoked/, 'the CRL is enforced')
      if (v.env.SPRIG_NET === 'native') t.match(p.output(), /SPRIG_NET=native: TLS listeners use node:net and node:tls/)
      if (v.name === 'bun') t.match(p.output(), /TLS-first listeners on the runtime's own TLS/, "Bun: the MQTT TLS port on Bun.listen's TLS")
      else t.notMatch(p.output(), /TLS-first listeners on the runtime's own TLS/, 'node:tls for every TLS listener')

      // TLS first (handshake_first), on its own process.
      const port2 = await freePort()
      const conf2 = join(certs.dir, `sprig-first-${v.name.replace(/\W+/g, '-')}.json`)
      writeFileSync(conf2, JSON.stringify({ host: '127.0.0.1', port: port2, tls: { ...tls, handshake_first: true }, mqtt: { enabled: false } }))
      const p2 = await spawnServer(v.cmd, [...v.args, '-c', conf2], port2, v.env)
      t.teardown(() => p2.stop())
      const nc2 = await connect({
        servers: `127.0.0.1:${port2}`,
        reconnect: false,
        tls: { caFile: certs.ca, certFile: certs.client.cert, keyFile: certs.client.key, handshakeFirst: true },
      })
      await nc2.flush()
      t.equal(nc2.info?.tls_required, true, 'handshake_first: nats.js with handshakeFirst connects')
      await nc2.close()
      t.notOk((await tlsAttempt(port2, 'nats-first', certs, certs.selfSigned)).ok, 'handshake_first: self-signed refused')

      // allow_non_tls, and MQTT over TLS on mqtt.port (nats-server's meaning), on a third process.
      const port3 = await freePort()
      const mqtt3 = await freePort()
      const conf3 = join(certs.dir, `sprig-mixed-${v.name.replace(/\W+/g, '-')}.json`)
      writeFileSync(conf3, JSON.stringify({ host: '127.0.0.1', port: port3, allow_non_tls: true, tls, mqtt: { port: mqtt3, tls } }))
      const p3 = await spawnServer(v.cmd, [...v.args, '-c', conf3], port3, v.env)
      t.teardown(() => p3.stop())
      const secure = await connect({ servers: `127.0.0.1:${port3}`, reconnect: false, tls: { caFile: certs.ca, certFile: certs.client.cert, keyFile: certs.client.key } })
      const plain = await connect({ servers: `127.0.0.1:${port3}`, reconnect: false, tls: null })
      t.equal(plain.info?.tls_available, true, 'allow_non_tls: INFO says tls_available')
      const sub3 = secure.subscribe('rt.mixed', { max: 1 })
      await secure.flush()
      plain.publish('rt.mixed', 'plain to tls')
      for await (const m of sub3) t.equal(m.string(), 'plain to tls', 'allow_non_tls: a plaintext and a TLS client on one port')
      await secure.close()
      await plain.close()
      t.ok((await tlsAttempt(mqtt3, 'mqtt', certs, certs.client)).ok, 'mqtt { port, tls }: that port speaks MQTT over TLS')
    })
  }
}
