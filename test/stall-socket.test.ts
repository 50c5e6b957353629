// The fast-producer stall over real sockets: a subscriber that stops reading for a while is
// not cut as a slow consumer; its publisher is paused instead, as nats-server does. One that
// never reads again is still cut (write_deadline), and its publisher goes on. With
// no_fast_producer_stall the publisher goes on and the subscriber loses messages instead.

import t, { type Test } from 'tap'
import type { NatsClient } from '../adapters/nats/client.ts'
import type { Packet } from 'mqtt-packet'
import { natsClient, RawMqtt } from './helpers/mqtt.ts'
import { restartNeeded } from '../src/options.ts'
import { startBroker, type TestBroker, type TestOptions } from './helpers/broker.ts'
import { RawConn, sleep } from './helpers/rawconn.ts'

const KiB = 1024

async function broker(t: Test, over: TestOptions): Promise<TestBroker> {
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

t.test('no_fast_producer_stall: the publisher is not paused; the crowded subscriber loses messages, counted, and stays', async (t) => {
  const b = await broker(t, { max_pending: 1024 * KiB, write_deadline: 30_000, no_fast_producer_stall: true, http_port: -1 })
  const sub = await subscriber(t, b)
  const got = frames(sub, 'st', 4 * KiB)
  sub.pause()
  const pub = await natsClient(t, b.url)
  const n = 6000
  const payload = new Uint8Array(4 * KiB)
  for (let i = 0; i < n; i++) pub.publish('st', payload)
  await pub.flush() // answered while the subscriber still reads nothing: nobody waited for it
  t.equal(b.srv.stall.count, 0, 'no publisher was paused')
  t.ok(b.srv.stall.drops > 0, `messages were dropped for the subscriber (${b.srv.stall.drops})`)
  t.equal(b.srv.counters.slow_consumers, 0, 'the subscriber was not cut')
  sub.resume()
  await sub.until(() => got() + b.srv.stall.drops >= n, 20_000, 'what was not dropped')
  t.equal(got() + b.srv.stall.drops, n, 'every message was delivered or counted as dropped')
  pub.publish('st', payload)
  await pub.flush()
  await sub.until(() => got() + b.srv.stall.drops > n, 5000, 'one more')
  t.equal(got() + b.srv.stall.drops, n + 1, 'drained: delivered again')
  const v = (await (await fetch(`http://127.0.0.1:${b.httpPort}/varz`)).json()) as { sprig: { stall_drops: number } }
  t.equal(v.sprig.stall_drops, b.srv.stall.drops, '/varz shows the drops')
})

t.test('no_fast_producer_stall over MQTT: QoS 0 for a crowded device is dropped, the device stays', async (t) => {
  const b = await broker(t, { max_pending: 1024 * KiB, write_deadline: 30_000, no_fast_producer_stall: true, mqtt: true })
  const dev = await RawMqtt.connect(Number(new URL(b.mqttUrl).port))
  t.teardown(() => dev.close())
  dev.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'st', qos: 0 }] } as Packet)
  t.ok(await dev.next('suback'))
  dev.sock.pause()
  const pub = await natsClient(t, b.url)
  const n = 6000
  const payload = new Uint8Array(4 * KiB)
  for (let i = 0; i < n; i++) pub.publish('st', payload)
  await pub.flush()
  t.equal(b.srv.stall.count, 0, 'no publisher was paused')
  t.ok(b.srv.stall.drops > 0, `QoS 0 messages were dropped for the device (${b.srv.stall.drops})`)
  dev.sock.resume()
  const got = (): number => dev.packets.filter((p) => p.cmd === 'publish').length
  await dev.until(() => got() + b.srv.stall.drops >= n, 20_000)
  t.equal(got() + b.srv.stall.drops, n, 'every message was delivered or counted as dropped')
  t.notOk(dev.closed, 'the device is still connected')
  t.equal(b.srv.counters.slow_consumers, 0)
})

t.test('SIGHUP reload applies no_fast_producer_stall at once, with the other reloadable options', async (t) => {
  const b = await broker(t, {})
  t.equal(restartNeeded(b.srv.opts, { ...b.srv.opts, no_fast_producer_stall: true }), null, 'no restart needed')
  const changed = b.reloaders.map((f) => f({ ...b.srv.opts, no_fast_producer_stall: true })).flatMap((apply) => apply())
  t.same(changed, ['no_fast_producer_stall: true'])
  t.ok(b.srv.stall.off, 'the stall is off')
  t.ok(b.srv.opts.no_fast_producer_stall)
})
