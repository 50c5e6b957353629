// targets/runtime.ts afterAccept and afterClose: after a burst of accepts or closes Bun is asked
// for a full collection (every half second while it lasts), and once it is over and the
// process has stayed quiet for half a second, for Bun.shrink() (compiled code dropped, free memory
// returned). Never while accepts go on, never when the process is busy (waited for up to 5 s)
// or went busy within half a second of the burst's end, never for a trickle (which is only
// collected, every 100). A stand-in Bun records the calls.

import t from 'tap'
import { afterAccept, afterClose, onQuietBurstEnd } from '../targets/runtime.ts'

const calls: string[] = []
const g = globalThis as { Bun?: unknown }
const hadBun = 'Bun' in g
const realBun = g.Bun
g.Bun = { gc: () => void calls.push('gc'), shrink: () => void calls.push('shrink') }
onQuietBurstEnd(() => void calls.push('hook'))
t.teardown(() => {
  onQuietBurstEnd(null)
  if (hadBun) g.Bun = realBun
  else delete g.Bun
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
const accepts = (n: number): void => {
  for (let i = 0; i < n; i++) afterAccept()
}
/** Waits (up to 4 s) for the collection, the shrink and the hook; returns how long it took. */
async function untilShrunk(): Promise<number> {
  const start = Date.now()
  while (calls.length < 3 && Date.now() - start < 4000) await sleep(20)
  return Date.now() - start
}
/** Keeps this process busy for ms (the checks read its CPU time). */
function burn(ms: number): void {
  const end = Date.now() + ms
  while (Date.now() < end);
}

t.test('a trickle gets nothing; once it adds up to 100 accepts, a collection and no shrink', async (t) => {
  calls.length = 0
  accepts(50)
  await sleep(2200)
  t.same(calls, [])
  accepts(50) // 100 in all, over more than 2 s
  await sleep(1500)
  t.same(calls, ['gc'], 'collected, not shrunk (and no hook)')
})

t.test('a burst: a collection, then once it is over and quiet, a shrink', async (t) => {
  calls.length = 0
  accepts(100)
  const took = await untilShrunk()
  t.same(calls, ['gc', 'shrink', 'hook'], 'collected, then shrunk and the hook (the page-out) run once accepts stopped')
  t.ok(took >= 1000, 'not before the burst was over and the process quiet for half a second')
  await sleep(1000)
  t.same(calls, ['gc', 'shrink', 'hook'], 'once')
})

t.test('a burst after a few accepts long before is still a burst', async (t) => {
  calls.length = 0
  accepts(5) // a device or two reconnecting, earlier
  await sleep(2200)
  t.same(calls, [])
  accepts(150)
  await untilShrunk()
  t.same(calls, ['gc', 'shrink', 'hook'], 'collected, shrunk: the old accepts did not make it a trickle')
})

t.test('no shrink while accepts go on', async (t) => {
  calls.length = 0
  accepts(150)
  // A trickle after the burst keeps it going: every 50 ms for 1.2 s.
  for (let i = 0; i < 24; i++) {
    await sleep(50)
    afterAccept()
  }
  t.notOk(calls.includes('shrink'), `not while accepting: ${calls.join(',')}`)
  await sleep(2200)
  t.equal(calls.filter((c) => c === 'shrink').length, 1, 'shrunk after the last accept')
  t.equal(calls.filter((c) => c === 'hook').length, 1, 'and the hook run once')
})

/** Busy for ms (under load, as with message traffic), timers still running between slices. */
async function busy(ms: number): Promise<void> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    burn(40)
    await sleep(1)
  }
}

/** A burst of 150 accepts, then (after a pause) a process busy for busyMs. */
async function burstThenBusy(pauseMs: number, busyMs: number): Promise<void> {
  calls.length = 0
  accepts(150)
  await sleep(pauseMs)
  await busy(busyMs)
}

t.test('a process busy for a while after the burst is shrunk once it goes quiet', async (t) => {
  await burstThenBusy(0, 1200) // the new clients subscribing and sending their first messages
  t.same(calls, ['gc'], 'not while busy')
  await sleep(1700)
  t.same(calls, ['gc', 'shrink', 'hook'], 'then shrunk, once')
})

t.test('a fleet that waits a moment after connecting before its load starts is not shrunk then', async (t) => {
  // The burst is collected at 500 ms and is over; the check at 750 ms finds the process
  // quiet (where a shrink used to come); its load starts at 800 ms, before half a second of quiet.
  await burstThenBusy(800, 1500)
  t.same(calls, ['gc'], 'not shrunk in the pause before the load, nor under it')
  await sleep(1700)
  t.same(calls, ['gc', 'shrink', 'hook'], 'shrunk once the load stopped and the process stayed quiet')
})

t.test('a burst of closes is collected and shrunk as one of accepts is', async (t) => {
  calls.length = 0
  for (let i = 0; i < 150; i++) afterClose()
  await untilShrunk()
  t.same(calls, ['gc', 'shrink', 'hook'])
})

t.test('a process busy for 5 s after the burst is not shrunk', async (t) => {
  await burstThenBusy(0, 5500)
  await sleep(800)
  t.same(calls, ['gc'], 'collected, not shrunk (and no hook): it has load')
})
