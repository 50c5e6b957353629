// The gateway path in one process, on a host whose microtasks (defer) and end-of-turn work
// (soon) are run by hand as a runtime runs them: each device's read, then its microtasks; the
// turn's work after every read of the turn. What it checks: every device gets its PUBACK in a
// write of its own right after its read (the message is routed and kept for the hub by then);
// the uplink writes once per turn, every device's messages in the order they were read, one
// confirmation PING after them; a lost link sends what the hub did not confirm again.
// Also each connection's own memo of its last topic (frame.ts TopicMemo): devices taking
// turns, and a device changing topic, always get their own subject.

import t from 'tap'
import { Buffer } from 'node:buffer'
import { generate } from 'mqtt-packet'
import { MqttConn } from '../adapters/mqtt/conn.ts'
import { parsePublish, topicMemo } from '../adapters/mqtt/frame.ts'
import type { Conn, Dial, Wire } from '../src/host.ts'
import { Remote } from '../src/leaf/remote.ts'
import { createLogger } from '../src/log.ts'
import { defaults, LEAF_DEFAULTS, REMOTE_DEFAULTS } from '../src/options.ts'
import type { Sub } from '../src/router.ts'
import { Server } from '../src/server.ts'

const latin1 = (d: Uint8Array): string => Buffer.from(d).toString('latin1')
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)

interface Rec {
  wire: Wire
  writes: string[]
}

/** `idle`: the wire takes every write at once and says so (Wire.idle), so a busy queue reuses its buffer. */
function recWire(idle = false): Rec {
  const r: Rec = {
    writes: [],
    wire: {
      write: (d) => (r.writes.push(latin1(d)), true),
      ...(idle ? { idle: () => true } : {}),
      buffered: () => 0,
      end: () => {},
      destroy: () => {},
      remoteAddress: '127.0.0.1',
      remotePort: 1,
    },
  }
  return r
}

function rig(opts: { idleHub?: boolean } = {}) {
  const micro: (() => void)[] = []
  const turn: (() => void)[] = []
  let clock = 1000
  const host = {
    now: () => clock,
    defer: (fn: () => void) => void micro.push(fn),
    soon: (fn: () => void) => void turn.push(fn),
    every: () => ({ cancel: () => {} }),
  }
  const runMicro = (): void => {
    while (micro.length) micro.shift()!()
  }
  /** The end of the event-loop turn: what was put off until then (and its microtasks). */
  const endTurn = (): void => {
    const list = turn.splice(0)
    for (const fn of list) {
      fn()
      runMicro()
    }
  }
  const srv = new Server({ ...defaults, port: 4222 }, host, createLogger({ level: 'error', sink: () => {} }))
  const hub = recWire(opts.idleHub)
  let link: Conn | null = null
  const dial: Dial = (_to, open) => void (link = open(hub.wire))
  const remote = new Remote(srv, { ...REMOTE_DEFAULTS, urls: ['nats://127.0.0.1:7422'] }, { ...LEAF_DEFAULTS, remotes: [] }, 0, dial, () => '')
  remote.start()
  /** Bytes from the hub, as one read. */
  const fromHub = (s: string): void => {
    link!.data(bytes(s))
    runMicro()
    endTurn()
  }
  /** The hub's side of a handshake; what was written to it before is forgotten, the handshake's own writes are kept. */
  const handshake = (): void => {
    hub.writes.length = 0
    fromHub('INFO {"server_id":"HUB","client_id":1,"leafnode_urls":[]}\r\n')
    fromHub('INFO {"server_id":"HUB","connect_info":true}\r\nLS+ telemetry.>\r\n')
    fromHub('PONG\r\n')
    if (remote.state !== 'connected') throw new Error(`link not up: ${remote.state}`)
  }
  handshake()
  hub.writes.length = 0
  /** After a lost link: time enough for the redial, answered as the first dial was (what goes up then stays in hub.writes). */
  const redial = (): void => {
    clock += 60_000
    remote.tick(clock)
    runMicro()
    handshake()
  }

  /** A connected MQTT 3.1.1 device. */
  const device = (id: string) => {
    const r = recWire()
    const conn = new MqttConn(srv, srv.admit(), r.wire)
    conn.data(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: id }))
    runMicro()
    endTurn()
    r.writes.length = 0
    return {
      ...r,
      /** One read from this device, then its microtasks (as every runtime runs them). */
      read(b: Uint8Array): void {
        conn.data(b)
        runMicro()
      },
    }
  }
  return { srv, remote, hub, fromHub, device, endTurn, redial, dropLink: () => (link!.closed('gone'), runMicro()) }
}

const publish = (topic: string, payload: string, qos: 0 | 1, messageId?: number): Buffer =>
  generate({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, dup: false, retain: false, messageId })

/** The LMSG/HMSG frames in what the hub got, as "subject payload" (headers left out). */
function frames(text: string): string[] {
  const out: string[] = []
  const re = /(?:LMSG (\S+) (\d+)|HMSG (\S+) (\d+) (\d+))\r\n/g
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const at = m.index + m[0].length
    if (m[1] !== undefined) out.push(`${m[1]} ${text.slice(at, at + Number(m[2]))}`)
    else out.push(`${m[3]} ${text.slice(at + Number(m[4]), at + Number(m[5]))}`)
    re.lastIndex = at + Number(m[2] ?? m[5]) + 2
  }
  return out
}

t.test('many devices in one turn: a PUBACK per device after its read, one write to the hub with one PING', async (t) => {
  const r = rig()
  const N = 50
  const devs = Array.from({ length: N }, (_, i) => r.device(`d${i}`))
  devs.forEach((d, i) => {
    d.read(publish(`telemetry/d${i}`, `m${i}`, 1, i + 1))
    t.same(d.writes, [latin1(new Uint8Array([0x40, 2, (i + 1) >> 8, (i + 1) & 0xff]))], `device ${i}: its PUBACK, written after its own read`)
  })
  t.equal(r.hub.writes.length, 0, 'nothing written to the hub before the turn ends')
  t.equal(r.remote.status().unconfirmed_msgs, N, 'every acknowledged message is kept for the hub')
  r.endTurn()
  t.equal(r.hub.writes.length, 1, 'one write to the hub for the whole turn')
  const text = r.hub.writes[0]!
  t.same(frames(text), devs.map((_, i) => `telemetry.d${i} m${i}`), 'every message, in the order the devices were read')
  t.ok(text.endsWith('\r\nPING\r\n'), 'one confirmation PING, after the messages it covers')
  t.equal(text.split('PING\r\n').length - 1, 1, 'only one PING')
  r.fromHub('PONG\r\n')
  t.equal(r.remote.status().unconfirmed_msgs, 0, 'the PONG confirms the whole turn')
})

t.test('per-publisher order across reads and turns; the same device twice in a turn', async (t) => {
  const r = rig()
  const a = r.device('a')
  const b = r.device('b')
  a.read(Buffer.concat([publish('telemetry/a', '1', 1, 1), publish('telemetry/a', '2', 0)]))
  b.read(publish('telemetry/b', '1', 1, 1))
  a.read(publish('telemetry/a', '3', 1, 2))
  r.endTurn()
  b.read(publish('telemetry/b', '2', 1, 2))
  a.read(publish('telemetry/a', '4', 0))
  r.endTurn()
  t.equal(r.hub.writes.length, 2, 'one write per turn')
  t.same(frames(r.hub.writes.join('')), ['telemetry.a 1', 'telemetry.a 2', 'telemetry.b 1', 'telemetry.a 3', 'telemetry.b 2', 'telemetry.a 4'])
  t.same(a.writes.length, 2, "device a: a write per read that had a QoS 1 message (two PUBACKs, one per read)")
})

t.test('at least once: a link lost before the PONG sends the turn again on the next link', async (t) => {
  const r = rig()
  const d = r.device('d')
  d.read(publish('telemetry/x', 'one', 1, 1))
  d.read(publish('telemetry/x', 'two', 1, 2))
  r.endTurn()
  t.equal(r.remote.status().unconfirmed_msgs, 2)
  r.dropLink()
  r.endTurn()
  t.equal(r.remote.status().buffered_msgs, 2, 'unconfirmed messages are held again')
})

t.test('topic memo per connection: devices taking turns and a device changing topic get their own subjects', async (t) => {
  const r = rig()
  const got: string[] = []
  const sub: Sub = { subject: 'x.>', queue: null, owner: { cid: 0, echo: true, deliver: (_s, m) => void got.push(`${m.subject} ${latin1(m.payload)}`) } }
  r.srv.router.subscribe(sub)
  const a = r.device('a')
  const b = r.device('b')
  // Same length, one byte apart; and one topic that is a prefix of the other.
  a.read(publish('x/a/1', 'p', 0))
  b.read(publish('x/b/1', 'q', 0))
  a.read(Buffer.concat([publish('x/a/1', 'r', 0), publish('x/a/2', 's', 0), publish('x/a/2', 't', 0), publish('x/a/1', 'u', 0), publish('x/a', 'v', 0)]))
  b.read(publish('x/b/1', 'w', 0))
  t.same(got, ['x.a.1 p', 'x.b.1 q', 'x.a.1 r', 'x.a.2 s', 'x.a.2 t', 'x.a.1 u', 'x.a v', 'x.b.1 w'])
})

t.test('parsePublish with a memo: a topic of the same length but other bytes is read anew', async (t) => {
  const memo = topicMemo()
  const one = publish('dev/α/1', 'x', 0)
  const two = publish('dev/α/2', 'y', 0)
  t.equal(parsePublish(one, 0, one.length, false, memo)!.topic, 'dev/α/1')
  t.equal(parsePublish(one, 0, one.length, false, memo)!.topic, 'dev/α/1', 'repeated: from the memo')
  t.equal(parsePublish(two, 0, two.length, false, memo)!.topic, 'dev/α/2')
  const other = topicMemo()
  t.equal(parsePublish(one, 0, one.length, false, other)!.topic, 'dev/α/1', 'another memo is independent')
  t.equal(parsePublish(two, 0, two.length, false, memo)!.topic, 'dev/α/2')
})

t.test('confirmations: at most two PINGs unanswered; each PONG asks for what came since', async (t) => {
  const r = rig()
  const d = r.device('d')
  for (let i = 1; i <= 5; i++) {
    d.read(publish('telemetry/d', `m${i}`, 1, i))
    r.endTurn()
  }
  const pings = (): number => r.hub.writes.join('').split('PING\r\n').length - 1
  t.equal(r.hub.writes.length, 5, 'a write per turn')
  t.equal(pings(), 2, 'two confirmation PINGs while none is answered')
  t.equal(r.remote.status().unconfirmed_msgs, 5)
  r.fromHub('PONG\r\n')
  t.equal(r.remote.status().unconfirmed_msgs, 4, 'the first PONG confirms the first turn')
  t.equal(pings(), 3, 'and a PING for the rest goes out in the same turn')
  r.fromHub('PONG\r\n')
  t.equal(r.remote.status().unconfirmed_msgs, 3, 'the second: what came before the second PING')
  t.equal(pings(), 3, 'nothing new to ask for: the third PING covers everything')
  r.fromHub('PONG\r\n')
  t.equal(r.remote.status().unconfirmed_msgs, 0, 'the third covers the rest')
  t.same(frames(r.hub.writes.join('')), [1, 2, 3, 4, 5].map((i) => `telemetry.d m${i}`))
})

t.test('a read that queues 64 KiB or more for the hub is written after that read, the rest at the end of the turn, in order', async (t) => {
  const r = rig()
  const big = r.device('big')
  const small = r.device('small')
  const pay = 'x'.repeat(1000)
  const frames70 = Buffer.concat(Array.from({ length: 70 }, (_, i) => publish('telemetry/big', `${i} ${pay}`, 0)))
  small.read(publish('telemetry/small', 's1', 0))
  t.equal(r.hub.writes.length, 0, 'a small read waits for the turn')
  big.read(frames70)
  t.equal(r.hub.writes.length, 1, 'over 64 KiB: written once that read is done')
  small.read(publish('telemetry/small', 's2', 0))
  t.equal(r.hub.writes.length, 1, 'what comes after waits for the turn again')
  r.endTurn()
  t.equal(r.hub.writes.length, 2, 'the rest at the end of the turn')
  const got = frames(r.hub.writes.join('')).map((f) => f.slice(0, f.indexOf(' ', f.indexOf(' ') + 1) + 1 || undefined).trim())
  t.same(got, ['telemetry.small s1', ...Array.from({ length: 70 }, (_, i) => `telemetry.big ${i}`), 'telemetry.small s2'], 'in the order read')
  t.ok(r.hub.writes[1]!.endsWith('PING\r\n'), "the turn's confirmation PING after everything")
})

t.test('one large read: written to the hub in pieces of about 64 KiB between frames, during the read, in order; kept frames survive the reused buffer', async (t) => {
  // Bun hands a read of up to 512 KiB over at once. The queue for the hub goes to the wire each
  // time it holds 64 KiB, so it never grows by copies to the read's whole output; a wire that
  // took a piece at once (idle) lends the buffer back, and the frames kept for at-least-once
  // delivery must be the owner's copies, not views of that buffer.
  const r = rig({ idleHub: true })
  const d = r.device('d')
  const pay = (i: number): string => `${String(i).padStart(4, '0')} ${'y'.repeat(995)}`
  const N = 300
  d.read(Buffer.concat(Array.from({ length: N }, (_, i) => publish('telemetry/d', pay(i), 1, i + 1))))
  const during = r.hub.writes.length
  t.ok(during >= 4, `written while the read was handled (${during} writes for ~300 KiB)`)
  const frame = 'LMSG telemetry.d 1000\r\n'.length + 1000 + 2
  for (const [i, w] of r.hub.writes.entries()) t.ok(w.length <= 64 * 1024 + frame, `write ${i}: ${w.length} bytes, at most 64 KiB and a frame`)
  t.equal(d.writes.length, 1, 'one write of PUBACKs to the device')
  r.endTurn()
  const sent = frames(r.hub.writes.join(''))
  t.same(sent, Array.from({ length: N }, (_, i) => `telemetry.d ${pay(i)}`), 'every frame once, in order')
  t.equal(r.remote.status().unconfirmed_msgs, N, 'all kept until the hub confirms them')
  // The link is lost before any PONG: the next link gets all of them again, byte for byte.
  r.dropLink()
  r.redial()
  r.endTurn()
  r.fromHub('PONG\r\n')
  const again = frames(r.hub.writes.join(''))
  t.equal(again.length, N, 'every kept frame sent again')
  t.ok(again.every((f, i) => f === sent[i]), 'the kept frames, unchanged by the buffer written over after them')
})
