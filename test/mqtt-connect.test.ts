// MQTT connection life cycle against sprig: CONNECT/CONNACK for 3.1.1 (level 4) and 5.0
// (level 5), refused protocol levels, client identifiers, session takeover, PINGREQ,
// DISCONNECT, keepalive, and malformed input. Each test names the statement it checks.

import t, { type Test } from 'tap'
import { generate, type IConnackPacket, type IDisconnectPacket, type Packet } from 'mqtt-packet'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { RawMqtt, messages, mqttClient, sleep } from './helpers/mqtt.ts'

let b: TestBroker
let port: number

t.before(async () => {
  b = await startBroker({ mqtt: true })
  port = b.mqttPort
})
t.teardown(() => b?.stop())

const connectBytes = (level: number, id = 'lvl'): Uint8Array => {
  const buf = generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: id } as Packet)
  buf[8] = level // fixed header (2) + protocol name (6): the level byte
  return buf
}

/** The broker still serves others: a fresh client gets its own message back. */
async function stillServes(t: Test): Promise<void> {
  const c = await mqttClient(t, b.mqttUrl)
  await c.subscribeAsync('health/check')
  const got = messages(c, 1)
  await c.publishAsync('health/check', 'ok')
  t.same((await got).map((m) => m.payload), ['ok'], 'other clients are unaffected')
}

t.test('CONNACK for 3.1.1 and 5.0 [MQTT-3.2.0-1]', async (t) => {
  const c4 = await RawMqtt.open(port, 4)
  t.teardown(() => c4.close())
  c4.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 30, clientId: 'c4' })
  const a4 = (await c4.next('connack')) as IConnackPacket
  t.equal(a4.returnCode, 0, '3.1.1: accepted')
  t.equal(a4.sessionPresent, false, 'clean session: no session present [MQTT-3.2.2-1]')

  const c5 = await RawMqtt.open(port, 5)
  t.teardown(() => c5.close())
  c5.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 30, clientId: 'c5' })
  const a5 = (await c5.next('connack')) as IConnackPacket
  t.equal(a5.reasonCode, 0, '5.0: success')
  t.match(a5.properties, { receiveMaximum: 1024, sharedSubscriptionAvailable: true, wildcardSubscriptionAvailable: true })
  t.notOk(a5.properties?.assignedClientIdentifier, 'no assigned id when the client gave one')
})

t.test('an unsupported protocol level gets CONNACK 0x01 / 0x84, then a close [MQTT-3.1.2-2]', async (t) => {
  for (const level of [3, 2, 0]) {
    const c = await RawMqtt.open(port, 4)
    c.send(connectBytes(level))
    const a = (await c.next('connack')) as IConnackPacket
    t.equal(a?.returnCode, 0x01, `level ${level}: unacceptable protocol version`)
    t.ok(await c.waitClosed(), `level ${level}: closed`)
  }
  for (const level of [6, 0x84]) {
    const c = await RawMqtt.open(port, 5)
    c.send(connectBytes(level))
    const a = (await c.next('connack')) as IConnackPacket
    t.equal(a?.reasonCode, 0x84, `level ${level}: Unsupported Protocol Version (5.0 format)`)
    t.ok(await c.waitClosed(), `level ${level}: closed`)
  }
  // The header may arrive a byte at a time.
  const c = await RawMqtt.open(port, 4)
  for (const byte of connectBytes(3)) {
    c.send(new Uint8Array([byte]))
    await sleep(2)
  }
  t.equal(((await c.next('connack')) as IConnackPacket)?.returnCode, 0x01, 'split header: still refused')
  t.ok(await c.waitClosed())
  await stillServes(t)
})

t.test('client ids beyond the [MQTT-3.1.3-5] minimum: spaces, dots, UTF-8, long', async (t) => {
  for (const v of [4, 5] as const) {
    for (const clientId of ['with space', 'a.b.c', 'température-😀', 'x'.repeat(200), '/#+$']) {
      const c = await mqttClient(t, b.mqttUrl, { protocolVersion: v, clientId })
      t.ok(c.connected, `v${v} ${JSON.stringify(clientId.slice(0, 20))}`)
      await c.endAsync()
    }
  }
})

t.test('zero-length client id', async (t) => {
  // 5.0: the server assigns one [MQTT-3.1.3-6] and says which (5.0 §3.2.2.3.7).
  const c5 = await RawMqtt.open(port, 5)
  t.teardown(() => c5.close())
  c5.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: '' })
  const a5 = (await c5.next('connack')) as IConnackPacket
  t.equal(a5.reasonCode, 0)
  t.match(a5.properties?.assignedClientIdentifier, /^sprig-/, 'assigned client identifier')

  // 3.1.1 with clean session: accepted [MQTT-3.1.3-6] [MQTT-3.1.3-7].
  const c4 = await mqttClient(t, b.mqttUrl, { clientId: '', clean: true })
  t.ok(c4.connected)

  // 3.1.1 without clean session: CONNACK 0x02 and close [MQTT-3.1.3-8].
  const r = await RawMqtt.open(port, 4)
  const bytes = generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: '' } as Packet)
  bytes[9] = 0 // connect flags: clean session off (mqtt-packet will not generate this itself)
  r.send(bytes)
  t.equal(((await r.next('connack')) as IConnackPacket).returnCode, 0x02, 'identifier rejected')
  t.ok(await r.waitClosed())
})

t.test('a second connection with the same id takes over [MQTT-3.1.4-2]', async (t) => {
  const first = await mqttClient(t, b.mqttUrl, { clientId: 'dup id' })
  const closed = new Promise<void>((r) => first.stream.once('close', () => r()))
  const second = await mqttClient(t, b.mqttUrl, { clientId: 'dup id' })
  await Promise.race([closed, sleep(3000)])
  t.notOk(first.connected, '3.1.1: the first connection is closed')
  t.ok(second.connected, 'the second one stays')

  // 5.0: the old connection is told why: DISCONNECT 0x8E Session taken over.
  const old = await RawMqtt.connect(port, 5, { clientId: 'dup5' })
  const neu = await RawMqtt.connect(port, 5, { clientId: 'dup5' })
  t.teardown(() => neu.close())
  const d = (await old.next('disconnect')) as IDisconnectPacket
  t.equal(d?.reasonCode, 0x8e, 'Session taken over')
  t.ok(await old.waitClosed())
  neu.send({ cmd: 'pingreq' })
  t.ok(await neu.next('pingresp'), 'the new connection works')
})

t.test('PINGREQ gets PINGRESP [MQTT-3.12.4-1]', async (t) => {
  for (const v of [4, 5] as const) {
    const c = await RawMqtt.connect(port, v)
    t.teardown(() => c.close())
    c.send({ cmd: 'pingreq' })
    t.ok(await c.next('pingresp'), `v${v}`)
  }
})

t.test('DISCONNECT: the server closes the connection (§3.14.4)', async (t) => {
  for (const v of [4, 5] as const) {
    const c = await RawMqtt.connect(port, v)
    c.send({ cmd: 'disconnect' })
    t.ok(await c.waitClosed(), `v${v}`)
  }
})

t.test('keepalive: silence for 1.5 x keepalive closes the connection [MQTT-3.1.2-24]', async (t) => {
  const quiet = await RawMqtt.connect(port, 4, { keepalive: 1 })
  const talker = await RawMqtt.connect(port, 4, { keepalive: 1 })
  t.teardown(() => talker.close())
  const started = Date.now()
  const ping = setInterval(() => talker.send({ cmd: 'pingreq' }), 400)
  t.teardown(() => clearInterval(ping))
  t.ok(await quiet.waitClosed(4000), 'the silent client is closed')
  const took = Date.now() - started
  t.ok(took >= 1400, `not before 1.5 s (${took} ms)`)
  t.notOk(talker.closed, 'a client that pings stays')
  // keepalive 0 turns the mechanism off (§3.1.2.10; here: 2.5 s of silence).
  const off = await RawMqtt.connect(port, 4, { keepalive: 0 })
  t.teardown(() => off.close())
  await sleep(2600)
  t.notOk(off.closed, 'keepalive 0: stays open')
  t.notOk(talker.closed)
})

t.test('malformed input closes only that connection, never the broker', async (t) => {
  const bad: [string, (Uint8Array | Packet)[], 4 | 5][] = [
    ['first packet not CONNECT [MQTT-3.1.0-1]', [new Uint8Array([0xc0, 0])], 4],
    ['garbage before CONNECT', [new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff])], 4],
    ['protocol name not MQTT [MQTT-3.1.2-1]', [new Uint8Array([0x10, 10, 0, 4, 0x58, 0x58, 0x58, 0x58, 4, 2, 0, 0, 0, 0])], 4],
  ]
  for (const [name, parts, v] of bad) {
    const c = await RawMqtt.open(port, v)
    for (const p of parts) c.send(p)
    t.ok(await c.waitClosed(), name)
  }
  const afterConnect: [string, Uint8Array | Packet][] = [
    ['second CONNECT [MQTT-3.1.0-2]', { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'again' }],
    ['reserved packet type 0', new Uint8Array([0x00, 0x00])],
    ['SUBSCRIBE with reserved flags 0 [MQTT-3.8.1-1]', new Uint8Array([0x80, 6, 0, 1, 0, 1, 0x61, 0])],
    ['PUBLISH with QoS 3 [MQTT-3.3.1-4]', new Uint8Array([0x36, 5, 0, 1, 0x61, 0, 1])],
    ['a server-to-client packet (CONNACK)', new Uint8Array([0x20, 2, 0, 0])],
    ['remaining length over 4 bytes', new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])],
  ]
  for (const v of [4, 5] as const) {
    for (const [name, p] of afterConnect) {
      const c = await RawMqtt.connect(port, v)
      c.send(p)
      t.ok(await c.waitClosed(), `v${v}: ${name}`)
    }
  }
  // Random bytes after a good CONNECT, many times over.
  for (let i = 0; i < 50; i++) {
    const c = await RawMqtt.connect(port, i % 2 ? 5 : 4)
    const junk = new Uint8Array(1 + Math.floor(Math.random() * 64))
    for (let j = 0; j < junk.length; j++) junk[j] = Math.floor(Math.random() * 256)
    c.send(junk)
    await sleep(5)
    c.close()
  }
  await stillServes(t)
  t.notOk(b.logs.some((l) => l.includes('mqtt error:')), 'no handler ever threw')
})

t.test('a packet larger than max_payload + 64 KiB is refused while it arrives', async (t) => {
  const small = await startBroker({ mqtt: true, max_payload: 1024, max_pending: 1024 * 1024 })
  t.teardown(() => small.stop())
  const c = await RawMqtt.connect(small.mqttPort, 5)
  // A PUBLISH announcing 1 MiB, of which 100 KiB arrive.
  c.send(new Uint8Array([0x30, 0x80, 0x80, 0x40, 0, 1, 0x61]))
  c.send(new Uint8Array(100 * 1024))
  const d = (await c.next('disconnect')) as IDisconnectPacket
  t.equal(d?.reasonCode, 0x95, 'Packet too large')
  t.ok(await c.waitClosed())
})

t.test('the server authorization applies to MQTT: user/password, or the token as password', async (t) => {
  const auth = await startBroker({ mqtt: true, authorization: { user: 'dev', password: 's3cret', timeout: 2000 } })
  t.teardown(() => auth.stop())
  const ok = await mqttClient(t, auth.mqttUrl, { username: 'dev', password: 's3cret' })
  t.ok(ok.connected, 'right credentials')
  for (const v of [4, 5] as const) {
    const c = await RawMqtt.open(auth.mqttPort, v)
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, keepalive: 0, clientId: 'x', username: 'dev', password: Buffer.from('wrong') })
    const a = (await c.next('connack')) as IConnackPacket
    t.equal(v === 5 ? a.reasonCode : a.returnCode, v === 5 ? 0x86 : 0x04, `v${v}: bad user name or password`)
    t.ok(await c.waitClosed())
  }
  const tok = await startBroker({ mqtt: true, authorization: { token: 't0k', timeout: 2000 } })
  t.teardown(() => tok.stop())
  const withToken = await mqttClient(t, tok.mqttUrl, { username: 'anything', password: 't0k' })
  t.ok(withToken.connected, 'token as password')
})
