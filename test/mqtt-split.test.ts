// MQTT packets cut across reads: every split point gives the same packets, and a large packet
// arriving in small reads is copied once (its buffer fills in place), not re-joined per read,
// which would be quadratic work for a hostile client sending a big PUBLISH a byte at a time.
// Copies are counted through the memory budget's charges, as test/leaf-parser.test.ts does.

import t from 'tap'
import { Buffer } from 'node:buffer'
import { generate } from 'mqtt-packet'
import { MqttConn } from '../adapters/mqtt/conn.ts'
import type { Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { defaults } from '../src/options.ts'
import type { Sub } from '../src/router.ts'
import { Server } from '../src/server.ts'

function rig() {
  // defer() runs later, as on a real host (the outbound queue flushes then, never inside a write).
  const queue: (() => void)[] = []
  const host = { now: () => 1000, defer: (fn: () => void) => void queue.push(fn), every: () => ({ cancel: () => {} }) }
  const srv = new Server({ ...defaults, port: 4222, max_payload: 1024 * 1024 }, host, createLogger({ level: 'error', sink: () => {} }))
  let copied = 0
  const charge = srv.budget.charge.bind(srv.budget)
  srv.budget.charge = (n: number) => {
    if (n > 0) copied += n
    return charge(n)
  }
  const got: number[] = []
  const sub: Sub = { subject: 'big.>', queue: null, owner: { cid: 0, echo: true, deliver: (_s, m) => void got.push(m.payload.length) } }
  srv.router.subscribe(sub)
  const w: Wire = { write: () => true, buffered: () => 0, end: () => {}, destroy: () => {}, remoteAddress: '127.0.0.1', remotePort: 1 }
  const conn = new MqttConn(srv, srv.admit(), w)
  const c = {
    data(b: Uint8Array): void {
      conn.data(b)
      while (queue.length) queue.shift()!()
    },
  }
  c.data(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'dev' }))
  copied = 0
  return { c, got, copied: () => copied }
}

const publish = (topic: string, size: number) => generate({ cmd: 'publish', topic, payload: Buffer.alloc(size, 7), qos: 0, dup: false, retain: false })

t.test('a 512 KiB PUBLISH in 1 KiB reads and a 64 KiB one in 1-byte reads are each copied once', async (t) => {
  for (const [size, step] of [[512 * 1024, 1024], [64 * 1024, 1]] as const) {
    const r = rig()
    const frame = publish('big/a', size)
    for (let i = 0; i < frame.length; i += step) r.c.data(frame.subarray(i, i + step))
    t.same(r.got, [size], `the ${size}-byte payload arrives whole`)
    // Re-joining per read would copy about frame²/(2·step) bytes: 128 MiB and 2 GiB here.
    t.ok(r.copied() <= frame.length + 64, `bytes held while cut: ${r.copied()} for a ${frame.length}-byte packet in ${step}-byte reads`)
  }
})

t.test('two packets cut at every byte arrive the same', async (t) => {
  const stream = Buffer.concat([publish('big/x', 300), publish('big/y', 5)])
  for (let cut = 1; cut < stream.length; cut++) {
    const r = rig()
    r.c.data(stream.subarray(0, cut))
    r.c.data(stream.subarray(cut))
    if (r.got.length !== 2 || r.got[0] !== 300 || r.got[1] !== 5) t.fail(`cut at ${cut}: ${JSON.stringify(r.got)}`)
  }
  t.pass('every cut point')
})
