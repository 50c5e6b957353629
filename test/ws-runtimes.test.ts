// The WebSocket listener on every runtime, as a real process: the bundle under Node, Bun and
// Deno, Bun on the TypeScript source (`npm start`, where Bun may substitute its own `ws`),
// and the compiled binary when dist/sprig-linux-x64 exists (CI builds it first). NATS and
// MQTT over ws:// to and from TCP clients, a burst read back byte for byte, a hostile frame closed with 1002, wss:// with a
// client certificate, and the status page served.

import t, { type Test } from 'tap'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { wsconnect, type NatsConnection } from '@nats-io/nats-core'
import WebSocket from 'ws'
import { privateBundle, runtimeBin } from './helpers/bins.ts'
import { makeCerts } from './helpers/certs.ts'
import { messages, mqttClient, natsClient } from './helpers/mqtt.ts'
import { freePort, skipOrFail, spawnServer, waitForPort } from './helpers/peers.ts'

const root = resolve(import.meta.dirname, '..')
const dir = mkdtempSync(join(tmpdir(), 'sprig-ws-rt-'))
const bundle = join(dir, 'sprig.js')
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
t.before(() => void privateBundle(bundle))
const certs = makeCerts(t)

const clean: NodeJS.ProcessEnv = { NODE_OPTIONS: '', SPRIG_NET: '' }
const binary = join(root, 'dist', 'sprig-linux-x64')
const variants: { name: string; bin: string; args: string[] }[] = [
  { name: 'node', bin: runtimeBin('node'), args: [bundle] },
  { name: 'bun', bin: runtimeBin('bun'), args: [bundle] },
  { name: 'deno', bin: runtimeBin('deno'), args: ['run', '-A', bundle] },
  { name: 'bun (TypeScript source)', bin: runtimeBin('bun'), args: [join(root, 'targets/main.ts')] },
  ...(existsSync(binary) ? [{ name: 'compiled binary', bin: binary, args: [] }] : []),
]

async function start(t: Test, v: (typeof variants)[number], tls: boolean) {
  const [np, mp, wp, hp] = [await freePort(), await freePort(), await freePort(), await freePort()]
  const block = tls && certs
    ? `tls { cert_file: "${certs.server.cert}", key_file: "${certs.server.key}", ca_file: "${certs.ca}", verify: true }`
    : 'no_tls: true'
  const conf = join(dir, `${v.name.replace(/\W/g, '')}-${tls}.conf`)
  writeFileSync(conf, `host: 127.0.0.1\nport: ${np}\nhttp_port: ${hp}\nmqtt { port: ${mp} }\nwebsocket { port: ${wp}, ${block} }\n`)
  const p = await spawnServer(v.bin, [...v.args, '-c', conf], np, clean)
  t.teardown(() => p.stop())
  await waitForPort(wp)
  return { p, nats: `nats://127.0.0.1:${np}`, mqtt: `mqtt://127.0.0.1:${mp}`, ws: `${tls ? 'wss://localhost' : 'ws://127.0.0.1'}:${wp}`, http: hp }
}

/**
 * A burst from a TCP publisher to a WebSocket subscriber, big enough that the socket pushes
 * back: batches both under 64 KiB (copied behind the frame header into a kept buffer) and
 * over (header, then the batch itself), so a buffer written again too early would show.
 */
async function flood(t: Test, nc: NatsConnection, wc: NatsConnection, subject: string): Promise<void> {
  const n = 600
  const body = (i: number): Uint8Array => {
    const d = new Uint8Array(i % 9 === 0 ? 70_000 + i : 500 + ((i * 337) % 4000))
    for (let j = 0; j < d.length; j++) d[j] = (i * 31 + j) & 0xff
    return d
  }
  let next = 0
  let bad = -1
  const done = new Promise<void>((r) => wc.subscribe(subject, { callback: (_e, m) => {
    const want = body(next)
    if (bad < 0 && (m.data.length !== want.length || !Buffer.from(m.data).equals(Buffer.from(want)))) bad = next
    if (++next === n) r()
  } }))
  await wc.flush()
  for (let i = 0; i < n; i++) nc.publish(subject, body(i))
  await nc.flush()
  await Promise.race([done, new Promise((r) => setTimeout(r, 20_000))])
  t.equal(next, n, `${n} messages (${subject}) arrived`)
  t.equal(bad, -1, 'each byte for byte, in order')
}

const wsOpts = (tls?: WebSocket.ClientOptions) => ({
  reconnect: false,
  wsFactory: (u: string) => Promise.resolve({ socket: new WebSocket(u, tls) as unknown as globalThis.WebSocket, encrypted: u.startsWith('wss') }),
})

for (const v of variants) {
  t.test(v.name, async (t) => {
    if (!v.bin) return skipOrFail(t, `${v.name.split(' ')[0]} not found: it is a devDependency, run npm install`)
    const s = await start(t, v, false)
    // The port can accept before the log line has come through the pipe: wait for it.
    const listening = /Listening for websocket clients on ws:\/\/127\.0\.0\.1:\d+/
    for (let i = 0; i < 100 && !listening.test(s.p.output()); i++) await new Promise((r) => setTimeout(r, 20))
    t.match(s.p.output(), listening)
    const nc = await natsClient(t, s.nats)
    const wc = await wsconnect({ servers: s.ws, ...wsOpts() })
    t.teardown(() => wc.close())
    const mw = await mqttClient(t, `${s.ws}/mqtt`, { protocolVersion: 5 })
    const mt = await mqttClient(t, s.mqtt)
    const got: string[] = []
    wc.subscribe('rt.>', { callback: (_e, m) => void got.push(m.string()) })
    await wc.flush()
    await mw.subscribeAsync('rt/#', { qos: 1 })
    const mwGot = messages(mw, 2)
    nc.publish('rt.a', 'tcp-nats')
    await mt.publishAsync('rt/b', 'tcp-mqtt', { qos: 1 })
    t.same((await mwGot).map((m) => m.payload).sort(), ['tcp-mqtt', 'tcp-nats'], 'MQTT over WebSocket hears NATS and MQTT over TCP')
    for (let i = 0; i < 30 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 100))
    t.same(got.sort(), ['tcp-mqtt', 'tcp-nats'], 'NATS over WebSocket hears both')
    nc.subscribe('svc', { callback: (_e, m) => void m.respond('pong') })
    await nc.flush()
    t.equal((await wc.request('svc', 'ping', { timeout: 2000 })).string(), 'pong', 'request/reply across')
    await flood(t, nc, wc, 'flood')
    // A hostile frame: unmasked. Closed with 1002; the others carry on.
    const raw = new WebSocket(s.ws)
    await new Promise((r) => raw.once('open', r))
    const code = new Promise<number>((r) => raw.once('close', (c) => r(c)))
    ;(raw as unknown as { _socket: import('node:net').Socket })._socket.write(Buffer.from([0x82, 0x02, 0x41, 0x42]))
    t.equal(await code, 1002, 'an unmasked frame: close 1002')
    await wc.flush()
    const page = await fetch(`http://127.0.0.1:${s.http}/`)
    t.equal(page.status, 200)
    t.match(await page.text(), /<title>sprig status<\/title>/, 'the status page is served')
    if (!certs) return
    const st = await start(t, v, true)
    const tls = { ca: readFileSync(certs.ca), cert: readFileSync(certs.client.cert), key: readFileSync(certs.client.key) }
    const ws2 = await wsconnect({ servers: st.ws, ...wsOpts(tls) })
    t.teardown(() => ws2.close())
    const m2 = await mqttClient(t, `${st.ws}/mqtt`, tls)
    await m2.subscribeAsync('sec/#')
    const m2Got = messages(m2, 1)
    ws2.publish('sec.x', 'over-wss')
    t.equal((await m2Got)[0]?.payload, 'over-wss', 'wss:// with a client certificate, both protocols')
    const nc2 = await natsClient(t, st.nats)
    await flood(t, nc2, ws2, 'flood.tls')
    await t.rejects(wsconnect({ servers: st.ws, ...wsOpts({ ca: readFileSync(certs.ca) }) }), 'no client certificate: refused')
  })
}
