// Pausing a publisher's reads (src/pause.ts): holders count per wire, and each holder's
// Paused set pauses a wire once and lets go of all of its wires together.

import t from 'tap'
import type { Wire } from '../src/host.ts'
import { Paused, pauseWire, resumeWire } from '../src/pause.ts'

function wire(pausable = true): Wire & { paused: boolean; pauses: number; resumes: number } {
  const w = {
    paused: false,
    pauses: 0,
    resumes: 0,
    write: () => true,
    buffered: () => 0,
    end() {},
    destroy() {},
    remoteAddress: '127.0.0.1',
    remotePort: 1,
    ...(pausable
      ? {
          pause: () => void (w.pauses++, (w.paused = true)),
          resume: () => void (w.resumes++, (w.paused = false)),
        }
      : {}),
  }
  return w
}

t.test('pauses are counted per holder: the budget and an uplink stall share a wire', async (t) => {
  const w = wire()
  pauseWire(w)
  pauseWire(w)
  resumeWire(w)
  t.ok(w.paused, 'still held by the other')
  resumeWire(w)
  t.notOk(w.paused)
  t.equal(w.pauses, 1, 'the socket is paused once')
  t.equal(w.resumes, 1)
})

t.test('a Paused set pauses each wire once and releases them all', async (t) => {
  const p = new Paused()
  const a = wire()
  const b = wire()
  t.ok(p.add(a, 100))
  t.notOk(p.add(a, 150), 'already held by this holder')
  t.ok(p.add(b, 200))
  t.equal(p.size, 2)
  t.equal(p.since, 100, 'since the first of them')
  t.equal(a.pauses, 1)
  p.releaseAll()
  t.equal(p.size, 0)
  t.notOk(a.paused)
  t.notOk(b.paused)
  t.ok(p.add(a, 300))
  t.equal(p.since, 300, 'a new episode starts its own clock')
  p.releaseAll()
})

t.test('a Paused set skips what has no socket to pause', async (t) => {
  const p = new Paused()
  t.notOk(p.add(undefined, 1), 'no wire (sprig services, hub traffic)')
  t.notOk(p.add(wire(false), 1), 'a wire that cannot pause')
  t.equal(p.size, 0)
})

t.test('two holders: one letting go does not resume what the other holds', async (t) => {
  const budget = new Paused()
  const uplink = new Paused()
  const w = wire()
  budget.add(w)
  uplink.add(w)
  budget.releaseAll()
  t.ok(w.paused, 'the uplink still holds it')
  uplink.releaseAll()
  t.notOk(w.paused)
  t.equal(w.pauses, 1)
  t.equal(w.resumes, 1)
})
