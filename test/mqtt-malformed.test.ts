// Malformed packets and protocol errors, as raw bytes: each closes only its own connection,
// MQTT 5 first hears why (DISCONNECT 0x81 Malformed Packet / 0x82 Protocol Error, or a CONNACK
// with that code when the CONNECT itself is at fault), 3.1.1 just closes; each is logged with
// the peer and the reason, and counted in /varz (sprig.mqtt.malformed_packets). The inputs
// that crashed Node (issue 9, items 2 and 3) also run against a real bundle in a child process.

import t, { type Test } from 'tap'
import net from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Buffer } from 'node:buffer'
import { generate, parser as newParser, type Packet } from 'mqtt-packet'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { messages, mqttClient, RawMqtt } from './helpers/mqtt.ts'
import { privateBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, skipOrFail, spawnServer, waitForPort } from './helpers/peers.ts'
import { monitorRequest } from '../src/monitor.ts'
import { mqttState } from '../adapters/mqtt/state.ts'
import type { MqttConn } from '../adapters/mqtt/conn.ts'
import { checkPacket } from '../adapters/mqtt/malformed.ts'
import { fastPacket, headerSize } from '../adapters/mqtt/frame.ts'
import { remainingLength } from './helpers/varint.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: true, max_payload: 1024 * 1024 })
})
t.teardown(() => b?.stop())

// --- building raw packets ------------------------------------------------------------------------

const varint = remainingLength
const frame = (b0: number, body: number[]): number[] => [b0, ...varint(body.length), ...body]
/** A length-prefixed string, from text or raw bytes. */
const str = (s: string | number[]): number[] => {
  const bytes = typeof s === 'string' ? [...Buffer.from(s)] : s
  return [bytes.length >> 8, bytes.length & 0xff, ...bytes]
}
const props = (p: number[]): number[] => [...varint(p.length), ...p]

let ids = 0
/** CONNECT: level, flags, (5.0) properties, then the payload fields after the client id. */
function connect(v: 4 | 5, o: { flags?: number; props?: number[]; id?: number[]; rest?: number[] } = {}): number[] {
  return frame(0x10, [...str('MQTT'), v, o.flags ?? 2, 0, 0, ...(v === 5 ? props(o.props ?? []) : []), ...str(o.id ?? `mal-${++ids}`.split('').map((c) => c.charCodeAt(0))), ...(o.rest ?? [])])
}

/** Sends `bytes`, and collects everything the server sends until it closes (or ms pass). */
function converse(pre: number[] | null, bytes: number[], ms = 1500): Promise<{ reply: number[]; closed: boolean; port: number }> {
  return new Promise((res) => {
    const s = net.connect(b.mqttPort!, '127.0.0.1')
    let got = Buffer.alloc(0)
    let stage = pre === null ? 1 : 0
    let reply: number[] = []
    let timer: NodeJS.Timeout
    let port = 0
    const finish = (closed: boolean): void => {
      clearTimeout(timer)
      s.destroy()
      res({ reply, closed, port })
    }
    s.on('error', () => {})
    s.on('connect', () => {
      port = s.localPort!
      if (pre !== null) s.write(Buffer.from(pre))
      else s.write(Buffer.from(bytes))
    })
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d])
      if (stage === 0) {
        // Skip the CONNACK (one byte of length is enough for ours), then send the bad packet.
        if (got.length < 2 || got.length < 2 + got[1]!) return
        if (got[0] !== 0x20 || got[3] !== 0) return finish(false)
        got = got.subarray(2 + got[1]!)
        stage = 1
        s.write(Buffer.from(bytes))
      }
      reply = [...got]
    })
    s.on('close', () => finish(true))
    timer = setTimeout(() => finish(false), ms)
  })
}

let refused = 0

interface Case {
  name: string
  v: 4 | 5
  /** null: the bytes are the CONNECT. */
  pre: 'connect' | null
  bytes: number[]
  /** The MQTT 5 reason code (ignored for 3.1.1, which only closes). */
  code: number
  /** What the log line must say. */
  log: RegExp
}

async function check(t: Test, c: Case): Promise<void> {
  const r = await converse(c.pre === 'connect' ? connect(c.v) : null, c.bytes)
  refused++
  const want = c.v === 4 ? [] : c.pre === null ? [0x20, 3, 0, c.code, 0] : [0xe0, 2, c.code, 0]
  t.same(r.reply, want, `v${c.v} ${c.name}: ${c.v === 4 ? 'no reply' : (c.pre === null ? 'CONNACK 0x' : 'DISCONNECT 0x') + c.code.toString(16)}`)
  t.ok(r.closed, `v${c.v} ${c.name}: closed`)
  const line = b.logs.find((l) => l.includes(`127.0.0.1:${r.port} `) && l.includes('mqtt protocol error'))
  t.match(line, c.log, `v${c.v} ${c.name}: logged with the peer and the reason`)
}

const both = (name: string, pre: Case['pre'], make: (v: 4 | 5) => number[], code: number, log: RegExp): Case[] =>
  [4, 5].map((v) => ({ name, v: v as 4 | 5, pre, bytes: make(v as 4 | 5), code, log }))
const p5 = (v: 4 | 5, p: number[] = []): number[] => (v === 5 ? props(p) : [])

// --- after CONNECT ------------------------------------------------------------------------------

const SURROGATE = [0xed, 0xa0, 0x80]

t.test('strings must be well-formed UTF-8 without surrogates or U+0000 [MQTT-1.5.4-1] [MQTT-1.5.4-2]', async (t) => {
  const cases: Case[] = [
    ...both('PUBLISH topic with a bad byte', 'connect', (v) => frame(0x30, [...str([0x61, 0xc3, 0x28]), ...p5(v), 0x78]), 0x81, /topic name is not well-formed UTF-8/),
    ...both('PUBLISH topic with a surrogate', 'connect', (v) => frame(0x30, [...str(SURROGATE), ...p5(v), 0x78]), 0x81, /topic name is not well-formed UTF-8/),
    ...both('PUBLISH topic with an overlong /', 'connect', (v) => frame(0x32, [...str([0x61, 0xc0, 0xaf]), 0, 1, ...p5(v), 0x78]), 0x81, /topic name is not well-formed UTF-8/),
    ...both('PUBLISH topic with U+0000', 'connect', (v) => frame(0x30, [...str([0x61, 0, 0x62]), ...p5(v), 0x78]), 0x81, /topic name contains U\+0000/),
    ...both('SUBSCRIBE filter not UTF-8', 'connect', (v) => frame(0x82, [0, 1, ...p5(v), ...str([0x61, 0xff]), 0]), 0x81, /topic filter is not well-formed UTF-8/),
    ...both('UNSUBSCRIBE filter with a surrogate', 'connect', (v) => frame(0xa2, [0, 1, ...p5(v), ...str(SURROGATE)]), 0x81, /topic filter is not well-formed UTF-8/),
    ...both('CONNECT client id not UTF-8', null, (v) => connect(v, { id: [0x61, 0xfe] }), 0x81, /client identifier is not well-formed UTF-8/),
    ...both('CONNECT user name with a surrogate', null, (v) => connect(v, { flags: 0x82, rest: str(SURROGATE) }), 0x81, /user name is not well-formed UTF-8/),
    ...both('CONNECT will topic with U+0000', null, (v) => connect(v, { flags: 0x06, rest: [...p5(v), ...str([0x77, 0]), ...str('x')] }), 0x81, /will topic contains U\+0000/),
  ]
  for (const c of cases) await check(t, c)
})

t.test('packet id 0 on SUBSCRIBE, UNSUBSCRIBE and QoS > 0 PUBLISH [MQTT-2.2.1-3]', async (t) => {
  const cases: Case[] = [
    ...both('SUBSCRIBE', 'connect', (v) => frame(0x82, [0, 0, ...p5(v), ...str('a'), 0]), 0x82, /SUBSCRIBE with packet id 0/),
    ...both('UNSUBSCRIBE', 'connect', (v) => frame(0xa2, [0, 0, ...p5(v), ...str('a')]), 0x82, /UNSUBSCRIBE with packet id 0/),
    ...both('PUBLISH QoS 1', 'connect', (v) => frame(0x32, [...str('a'), 0, 0, ...p5(v), 0x78]), 0x82, /packet id 0/),
    ...both('PUBLISH QoS 2', 'connect', (v) => frame(0x34, [...str('a'), 0, 0, ...p5(v), 0x78]), 0x82, /packet id 0/),
  ]
  for (const c of cases) await check(t, c)
})

t.test('reserved bits of fixed headers [MQTT-2.2.2-2], bodies where none may be, non-minimal lengths [MQTT-1.5.5-1]', async (t) => {
  const cases: Case[] = [
    ...both('SUBSCRIBE flags 0000', 'connect', (v) => frame(0x80, [0, 1, ...p5(v), ...str('a'), 0]), 0x81, /reserved flag bits 0x0 in a SUBSCRIBE/),
    ...both('UNSUBSCRIBE flags 0011', 'connect', (v) => frame(0xa3, [0, 1, ...p5(v), ...str('a')]), 0x81, /reserved flag bits 0x3 in a UNSUBSCRIBE/),
    ...both('PUBREL flags 0000', 'connect', () => frame(0x60, [0, 1]), 0x81, /reserved flag bits 0x0 in a PUBREL/),
    ...both('PUBACK flags 0010', 'connect', () => frame(0x42, [0, 1]), 0x81, /reserved flag bits 0x2 in a PUBACK/),
    ...both('PINGREQ flags 0001', 'connect', () => frame(0xc1, []), 0x81, /reserved flag bits 0x1 in a PINGREQ/),
    ...both('DISCONNECT flags 1000', 'connect', () => frame(0xe8, []), 0x81, /reserved flag bits 0x8 in a DISCONNECT/),
    ...both('PINGREQ with a body', 'connect', () => frame(0xc0, [0]), 0x81, /PINGREQ with a body/),
    { name: 'DISCONNECT with a body', v: 4, pre: 'connect', bytes: frame(0xe0, [0]), code: 0, log: /DISCONNECT with a body/ },
    ...both('Remaining Length 0x80 0x00', 'connect', () => [0xc0, 0x80, 0x00], 0x81, /Remaining Length is not a valid Variable Byte Integer/),
    ...both('PUBLISH Remaining Length in two bytes', 'connect', (v) => {
      const body = [...str('a'), ...p5(v), 0x78]
      return [0x30, 0x80 | body.length, 0x00, ...body]
    }, 0x81, /Remaining Length is not a valid Variable Byte Integer/),
    ...both('CONNECT Remaining Length in two bytes', null, (v) => {
      const c = connect(v)
      return [0x10, 0x80 | c[1]!, 0x00, ...c.slice(2)]
    }, 0x81, /Remaining Length is not a valid Variable Byte Integer/),
    ...both('CONNECT reserved flag bit 0 [MQTT-3.1.2-3]', null, (v) => connect(v, { flags: 0x03 }), 0x81, /CONNECT reserved flag bit 0 set/),
    ...both('CONNECT Will QoS without a will', null, (v) => connect(v, { flags: 0x0a }), 0x81, /Will QoS or Will Retain without a will/),
    ...both('CONNECT with a byte after its end', null, (v) => connect(v, { rest: [0] }), 0x81, /1 bytes after the end of CONNECT/),
    ...both('SUBSCRIBE options with a reserved bit', 'connect', (v) => frame(0x82, [0, 1, ...p5(v), ...str('a'), 0xc0]), 0x81, /SUBSCRIBE options 0xc0 set reserved bits/),
    ...both('SUBSCRIBE with QoS 3', 'connect', (v) => frame(0x82, [0, 1, ...p5(v), ...str('a'), 0x03]), 0x82, /SUBSCRIBE with QoS 3/),
    { name: 'SUBSCRIBE with Retain Handling 3', v: 5, pre: 'connect', bytes: frame(0x82, [0, 1, 0, ...str('a'), 0x30]), code: 0x82, log: /SUBSCRIBE with Retain Handling 3/ },
    { name: 'CONNECT password without a user name [MQTT-3.1.2-22]', v: 4, pre: null, bytes: connect(4, { flags: 0x42, rest: str('pw') }), code: 0, log: /password without a user name/ },
  ]
  for (const c of cases) await check(t, c)
})

t.test('MQTT 5: a password alone is fine (5.0 §3.1.2.9)', async (t) => {
  const r = await converse(null, connect(5, { flags: 0x42, rest: str('pw') }), 300)
  t.same(r.reply.slice(0, 4), [0x20, r.reply[1], 0, 0], 'CONNACK 0')
})

t.test('issue 9 item 5: PUBREC or PUBREL with a body of 0 or 1 bytes is malformed, not answered', async (t) => {
  const cases: Case[] = [
    ...both('PUBREC, no body', 'connect', () => [0x50, 0], 0x81, /PUBREC with a body of 0 bytes/),
    ...both('PUBREC, 1 byte', 'connect', () => [0x50, 1, 1], 0x81, /PUBREC with a body of 1 bytes/),
    ...both('PUBREL, no body', 'connect', () => [0x62, 0], 0x81, /PUBREL with a body of 0 bytes/),
    ...both('PUBREL, 1 byte', 'connect', () => [0x62, 1, 1], 0x81, /PUBREL with a body of 1 bytes/),
    ...both('PUBACK, 1 byte', 'connect', () => [0x40, 1, 1], 0x81, /PUBACK with a body of 1 bytes/),
    ...both('PUBCOMP, no body', 'connect', () => [0x70, 0], 0x81, /PUBCOMP with a body of 0 bytes/),
    { name: 'PUBREL with a reason code', v: 4, pre: 'connect', bytes: [0x62, 3, 0, 1, 0], code: 0, log: /PUBREL with a body of 3 bytes/ },
    { name: 'PUBREC with an unknown reason code', v: 5, pre: 'connect', bytes: [0x50, 3, 0, 1, 0x05], code: 0x81, log: /PUBREC reason code 0x5/ },
  ]
  for (const c of cases) await check(t, c)
})

t.test('MQTT 5 properties: where they may be, once, with valid values (5.0 §2.2.2.2)', async (t) => {
  const pub = (p: number[], topic = 't'): number[] => frame(0x30, [...str(topic), ...props(p), 0x78])
  const c5 = (name: string, bytes: number[], code: number, log: RegExp, pre: Case['pre'] = 'connect'): Case => ({ name, v: 5, pre, bytes, code, log })
  const cases: Case[] = [
    c5('duplicate Payload Format Indicator', pub([0x01, 0, 0x01, 0]), 0x82, /Payload Format Indicator more than once/),
    c5('Payload Format Indicator 2', pub([0x01, 2]), 0x82, /Payload Format Indicator is 2/),
    c5('Session Expiry Interval on PUBLISH', pub([0x11, 0, 0, 0, 10]), 0x81, /PUBLISH: property Session Expiry Interval not allowed/),
    c5('Subscription Identifier on a client PUBLISH [MQTT-3.3.4-6]', pub([0x0b, 1]), 0x82, /PUBLISH from a client with a Subscription Identifier/),
    c5('Content Type running past the packet', pub([0x03, 0, 0x40]), 0x81, /Content Type runs past/),
    c5('properties running past the packet', frame(0x30, [...str('t'), 9, 0x01, 0]), 0x81, /properties run past the packet/),
    c5('Content Type with U+0000', pub([0x03, ...str([0x61, 0])]), 0x81, /Content Type contains U\+0000/),
    c5('Response Topic with a surrogate', pub([0x08, ...str(SURROGATE)]), 0x81, /Response Topic is not well-formed UTF-8/),
    c5('User Property name not UTF-8', pub([0x26, ...str([0xff]), ...str('v')]), 0x81, /User Property name is not well-formed UTF-8/),
    c5('User Property value with a surrogate', pub([0x26, ...str('k'), ...str(SURROGATE)]), 0x81, /User Property value is not well-formed UTF-8/),
    c5('unknown property 0x7f', pub([0x7f, 0]), 0x81, /unknown property 0x7f/),
    c5('empty topic without a Topic Alias', pub([], ''), 0x82, /empty topic name and no Topic Alias/),
    c5('SUBSCRIBE Subscription Identifier 0', frame(0x82, [0, 1, ...props([0x0b, 0]), ...str('a'), 0]), 0x82, /Subscription Identifier is 0/),
    c5('SUBSCRIBE Subscription Identifier twice', frame(0x82, [0, 1, ...props([0x0b, 1, 0x0b, 2]), ...str('a'), 0]), 0x82, /Subscription Identifier more than once/),
    c5('SUBSCRIBE Subscription Identifier 0x80 0x00', frame(0x82, [0, 1, ...props([0x0b, 0x80, 0x00]), ...str('a'), 0]), 0x81, /not a valid Variable Byte Integer/),
    c5('UNSUBSCRIBE with a Reason String', frame(0xa2, [0, 1, ...props([0x1f, ...str('r')]), ...str('a')]), 0x81, /UNSUBSCRIBE: property Reason String not allowed/),
    c5('PUBACK Reason String not UTF-8', frame(0x40, [0, 1, 0, ...props([0x1f, ...str([0xc3])])]), 0x81, /Reason String is not well-formed UTF-8/),
    c5('PUBACK with bytes after its properties', frame(0x40, [0, 1, 0, 0, 9]), 0x81, /bytes after the properties of PUBACK/),
    c5('DISCONNECT Session Expiry Interval twice', frame(0xe0, [0, ...props([0x11, 0, 0, 0, 0, 0x11, 0, 0, 0, 0])]), 0x82, /Session Expiry Interval more than once/),
    c5('DISCONNECT reason code 0x01', frame(0xe0, [0x01]), 0x81, /DISCONNECT reason code 0x1/),
    c5('CONNECT Receive Maximum 0', connect(5, { props: [0x21, 0, 0] }), 0x82, /Receive Maximum is 0/, null),
    c5('CONNECT Maximum Packet Size 0', connect(5, { props: [0x27, 0, 0, 0, 0] }), 0x82, /Maximum Packet Size is 0/, null),
    c5('CONNECT Request Problem Information 2', connect(5, { props: [0x17, 2] }), 0x82, /Request Problem Information is 2/, null),
    c5('CONNECT Request Response Information 2', connect(5, { props: [0x19, 2] }), 0x82, /Request Response Information is 2/, null),
    c5('CONNECT Session Expiry Interval twice', connect(5, { props: [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1] }), 0x82, /Session Expiry Interval more than once/, null),
    c5('CONNECT with a Topic Alias', connect(5, { props: [0x23, 0, 1] }), 0x81, /CONNECT: property Topic Alias not allowed/, null),
    c5('CONNECT User Property not UTF-8', connect(5, { props: [0x26, ...str('k'), ...str([0xe2, 0x82])] }), 0x81, /User Property value is not well-formed UTF-8/, null),
    c5('will with a Topic Alias', connect(5, { flags: 0x06, rest: [...props([0x23, 0, 1]), ...str('w'), ...str('x')] }), 0x81, /will properties: property Topic Alias not allowed/, null),
    c5('will Payload Format Indicator 3', connect(5, { flags: 0x06, rest: [...props([0x01, 3]), ...str('w'), ...str('x')] }), 0x82, /Payload Format Indicator is 3/, null),
  ]
  for (const c of cases) await check(t, c)
})

t.test('a Remaining Length over the limit is refused when it is read, not after the bytes come', async (t) => {
  // max_payload 1 MiB + 64 KiB of overhead; this one declares 256 MiB and sends none of it.
  const cases: Case[] = [
    ...both('PUBLISH of 256 MiB', 'connect', () => [0x30, 0xff, 0xff, 0xff, 0x7f], 0x95, /mqtt packet of 268435460 bytes over/),
    ...both('CONNECT of 2 MiB', null, (v) => [0x10, 0x80, 0x80, 0x80, 0x01, ...str('MQTT'), v], 0x95, /mqtt packet of 2097157 bytes over/),
  ]
  for (const c of cases) {
    const r = await converse(c.pre === 'connect' ? connect(c.v) : null, c.bytes)
    const want = c.v === 4 ? [] : c.pre === null ? [0x20, 3, 0, 0x95, 0] : [0xe0, 2, 0x95, 0]
    t.same(r.reply, want, `v${c.v} ${c.name}: ${c.v === 5 ? 'Packet Too Large' : 'no reply'}`)
    t.ok(r.closed, `v${c.v} ${c.name}: closed at once`)
    t.ok(b.logs.some((l) => l.includes(`127.0.0.1:${r.port} `) && c.log.test(l)), `v${c.v} ${c.name}: logged`)
  }
})

t.test('issue 9 item 2 and 3: the CONNECTs that crashed Node are refused', async (t) => {
  // Will QoS 3 [MQTT-3.1.2-14]: 3.1.1 closes without CONNACK.
  const qos3 = [...Buffer.from('101500044d515454041e003c0001770003772f74000178', 'hex')]
  // A will property (Content Type, 0x40 bytes) running past the packet: CONNACK 0x81.
  const past = [...Buffer.from('101a00044d5154540506003c00000163030300400003772f74000178', 'hex')]
  await check(t, { name: 'Will QoS 3', v: 4, pre: null, bytes: qos3, code: 0, log: /CONNECT Will QoS 3/ })
  await check(t, { name: 'Will QoS 3', v: 5, pre: null, bytes: connect(5, { flags: 0x1e, rest: [0, ...str('w/t'), ...str('x')] }), code: 0x81, log: /CONNECT Will QoS 3/ })
  await check(t, { name: 'will Content Type past the packet', v: 5, pre: null, bytes: past, code: 0x81, log: /will properties: property Content Type runs past/ })
})

t.test('every refusal is counted in /varz, and the broker serves others throughout', async (t) => {
  const varz = monitorRequest(b.srv, '/varz', new URLSearchParams(), { mem: 0, cores: 1 }).body as { sprig: { mqtt: { malformed_packets: number } } }
  t.equal(varz.sprig.mqtt.malformed_packets, refused, 'sprig.mqtt.malformed_packets')
  const sub = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  await sub.subscribeAsync('ok/#', { qos: 1 })
  const got = messages(sub, 1)
  const pub = await mqttClient(t, b.mqttUrl)
  await pub.publishAsync('ok/x', 'fine', { qos: 1 })
  t.match(await got, [{ topic: 'ok/x', payload: 'fine' }])
})

t.test('a will that fails to publish is logged; closing the connection does not throw', async (t) => {
  const c = await RawMqtt.connect(b.mqttPort!, 5, { clientId: 'will-throws', will: { topic: 'wt/x', payload: Buffer.from('w'), qos: 0, retain: false, properties: { contentType: 'text/plain' } } })
  t.teardown(() => c.close())
  const conn = mqttState(b.srv).clients.get('will-throws') as MqttConn
  // What mqtt-packet made of item 3's CONNECT before: a property it could not read, as null.
  ;(conn as unknown as { rare: { will: { props: Record<string, unknown> } } }).rare.will.props = { contentType: null }
  t.doesNotThrow(() => conn.closed('test'))
  t.ok(b.logs.some((l) => /mqtt will on "wt\/x" not published/.test(l)), 'logged')
})

t.test('the fast paths and mqtt-packet read the frames checkPacket accepts alike', async (t) => {
  const frames: [Packet, 4 | 5][] = [
    [{ cmd: 'publish', topic: '\ufeffbom/x', payload: Buffer.from('p'), qos: 1, dup: false, retain: false, messageId: 7 }, 4],
    [{ cmd: 'publish', topic: '\ufeffb', payload: Buffer.from('p'), qos: 0, dup: false, retain: false }, 5],
    [{ cmd: 'publish', topic: 'ü/' + 'x'.repeat(60), payload: Buffer.from('p'), qos: 0, dup: false, retain: false }, 4],
  ]
  for (const [p, v] of frames) {
    const bytes = generate(p, { protocolVersion: v })
    t.equal(checkPacket(bytes, 0, bytes.length, v === 5), null, `${p.cmd} accepted`)
    const fast = fastPacket(bytes, 0, bytes.length, v === 5)
    const ref = reference(bytes, v)
    t.ok(fast !== null, `${p.cmd} on the fast path`)
    // CONNECT and SUBSCRIBE have no fast path: mqtt-packet reads them (one CONNECT parser).
    for (const k of ['topic', 'clientId', 'messageId', 'subscriptions', 'username'] as const) {
      t.same((fast as unknown as Record<string, unknown>)[k], (ref as unknown as Record<string, unknown>)[k], `${p.cmd}: ${k} as mqtt-packet reads it (a BOM is kept [MQTT-1.5.4-3])`)
    }
  }
})

function reference(bytes: Uint8Array, v: 4 | 5): Packet {
  const p = newParser({ protocolVersion: v })
  let got: Packet | null = null
  p.on('packet', (pk: Packet) => (got = pk))
  p.on('error', (e: Error) => {
    throw e
  })
  p.parse(Buffer.from(bytes))
  return got!
}

// --- the crash inputs against a real bundle --------------------------------------------------------

const dir = mkdtempSync(join(tmpdir(), 'sprig-mqtt-mal-'))
const bundle = join(dir, 'sprig.js')
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

/** Sends raw bytes, waits a little, and drops the socket without DISCONNECT. */
function abrupt(port: number, bytes: number[]): Promise<void> {
  return new Promise((res) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(Buffer.from(bytes)))
    s.on('error', () => {})
    setTimeout(() => {
      s.resetAndDestroy()
      res()
    }, 200)
  })
}

const runtimes = [
  { name: 'node', bin: runtimeBin('node'), args: [bundle] },
  { name: 'bun', bin: runtimeBin('bun'), args: [bundle] },
]

t.test('the crash inputs of issue 9 items 2 and 3 leave a real broker process running', async (t) => {
  // Its own bundle of the tree as it is (as mqtt-runtimes does), so no other test's dist/ is raced.
  privateBundle(bundle)
  for (const rt of runtimes) {
    t.test(rt.name, async (t) => {
      if (!rt.bin) return skipOrFail(t, `${rt.name} not found: it is a devDependency, run npm install`)
      const [np, mp] = [await freePort(), await freePort()]
      const p = await spawnServer(rt.bin, [...rt.args, '-a', '127.0.0.1', '-p', String(np), '--mqtt-port', String(mp)], np, { NODE_OPTIONS: '', SPRIG_NET: '' })
      t.teardown(() => p.stop())
      await waitForPort(mp)
      const url = `mqtt://127.0.0.1:${mp}`
      const sub = await mqttClient(t, url)
      await sub.subscribeAsync('w/#', { qos: 1 })
      await abrupt(mp, [...Buffer.from('101500044d515454041e003c0001770003772f74000178', 'hex')])
      await abrupt(mp, [...Buffer.from('101a00044d5154540506003c00000163030300400003772f74000178', 'hex')])
      await new Promise((r) => setTimeout(r, 300))
      t.equal(p.proc.exitCode, null, 'still running')
      t.equal(p.proc.signalCode, null)
      const got = messages(sub, 1)
      const pub = await mqttClient(t, url)
      await pub.publishAsync('w/after', 'ok', { qos: 1 })
      t.match(await got, [{ topic: 'w/after', payload: 'ok' }], 'and serving')
      t.match(p.output(), /mqtt protocol error: CONNECT Will QoS 3/, 'item 2 logged')
      t.match(p.output(), /mqtt protocol error: will properties: property Content Type runs past/, 'item 3 logged')
    })
  }
})

// --- checkPacket against mqtt-packet, on mutated frames ------------------------------------------

/** A frame with a new body: the Remaining Length is written again, so it stays one whole frame. */
function reframe(b0: number, body: Uint8Array): Uint8Array {
  return new Uint8Array([b0, ...varint(body.length), ...body])
}

/** mqtt-packet's reading of one whole frame: the packet, or the error it gives. */
function mqttPacket(bytes: Uint8Array, v: 4 | 5): { packet?: Packet; error?: string } {
  const p = newParser({ protocolVersion: v })
  const out: { packet?: Packet; error?: string } = {}
  p.on('packet', (pk: Packet) => (out.packet ??= pk))
  p.on('error', (e: Error) => (out.error ??= e.message))
  try {
    p.parse(Buffer.from(bytes))
  } catch (e) {
    out.error ??= `threw ${(e as Error).message}`
  }
  return out
}

/** The fields a fast path fills, compared with mqtt-packet's (payloads by their bytes). */
const FIELDS = ['cmd', 'topic', 'qos', 'dup', 'retain', 'messageId', 'properties', 'subscriptions', 'protocolId', 'protocolVersion', 'clean', 'keepalive', 'clientId', 'username', 'will'] as const

t.test('on frames checkPacket accepts, mqtt-packet never errs, and a fast path reads what it reads', async (t) => {
  const v5p = { userProperties: { k: 'v' }, contentType: 'c', payloadFormatIndicator: true, responseTopic: 'r/t', correlationData: Buffer.from('cd'), messageExpiryInterval: 9 }
  const corpus: [Packet, 4 | 5][] = []
  for (const v of [4, 5] as const) {
    corpus.push(
      [{ cmd: 'publish', topic: 'a/b', payload: Buffer.from('hello'), qos: 0, dup: false, retain: false }, v],
      [{ cmd: 'publish', topic: 'ä/€/𝄞', payload: Buffer.from('x'), qos: 2, dup: true, retain: true, messageId: 258 }, v],
      [{ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'a/+', qos: 1 }, { topic: '#', qos: 2 }] } as Packet, v],
      [{ cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['a/+', 'b'] } as Packet, v],
      [{ cmd: 'puback', messageId: 5 }, v],
      [{ cmd: 'pubrel', messageId: 6 }, v],
      [{ cmd: 'pingreq' }, v],
      [{ cmd: 'disconnect' }, v],
      [{ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: true, keepalive: 30, clientId: 'dev-1', username: 'u', password: Buffer.from('p') }, v],
      [{ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clean: false, keepalive: 0, clientId: 'w', will: { topic: 'w/t', payload: Buffer.from('bye'), qos: 1, retain: true } } as Packet, v],
    )
  }
  corpus.push(
    [{ cmd: 'publish', topic: 'p/5', payload: Buffer.from('x'), qos: 1, dup: false, retain: false, messageId: 7, properties: v5p }, 5],
    [{ cmd: 'publish', topic: '', payload: Buffer.from('x'), qos: 0, dup: false, retain: false, properties: { topicAlias: 2 } }, 5],
    [{ cmd: 'subscribe', messageId: 8, properties: { subscriptionIdentifier: 300, userProperties: { a: 'b' } }, subscriptions: [{ topic: 's/#', qos: 1, nl: true, rap: true, rh: 2 }] } as Packet, 5],
    [{ cmd: 'puback', messageId: 9, reasonCode: 0x10, properties: { reasonString: 'why' } }, 5],
    [{ cmd: 'disconnect', reasonCode: 0x04, properties: { sessionExpiryInterval: 5 } }, 5],
    [{ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 10, clientId: 'c5', properties: { sessionExpiryInterval: 60, receiveMaximum: 10, maximumPacketSize: 9999, topicAliasMaximum: 4, requestProblemInformation: true, userProperties: { x: 'y' } }, will: { topic: 'w/5', payload: Buffer.from('w'), qos: 0, retain: false, properties: { willDelayInterval: 3, contentType: 'text/plain' } } } as Packet, 5],
  )
  // A fixed-seed generator, so a failure is the same on every run.
  let seed = 0x9e3779b9
  const rnd = (n: number): number => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) % n
  }
  let accepted = 0
  let fast = 0
  const problems: string[] = []
  for (const [pk, v] of corpus) {
    const good = new Uint8Array(generate(pk, { protocolVersion: v }))
    if (checkPacket(good, 0, good.length, v === 5) !== null) problems.push(`v${v} ${pk.cmd}: a valid frame refused: ${checkPacket(good, 0, good.length, v === 5)!.why}`)
    for (let k = 0; k < 400; k++) {
      let b0 = good[0]!
      const body = [...good.subarray(headerSize(good, 0))]
      for (let m = 1 + rnd(3); m > 0; m--) {
        const r = rnd(10)
        if (r < 5 && body.length > 0) body[rnd(body.length)] = rnd(4) === 0 ? [0, 0x80, 0xff, 0xed, 0xc0][rnd(5)]! : rnd(256)
        else if (r < 7) body.splice(rnd(body.length + 1), 0, rnd(256))
        else if (r < 9 && body.length > 0) body.splice(rnd(body.length), 1)
        else b0 = (b0 & 0xf0) | rnd(16)
      }
      const f = reframe(b0, new Uint8Array(body))
      const verdict = checkPacket(f, 0, f.length, v === 5)
      if (verdict !== null) continue
      accepted++
      const ref = mqttPacket(f, v)
      const hex = Buffer.from(f).toString('hex')
      if (ref.error !== undefined || ref.packet === undefined) {
        problems.push(`v${v} ${hex}: accepted, mqtt-packet says ${ref.error}`)
        continue
      }
      const mine = fastPacket(f, 0, f.length, v === 5)
      if (mine === null) continue
      fast++
      const a = mine as unknown as Record<string, unknown>
      const r = ref.packet as unknown as Record<string, unknown>
      for (const key of FIELDS) {
        if (a[key] == null && r[key] == null) continue // mqtt-packet has topic: null on every packet
        if (key === 'qos' || key === 'dup' || key === 'retain') if (a.cmd !== 'publish') continue
        if (JSON.stringify(a[key]) !== JSON.stringify(r[key])) problems.push(`v${v} ${hex}: ${key} ${JSON.stringify(a[key])} vs mqtt-packet ${JSON.stringify(r[key])}`)
      }
      if (a.payload !== undefined && !Buffer.from(a.payload as Uint8Array).equals(r.payload as Buffer)) problems.push(`v${v} ${hex}: payload differs`)
      if (a.password !== undefined && !Buffer.from(a.password as Uint8Array).equals(r.password as Buffer)) problems.push(`v${v} ${hex}: password differs`)
    }
  }
  t.same(problems.slice(0, 20), [], 'no disagreement')
  t.ok(accepted > 500, `${accepted} mutated frames accepted, ${fast} of them on a fast path`)
})
