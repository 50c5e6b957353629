// The in-process rig of the lend tests (nats-lend, mqtt-lend): one Server whose runtime turns
// are run by hand, recording wires for NATS and MQTT clients, and an uplink to a recorded hub
// that wants up.> (plainly and with a queue group), which can be dropped and brought back.

import { Buffer } from 'node:buffer'
import { generate, parser as mqttParser, type Packet } from 'mqtt-packet'
import { MqttConn } from '../../adapters/mqtt/conn.ts'
import { NatsClient } from '../../adapters/nats/client.ts'
import type { Conn, Dial, Wire } from '../../src/host.ts'
import { Remote } from '../../src/leaf/remote.ts'
import { createLogger } from '../../src/log.ts'
import { defaults, LEAF_DEFAULTS, MQTT_DEFAULTS, REMOTE_DEFAULTS, type Options } from '../../src/options.ts'
import { Server } from '../../src/server.ts'
import { useRangeCopy, type RangeCopy } from '../../src/bytes.ts'
import { bunRangeCopy } from '../../targets/bun.ts'

const enc = new TextEncoder()
export const latin1 = (d: Uint8Array): string => Buffer.from(d).toString('latin1')

// Every runtime hands over its reads as Buffers, whose slice() is a view and not a copy: each
// test runs with a plain Uint8Array read buffer and with a Buffer one.
export const KINDS = [
  { kind: 'Uint8Array', alloc: (n: number): Uint8Array => new Uint8Array(n) },
  { kind: 'Buffer', alloc: (n: number): Uint8Array => Buffer.alloc(n) },
]

/**
 * How payloads are copied out of the lent range (src/bytes.ts rangeCopy): through a view (Node,
 * Deno), or Buffer's native copy() as targets/bun.ts installs it. Tests run under both.
 */
export const COPIES = [
  { how: 'views', copy: null },
  { how: "Bun's range copy", copy: bunRangeCopy },
] as const

/** Runs fn with `copy` as the range copy, then puts back none. */
export async function withRangeCopy(copy: RangeCopy | null, fn: () => Promise<void> | void): Promise<void> {
  useRangeCopy(copy)
  try {
    await fn()
  } finally {
    useRangeCopy(null)
  }
}

/**
 * Feeds `all` to `c` in reads of `width` bytes through ONE buffer from `alloc`, reused for
 * every read as a socket's is, and scribbled over after each: the next read lands there
 * before anything is written out.
 */
export function feedReused(c: { data(d: Uint8Array): void }, all: Uint8Array, width: number, alloc: (n: number) => Uint8Array): void {
  const read = alloc(width)
  for (let i = 0; i < all.length; i += width) {
    const n = Math.min(width, all.length - i)
    read.set(all.subarray(i, i + n))
    c.data(read.subarray(0, n))
    read.fill(0xee)
  }
}

export interface Rec {
  wire: Wire
  writes: Uint8Array[]
}

export function recWire(port: number): Rec {
  const r: Rec = {
    writes: [],
    wire: { write: (d) => (r.writes.push(d.slice()), true), buffered: () => 0, end: () => {}, destroy: () => {}, remoteAddress: '127.0.0.1', remotePort: port },
  }
  return r
}

/** The payload bytes: a pattern that differs per message and per position (no two alike). */
export function body(n: number, k: number): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (i * 7 + k * 13 + 1) & 0xff
  return b
}

/** MSG/HMSG (client) or LMSG/HMSG (hub) frames: the header block and payload of each, and its control line. */
export function natsFrames(all: Uint8Array): { line: string; hdr: string | null; payload: string }[] {
  const b = Buffer.from(all)
  const out: { line: string; hdr: string | null; payload: string }[] = []
  let p = 0
  while (p < b.length) {
    const eol = b.indexOf('\r\n', p)
    if (eol < 0) throw new Error('cut frame')
    const line = b.toString('latin1', p, eol)
    p = eol + 2
    const w = line.split(' ')
    if (w[0] !== 'MSG' && w[0] !== 'HMSG' && w[0] !== 'LMSG') continue // PING, +OK ...
    const total = Number(w[w.length - 1])
    const hl = w[0] === 'HMSG' ? Number(w[w.length - 2]) : 0
    out.push({ line, hdr: w[0] === 'HMSG' ? b.toString('latin1', p, p + hl) : null, payload: b.toString('latin1', p + hl, p + total) })
    p += total + 2
  }
  return out
}

export function rig(maxAckPending: number, over: Partial<Options> = {}) {
  const micro: (() => void)[] = []
  const turn: (() => void)[] = []
  let now = 1000
  const host = { now: () => now, defer: (fn: () => void) => void micro.push(fn), soon: (fn: () => void) => void turn.push(fn), every: () => ({ cancel: () => {} }) }
  const settle = (): void => {
    for (;;) {
      while (micro.length) micro.shift()!()
      if (turn.length === 0) return
      for (const fn of turn.splice(0)) fn()
    }
  }
  const srv = new Server({ ...defaults, port: 4222, max_payload: 64 * 1024, mqtt: { ...MQTT_DEFAULTS, max_ack_pending: maxAckPending }, ...over }, host, createLogger({ level: 'error', sink: () => {} }))
  let port = 0
  const nats = (connect: string): { c: NatsClient; rec: Rec } => {
    const rec = recWire(++port)
    const c = new NatsClient(srv, srv.admit(), rec.wire)
    c.data(enc.encode(connect))
    settle()
    rec.writes.length = 0
    return { c, rec }
  }
  const mqtt = (id: string, qos: 0 | 1): { c: MqttConn; rec: Rec } => {
    const rec = recWire(++port)
    const c = new MqttConn(srv, srv.admit(), rec.wire)
    c.data(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: id }))
    c.data(generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'up/#', qos }] }))
    settle()
    rec.writes.length = 0
    return { c, rec }
  }
  // The uplink, to a hub that wants up.> and has a queue group on it too.
  const hub = recWire(++port)
  let link: Conn | null = null
  const dial: Dial = (_to, open) => void (link = open(hub.wire))
  const remote = new Remote(srv, { ...REMOTE_DEFAULTS, urls: ['nats://127.0.0.1:7422'] }, { ...LEAF_DEFAULTS, remotes: [] }, 0, dial, () => '')
  remote.start()
  const fromHub = (s: string): void => {
    link!.data(enc.encode(s))
    settle()
  }
  const handshake = (): void => {
    fromHub('INFO {"server_id":"HUB","client_id":1,"leafnode_urls":[]}\r\n')
    fromHub('INFO {"server_id":"HUB","connect_info":true}\r\nLS+ up.>\r\nLS+ up.> hq 1\r\n')
    fromHub('PONG\r\n')
    if (remote.state !== 'connected') throw new Error(`link not up: ${remote.state}`)
  }
  handshake()
  hub.writes.length = 0
  /** The link comes back: redialled (time moved on past the backoff), handshake, PONG. */
  const relink = (): void => {
    now += 60_000
    remote.tick(now)
    hub.writes.length = 0
    handshake()
    remote.tick(now)
    settle()
  }
  return { srv, settle, nats, mqtt, hub, remote, fromHub, relink, dropLink: () => (link!.closed('gone'), settle()) }
}

/** MQTT PUBLISH payloads written to `rec` (QoS 1 ones acknowledged, so the next come). */
export function mqttPayloads(c: MqttConn, rec: Rec, settle: () => void): string[] {
  const got: string[] = []
  const p = mqttParser({ protocolVersion: 4 })
  p.on('packet', (pk: Packet) => {
    if (pk.cmd !== 'publish') return
    got.push(latin1(pk.payload as Buffer))
    if (pk.qos === 1) c.data(generate({ cmd: 'puback', messageId: pk.messageId! }))
  })
  for (let i = 0; i < rec.writes.length; i++) {
    p.parse(Buffer.from(rec.writes[i]!))
    settle()
  }
  return got
}
