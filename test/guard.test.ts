// An exception in adapter or core code (a bug of ours) must be logged and close only the
// connection it happened on; timers and deferred work keep running (issue 9, point 3).
// The exceptions are provoked by wrapping core functions in the running broker.

import t from 'tap'
import net from 'node:net'
import { startBroker } from './helpers/broker.ts'
import { mqttClient, natsClient, sleep } from './helpers/mqtt.ts'
import { exchange } from './helpers/raw.ts'
import { monitorRequest } from '../src/monitor.ts'

const varzInternal = (b: Awaited<ReturnType<typeof startBroker>>): number =>
  ((monitorRequest(b.srv, '/varz', new Map(), { mem: 0, cores: 1 }).body as { sprig: { internal_errors: number } }).sprig.internal_errors)

t.test('an exception while handling one client closes only that client', async (t) => {
  const b = await startBroker()
  t.teardown(() => b.stop())
  const router = b.srv.router
  const publish = router.publish.bind(router)
  router.publish = ((m: { subject: string }, from: unknown) => {
    if (m.subject === 'boom') throw new Error('injected failure')
    return publish(m as never, from as never)
  }) as typeof router.publish
  const before = varzInternal(b)

  const other = await natsClient(t, b.url)
  const got: string[] = []
  other.subscribe('ok', { callback: (_e, m) => void got.push(m.string()) })
  // Someone must hear 'boom': a publish nobody receives never reaches router.publish.
  other.subscribe('boom', { callback: () => {} })
  await other.flush()

  const r = await exchange(b.port, 'CONNECT {"verbose":false}\r\nPUB boom 1\r\nx\r\nPING\r\n', 300)
  t.ok(r.closed, 'the client whose input hit the bug is closed')
  t.notMatch(r.out, /PONG/, 'nothing after the failure is processed')
  const line = b.logs.find((l) => l.includes('internal error in data'))
  t.ok(line, 'logged')
  t.match(line, /\[ERR\] 127\.0\.0\.1:\d+ - internal error in data: Error: injected failure/, 'with the peer and the message')
  t.ok(b.logs.some((l) => /\[DBG\] 127\.0\.0\.1:\d+ - Error: injected failure\\n\s*at /.test(l)), 'the stack at debug')
  t.equal(varzInternal(b), before + 1, 'counted in /varz sprig.internal_errors')

  other.publish('ok', 'still here')
  await other.flush()
  await sleep(50)
  t.same(got, ['still here'], 'other clients are unaffected')
  const again = await exchange(b.port, 'CONNECT {"verbose":false}\r\nPING\r\n', 200)
  t.match(again.out, /PONG/, 'new clients get in')
})

t.test('an exception in a timer or deferred work is logged, and ticking goes on', async (t) => {
  const b = await startBroker()
  t.teardown(() => b.stop())
  let ticks = 0
  b.srv.onTick(() => {
    ticks++
    throw new Error('tick failure')
  })
  b.srv.host.defer(() => {
    throw new Error('deferred failure')
  })
  await sleep(2300)
  t.ok(ticks >= 2, `the timer kept running (${ticks} ticks)`)
  t.ok(b.logs.some((l) => l.includes('[ERR] server - internal error in timer: Error: tick failure')), 'timer exception logged')
  t.ok(b.logs.some((l) => l.includes('[ERR] server - internal error in deferred work: Error: deferred failure')), 'deferred exception logged')
  const s = net.connect(b.port, '127.0.0.1')
  t.teardown(() => s.destroy())
  await new Promise((r) => s.once('data', r))
  t.pass('still accepting')
})

t.test("the issue's MQTT wills that threw on close (QoS 3, a property past the packet): no crash", async (t) => {
  const b = await startBroker({ mqtt: true })
  t.teardown(() => b.stop())
  const sub = await mqttClient(t, b.mqttUrl)
  await sub.subscribeAsync('w/#')
  for (const hex of ['101500044d515454041e003c0001770003772f74000178', '101a00044d5154540506003c00000163030300400003772f74000178']) {
    const s = net.connect(b.mqttPort, '127.0.0.1')
    s.on('error', () => {})
    s.write(Buffer.from(hex, 'hex'))
    await sleep(200)
    s.destroy() // abrupt close: the will is due
    await sleep(200)
  }
  // Whether the adapter refuses these wills or a bug throws, the broker goes on.
  t.ok(b.srv.running, 'still running')
  t.ok(sub.connected, 'the subscriber is unaffected')
  const again = await exchange(b.port, 'CONNECT {"verbose":false}\r\nPING\r\n', 200)
  t.match(again.out, /PONG/, 'new clients get in')
})

t.test('guardHost.defer: the guard made once for a function deferred again still runs the right one and logs its throw', async (t) => {
  const { guardHost } = await import('../targets/runtime.ts')
  const errors: string[] = []
  const log = { warn() {}, info() {}, debug() {}, error: (m: string) => void errors.push(m) } as unknown as Parameters<typeof guardHost>[1]
  const queued: (() => void)[] = []
  const g = guardHost({ now: () => 0, defer: (fn) => void queued.push(fn), every: () => ({ cancel() {} }) }, log)
  const ran: string[] = []
  const a = (): void => void ran.push('a')
  const b = (): void => {
    ran.push('b')
    throw new Error('boom')
  }
  g.defer(a)
  g.defer(a)
  g.defer(b)
  g.defer(a)
  t.equal(queued[0], queued[1], 'the same function deferred twice in a row: one guard')
  for (const fn of queued) fn()
  t.same(ran, ['a', 'a', 'b', 'a'])
  t.equal(errors.length, 1, 'the throw is logged, and the next deferred work still runs')
  t.match(errors[0], /internal error in deferred work: Error: boom/)
})
