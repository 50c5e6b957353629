// The fast-producer stall over real sockets: a subscriber that stops reading for a while is
// not cut as a slow consumer; its publisher is paused instead, as nats-server does. One that
// never reads again is still cut (write_deadline), and its publisher goes on.

import t, { type Test } from 'tap'
import type { NatsClient } from '../adapters/nats/client.ts'
import type { Options } from '../src/options.ts'
import { natsClient } from './helpers/mqtt.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { RawConn, sleep } from './helpers/rawconn.ts'

const KiB = 1024

async function broker(t: Test, over: Partial<Options>): Promise<TestBroker> {
  const b = await startBroker(over)
  t.teardown(() => b.stop())
  return b
}

function sessionOf(b: TestBroker, c: RawConn): NatsClient | undefined {
  for (const s of b.srv.sessions.values()) {
    const n = s as NatsClient
    if (n.wire?.remotePort === c.sock.localPort) return n
  }
  return undefined
}

/** A raw client subscribed to `st` (sid 1), its session on the server settled. */
async function subscriber(t: Test, b: TestBroker): Promise<RawConn> {
  const sub = await RawConn.open(b.port, { keepText: false })
  t.teardown(() => sub.destroy())
  sub.write('CONNECT {"verbose":false}\r\nSUB st 1\r\nPING\r\n')
  await sub.until(() => sub.received > 0 && sessionOf(b, sub) !== undefined, 2000, 'PONG')
  await sleep(50)
  return sub
}

/** Counts whole MSG frames of `size` bytes on subject `subj` with sid 1 in a byte stream. */
function frames(c: RawConn, subj: string, size: number): () => number {
  const frame = `MSG ${subj} 1 ${size}\r\n`.length + size + 2
  const start = c.received
  return () => Math.floor((c.received - start) / frame)
}

t.test('a subscriber that pauses is not cut: the publisher waits for it', async (t) => {
  const b = await broker(t, { max_pending: 1024 * KiB, write_deadline: 30_000 })
  const sub = await subscriber(t, b)
  const got = frames(sub, 'st', 4 * KiB)
  sub.pause() // stops reading: the kernel's buffers fill, then sprig's queue
  const pub = await natsClient(t, b.url)
  const n = 6000 // 24 MB: far past what the sockets and 1 MiB of max_pending hold
  const payload = new Uint8Array(4 * KiB)
  for (let i = 0; i < n; i++) pub.publish('st', payload)
  const flushed = pub.flush()
  await sleep(1500)
  t.ok(b.srv.stall.count > 0, `the publisher was paused (${b.srv.stall.count} times) while the subscriber did not read`)
  t.equal(b.srv.counters.slow_consumers, 0, 'the subscriber was not cut')
  sub.resume()
  await flushed
  await sub.until(() => got() >= n, 20_000, `${n} messages`)
  t.equal(got(), n, 'it got every message')
  t.equal(b.srv.counters.slow_consumers, 0, 'still no slow consumer')
  t.equal(b.srv.stall.size, 0, 'nothing stalled at the end')
})

t.test('a subscriber that never reads again is still cut, and its publisher goes on', async (t) => {
  const b = await broker(t, { max_pending: 1024 * KiB, write_deadline: 300 })
  const sub = await subscriber(t, b)
  const s = sessionOf(b, sub)!
  sub.pause()
  const pub = await natsClient(t, b.url)
  const payload = new Uint8Array(4 * KiB)
  for (let i = 0; i < 6000; i++) pub.publish('st', payload)
  void pub.flush().catch(() => {})
  for (let i = 0; i < 100 && b.srv.stall.size === 0; i++) await sleep(20)
  t.ok(b.srv.stall.size > 0, 'the publisher is stalled')
  t.ok(b.srv.sessions.has(s.cid), 'stalled, not cut')
  await sleep(350)
  b.srv.tick()
  t.notOk(b.srv.sessions.has(s.cid), 'cut once its write was blocked past write_deadline')
  t.equal(b.srv.counters.slow_consumers, 1, 'as a slow consumer')
  t.equal(b.srv.stall.size, 0, 'its queue is gone: the publisher is read again')
  await pub.flush()
  t.notOk(pub.isClosed(), 'the publisher is connected and answered')
})
