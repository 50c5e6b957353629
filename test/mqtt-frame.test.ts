import t from 'tap'
import { Buffer } from 'node:buffer'
import { generate, parser as newParser, type IPublishPacket, type Packet } from 'mqtt-packet'
import { MqttConn } from '../adapters/mqtt/conn.ts'
import type { Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { defaults } from '../src/options.ts'
import { Server } from '../src/server.ts'
import { frameSize, headerSize, MALFORMED, NEED_MORE, parsePublish, publishSize, topicBytes, writePublishHead } from '../adapters/mqtt/frame.ts'
import { remainingLength } from './helpers/varint.ts'

/** What mqtt-packet makes of one whole frame. */
function reference(frame: Uint8Array, version: 4 | 5): Packet {
  const p = newParser({ protocolVersion: version })
  let got: Packet | null = null
  p.on('packet', (pk: Packet) => (got = pk))
  p.on('error', (e: Error) => {
    throw e
  })
  p.parse(Buffer.from(frame))
  return got!
}

/** Splits a stream into frames with frameSize, as conn.ts does with a rest buffer. */
function split(chunks: Uint8Array[]): Uint8Array[] | 'malformed' {
  const out: Uint8Array[] = []
  let rest = new Uint8Array(0)
  for (const c of chunks) {
    const b = new Uint8Array(rest.length + c.length)
    b.set(rest)
    b.set(c, rest.length)
    let at = 0
    while (at < b.length) {
      const n = frameSize(b, at, b.length)
      if (n === MALFORMED) return 'malformed'
      if (n === NEED_MORE || at + n > b.length) break
      out.push(b.slice(at, at + n))
      at += n
    }
    rest = b.slice(at)
  }
  return out
}

const publishes: IPublishPacket[] = [
  { cmd: 'publish', topic: 'a/b', payload: Buffer.from('hi'), qos: 0, dup: false, retain: false },
  { cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(0), qos: 1, dup: true, retain: true, messageId: 513 },
  { cmd: 'publish', topic: 'ünï/cödé', payload: Buffer.alloc(200, 7), qos: 2, dup: false, retain: false, messageId: 65535 },
  { cmd: 'publish', topic: 'x'.repeat(300), payload: Buffer.alloc(20_000, 1), qos: 1, dup: false, retain: false, messageId: 1 },
  { cmd: 'publish', topic: '', payload: Buffer.from('e'), qos: 0, dup: false, retain: true },
]

t.test('frameSize reads the fixed header at every length boundary', async (t) => {
  for (const rem of [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455]) {
    const hdr = generate({ cmd: 'publish', topic: '', payload: Buffer.alloc(0), qos: 0, dup: false, retain: false }).subarray(0, 1)
    const len = remainingLength(rem)
    const b = new Uint8Array([hdr[0]!, ...len])
    t.equal(frameSize(b, 0, b.length), 1 + len.length + rem, `remaining ${rem}`)
    t.equal(headerSize(b, 0), 1 + len.length)
    for (let cut = 0; cut < b.length; cut++) t.equal(frameSize(b, 0, cut), NEED_MORE, `remaining ${rem} cut at ${cut}`)
  }
  t.equal(frameSize(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]), 0, 6), MALFORMED, 'five length bytes')
  t.equal(frameSize(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff]), 0, 5), MALFORMED, 'four bytes, all continued')
  t.equal(frameSize(new Uint8Array([0x30, 0xff, 0xff, 0xff]), 0, 4), NEED_MORE)
  t.equal(frameSize(new Uint8Array([9, 9, 0xc0, 0x00]), 2, 4), 2, 'at an offset')
})

t.test('a stream split at every byte boundary gives the same frames', async (t) => {
  const frames = [
    ...publishes.map((p) => generate(p)),
    generate({ cmd: 'pingreq' }),
    generate({ cmd: 'puback', messageId: 7 }),
    generate({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'a/#', qos: 1 }] }),
  ]
  const stream = Buffer.concat(frames)
  const want = frames.map((f) => Array.from(f))
  t.same((split([stream]) as Uint8Array[]).map((f) => Array.from(f)), want, 'one chunk')
  let ok = true
  for (let cut = 0; cut <= stream.length && ok; cut += cut < 600 ? 1 : 97) {
    const got = split([stream.subarray(0, cut), stream.subarray(cut)])
    ok = Array.isArray(got) && JSON.stringify(got.map((f) => Array.from(f))) === JSON.stringify(want)
  }
  t.ok(ok, 'two chunks, cut anywhere')
  const bytes = Array.from(stream.subarray(0, 400), (b) => new Uint8Array([b]))
  let whole = 0
  for (let end = 0, i = 0; i < frames.length && (end += frames[i]!.length) <= 400; i++) whole++
  t.equal((split(bytes) as Uint8Array[]).length, whole, 'byte by byte: the whole frames in the first 400 bytes')
  t.equal(split([new Uint8Array([0xc0, 0x00, 0x30, 0x80, 0x80, 0x80, 0x80])]), 'malformed')
})

t.test('parsePublish agrees with mqtt-packet', async (t) => {
  for (const version of [4, 5] as const) {
    for (const p of publishes) {
      const f = generate(p, { protocolVersion: version })
      const mine = parsePublish(f, 0, f.length, version === 5)!
      const ref = reference(f, version) as IPublishPacket
      t.ok(mine, `v${version} ${p.topic.slice(0, 10)} qos ${p.qos}`)
      for (const k of ['topic', 'qos', 'dup', 'retain'] as const) t.equal(mine[k], ref[k], k)
      t.equal(mine.messageId, p.qos > 0 ? ref.messageId : undefined, 'messageId')
      t.same(Array.from(mine.payload as Buffer), Array.from(ref.payload as Buffer), 'payload')
      // At an offset inside a larger buffer.
      const b = new Uint8Array(f.length + 5)
      b.set(f, 3)
      const off = parsePublish(b, 3, f.length, version === 5)!
      t.equal(off.topic, ref.topic)
      t.same(Array.from(off.payload as Buffer), Array.from(ref.payload as Buffer))
    }
  }
})

t.test('parsePublish leaves odd shapes to mqtt-packet', async (t) => {
  const f = (bytes: number[]) => new Uint8Array(bytes)
  t.equal(parsePublish(f([0x36, 0x02, 0x00, 0x00]), 0, 4, false), null, 'QoS 3')
  t.equal(parsePublish(f([0x30, 0x01, 0x00]), 0, 3, false), null, 'no room for topic length')
  t.equal(parsePublish(f([0x30, 0x03, 0x00, 0x05, 0x61]), 0, 5, false), null, 'topic longer than the packet')
  t.equal(parsePublish(f([0x32, 0x03, 0x00, 0x01, 0x61]), 0, 5, false), null, 'no packet id')
  t.equal(parsePublish(f([0x30, 0x03, 0x00, 0x01, 0x61]), 0, 5, true), null, 'v5 without a property length')
  const withProps = generate(
    { cmd: 'publish', topic: 't', payload: Buffer.from('x'), qos: 0, dup: false, retain: false, properties: { contentType: 'a' } },
    { protocolVersion: 5 },
  )
  t.equal(parsePublish(withProps, 0, withProps.length, true), null, 'v5 properties')
  const ok = parsePublish(f([0x30, 0x03, 0x00, 0x01, 0x61]), 0, 5, false)!
  t.equal(ok.topic, 'a')
  t.equal(ok.payload.length, 0, 'empty payload')
})

t.test('writePublishHead and the payload after it write the bytes mqtt-packet generates', async (t) => {
  for (const version of [4, 5] as const) {
    for (const p of [...publishes, { ...publishes[0]!, payload: Buffer.alloc(2_100_000, 3) }]) {
      const topic = topicBytes(p.topic)
      const size = publishSize(topic, p.payload.length, p.qos, version === 5)
      const buf = new Uint8Array(size + 4)
      buf.set(p.payload as Buffer, writePublishHead(buf, 2, topic, p.payload.length, p.qos, p.dup!, p.retain, p.messageId ?? 0, version === 5, 0))
      const want = generate(p, { protocolVersion: version })
      t.equal(size, want.length, `v${version} size, payload ${p.payload.length}`)
      t.ok(Buffer.from(buf.subarray(2, 2 + size)).equals(want), 'bytes')
    }
  }
  t.equal(publishSize(new Uint8Array(70_000), 0, 0, false), -1, 'topic too long for a string')
  t.equal(publishSize(new Uint8Array(3), 268_435_455, 0, false), -1, 'over the Remaining Length limit')
  t.equal(topicBytes('é').length, 2, 'UTF-8')
})

// --- the connection's splitter, sans-I/O ---------------------------------------------------

interface Rig {
  srv: Server
  conn(): { c: MqttConn; out: () => Buffer; ended: () => boolean }
  run(): void
}

function rig(over: Partial<typeof defaults> = {}): Rig {
  const queue: (() => void)[] = []
  const host = { now: () => 1000, defer: (fn: () => void) => void queue.push(fn), every: () => ({ cancel() {} }) }
  const srv = new Server({ ...defaults, port: 4222, ...over }, host, createLogger({ level: 'error', sink: () => {} }))
  let port = 0
  return {
    srv,
    run: () => {
      while (queue.length) queue.shift()!()
    },
    conn() {
      const writes: Uint8Array[] = []
      let ended = false
      const wire: Wire = {
        write: (d) => (writes.push(d.slice()), true),
        buffered: () => 0,
        end: () => void (ended = true),
        destroy: () => void (ended = true),
        remoteAddress: '127.0.0.1',
        remotePort: ++port,
      }
      const c = new MqttConn(srv, srv.admit(), wire)
      return { c, out: () => Buffer.concat(writes), ended: () => ended }
    },
  }
}

const connect = (id: string, v: 4 | 5 = 4) => generate({ cmd: 'connect', clientId: id, clean: true, keepalive: 0, protocolId: 'MQTT', protocolVersion: v }, { protocolVersion: v })

t.test('a connection gets the same packets however its bytes are cut', async (t) => {
  for (const v of [4, 5] as const) {
    const stream = Buffer.concat([
      connect('p', v),
      generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/#', qos: 1 }] }, { protocolVersion: v }),
      ...publishes.map((p) => generate({ ...p, topic: p.topic === '' ? 'a/e' : `a/${p.topic.slice(0, 40)}` }, { protocolVersion: v })),
      generate({ cmd: 'pingreq' }),
      generate({ cmd: 'puback', messageId: 1 }, { protocolVersion: v }),
    ])
    const run = (cuts: number[]): Buffer => {
      const r = rig()
      const { c, out } = r.conn()
      let from = 0
      for (const cut of [...cuts, stream.length]) {
        c.data(stream.subarray(from, cut))
        from = cut
        r.run()
      }
      t.notOk(c.done, 'still open')
      return out()
    }
    const whole = run([])
    t.ok(whole.length > 20_000, `v${v}: CONNACK, SUBACK, the publishes back, PUBACKs, PINGRESP`)
    let same = true
    for (let cut = 1; cut < stream.length && same; cut += cut < 400 ? 1 : 211) same = run([cut]).equals(whole)
    t.ok(same, `v${v}: cut in two anywhere`)
    t.ok(run(Array.from({ length: 300 }, (_, i) => i + 1)).equals(whole), `v${v}: byte by byte for the first 300 bytes`)
  }
})

t.test('a malformed Remaining Length or an oversize packet ends the connection', async (t) => {
  const r = rig()
  const a = r.conn()
  a.c.data(connect('a'))
  a.c.data(new Uint8Array([0x30, 0xff, 0xff]))
  t.notOk(a.c.done, 'a cut length waits')
  a.c.data(new Uint8Array([0xff, 0xff, 0x01]))
  t.ok(a.c.done && a.ended(), 'five length bytes close')

  const small = rig({ max_payload: 1024 })
  const b = small.conn()
  b.c.data(connect('b'))
  const under = generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(60_000), qos: 0, dup: false, retain: false })
  b.c.data(under.subarray(0, 30_000))
  t.notOk(b.c.done, 'a packet under max_payload + 64 KiB: its rest is waited for')
  const b2 = small.conn()
  b2.c.data(connect('b2'))
  const big = generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(200_000), qos: 0, dup: false, retain: false })
  b2.c.data(big.subarray(0, 4))
  t.ok(b2.c.done && b2.ended(), 'one declared over it: closed once its length is read, before any of it arrives')

  const c = small.conn()
  c.c.data(connect('c', 5))
  c.c.data(generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(2000), qos: 0, dup: false, retain: false }, { protocolVersion: 5 }))
  small.run()
  t.ok(c.c.done, 'a whole packet over max_payload closes')
  const o = c.out()
  const d = o.lastIndexOf(0xe0)
  t.equal(o[d + 2], 0x95, 'v5: DISCONNECT Packet Too Large (0x95)')
})

t.test('what a publish leaves behind does not alias the bytes the target lent', async (t) => {
  const r = rig()
  const p = r.conn()
  p.c.data(connect('p'))
  const chunk = Buffer.from(generate({ cmd: 'publish', topic: 'keep/me', payload: Buffer.from('retained!'), qos: 1, dup: false, retain: true, messageId: 9 }))
  p.c.data(chunk)
  chunk.fill(0x7a) // the target reuses its read buffer
  r.run()
  const s = r.conn()
  s.c.data(connect('s'))
  s.c.data(generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'keep/#', qos: 0 }] }))
  r.run()
  t.ok(s.out().includes(Buffer.from('retained!')), 'the retained payload was copied')
  t.notOk(s.out().includes(Buffer.from('zzzzzzzzz')), 'not the reused buffer')
})
