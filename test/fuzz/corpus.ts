// Real frames for the socket fuzzer to mutate, one list per listener, and a seeded mutator.
// The frames are what real clients send (nats.js, MQTT.js via mqtt-packet, curl): a mutation
// of something valid gets much deeper into a parser than random bytes do.

import { Buffer } from 'node:buffer'
import { generate, type Packet } from 'mqtt-packet'

export type Listener = 'nats' | 'mqtt' | 'http'

const enc = new TextEncoder()
const b = (s: string): Uint8Array => enc.encode(s)

/** A seeded PRNG (mulberry32): the same seed gives the same run of inputs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export interface Rand {
  (): number
  int(n: number): number
  pick<T>(a: readonly T[]): T
  bytes(n: number): Uint8Array
}

export function rand(seed: number): Rand {
  const r = rng(seed) as Rand
  r.int = (n) => Math.floor(r() * n)
  r.pick = (a) => a[r.int(a.length)]!
  r.bytes = (n) => Uint8Array.from({ length: n }, () => r.int(256))
  return r
}

// --- NATS ------------------------------------------------------------------------------------

export const NATS_CONNECT = b('CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1,"name":"fuzz"}\r\n')

const natsFrames: Uint8Array[] = [
  b('PING\r\n'),
  b('PONG\r\n'),
  b('SUB fz.a 1\r\n'),
  b('SUB fz.* q 2\r\n'),
  b('SUB fz.> 3\r\n'),
  b('PUB fz.a 5\r\nhello\r\n'),
  b('PUB fz.a fz.reply 3\r\nabc\r\n'),
  b('HPUB fz.h 22 27\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n'),
  b('UNSUB 1 5\r\n'),
  b('UNSUB 2\r\n'),
  b('PUB fz.big 300\r\n' + 'x'.repeat(300) + '\r\n'),
  b('INFO {}\r\n'),
  b('+OK\r\n'),
  NATS_CONNECT,
]

// --- MQTT ------------------------------------------------------------------------------------

function mq(p: Packet, v: 4 | 5): Uint8Array {
  return new Uint8Array(generate(p, { protocolVersion: v }))
}

export function mqttConnect(id: string, v: 4 | 5, extra: Partial<Packet> = {}): Uint8Array {
  return mq({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: v, clientId: id, clean: true, keepalive: 30, ...extra } as Packet, v)
}

function mqttFrames(v: 4 | 5): { connects: Uint8Array[]; frames: Uint8Array[] } {
  const props = v === 5
  return {
    connects: [
      mqttConnect('fz', v),
      mqttConnect('fz-will', v, {
        will: { topic: 'fz/will', payload: Buffer.from('gone'), qos: 1, retain: false, ...(props ? { properties: { contentType: 'text/plain', willDelayInterval: 0, userProperties: { a: 'b' } } } : {}) },
      } as Partial<Packet>),
      mqttConnect('fz-auth', v, { username: 'u', password: Buffer.from('p'), clean: false } as Partial<Packet>),
      ...(props ? [mqttConnect('fz-v5', v, { properties: { sessionExpiryInterval: 60, receiveMaximum: 10, maximumPacketSize: 4096, topicAliasMaximum: 5, requestProblemInformation: true } } as Partial<Packet>)] : []),
    ],
    frames: [
      mq({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'fz/#', qos: 1 }, { topic: '$share/g/fz/+', qos: 0 }] } as Packet, v),
      mq({ cmd: 'publish', topic: 'fz/a', payload: Buffer.from('hello'), qos: 0, dup: false, retain: false } as Packet, v),
      mq({ cmd: 'publish', topic: 'fz/b', payload: Buffer.from('q1'), qos: 1, dup: false, retain: false, messageId: 7 } as Packet, v),
      mq({ cmd: 'publish', topic: 'fz/c', payload: Buffer.from('q2'), qos: 2, dup: false, retain: true, messageId: 8 } as Packet, v),
      ...(props ? [mq({ cmd: 'publish', topic: 'fz/p', payload: Buffer.from('p'), qos: 1, dup: false, retain: false, messageId: 9, properties: { topicAlias: 1, contentType: 'x', responseTopic: 'fz/r', correlationData: Buffer.from('c'), userProperties: { k: 'v' }, payloadFormatIndicator: true, messageExpiryInterval: 10 } } as Packet, v)] : []),
      mq({ cmd: 'puback', messageId: 1 } as Packet, v),
      mq({ cmd: 'pubrec', messageId: 2 } as Packet, v),
      mq({ cmd: 'pubrel', messageId: 8 } as Packet, v),
      mq({ cmd: 'pubcomp', messageId: 2 } as Packet, v),
      mq({ cmd: 'unsubscribe', messageId: 3, unsubscriptions: ['fz/#'] } as Packet, v),
      mq({ cmd: 'pingreq' } as Packet, v),
      mq({ cmd: 'disconnect' } as Packet, v),
    ],
  }
}

const mqtt4 = mqttFrames(4)
const mqtt5 = mqttFrames(5)

// --- HTTP ------------------------------------------------------------------------------------

const httpRequests: Uint8Array[] = [
  b('GET /varz HTTP/1.1\r\nHost: x\r\n\r\n'),
  b('GET /connz?offset=0&limit=5 HTTP/1.1\r\nHost: x\r\n\r\n'),
  b('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
  b('GET /leafz HTTP/1.1\r\nHost: x\r\n\r\n'),
  b('HEAD / HTTP/1.0\r\n\r\n'),
  b('POST /varz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello'),
  b('GET /connz?offset=99999999999999999999&limit=-1 HTTP/1.1\r\nHost: x\r\n\r\n'),
]

/** One connection's worth of input: the frames in order (a session), for a listener. */
export function session(listener: Listener, r: Rand): Uint8Array[] {
  switch (listener) {
    case 'nats': {
      const n = 1 + r.int(6)
      return [NATS_CONNECT, ...Array.from({ length: n }, () => r.pick(natsFrames))]
    }
    case 'mqtt': {
      const m = r() < 0.5 ? mqtt4 : mqtt5
      const n = r.int(6)
      return [r.pick(m.connects), ...Array.from({ length: n }, () => r.pick(m.frames))]
    }
    case 'http':
      return [r.pick(httpRequests)]
  }
}

const TARGET_PIECES = ['/', '//', '[', ']', ':', '@', '%zz', '%00', 'http://', 'a', '99999', '?', '#', '..', 'varz', 'connz', '?offset=', '9'.repeat(30), '&limit=', '\\']

/**
 * Structure-aware mutations of real frames: an HTTP request target rebuilt from odd pieces,
 * an MQTT CONNECT's flags byte (will QoS, will retain, reserved bit) or a length inside a
 * frame set at random. Null when the frame is not one of those.
 */
export function mutateField(f: Uint8Array, r: Rand, l: Listener): Uint8Array | null {
  if (l === 'http') {
    const s = Buffer.from(f).toString('latin1')
    const sp = s.indexOf(' ')
    const end = s.indexOf(' ', sp + 1)
    if (sp < 0 || end < 0) return null
    const target = Array.from({ length: 1 + r.int(4) }, () => r.pick(TARGET_PIECES)).join('')
    return enc.encode(s.slice(0, sp + 1) + target + s.slice(end))
  }
  if (l === 'mqtt' && f[0] === 0x10 && f.length > 12) {
    const c = f.slice()
    let h = 1
    while (h < 5 && (c[h]! & 0x80) !== 0) h++
    const at = h + 1 + 7 // 00 04 M Q T T, level, then flags
    if (r() < 0.6) c[at] = r.int(256)
    else c[at + 3 + r.int(Math.max(1, c.length - at - 3))] = r.pick([0x00, 0x01, 0x03, 0x40, 0x7f, 0xff])
    return c
  }
  return null
}

const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0x0d, 0x0a, 0x20, 0x09, 0x2e, 0x3e, 0x2a, 0x23, 0x2b, 0x2f, 0x5b, 0x25]
const NUMBERS = ['0', '-1', '4294967296', '99999999999', '9'.repeat(40), '1e9', '0x10', '']

/** One mutation of a frame; text protocols also get their numbers and separators replaced. */
export function mutate(f: Uint8Array, r: Rand, text: boolean): Uint8Array {
  const at = f.length ? r.int(f.length) : 0
  const cut = (x: Uint8Array, from: number, upto: number, ins: Uint8Array = new Uint8Array(0)): Uint8Array => {
    const to = Math.min(upto, x.length)
    const out = new Uint8Array(from + ins.length + (x.length - to))
    out.set(x.subarray(0, from))
    out.set(ins, from)
    out.set(x.subarray(to), from + ins.length)
    return out
  }
  switch (r.int(text ? 9 : 7)) {
    case 0: {
      const c = f.slice()
      if (c.length) c[at] = c[at]! ^ (1 << r.int(8))
      return c
    }
    case 1: {
      const c = f.slice()
      if (c.length) c[at] = r.pick(INTERESTING)
      return c
    }
    case 2:
      return cut(f, at, at, r.bytes(1 + r.int(8)))
    case 3:
      return cut(f, at, Math.min(f.length, at + 1 + r.int(4)))
    case 4:
      return f.slice(0, at) // truncated
    case 5: {
      // a chunk repeated
      const n = 1 + r.int(Math.min(32, f.length - at + 1))
      return cut(f, at, at, f.slice(at, at + n))
    }
    case 6: {
      // MQTT: a Remaining Length or a length prefix replaced; text: a byte run repeated many times
      const c = f.slice()
      if (text) return cut(f, at, at, new Uint8Array(1 + r.int(5000)).fill(f[at] ?? 0x20))
      if (c.length > 1) c[1 + r.int(Math.min(4, c.length - 1))] = r.pick([0x00, 0x7f, 0x80, 0xff, 0x01])
      if (c.length > 4) c[2 + r.int(c.length - 2)] = r.pick([0x00, 0xff, 0x40])
      return c
    }
    case 7: {
      // a number in a text frame replaced
      const s = Buffer.from(f).toString('latin1')
      const nums = [...s.matchAll(/\d+/g)]
      if (nums.length === 0) return f
      const m = r.pick(nums)
      return cut(f, m.index!, m.index! + m[0].length, enc.encode(r.pick(NUMBERS)))
    }
    default:
      // a separator inserted or replaced: CR, LF, tab, space, NUL, CRLF
      return cut(f, at, at + r.int(2), enc.encode(r.pick(['\r', '\n', '\t', ' ', '\u0000', '\r\n', '//', '['])))
  }
}
