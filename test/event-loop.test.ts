// /varz reports event-loop lag (targets/lag.ts): a loop blocked for 150 ms shows up in
// sprig.event_loop, and an idle one stays near zero.

import t from 'tap'
import { varz } from '../src/monitor.ts'
import { startBroker } from './helpers/broker.ts'

t.test('sprig.event_loop in /varz', async (t) => {
  const b = await startBroker()
  t.teardown(() => b.stop())
  await new Promise((r) => setTimeout(r, 300))
  const el = () => (varz(b.srv, { mem: 0, cores: 1 }).sprig as { event_loop: Record<string, number> }).event_loop
  const idle = el()
  t.ok(idle.window_ms > 0, 'samples are taken')
  t.ok(idle.lag_max_since_start_ms < 100, `idle: worst lag ${idle.lag_max_since_start_ms} ms`)
  const until = Date.now() + 150
  while (Date.now() < until) {
    // block the loop
  }
  await new Promise((r) => setTimeout(r, 100))
  const busy = el()
  t.ok(busy.lag_max_ms >= 120, `a 150 ms block is seen: max ${busy.lag_max_ms} ms`)
  t.ok(busy.lag_max_since_start_ms >= 120, 'and kept as the worst since start')
})

t.test('the sampler slows down while no message flows and speeds up when one does', async (t) => {
  const { watchEventLoop } = await import('../targets/lag.ts')
  const net = await import('node:net')
  const b = await startBroker()
  // A second watcher on the same server with short settings; it replaces the broker's entry.
  const w = watchEventLoop(b.srv, { fastMs: 20, slowMs: 300, idleAfterMs: 1000 })
  t.teardown(async () => {
    w.stop()
    await b.stop()
  })
  const el = () => b.srv.status.get('event_loop')!() as Record<string, number>
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
  t.equal(el().sample_ms, 20, 'fast at start')
  await sleep(1500)
  t.equal(el().sample_ms, 300, 'slow once nothing flowed for idleAfterMs')
  const slowWindow = el().window_ms
  t.ok(slowWindow >= 1200 && slowWindow <= 60_000, `window_ms covers the samples taken: ${slowWindow}`)
  // One real publish (nobody subscribed: still counted in in_msgs).
  const port = Number(new URL(b.url).port)
  const s = net.connect(port, '127.0.0.1')
  t.teardown(() => s.destroy())
  await new Promise((r) => s.once('connect', r))
  s.write('CONNECT {"verbose":false}\r\nPUB lag.test 1\r\na\r\nPING\r\n')
  // Fast again at the next slow sample, and for idleAfterMs after it.
  const deadline = Date.now() + 900
  while (el().sample_ms !== 20 && Date.now() < deadline) await sleep(20)
  t.equal(el().sample_ms, 20, 'fast again after a message (within one slow interval)')
  // While fast, a 60 ms block is seen (at the slow interval it would be seen ~1 time in 5).
  const until = Date.now() + 60
  while (Date.now() < until) {
    // block the loop
  }
  await sleep(50)
  t.ok(el().lag_max_ms >= 40, `a 60 ms block is seen: max ${el().lag_max_ms} ms`)
})
