// The fast-producer stall (src/stall.ts), driven with plain objects: a subscriber whose queue
// writes to a wire that can refuse, publishers whose wires record pause/resume, and a timer
// the test fires by hand.

import t from 'tap'
import type { Wire } from '../src/host.ts'
import { newMsg, type Msg } from '../src/msg.ts'
import { Outbound } from '../src/outbound.ts'
import { Router, type Owner, type Sub } from '../src/router.ts'
import { reloadStall, Stall, STALL_MS, stallMark } from '../src/stall.ts'
import { defaults } from '../src/options.ts'

interface TestWire extends Wire {
  accept: boolean
  held: number
  pauses: number
  resumes: number
  paused: boolean
}

function wire(): TestWire {
  const w: TestWire = {
    accept: true,
    held: 0,
    pauses: 0,
    resumes: 0,
    paused: false,
    write(d) {
      if (!w.accept) w.held += d.length
      return w.accept
    },
    buffered: () => w.held,
    end() {},
    destroy() {},
    pause: () => void (w.pauses++, (w.paused = true)),
    resume: () => void (w.resumes++, (w.paused = false)),
    remoteAddress: '127.0.0.1',
    remotePort: 1,
  }
  return w
}

interface Timers {
  every(ms: number, fn: () => void): { cancel(): void }
  live: { ms: number; fn: () => void; cancelled: boolean }[]
}

function timers(): Timers {
  const live: Timers['live'] = []
  return {
    live,
    every(ms, fn) {
      const e = { ms, fn, cancelled: false }
      live.push(e)
      return { cancel: () => void (e.cancelled = true) }
    },
  }
}

const LIMIT = 4000

/** A router with a stall; one subscriber on `s` whose deliveries go into `out`. */
/** The subscriber stops reading; pw's second publish finds its queue over the mark and stalls. */
function stallOne(r: Router, subWire: TestWire, flush: () => void, pw: ReturnType<typeof wire>): void {
  subWire.accept = false
  r.publish(msg(1000), publisher(pw))
  flush()
  r.publish(msg(2500), publisher(pw))
}

function setup(): { r: Router; st: Stall; tm: Timers; out: Outbound; subWire: TestWire; flush: () => void } {
  const tm = timers()
  const st = new Stall(tm)
  const r = new Router()
  r.stall = st
  const subWire = wire()
  const queued: Outbound[] = []
  const out = new Outbound(subWire, LIMIT, { schedule: (o) => void queued.push(o), budget: null, beforeFlush: null, stall: st })
  // As the adapters deliver: a queue that sheds (no_fast_producer_stall) takes nothing.
  const sub: Owner = {
    cid: 1,
    echo: true,
    deliver: (_s: Sub, m: Msg) => void (out.shedding() || out.push(m.payload)),
  }
  r.subscribe({ subject: 's', queue: null, owner: sub })
  const flush = (): void => {
    while (queued.length) queued.shift()!.flush(1)
  }
  return { r, st, tm, out, subWire, flush }
}

function msg(n: number): Msg {
  const m = newMsg()
  m.subject = 's'
  m.src = new Uint8Array(n)
  m.at = 0
  m.size = n
  m.view = null
  return m
}

function publisher(w: TestWire | undefined): Owner {
  return { cid: 2, echo: true, wire: w, deliver() {} }
}

t.test('a publish that leaves a blocked queue past 3/4 of its limit pauses the publisher until the queue drains', async (t) => {
  const { r, st, out, subWire, flush } = setup()
  const pw = wire()
  const from = publisher(pw)
  subWire.accept = false
  r.publish(msg(1000), from)
  flush() // the wire refuses: the queue is blocked, the socket holds 1000
  t.ok(out.blocked, 'the subscriber is not draining')
  r.publish(msg(1000), from)
  t.equal(pw.pauses, 0, `2000 pending of ${LIMIT}: under the mark (${stallMark(LIMIT)}), not paused`)
  r.publish(msg(1001), from)
  t.equal(pw.pauses, 1, '3001 pending: past the mark, the publisher is paused')
  t.equal(st.count, 1, 'counted')
  r.publish(msg(500), from) // a read already under way still delivers; no second pause
  t.equal(pw.pauses, 1, 'paused once per queue, however many publishes follow')
  t.ok(out.pending <= LIMIT, 'the queue stays within its limit')
  subWire.accept = true
  subWire.held = 0
  out.drained(2)
  t.equal(pw.resumes, 1, 'the queue drained: the publisher is read again')
  t.equal(st.size, 0, 'nothing stalled any more')
})

t.test('a stall runs out after STALL_MS, and ends when the queue is gone', async (t) => {
  const { r, st, tm, out, subWire, flush } = setup()
  const pw = wire()
  const pw2 = wire()
  stallOne(r, subWire, flush, pw)
  t.equal(pw.pauses, 1, 'paused')
  t.equal(tm.live.length, 1, 'one timer for the queue')
  t.equal(tm.live[0]!.ms, STALL_MS)
  tm.live[0]!.fn()
  t.equal(pw.resumes, 1, 'the timer resumes the publisher')
  t.ok(tm.live[0]!.cancelled, 'and is cancelled')
  t.equal(st.size, 0)

  // A second publisher, and the queue closes while both are paused.
  r.publish(msg(10), publisher(pw))
  r.publish(msg(10), publisher(pw2))
  t.equal(pw.pauses, 2, 'paused again: the queue is still past its mark')
  t.equal(pw2.pauses, 1, 'the second publisher too')
  out.closed()
  t.equal(pw.resumes, 2, 'queue closed: first publisher resumed')
  t.equal(pw2.resumes, 1, 'and the second')
  t.ok(tm.live[1]!.cancelled, 'its timer cancelled')
})

t.test('no stall while the queue drains, for a publisher without a socket, or from a stale mark', async (t) => {
  const { r, st, out, subWire, flush } = setup()
  const pw = wire()
  r.publish(msg(3500), publisher(pw))
  t.equal(pw.pauses, 0, 'past the mark but the socket takes everything: no stall')
  flush()
  subWire.accept = false
  r.publish(msg(1000), publisher(pw))
  flush()
  r.publish(msg(2500), null) // sprig's own publish (no owner)
  t.equal(st.size, 0, 'no publisher to pause')
  t.equal(st.hot, null, 'and the mark is cleared')
  r.publish(msg(10), publisher(undefined)) // the uplink's hub traffic: an owner without a socket
  t.equal(st.size, 0, 'an owner without a wire is not paused')
  // A queue past its mark by a write outside any publish (a protocol line): the next publish,
  // which does not reach it, must not pause its own publisher for it.
  out.push(new Uint8Array(10))
  t.equal(st.hot, out, 'the queue marked itself')
  const other = new Router()
  other.stall = st
  other.publish(msg(10), publisher(pw)) // no subscriber: reaches nothing
  t.equal(pw.pauses, 0, 'a publish that did not feed the queue is not paused')
})

t.test('no_fast_producer_stall: nobody is paused; messages for the crowded queue are dropped and counted', async (t) => {
  const { r, st, out, subWire, flush } = setup()
  st.off = true
  const pw = wire()
  const from = publisher(pw)
  r.publish(msg(3500), from)
  t.equal(st.drops, 0, 'past the mark but draining: delivered')
  flush()
  subWire.accept = false
  r.publish(msg(100), from)
  flush() // the socket holds 100: blocked, under the mark
  r.publish(msg(2000), from)
  t.equal(st.drops, 0, 'blocked, under the mark: delivered')
  t.equal(out.pending, 2100)
  r.publish(msg(1000), from)
  t.equal(out.pending, 3100, 'this one takes the queue past the mark: delivered')
  r.publish(msg(10), from)
  r.publish(msg(10), from)
  t.equal(st.drops, 2, 'past the mark and blocked: the next ones are dropped, counted')
  t.equal(out.pending, 3100, 'and not queued')
  t.equal(pw.pauses, 0, 'the publisher is never paused')
  t.equal(st.size, 0)
  subWire.accept = true
  subWire.held = 0
  out.drained(2)
  r.publish(msg(10), from)
  t.equal(st.drops, 2, 'drained: delivered again')
})

t.test('no_fast_producer_stall on reload: applied at once, stalled publishers are released', async (t) => {
  const { r, st, out, subWire, flush } = setup()
  const pw = wire()
  stallOne(r, subWire, flush, pw)
  t.equal(st.size, 1, 'stalled')
  const srv = { opts: { ...defaults }, stall: st }
  t.same(reloadStall(srv, { ...defaults })(), [], 'no change: nothing to say')
  t.same(reloadStall(srv, { ...defaults, no_fast_producer_stall: true })(), ['no_fast_producer_stall: true'])
  t.ok(st.off)
  t.ok(srv.opts.no_fast_producer_stall)
  t.equal(pw.resumes, 1, 'the stalled publisher is read again')
  t.equal(st.size, 0)
  r.publish(msg(10), publisher(pw))
  t.equal(pw.pauses, 1, 'not paused again')
  t.equal(st.drops, 1, 'the message is dropped instead')
  t.ok(out.pending <= LIMIT)
  t.same(reloadStall(srv, { ...defaults, no_fast_producer_stall: false })(), ['no_fast_producer_stall: false'])
  t.notOk(st.off, 'and back')
})
