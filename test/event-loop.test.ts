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
