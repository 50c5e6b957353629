// MQTT over TLS: on mqtt.port as in nats-server (mqtt.tls alone), or on a port of its own
// (sprig's mqtt.tls_port). MQTT.js and mosquitto_pub/sub with client certificates, messages
// crossing to and from NATS; with tls_port the plain port stays closed unless mqtt.plain keeps it.

import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import mqtt from 'mqtt'
import { startBroker } from './helpers/broker.ts'
import { makeCerts, serverTlsOptions } from './helpers/certs.ts'
import { natsClient } from './helpers/mqtt.ts'
import { havePeer } from './helpers/peers.ts'

const certs = makeCerts(t)

function refusesTcp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(false)
    })
    s.once('error', () => resolve(true))
  })
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (out += d))
    p.on('close', (code) => resolve({ code, out }))
  })
}

if (certs) {
  const tlsOpts = serverTlsOptions(certs, { crl_file: certs.crl })

  t.test('MQTT.js with a client certificate, both directions across to NATS', async (t) => {
    const b = await startBroker({ mqtt: { tls: tlsOpts, tls_port: 0 } })
    t.teardown(() => b.stop())
    t.equal(b.mqttPort, 0, 'no plain MQTT port when mqtt.tls is set')
    t.ok(b.mqttTlsPort > 0)
    const nc = await natsClient(t, b.url)
    const fromDevice = new Promise<string>((resolve) => nc.subscribe('sensors.>', { callback: (_e, m) => resolve(`${m.subject}=${m.string()}`) }))
    await nc.flush()
    const dev = await mqtt.connectAsync(`mqtts://127.0.0.1:${b.mqttTlsPort}`, {
      ca: [readFileSync(certs.ca)],
      cert: readFileSync(certs.client.cert),
      key: readFileSync(certs.client.key),
      servername: 'localhost',
      protocolVersion: 5,
      reconnectPeriod: 0,
    })
    t.teardown(() => dev.endAsync())
    const toDevice = new Promise<string>((resolve) => dev.on('message', (topic, p) => resolve(`${topic}=${p.toString()}`)))
    await dev.subscribeAsync('cmd/42/#', { qos: 1 })
    await dev.publishAsync('sensors/42/temp', '21.5', { qos: 1 })
    t.equal(await fromDevice, 'sensors.42.temp=21.5')
    nc.publish('cmd.42.reboot', 'now')
    t.equal(await toDevice, 'cmd/42/reboot=now')
  })

  t.test("nats-server's meaning: mqtt { port, tls } makes that port speak MQTT over TLS", async (t) => {
    const b = await startBroker({ mqtt: { tls: tlsOpts } })
    t.teardown(() => b.stop())
    t.equal(b.mqttPort, 0, 'no plain listener')
    t.ok(b.mqttTlsPort > 0, 'TLS on mqtt.port (0: a free one)')
    t.equal(b.srv.opts.mqtt?.tls_port, b.mqttTlsPort)
    const dev = await mqtt.connectAsync(`mqtts://127.0.0.1:${b.mqttTlsPort}`, {
      ca: [readFileSync(certs.ca)],
      cert: readFileSync(certs.client.cert),
      key: readFileSync(certs.client.key),
      servername: 'localhost',
      reconnectPeriod: 0,
    })
    t.ok(dev.connected, 'mqtts:// on mqtt.port')
    await dev.endAsync()
    // A plain MQTT client on the same port gets no CONNACK: the server waits for a ClientHello.
    const plain = mqtt.connect(`mqtt://127.0.0.1:${b.mqttTlsPort}`, { reconnectPeriod: 0, connectTimeout: 1500 })
    const got = await new Promise<string>((resolve) => {
      plain.once('connect', () => resolve('connected'))
      plain.once('error', () => resolve('refused'))
      plain.once('close', () => resolve('refused'))
    })
    plain.end(true)
    t.equal(got, 'refused', 'plain MQTT on the TLS port does not connect')
  })

  t.test('MQTT.js without a certificate, or with a revoked one, is refused', async (t) => {
    const b = await startBroker({ mqtt: { tls: tlsOpts, tls_port: 0 } })
    t.teardown(() => b.stop())
    for (const [name, pair] of [['none', null], ['revoked', certs.revoked]] as const) {
      const c = mqtt.connect(`mqtts://127.0.0.1:${b.mqttTlsPort}`, {
        ca: [readFileSync(certs.ca)],
        ...(pair ? { cert: readFileSync(pair.cert), key: readFileSync(pair.key) } : {}),
        servername: 'localhost',
        reconnectPeriod: 0,
        connectTimeout: 3000,
      })
      // With TLS 1.3 the client finishes its side of the handshake, then sees the close.
      const outcome = await new Promise<string>((resolve) => {
        c.on('connect', () => resolve('connected'))
        c.on('error', (e) => resolve(`error: ${e.message}`))
        c.on('close', () => resolve('closed'))
      })
      c.end(true)
      t.not(outcome, 'connected', `${name}: no CONNACK (${outcome})`)
    }
    t.ok(b.logs.some((l) => /client certificate required, none sent/.test(l)))
    t.ok(b.logs.some((l) => /certificate revoked/.test(l)))
  })

  t.test('mosquitto_pub and mosquitto_sub with --cafile --cert --key', async (t) => {
    if (!havePeer(t, 'mosquitto_pub', 'mosquitto-clients')) return
    const b = await startBroker({ mqtt: { tls: tlsOpts, tls_port: 0 } })
    t.teardown(() => b.stop())
    const nc = await natsClient(t, b.url)
    const got = new Promise<string>((resolve) => nc.subscribe('mosq.>', { callback: (_e, m) => resolve(`${m.subject}=${m.string()}`) }))
    await nc.flush()
    const tlsArgs = ['-h', '127.0.0.1', '-p', String(b.mqttTlsPort), '--cafile', certs.ca, '--cert', certs.client.cert, '--key', certs.client.key]
    const pub = await run('mosquitto_pub', [...tlsArgs, '-t', 'mosq/42/temp', '-m', '19.0', '-q', '1'])
    t.equal(pub.code, 0, `mosquitto_pub exits 0 ${pub.out}`)
    t.equal(await got, 'mosq.42.temp=19.0')

    // mosquitto_sub receives a NATS publish (-C 1: exit after one message).
    const sub = spawn('mosquitto_sub', [...tlsArgs, '-t', 'down/#', '-C', '1', '-q', '1'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    sub.stdout.on('data', (d) => (out += d))
    const exited = new Promise<number | null>((r) => sub.on('close', r))
    t.teardown(() => sub.kill())
    // Publish until the subscription is in place (mosquitto_sub subscribes after connecting).
    const timer = setInterval(() => nc.publish('down.42', 'hello device'), 50)
    t.equal(await exited, 0)
    clearInterval(timer)
    t.equal(out.trim(), 'hello device')

    const rogue = await run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(b.mqttTlsPort), '--cafile', certs.ca, '--cert', certs.selfSigned.cert, '--key', certs.selfSigned.key, '-t', 'x', '-m', 'y'])
    t.not(rogue.code, 0, 'a self-signed client certificate is refused')
  })

  t.test('mqtt.plain: true keeps the plain port open next to the TLS one', async (t) => {
    const b = await startBroker({ mqtt: { tls: tlsOpts, tls_port: 0, plain: true } })
    t.teardown(() => b.stop())
    t.ok(b.mqttPort > 0 && b.mqttTlsPort > 0 && b.mqttPort !== b.mqttTlsPort)
    const plain = await mqtt.connectAsync(`mqtt://127.0.0.1:${b.mqttPort}`, { reconnectPeriod: 0 })
    await plain.endAsync()
    t.pass('a plain client connects on the plain port')
    t.ok(b.logs.some((l) => new RegExp(`Listening for MQTT clients on TLS 127\\.0\\.0\\.1:${b.mqttTlsPort}`).test(l)))
  })

  t.test('default: the plain MQTT port is not opened when mqtt.tls is set', async (t) => {
    const { freePort } = await import('./helpers/peers.ts')
    const port = await freePort()
    const b = await startBroker({ mqtt: { port, tls: tlsOpts, tls_port: 0 } })
    t.teardown(() => b.stop())
    t.ok(await refusesTcp(port), `nothing listens on ${port}`)
  })
}
