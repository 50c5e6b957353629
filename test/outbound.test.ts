// The outbound queue and write coalescing, driven without sockets: a fake Wire records every
// write, and a fake Host runs deferred flushes when the test says so.

import t from 'tap'
import { NatsClient } from '../adapters/nats/client.ts'
import type { Host, Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { defaults } from '../src/options.ts'
import { Outbound } from '../src/outbound.ts'
import { Server } from '../src/server.ts'

interface FakeWire extends Wire {
  writes: Uint8Array[]
  accept: boolean
  held: number
  ended: boolean
}

function fakeWire(): FakeWire {
  const w: FakeWire = {
    writes: [],
    accept: true,
    held: 0,
    ended: false,
    write(d) {
      w.writes.push(d.slice())
      if (!w.accept) w.held += d.length
      return w.accept
    },
    buffered: () => w.held,
    end: () => void (w.ended = true),
    destroy: () => void (w.ended = true),
    remoteAddress: '127.0.0.1',
    remotePort: 1,
  }
  return w
}

function fakeHost(): Host & { run(): void; clock: number } {
  const queue: (() => void)[] = []
  const h = {
    clock: 1000,
    now: () => h.clock,
    defer: (fn: () => void) => void queue.push(fn),
    every: () => ({ cancel() {} }),
    run() {
      while (queue.length) queue.shift()!()
    },
  }
  return h
}

const text = (chunks: Uint8Array[]): string => chunks.map((c) => Buffer.from(c).toString('latin1')).join('')
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)

t.test('pushes before a flush go out as one write, in order', async (t) => {
  const w = fakeWire()
  let scheduled = 0
  const o = new Outbound(w, 1024, () => scheduled++)
  for (let i = 0; i < 50; i++) t.ok(o.push(bytes(`m${i};`)))
  t.equal(scheduled, 1, 'scheduled once per batch')
  t.equal(w.writes.length, 0, 'nothing written before the flush')
  o.flush(0)
  t.equal(w.writes.length, 1, 'one write for the batch')
  t.equal(text(w.writes), Array.from({ length: 50 }, (_, i) => `m${i};`).join(''))
  t.equal(o.pending, 0)
})

t.test('backpressure: nothing more is written until the wire drains', async (t) => {
  const w = fakeWire()
  const o = new Outbound(w, 100, () => {})
  w.accept = false
  o.push(bytes('a'.repeat(40)))
  o.flush(5)
  t.equal(o.blockedSince, 5, 'blocked since the refused write')
  t.equal(o.pending, 40, 'what the socket holds counts while blocked')
  o.push(bytes('b'.repeat(30)))
  o.flush(6)
  t.equal(w.writes.length, 1, 'no write while blocked')
  t.equal(o.pending, 70)
  t.equal(o.reserve(31), -1, 'over the limit counting the socket backlog')
  t.equal(o.pending, 70, 'a refused reserve changes nothing')
  w.accept = true
  w.held = 0
  o.drained(7)
  t.equal(o.blockedSince, 0)
  t.equal(w.writes.length, 2, 'what piled up goes out in one write on drain')
  t.equal(text(w.writes.slice(1)), 'b'.repeat(30))
})

t.test('a NATS publish burst reaches a subscriber as one socket write (sans-I/O)', async (t) => {
  const host = fakeHost()
  const log = createLogger({ level: 'error', sink: () => {} })
  const srv = new Server({ ...defaults, port: 4222 }, host, log)
  const subWire = fakeWire()
  const pubWire = fakeWire()
  const sub = new NatsClient(srv, srv.admit(), subWire)
  const pub = new NatsClient(srv, srv.admit(), pubWire)
  host.run()
  subWire.writes.length = 0
  sub.data(bytes('CONNECT {"verbose":false}\r\nSUB t.* 1\r\n'))
  let burst = ''
  for (let i = 0; i < 100; i++) burst += `PUB t.${i % 3} 2\r\n${String(i % 100).padStart(2, '0')}\r\n`
  pub.data(bytes('CONNECT {"verbose":false}\r\n' + burst))
  t.equal(subWire.writes.length, 0, 'deliveries wait for the end of the I/O turn')
  host.run()
  t.equal(subWire.writes.length, 1, 'one write for 100 messages')
  const out = text(subWire.writes)
  t.equal(out.split('MSG ').length - 1, 100)
  t.ok(out.startsWith('MSG t.0 1 2\r\n00\r\nMSG t.1 1 2\r\n01\r\n'), 'framed in order')
  t.equal(srv.router.traffic.in_msgs, 100)
  t.equal(srv.router.traffic.out_msgs, 100)
})

t.test('a slow consumer is closed and counted; the publisher and others carry on', async (t) => {
  const host = fakeHost()
  const log = createLogger({ level: 'error', sink: () => {} })
  const srv = new Server({ ...defaults, port: 4222, max_pending: 4096 }, host, log)
  const slowWire = fakeWire()
  const fastWire = fakeWire()
  const pubWire = fakeWire()
  const slow = new NatsClient(srv, srv.admit(), slowWire)
  const fast = new NatsClient(srv, srv.admit(), fastWire)
  const pub = new NatsClient(srv, srv.admit(), pubWire)
  slow.data(bytes('CONNECT {"verbose":false}\r\nSUB x 1\r\n'))
  fast.data(bytes('CONNECT {"verbose":false}\r\nSUB x 1\r\n'))
  host.run()
  slowWire.accept = false // the slow reader's socket is full from now on
  slowWire.held = 100_000
  const payload = 'p'.repeat(512)
  for (let round = 0; round < 20; round++) {
    pub.data(bytes(`PUB x ${payload.length}\r\n${payload}\r\n`.repeat(4)))
    host.run()
  }
  t.equal(srv.counters.slow_consumers, 1)
  t.ok(slow.done, 'slow consumer closed')
  t.ok(slowWire.ended)
  t.match(text(slowWire.writes), /-ERR 'Slow Consumer'\r\n$/, 'it was told why')
  t.notOk(fast.done, 'the other subscriber stays')
  t.notOk(pub.done, 'the publisher stays')
  t.equal(text(fastWire.writes).split('MSG x 1 512').length - 1, 80, 'the other subscriber got all 80 messages')
})

t.test('a queue keeps at most twelve fields (JSC 112-byte size class); segments only while blocked', async (t) => {
  const w = fakeWire()
  const o = new Outbound(w, 1 << 22, () => {})
  t.ok(Object.keys(o).length <= 12, `${Object.keys(o).length} fields`)
  // Blocked: the queue grows by 64 KiB segments; pending counts them with what the wire holds.
  t.ok(o.push(new Uint8Array(10)))
  w.accept = false
  o.flush(1)
  t.ok(o.blocked)
  for (let i = 0; i < 5; i++) t.ok(o.push(new Uint8Array(40 * 1024)))
  const segs = (o as unknown as { segs: { list: Uint8Array[]; bytes: number } | null }).segs
  t.ok(segs !== null && segs.list.length >= 2, 'segments while blocked')
  t.equal(o.pending, 10 + 5 * 40 * 1024, 'pending: segments, the buffer and what the wire holds')
  // Over the limit with the segments counted: refused.
  const w2 = fakeWire()
  w2.accept = false
  const small = new Outbound(w2, 150 * 1024, () => {})
  small.push(new Uint8Array(10))
  small.flush(1)
  for (let i = 0; i < 3; i++) small.push(new Uint8Array(40 * 1024))
  t.notOk(small.push(new Uint8Array(40 * 1024)), 'segments and the wire count against the limit')
  w.accept = true
  w.held = 0
  o.drained(2)
  t.notOk(o.blocked)
  t.equal((o as unknown as { segs: unknown }).segs, null, 'segments gone once written')
  t.equal(o.pending, 0)
  t.equal(w.writes.reduce((n, d) => n + d.length, 0), 10 + 5 * 40 * 1024, 'every byte written once')
})
