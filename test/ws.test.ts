// NATS and MQTT over WebSocket (the `websocket` block): nats.js wsconnect and MQTT.js over
// ws:// and wss:// (client certificates, identity mapping) against TCP clients of both
// protocols; request/reply, permissions, limits, and hostile handshakes and frames on raw
// sockets (each closes only its own connection, with the RFC 6455 code).

import t from 'tap'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { wsconnect, type NatsConnection } from '@nats-io/nats-core'
import mqtt from 'mqtt'
import WebSocket from 'ws'
import { validateOptions } from '../src/config.ts'
import { WEBSOCKET_DEFAULTS, type WebsocketOptions } from '../src/options.ts'
import { startBroker, type TestOptions } from './helpers/broker.ts'
import { makeCerts, serverTlsOptions, type CertPair } from './helpers/certs.ts'
import { errorOf } from './helpers/config.ts'
import { messages, mqttClient, natsClient, sleep } from './helpers/mqtt.ts'
import { until } from './helpers/hub.ts'

const ws = (over: Partial<WebsocketOptions> = {}): WebsocketOptions => ({ ...WEBSOCKET_DEFAULTS, port: 0, no_tls: true, ...over })

async function broker(t: Tap, over: TestOptions = {}) {
  const b = await startBroker({ mqtt: true, websocket: ws(), ...over })
  t.teardown(() => b.stop())
  return b
}
type Tap = { teardown(f: () => unknown): void }

/** nats.js over WebSocket (Node 20 has no global WebSocket: the `ws` client is handed in). */
async function natsWs(t: Tap, url: string, opts: Record<string, unknown> = {}, tls?: WebSocket.ClientOptions): Promise<NatsConnection> {
  const nc = await wsconnect({
    servers: url,
    reconnect: false,
    wsFactory: (u: string) => Promise.resolve({ socket: new WebSocket(u, tls) as unknown as globalThis.WebSocket, encrypted: u.startsWith('wss') }),
    ...opts,
  })
  t.teardown(async () => {
    if (!nc.isClosed()) await nc.close()
  })
  return nc
}

// --- raw WebSocket, for what no well-behaved client sends -------------------------------------

interface Raw {
  sock: net.Socket
  /** The response head (status line and headers). */
  head: string
  /** Bytes after the head. */
  rest: () => Buffer
  closed: Promise<void>
}

function rawUpgrade(port: number, path = '/', headers: Record<string, string> = {}): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1')
    let buf = Buffer.alloc(0)
    let head: string | null = null
    const closed = new Promise<void>((r) => sock.on('close', () => r()))
    sock.on('error', () => {})
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d])
      if (head !== null) return
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      head = buf.subarray(0, end).toString()
      buf = buf.subarray(end + 4)
      resolve({ sock, head, rest: () => buf, closed })
    })
    sock.on('close', () => head === null && reject(new Error('closed before a response')))
    const h = { Host: `127.0.0.1:${port}`, Upgrade: 'websocket', Connection: 'Upgrade', 'Sec-WebSocket-Key': randomBytes(16).toString('base64'), 'Sec-WebSocket-Version': '13', ...headers }
    sock.write(`GET ${path} HTTP/1.1\r\n${Object.entries(h).map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`)
  })
}

/** A client frame: masked unless told otherwise. */
function frame(opcode: number, payload: Buffer, o: { mask?: boolean; fin?: boolean; rsv?: number } = {}): Buffer {
  const mask = o.mask ?? true
  const len = payload.length
  const b0 = ((o.fin ?? true) ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | opcode
  const ext = len < 126 ? Buffer.alloc(0) : len < 65536 ? Buffer.from([len >> 8, len & 255]) : (() => { const x = Buffer.alloc(8); x.writeBigUInt64BE(BigInt(len)); return x })()
  const b1 = (mask ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127)
  const key = randomBytes(4)
  const body = Buffer.from(payload)
  if (mask) for (let i = 0; i < body.length; i++) body[i]! ^= key[i & 3]!
  return Buffer.concat([Buffer.from([b0, b1]), ext, mask ? key : Buffer.alloc(0), body])
}

/** The server's frames among `bytes` (server frames are unmasked); a cut last frame is left out. */
function frames(bytes: Buffer): { op: number; payload: Buffer }[] {
  const out: { op: number; payload: Buffer }[] = []
  let i = 0
  while (i + 2 <= bytes.length) {
    const op = bytes[i]! & 0x0f
    let len = bytes[i + 1]! & 0x7f
    let p = i + 2
    if (len === 126) { len = bytes.readUInt16BE(p); p += 2 } else if (len === 127) { len = Number(bytes.readBigUInt64BE(p)); p += 8 }
    if (p + len > bytes.length) break
    out.push({ op, payload: bytes.subarray(p, p + len) })
    i = p + len
  }
  return out
}

/** The close code in the server's close frame among `bytes`, or null. */
function closeCode(bytes: Buffer): number | null {
  const c = frames(bytes).find((f) => f.op === 8)
  return c === undefined ? null : c.payload.length >= 2 ? c.payload.readUInt16BE(0) : 1005
}

// --- config ------------------------------------------------------------------------------------

t.test('config: the websocket block as nats-server reads it', async (t) => {
  const o = validateOptions({ websocket: { port: 8080, no_tls: true, same_origin: true, allowed_origins: ['https://hmi.example'], compression: true, handshake_timeout: '5s' } })
  t.same(o.websocket, { host: '', port: 8080, no_tls: true, same_origin: true, allowed_origins: ['https://hmi.example'], compression: true, handshake_timeout: 5000 })
  t.match(errorOf(t, () => validateOptions({ websocket: { port: 8080 } })), /websocket\.tls: required: set a tls block, or no_tls: true/)
  t.match(errorOf(t, () => validateOptions({ websocket: { no_tls: true } })), /websocket\.port: required/)
  t.match(errorOf(t, () => validateOptions({ websocket: { port: 1, no_tls: true, allowed_origins: ['hmi.example'] } })), /websocket\.allowed_origins\[0\]: expected an origin/)
  t.match(errorOf(t, () => validateOptions({ websocket: { port: 1, no_tls: true, compresion: true } })), /unknown option "websocket\.compresion" \(did you mean "websocket\.compression"\?\)/)
  t.match(errorOf(t, () => validateOptions({ websocket: { port: 1, tls: { cert_file: 'c', key_file: 'k', handshake_first: true } } })), /websocket\.tls\.handshake_first/)
})

// --- both protocols, both transports ---------------------------------------------------------

t.test('NATS over WebSocket and TCP, MQTT over WebSocket and TCP: one subject space', async (t) => {
  const b = await broker(t)
  const wsUrl = `ws://127.0.0.1:${b.wsPort}`
  t.ok(b.logs.some((l) => l.includes(`Listening for websocket clients on ws://127.0.0.1:${b.wsPort}`)))
  const wc = await natsWs(t, wsUrl)
  const nc = await natsClient(t, b.url)
  const mw = await mqttClient(t, `${wsUrl}/mqtt`, { clientId: 'ws-dev', protocolVersion: 5 })
  const mt = await mqttClient(t, b.mqttUrl, { clientId: 'tcp-dev' })

  // WS NATS subscriber hears TCP NATS, MQTT over WS and MQTT over TCP.
  const got: string[] = []
  wc.subscribe('s.>', { callback: (_e, m) => void got.push(`${m.subject}=${m.string()}`) })
  await wc.flush()
  await mw.subscribeAsync('s/#', { qos: 1 })
  const mwGot = messages(mw, 3)
  nc.publish('s.a', 'tcp-nats')
  await mt.publishAsync('s/b', 'tcp-mqtt', { qos: 1 })
  await mw.publishAsync('s/c', 'ws-mqtt', { qos: 1 })
  await until(() => got.length >= 3, 3000, 'three messages at the WebSocket NATS subscriber')
  t.same(got.sort(), ['s.a=tcp-nats', 's.b=tcp-mqtt', 's.c=ws-mqtt'])
  t.same((await mwGot).map((m) => `${m.topic}=${m.payload}`).sort(), ['s/a=tcp-nats', 's/b=tcp-mqtt', 's/c=ws-mqtt'], 'MQTT over WebSocket hears all three, its own included')

  // WS NATS publishes reach TCP NATS and TCP MQTT.
  const ntGot = new Promise<string>((r) => nc.subscribe('w.x', { callback: (_e, m) => r(m.string()) }))
  await nc.flush()
  await mt.subscribeAsync('w/x')
  const mtGot = messages(mt, 1)
  wc.publish('w.x', 'from-ws')
  t.equal(await ntGot, 'from-ws')
  t.equal((await mtGot)[0]?.payload, 'from-ws')

  // Request/reply both ways across the transports.
  wc.subscribe('svc.ws', { callback: (_e, m) => void m.respond(`ws:${m.string()}`) })
  nc.subscribe('svc.tcp', { callback: (_e, m) => void m.respond(`tcp:${m.string()}`) })
  await wc.flush()
  await nc.flush()
  t.equal((await nc.request('svc.ws', 'a', { timeout: 2000 })).string(), 'ws:a')
  t.equal((await wc.request('svc.tcp', 'b', { timeout: 2000 })).string(), 'tcp:b')

  const varz = b.srv.status.get('websocket')!() as Record<string, number>
  t.equal(varz.nats, 1, 'one NATS client over WebSocket')
  t.equal(varz.mqtt, 1, 'one MQTT client over WebSocket')
})

t.test('permissions and auth over WebSocket are the TCP listener\'s', async (t) => {
  const b = await broker(t, {
    authorization: { users: [{ user: 'dev', password: 'pw', permissions: { publish: { allow: ['ok.>'] }, subscribe: { allow: ['ok.>', '_INBOX.>'] } } }] },
  })
  const url = `ws://127.0.0.1:${b.wsPort}`
  await t.rejects(natsWs(t, url, { user: 'dev', pass: 'bad' }), /Authorization Violation/i, 'a wrong password is refused as on TCP')
  const errs: string[] = []
  const wc = await natsWs(t, url, { user: 'dev', pass: 'pw' })
  ;(async () => {
    for await (const s of wc.status()) if (s.type === 'error') errs.push(String((s as { error?: Error }).error?.message))
  })()
  wc.publish('no.x', 'x')
  await wc.flush()
  await until(() => errs.some((e) => /Permissions Violation for Publish to "no.x"/i.test(e)), 3000, 'a publish permission error')
  t.pass('a forbidden publish gets the -ERR, and the connection stays')
  await t.rejects(mqtt.connectAsync(`${url}/mqtt`, { username: 'dev', password: 'bad', reconnectPeriod: 0, connectTimeout: 3000 }), /Bad username or password/i)
  const m = await mqttClient(t, `${url}/mqtt`, { username: 'dev', password: 'pw' })
  const err = await m.subscribeAsync('no/#').catch((e: { packet?: { granted?: number[] } }) => e)
  t.same((err as { packet?: { granted?: number[] } }).packet?.granted, [128], 'a forbidden MQTT subscription is refused in SUBACK')
})

t.test('limits: a PUB over max_payload gets -ERR; a message over the WebSocket limit closes with 1009', async (t) => {
  const b = await broker(t, { max_payload: 1024 })
  const r = await rawUpgrade(b.wsPort)
  t.match(r.head, /^HTTP\/1\.1 101/)
  r.sock.write(frame(2, Buffer.from(`CONNECT {"verbose":false}\r\nPUB a 2000\r\n${'x'.repeat(2000)}\r\n`)))
  await r.closed
  t.match(r.rest().toString('latin1'), /-ERR 'Maximum Payload Violation'/, 'the NATS limit answers as on TCP')
  const big = await rawUpgrade(b.wsPort)
  big.sock.write(frame(2, Buffer.alloc(1024 + 4096 + 64 * 1024 + 10, 0x41)))
  await big.closed
  t.equal(closeCode(big.rest()), 1009, 'over the WebSocket message limit: closed with 1009 (message too big)')
  // Nothing else was affected.
  const nc = await natsWs(t, `ws://127.0.0.1:${b.wsPort}`)
  await nc.flush()
})

t.test('max_connections over WebSocket: INFO, -ERR, close, as on TCP', async (t) => {
  const b = await broker(t, { max_connections: 1 })
  const first = await rawUpgrade(b.wsPort)
  const second = await rawUpgrade(b.wsPort)
  second.sock.write(frame(9, Buffer.from('x'))) // a ping while refused: no listener trouble
  await second.closed
  t.match(second.rest().toString('latin1'), /INFO .*-ERR 'maximum connections exceeded'/s)
  t.equal(closeCode(second.rest()), 1000, 'closed normally after the -ERR')
  first.sock.destroy()
})

t.test('a NATS protocol line split over frames, and several in one frame, as nats-server', async (t) => {
  const b = await broker(t)
  const nc = await natsClient(t, b.url)
  const got: string[] = []
  nc.subscribe('p.>', { callback: (_e, m) => void got.push(m.string()) })
  await nc.flush()
  const r = await rawUpgrade(b.wsPort)
  r.sock.write(frame(2, Buffer.from('CONNECT {"verbose":false}\r\nPUB p.1 3\r\no')))
  r.sock.write(frame(2, Buffer.from('ne\r\nPUB p.2 3\r\ntwo\r\nPUB p.3 5\r\nthr')))
  r.sock.write(frame(1, Buffer.from('ee\r\nPING\r\n'))) // a text frame is read the same way
  await until(() => r.rest().includes('PONG'), 3000, 'PONG')
  await until(() => got.length === 3, 3000, 'three messages')
  t.same(got, ['one', 'two', 'three'])
  r.sock.destroy()
})

/** The server's data frames among `bytes`: each frame's payload. */
function dataFrames(bytes: Buffer): Buffer[] {
  return frames(bytes).filter((f) => f.op === 1 || f.op === 2).map((f) => f.payload)
}

t.test('outbound: what queued in one I/O turn goes in one frame, MSGs whole, any size', async (t) => {
  const b = await broker(t)
  const nc = await natsClient(t, b.url)
  const r = await rawUpgrade(b.wsPort)
  r.sock.write(frame(2, Buffer.from('CONNECT {"verbose":false}\r\nSUB c.> 1\r\nPING\r\n')))
  await until(() => r.rest().includes('PONG'), 3000, 'PONG')
  // One TCP write of 50 PUBs: the subscriber's 50 MSGs are queued in one turn.
  let pubs = 'CONNECT {"verbose":false}\r\n'
  for (let i = 0; i < 50; i++) pubs += `PUB c.${i} 3\r\n${String(i).padStart(3, '0')}\r\n`
  const raw = net.connect(b.port, '127.0.0.1')
  t.teardown(() => raw.destroy())
  raw.write(`${pubs}PING\r\n`)
  await until(() => (r.rest().toString('latin1').match(/MSG c\./g) ?? []).length === 50, 3000, 'fifty MSGs')
  const frames = dataFrames(r.rest())
  const msgs = frames.map((f) => (f.toString('latin1').match(/MSG c\./g) ?? []).length).filter((n) => n > 0)
  t.ok(msgs.length < 50, `50 MSGs in ${msgs.length} frame(s), not one frame each`)
  t.match(Buffer.concat(frames).toString('latin1'), /MSG c\.0 1 3\r\n000\r\n/)
  for (const f of frames) t.match(f.toString('latin1'), /^(INFO |PONG|MSG )[^]*\r\n$/, 'every frame ends where a protocol line or payload ends')
  r.sock.destroy()

  // nats.js over WebSocket reads them back byte for byte, across every frame header size
  // (7-bit, 16-bit and 64-bit lengths) and with many small ones coalesced around them.
  const wc = await natsWs(t, `ws://127.0.0.1:${b.wsPort}`)
  const sizes = [0, 1, 100, 111, 112, 125, 126, 1000, 65_400, 65_535, 65_536, 200_000, 7]
  const got: Uint8Array[] = []
  wc.subscribe('big', { callback: (_e, m) => void got.push(m.data) })
  await wc.flush()
  const sent = sizes.map((n) => randomBytes(n))
  for (const d of sent) {
    nc.publish('big', d)
    for (let k = 0; k < 20; k++) nc.publish('big', Buffer.from([k]))
  }
  await until(() => got.length === sizes.length * 21, 5000, 'every message')
  for (let i = 0; i < sent.length; i++) t.ok(Buffer.from(got[i * 21]!).equals(sent[i]!), `${sizes[i]} bytes intact`)
})

t.test('outbound with permessage-deflate: `ws` compresses, messages arrive whole and in order', async (t) => {
  const b = await broker(t, { websocket: ws({ compression: true }) })
  const nc = await natsClient(t, b.url)
  const c = new WebSocket(`ws://127.0.0.1:${b.wsPort}`, { perMessageDeflate: true })
  let text = ''
  c.on('message', (d: Buffer) => void (text += d.toString('latin1')))
  await new Promise((r) => c.once('open', r))
  t.teardown(() => c.terminate())
  c.send(Buffer.from('CONNECT {"verbose":false}\r\nSUB z 1\r\nPING\r\n'))
  await until(() => text.includes('PONG'), 3000, 'PONG')
  t.match(c.extensions, /permessage-deflate/)
  const body = 'y'.repeat(5000)
  for (let i = 0; i < 100; i++) nc.publish('z', `${i}:${body}`)
  await until(() => (text.match(/MSG z 1/g) ?? []).length === 100, 5000, 'a hundred MSGs')
  const seq = [...text.matchAll(/MSG z 1 \d+\r\n(\d+):y+\r\n/g)].map((m) => Number(m[1]))
  t.same(seq, [...Array(100).keys()])
})

t.test('hostile frames close only their own connection, with the RFC 6455 code', async (t) => {
  const b = await broker(t)
  const keep = await natsWs(t, `ws://127.0.0.1:${b.wsPort}`)
  const cases: [string, Buffer, number][] = [
    ['an unmasked client frame', frame(2, Buffer.from('PING\r\n'), { mask: false }), 1002],
    ['reserved bits set', frame(2, Buffer.from('PING\r\n'), { rsv: 2 }), 1002],
    ['a control frame over 125 bytes', frame(9, Buffer.alloc(126)), 1002],
    ['a fragmented control frame', frame(9, Buffer.from('x'), { fin: false }), 1002],
    ['invalid UTF-8 in a text frame', frame(1, Buffer.from([0x50, 0xff, 0xfe, 0x0d, 0x0a])), 1007],
    ['an unknown opcode', frame(3, Buffer.from('x')), 1002],
  ]
  for (const [what, bytes, code] of cases) {
    const r = await rawUpgrade(b.wsPort)
    r.sock.write(bytes)
    await r.closed
    t.equal(closeCode(r.rest()), code, `${what}: close ${code}`)
  }
  // A client that goes away in the middle of a frame.
  const cut = await rawUpgrade(b.wsPort)
  cut.sock.write(frame(2, Buffer.from(`CONNECT {}\r\nPUB x 100\r\n${'y'.repeat(100)}\r\n`)).subarray(0, 40))
  await sleep(50)
  cut.sock.destroy()
  await until(() => (b.srv.status.get('websocket')!() as { nats: number }).nats === 1, 3000, 'only the good client left')
  await keep.flush()
  t.pass('the well-behaved client was not affected')
})

t.test('handshakes refused as nats-server refuses them, each logged', async (t) => {
  const b = await broker(t, { mqtt: false, websocket: ws({ allowed_origins: ['https://hmi.example'], handshake_timeout: 300 }) })
  const port = b.wsPort
  const plain = await rawUpgrade(port, '/', { Upgrade: '', Connection: 'keep-alive' })
  t.match(plain.head, /^HTTP\/1\.1 400 /, 'plain HTTP to the WebSocket port: 400')
  const foreign = await rawUpgrade(port, '/', { Origin: 'https://evil.example' })
  t.match(foreign.head, /^HTTP\/1\.1 403 Forbidden/, 'a foreign page: 403')
  t.ok(b.logs.some((l) => /websocket handshake error: origin not allowed: not in the allowed list/.test(l)), 'the 403 is logged')
  const wrongPort = await rawUpgrade(port, '/', { Origin: 'https://hmi.example:8443' })
  t.match(wrongPort.head, /^HTTP\/1\.1 403/, 'the port counts')
  const ok = await rawUpgrade(port, '/', { Origin: 'https://hmi.example' })
  t.match(ok.head, /^HTTP\/1\.1 101/, 'an allowed origin upgrades')
  ok.sock.destroy()
  const noOrigin = await rawUpgrade(port, '/')
  t.match(noOrigin.head, /^HTTP\/1\.1 101/, 'no Origin (not a browser) passes, as in nats-server')
  noOrigin.sock.destroy()
  const mq = await rawUpgrade(port, '/mqtt', { 'Sec-WebSocket-Protocol': 'mqtt' })
  t.match(mq.head, /^HTTP\/1\.1 404/, 'mqtt.enabled false: /mqtt refused')
  t.ok(b.logs.some((l) => /MQTT is not enabled/.test(l)))
  // A handshake that never completes.
  const s = net.connect(port, '127.0.0.1')
  s.on('error', () => {})
  s.write('GET / HTTP/1.1\r\nHost: x\r\n')
  const t0 = Date.now()
  await new Promise((r) => s.on('close', r))
  t.ok(Date.now() - t0 < 2000, 'the handshake_timeout closed it')
  t.ok(b.logs.some((l) => /websocket handshake error: handshake timeout/.test(l)))
  // An endless head.
  const big = net.connect(port, '127.0.0.1')
  big.on('error', () => {})
  let answer = ''
  big.on('data', (d) => (answer += d))
  big.write(`GET / HTTP/1.1\r\nX: ${'a'.repeat(20_000)}`)
  await new Promise((r) => big.on('close', r))
  t.match(answer, /^HTTP\/1\.1 431/)
})

t.test('same_origin: the Origin must be this listener', async (t) => {
  const b = await broker(t, { websocket: ws({ same_origin: true }) })
  const same = await rawUpgrade(b.wsPort, '/', { Origin: `http://127.0.0.1:${b.wsPort}` })
  t.match(same.head, /^HTTP\/1\.1 101/)
  same.sock.destroy()
  const other = await rawUpgrade(b.wsPort, '/', { Origin: `http://127.0.0.1:${b.wsPort + 1}` })
  t.match(other.head, /^HTTP\/1\.1 403/)
  t.ok(b.logs.some((l) => /origin not allowed: not same origin/.test(l)))
})

t.test('/mqtt: the subprotocol', async (t) => {
  const b = await broker(t)
  const wrong = await rawUpgrade(b.wsPort, '/mqtt', { 'Sec-WebSocket-Protocol': 'chat, superchat' })
  t.match(wrong.head, /^HTTP\/1\.1 400/, 'a client offering only other subprotocols is refused')
  t.ok(b.logs.some((l) => /\/mqtt needs the WebSocket subprotocol "mqtt"/.test(l)))
  const right = await rawUpgrade(b.wsPort, '/mqtt', { 'Sec-WebSocket-Protocol': 'mqtt' })
  t.match(right.head, /sec-websocket-protocol: mqtt/i, 'mqtt is selected')
  right.sock.destroy()
  // What MQTT.js offers for protocolVersion 3 (the MQTT layer then answers that version itself).
  const old = await rawUpgrade(b.wsPort, '/mqtt', { 'Sec-WebSocket-Protocol': 'mqttv3.1' })
  t.match(old.head, /sec-websocket-protocol: mqttv3\.1/i)
  old.sock.destroy()
})

t.test('compression: permessage-deflate when configured', async (t) => {
  const b = await broker(t, { websocket: ws({ compression: true }) })
  const c = new WebSocket(`ws://127.0.0.1:${b.wsPort}`, { perMessageDeflate: true })
  const info = await new Promise<string>((r) => c.once('message', (d) => r(String(d))))
  t.match(info, /^INFO /)
  t.match(c.extensions, /permessage-deflate/)
  c.close()
})

// --- TLS --------------------------------------------------------------------------------------

const certs = makeCerts(t)
if (certs) {
  t.test('wss:// with client certificates and identity mapping, both protocols', async (t) => {
    const tls = serverTlsOptions(certs, { verify_and_map: true })
    const b = await broker(t, {
      websocket: ws({ no_tls: false, tls }),
      authorization: { users: [{ user: 'dev42@example.com', permissions: { publish: { allow: ['dev42.>'] }, subscribe: { allow: ['dev42.>', '_INBOX.>'] } } }] },
    })
    t.ok(b.logs.some((l) => l.includes(`Listening for websocket clients on wss://127.0.0.1:${b.wsPort}`)))
    const url = `wss://localhost:${b.wsPort}`
    const opt = (p: CertPair) => ({ ca: readFileSync(certs.ca), cert: readFileSync(p.cert), key: readFileSync(p.key) })
    const nc = await natsWs(t, url, {}, opt(certs.client))
    const m = await mqttClient(t, `${url}/mqtt`, { ...opt(certs.client), protocolVersion: 5, clientId: 'wss-dev' })
    await m.subscribeAsync('dev42/#')
    const got = messages(m, 1)
    nc.publish('dev42.temp', '21')
    t.equal((await got)[0]?.payload, '21', 'NATS over wss to MQTT over wss, the mapped user allowed')
    const info = b.srv.status.get('websocket')!() as { tls: boolean }
    t.equal(info.tls, true)
    // No certificate: the TLS layer refuses it, and says so.
    await t.rejects(natsWs(t, url, {}, { ca: readFileSync(certs.ca) }))
    await until(() => b.logs.some((l) => /TLS handshake error: client certificate required/.test(l)), 3000, 'the refusal logged')
    // Another CA's certificate.
    await t.rejects(mqtt.connectAsync(`${url}/mqtt`, { ...opt(certs.otherCa), ca: readFileSync(certs.ca), reconnectPeriod: 0, connectTimeout: 3000 }))
    // A valid certificate that names no user.
    await t.rejects(natsWs(t, url, {}, opt(certs.noSan)), /Authorization Violation/i)
  })
}
