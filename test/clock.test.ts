// Deadlines run on the monotonic clock (issue 9, point 12): a wall-clock jump (NTP step, an
// operator setting the date) must not fire pings, timeouts or expiries early, nor hold them
// back. Only the times monitoring shows follow the wall clock.

import t, { type Test } from 'tap'
import net from 'node:net'
import { standardHost } from '../targets/runtime.ts'
import { startBroker } from './helpers/broker.ts'
import { monitorRequest } from '../src/monitor.ts'

const HOUR = 3_600_000

/** Moves Date.now() (the wall clock) by `ms` until the test ends. */
function jumpWallClock(t: Test, ms: number): void {
  const real = Date.now
  Date.now = () => real() + ms
  t.teardown(() => {
    Date.now = real
  })
}

t.test('standardHost.now() does not follow the wall clock; wall() does', async (t) => {
  const before = standardHost.now()
  jumpWallClock(t, 10 * HOUR)
  const after = standardHost.now()
  t.ok(after - before >= 0 && after - before < 1000, `now() moved ${after - before} ms`)
  t.ok(Math.abs(standardHost.wall!() - (after + 10 * HOUR)) < 60_000, 'wall() shows the jump')
})

t.test('a forward jump fires no ping; /varz shows the wall clock', async (t) => {
  const b = await startBroker({ ping_interval: 60_000 })
  t.teardown(() => b.stop())
  const s = net.connect(b.port, '127.0.0.1')
  t.teardown(() => s.destroy())
  let got = ''
  s.on('data', (d) => (got += d.toString()))
  await new Promise((r) => s.once('data', r))
  s.write('CONNECT {"verbose":false}\r\n')
  await new Promise((r) => setTimeout(r, 50))
  got = ''
  const shown = (): number => Date.parse((monitorRequest(b.srv, '/varz', new Map(), { mem: 0, cores: 1 }).body as { now: string }).now)
  const before = shown()
  jumpWallClock(t, 2 * HOUR)
  b.srv.tick()
  b.srv.tick()
  await new Promise((r) => setTimeout(r, 100))
  t.equal(got, '', 'no PING (the ping interval counts monotonic time)')
  t.equal(b.srv.sessions.size, 1, 'the client is still connected')
  t.ok(shown() - before >= 2 * HOUR - 1000, '/varz now follows the wall clock')
})
