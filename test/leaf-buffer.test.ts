// The store-and-forward buffer on its own: order, both bounds, both drop policies, counts.

import t from 'tap'
import { Budget } from '../src/budget.ts'
import { StoreBuffer } from '../src/leaf/buffer.ts'
import { frameEnd, frameEnds, frameSize, frameSubject } from '../src/leaf/frames.ts'
import { newMsg, type Msg } from '../src/msg.ts'

const enc = new TextEncoder()
function msg(subject: string, payload: string): Msg {
  const m = newMsg()
  m.subject = subject
  m.subjectBytes = enc.encode(subject)
  m.payload = enc.encode(payload)
  return m
}
const drain = (b: StoreBuffer): string[] => {
  const out: string[] = []
  for (let s = b.shift(); s; s = b.shift()) out.push(new TextDecoder().decode(s.payload))
  return out
}

t.test('keeps order and copies (the router reuses message objects)', async (t) => {
  const b = new StoreBuffer(10, 1000, false)
  const m = msg('a', 'x')
  b.push(m)
  m.payload[0] = 0x79 // 'y': the caller reuses its buffer
  b.push(msg('a', 'z'))
  t.same(drain(b), ['x', 'z'])
  t.equal(b.bytes, 0)
})

t.test('drop_oldest: over the count, the oldest go, counted', async (t) => {
  const b = new StoreBuffer(3, 1000, false)
  for (let i = 0; i < 5; i++) b.push(msg('a', String(i)))
  t.equal(b.dropped, 2)
  t.same(drain(b), ['2', '3', '4'])
})

t.test('drop_newest: over the bytes, the new ones go, counted', async (t) => {
  const b = new StoreBuffer(100, 4 * 2, true) // subject "a" + 1-byte payload = 2 bytes each
  for (let i = 0; i < 6; i++) b.push(msg('a', String(i)))
  t.equal(b.dropped, 2)
  t.same(drain(b), ['0', '1', '2', '3'])
})

t.test('a message bigger than the whole byte bound is dropped, nothing else is', async (t) => {
  const b = new StoreBuffer(100, 10, false)
  b.push(msg('a', '1'))
  t.equal(b.push(msg('a', 'x'.repeat(20))), false)
  t.equal(b.dropped, 1)
  t.same(drain(b), ['1'])
})

t.test('long runs stay compact (memory follows the length)', async (t) => {
  const b = new StoreBuffer(1_000_000, 1 << 30, false)
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 5000; i++) b.push(msg('a', String(i)))
    for (let i = 0; i < 4990; i++) b.shift()
  }
  t.equal(b.length, 30)
  const lane = (b as unknown as { cur: { meta: Float64Array } }).cur
  t.ok(lane.meta.length / 8 <= 8192 && b.storage < 64 * 1024, 'storage follows the most held at once, not the total')
})

t.test('the bytes held take about their size in memory: blocks, never a doubled copy', async (t) => {
  const b = new StoreBuffer(1_000_000, 1 << 30, false)
  const payload = 'p'.repeat(1000)
  for (let i = 0; i < 20_000; i++) b.push(msg('sensors.t1.temp', payload))
  // The blocks hold payloads (and headers); subjects are kept as strings beside them.
  let held = 20_000 * 1000
  const slack = 2 * 256 * 1024 + Math.ceil(held / (256 * 1024)) * 1100
  t.ok(b.storage >= held, `storage ${b.storage} holds the ${held} payload bytes`)
  t.ok(b.storage <= held + slack, `storage ${b.storage} within ${slack} of the ${held} payload bytes held`)
  const peak = b.storage
  // Half confirmed (the oldest): their blocks become spares, for the next ones.
  for (let i = 0; i < 10_000; i++) b.shift()
  held = 10_000 * 1000
  t.ok(b.storage <= peak, `after the oldest half left: ${b.storage}, never more than the most held (${peak})`)
  b.trim()
  t.ok(b.storage > held + slack, 'the spares stay through the interval they were freed in')
  b.trim()
  t.ok(b.storage <= held + slack, `an interval without taking any: they go (${b.storage} for ${held})`)
  t.same(drain(b).length, 10_000, 'the rest, in order and whole')
  // A steady flow afterwards (housekeeping every 5 MB): a message in, a message out, for 50 MB: three blocks at most.
  for (let i = 0; i < 50_000; i++) {
    b.push(msg('sensors.t1.temp', payload))
    const s = b.shift()!
    if (s.payload.length !== 1000 || s.payload[999] !== 0x70) t.fail(`message ${i} came back altered`)
    if (i % 5000 === 4999) b.trim()
  }
  t.ok(b.storage <= 3 * 256 * 1024, `a steady flow holds ${b.storage} bytes of storage`)
  b.trim()
  b.trim()
  t.equal(b.storage, 0, 'an idle, empty buffer keeps no storage after trim()')
  b.push(msg('a', 'x'))
  t.same(drain(b), ['x'], 'and takes messages again')
})

t.test('spare blocks: a burst after a confirmation reuses the freed blocks; unused ones go', async (t) => {
  const budget = new Budget(1 << 30, { now: () => 0, defer: () => {}, log: { warn: () => {}, info: () => {} }, candidates: () => [] })
  const b = new StoreBuffer(1_000_000, 1 << 30, false, budget)
  const payload = 'p'.repeat(1000)
  const block = 256 * 1024
  const burst = (): void => {
    for (let i = 0; i < 8000; i++) b.push(msg('a', payload)) // ~31 blocks
    for (let i = 0; i < 8000; i++) b.shift()
  }
  burst()
  const after = b.storage
  t.ok(after >= 28 * block, `the freed blocks are kept (${after})`)
  for (let round = 0; round < 3; round++) {
    burst()
    b.trim()
    // One more: the first burst's first 256 KiB went into small blocks, which are not kept.
    t.ok(b.storage <= after + block, `burst ${round + 2} takes the spares, no new blocks (${b.storage})`)
  }
  // A trickle: a few spares are enough; the rest go at the next trim, all of them at the one after.
  b.push(msg('a', 'x'))
  b.shift()
  b.trim()
  t.ok(b.storage < after, `a trickle keeps only what it dipped into (${b.storage})`)
  b.trim()
  t.ok(b.storage <= block, `nothing taken for an interval: none kept (${b.storage})`)
  burst()
  b.push(msg('a', 'y')) // held while the budget fills up
  budget.charge(budget.high + 1) // someone else fills the budget
  b.trim()
  t.ok(b.storage <= 2 * block, `the budget full: the spares go at once (${b.storage})`)
  t.same(drain(b), ['y'])
})

t.test('a message larger than a block gets a block of its own, and order holds around it', async (t) => {
  const b = new StoreBuffer(100, 1 << 30, false)
  b.push(msg('a', 's1'))
  b.push(msg('a', 'L'.repeat(600_000)))
  b.push(msg('a', 's2'))
  const got = drain(b)
  t.same([got[0], got[1]!.length, got[1]![599_999], got[2]], ['s1', 600_000, 'L', 's2'])
})

t.test('at least once: sent messages stay until confirmed; a lost link sends them again', async (t) => {
  const b = new StoreBuffer(10, 1000, false)
  for (const p of ['1', '2', '3']) b.push(msg('a', p))
  const sent: string[] = []
  const send = (n: number): void => {
    for (let i = 0; i < n; i++) {
      sent.push(new TextDecoder().decode(b.peek()!.payload))
      b.advance()
    }
  }
  send(2)
  t.equal(b.unsent, 1)
  t.equal(b.length, 3, 'unconfirmed messages are still held')
  const mark = b.mark()
  send(1)
  b.confirm(mark)
  t.equal(b.length, 1, 'the confirmed two are gone, the third waits for its PONG')
  t.equal(b.rewind(), 1)
  t.equal(b.resent, 1)
  send(1)
  t.same(sent, ['1', '2', '3', '3'], 'only the unconfirmed one is sent again')
  b.confirm(b.mark())
  t.equal(b.length, 0)
  t.equal(b.bytes, 0)
  t.equal(b.mark(), -1)
})

t.test('drop_oldest may drop an unconfirmed message; the cursor stays valid', async (t) => {
  const b = new StoreBuffer(2, 1000, false)
  b.push(msg('a', '1'))
  b.advance()
  b.push(msg('a', '2'))
  b.push(msg('a', '3')) // drops 1 (sent, unconfirmed)
  t.equal(b.dropped, 1)
  t.equal(b.unsent, 2)
  t.equal(new TextDecoder().decode(b.peek()!.payload), '2')
})

const text = (s: { payload: Uint8Array } | undefined): string => (s ? new TextDecoder().decode(s.payload) : '')
/** An LMSG frame as the link writes it. */
const lmsg = (subject: string, payload: string, reply = ''): string => `LMSG ${subject}${reply ? ' ' + reply : ''} ${enc.encode(payload).length}\r\n${payload}\r\n`
const run = (...fs: string[]): Uint8Array => enc.encode(fs.join(''))
/** One message sent straight to the hub, as the link hands it over: its frame. */
const straight = (b: StoreBuffer, subject: string, payload: string): void => b.pushFrames(run(lmsg(subject, payload)), 1)
/** A held message's payload (a kept frame's, for a frame). */
const body = (s: { payload: Uint8Array; frames?: number } | undefined): string => {
  const x = text(s)
  return s?.frames === undefined ? x : x.slice(x.indexOf('\r\n') + 2, -2)
}

t.test('sent messages: kept unconfirmed until the PONG; a lost link sends them again', async (t) => {
  const b = new StoreBuffer(10, 1000, false)
  straight(b, 'a', '1')
  straight(b, 'a', '2')
  t.equal(b.length, 2)
  t.equal(b.unsent, 0)
  const mark = b.mark()
  straight(b, 'a', '3')
  b.confirm(mark)
  t.equal(b.length, 1, 'the two before the PING are confirmed')
  t.equal(b.rewind(), 1)
  t.equal(b.resent, 1)
  t.equal(body(b.peek()), '3', 'the unconfirmed one goes again')
  t.equal(b.peek()!.subject, 'a', 'with its hub subject')
  b.rewind()
  t.equal(b.resent, 1, 'nothing sent since: nothing more to resend')
  const c = new StoreBuffer(10, 1000, false)
  const f = run(lmsg('a', '1'))
  c.pushFrames(f, 1)
  f[f.length - 3] = 0x39 // the link reuses its buffer: the copy stays '1'
  c.rewind()
  t.equal(body(c.peek()), '1', 'a copy, not a view of the link\'s buffer')
})

t.test('a sent message never displaces an unsent one; drop_oldest evicts older sent ones', async (t) => {
  const b = new StoreBuffer(3, 1000, false)
  b.push(msg('a', 'u1'))
  b.push(msg('a', 'u2'))
  b.startReplay() // the link is up: u1, u2 are the backlog; new messages go ahead of it
  straight(b, 'a', 's1') // fits
  t.equal(b.length, 3)
  b.advance() // u1 sent
  straight(b, 'a', 's2') // full: evicts u1 (sent), never u2
  t.equal(b.dropped, 0)
  t.equal(b.unkept, 0)
  t.equal(b.unsent, 1)
  t.equal(text(b.peek()), 'u2')
  straight(b, 'a', 's3') // full: the oldest sent (s1) goes
  straight(b, 'a', 's4')
  t.equal(b.length, 3)
  t.equal(text(b.peek()), 'u2', 'the unsent one stays')
  const n = new StoreBuffer(2, 1000, true)
  n.push(msg('a', 'u1'))
  n.startReplay()
  straight(n, 'a', 's1')
  straight(n, 'a', 's2') // drop_newest: not kept
  t.equal(n.unkept, 1)
  t.equal(n.dropped, 0)
  t.equal(n.length, 2)
})

t.test('lanes: the backlog and newer messages each in order; confirmation out of order frees both', async (t) => {
  const b = new StoreBuffer(100, 10_000, false)
  for (let i = 0; i < 5; i++) b.push(msg('a', `b${i}`))
  b.startReplay() // the link is up: those five are the backlog
  t.equal(b.liveUnsent, 0)
  const sent: string[] = []
  b.advance() // b0
  sent.push('b0')
  straight(b, 'a', 'l0') // went ahead of the backlog
  b.push(msg('a', 'l1')) // link full: queued in the live lane
  t.equal(b.liveUnsent, 1)
  t.equal(text(b.peekLive()), 'l1')
  b.advanceLive()
  sent.push('l1')
  const mark = b.mark()
  t.equal(text(b.peek()), 'b1', 'plain order resumes with the backlog')
  b.advance()
  b.confirm(mark)
  t.equal(b.length, 4, 'b0, l0 and l1 confirmed; b1 is not')
  t.equal(b.rewind(), 1)
  b.push(msg('a', 'd0')) // while down
  b.startReplay()
  const rest: string[] = []
  for (let s = b.peek(); s; s = b.peek()) {
    rest.push(text(s))
    b.advance()
  }
  t.same(rest, ['b1', 'b2', 'b3', 'b4', 'd0'], 'the next backlog, in order')
  b.confirm(b.mark())
  t.equal(b.length, 0)
  t.equal(b.bytes, 0)
})

t.test('the byte ring keeps every held message intact through wraps, growth and drops (random ops vs a model)', async (t) => {
  let seed = 42
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  const b = new StoreBuffer(300, 20_000, false)
  // The model: every held payload, oldest first (the buffer must hold exactly these, in seq order per lane).
  const made = new Map<number, string>()
  let n = 0
  let bad = 0
  for (let step = 0; step < 20_000; step++) {
    const op = rnd(10)
    const body = `${n}:` + 'x'.repeat(rnd(200))
    if (op < 4) {
      if (b.push(msg('s', body))) made.set(b.last, body)
      n++
    } else if (op < 6 && b.liveUnsent === 0) {
      if (rnd(2) === 0) {
        const f = lmsg(`s.${n++}`, body)
        const last = b.last
        b.pushFrames(enc.encode(f), 1)
        if (b.last > last) made.set(b.last, f)
      } else {
        // A run of frames as the link keeps them; kept ones come back one frame each.
        const k = 1 + rnd(6)
        const fs: string[] = []
        for (let j = 0; j < k; j++) fs.push(lmsg(`s.${n++}`, body))
        const last = b.last
        b.pushFrames(enc.encode(fs.join('')), k)
        const kept = b.last - last
        // The newest frames that fit are kept (drop_oldest).
        for (let j = 0; j < kept; j++) made.set(last + 1 + j, fs[k - kept + j]!)
      }
    } else if (op < 8) {
      const s = b.peek()
      if (s !== undefined && made.get(s.seq) !== text(s)) bad++
      if (s?.frames !== undefined && !text(s).startsWith(`LMSG ${s.subject} `)) bad++ // its hub subject
      b.advance()
    } else if (op === 8) b.confirm(b.mark())
    else if (rnd(4) === 0) {
      b.rewind()
      b.startReplay()
    }
  }
  // Whatever is still held reads back as it was pushed.
  b.rewind()
  for (let s = b.peek(); s !== undefined; s = b.peek()) {
    if (made.get(s.seq) !== text(s)) bad++
    b.advance()
  }
  t.equal(bad, 0, 'no held message came back damaged')
  t.ok(b.bytes <= 20_000 && b.length <= 300, 'within the bounds')
})

t.test('frames: sizes, ends and subjects of the frames the link writes', async (t) => {
  const b = run(lmsg('a.b', 'hello'), 'HMSG c 12 14\r\nNATS/1.0\r\n\r\nhi\r\n', lmsg('q', 'x', 'r.1'), 'LMSG d + r.2 g1 g2 3\r\nabc\r\n', 'LMSG e | g1 0\r\n\r\n')
  t.equal(frameSize(b, 0), 5)
  const ends = frameEnds(b)
  t.equal(ends.length, 5)
  t.equal(ends[4], b.length, 'every byte is in a frame')
  t.equal(frameSize(b, ends[0]!), 14, 'HMSG: headers and payload')
  t.same(
    [0, ...ends.slice(0, 4)].map((p) => frameSubject(b, p)),
    ['a.b', 'c', 'q', 'd', 'e'],
  )
  t.equal(frameEnd(b.subarray(0, b.length - 1), ends[3]!), -1, 'a frame cut short has no end')
  t.same(frameEnds(b.subarray(0, ends[1]! + 4)), ends.slice(0, 2), 'a malformed tail is left out')
})

t.test('runs of frames: one record each; partial confirmation; a lost link resends each frame as written', async (t) => {
  const b = new StoreBuffer(100, 10_000, false)
  b.pushFrames(run(lmsg('a', '1'), lmsg('a', '2'), lmsg('a', '3')), 3)
  const m1 = b.mark()
  b.pushFrames(run(lmsg('b', '4'), lmsg('b', '5', 'reply.x')), 2)
  const m2 = b.mark()
  b.pushFrames(run(lmsg('c', '6')), 1)
  t.equal(b.length, 6, 'six messages held')
  t.equal(b.unsent, 0, 'all sent')
  t.equal(b.last, 5, 'seq counts messages, not runs')
  b.confirm(m1)
  t.equal(b.length, 3, 'the first run confirmed, not the others')
  t.ok(m2 > m1)
  t.equal(b.rewind(), 3, 'three messages unconfirmed')
  t.equal(b.resent, 3)
  t.equal(b.unsent, 3, 'each frame unsent again')
  b.startReplay()
  const out: string[] = []
  const seqs: number[] = []
  for (let s = b.peek(); s !== undefined; s = b.peek()) {
    t.equal(s.frames, 1, 'one frame per record')
    out.push(`${s.subject}|${text(s)}`)
    seqs.push(s.seq)
    b.advance()
  }
  t.same(out, ['b|' + lmsg('b', '4'), 'b|' + lmsg('b', '5', 'reply.x'), 'c|' + lmsg('c', '6')], 'in order, byte for byte, with their hub subjects')
  t.same(seqs, [3, 4, 5])
  const bytes = b.bytes
  t.equal(bytes, enc.encode(lmsg('b', '4') + lmsg('b', '5', 'reply.x') + lmsg('c', '6')).length, 'held bytes are the frames')
  b.confirm(b.mark())
  t.equal(b.length, 0)
  t.equal(b.bytes, 0)
})

t.test('a run bigger than the bounds: the newest frames that fit are kept (drop_oldest), the oldest (drop_newest)', async (t) => {
  const fs = ['1', '2', '3', '4', '5'].map((p) => lmsg('a', p))
  const b = new StoreBuffer(3, 10_000, false)
  b.pushFrames(run(...fs), 5)
  t.equal(b.length, 3)
  t.equal(b.unkept, 0, 'as one by one: each fitted, the newer displaced the older (not counted, as for single messages)')
  b.rewind()
  const out: string[] = []
  for (let s = b.peek(); s !== undefined; b.advance(), s = b.peek()) out.push(text(s))
  t.same(out, fs.slice(2), 'the newest three')
  const n = new StoreBuffer(3, 10_000, true)
  n.pushFrames(run(...fs), 5)
  t.equal(n.unkept, 2)
  n.rewind()
  const first: string[] = []
  for (let s = n.peek(); s !== undefined; n.advance(), s = n.peek()) first.push(text(s))
  t.same(first, fs.slice(0, 3), 'drop_newest: the oldest three')
  // The byte bound too: two frames' worth.
  const y = new StoreBuffer(100, fs[0]!.length * 2, false)
  y.pushFrames(run(...fs), 5)
  t.equal(y.length, 2)
  t.equal(y.unkept, 0)
  t.equal(text(y.shift()), fs[3]! + fs[4]!, 'one record: the newest two frames')
  t.ok(y.bytes <= fs[0]!.length * 2)
  // Bigger than the whole bound and nothing fits: none kept, all counted.
  const z = new StoreBuffer(100, 4, false)
  z.pushFrames(run(...fs), 5)
  t.equal(z.length, 0)
  t.equal(z.unkept, 5)
  t.equal(z.bytes, 0)
})

t.test('a run never displaces an unsent message; it displaces older sent runs (drop_oldest)', async (t) => {
  const b = new StoreBuffer(5, 10_000, false)
  b.push(msg('a', 'u1'))
  b.push(msg('a', 'u2'))
  b.startReplay()
  b.pushFrames(run(lmsg('a', 's1'), lmsg('a', 's2')), 2)
  t.equal(b.length, 4)
  b.pushFrames(run(lmsg('a', 's3'), lmsg('a', 's4')), 2) // full: s1, s2 go as one record
  t.equal(b.length, 4)
  t.equal(b.unkept, 0)
  t.equal(b.unsent, 2, 'u1 and u2 stay')
  b.pushFrames(run(lmsg('a', 's5'), lmsg('a', 's6'), lmsg('a', 's7'), lmsg('a', 's8')), 4)
  t.equal(b.unsent, 2, 'still: only three sent fit, the newest of the run')
  t.equal(b.unkept, 0)
  t.equal(b.length, 5)
  // With no room left beside the unsent ones, a run is not kept at all: counted.
  const full = new StoreBuffer(2, 10_000, false)
  full.push(msg('a', 'u1'))
  full.push(msg('a', 'u2'))
  full.startReplay()
  full.pushFrames(run(lmsg('a', 's1'), lmsg('a', 's2')), 2)
  t.equal(full.unkept, 2)
  t.equal(full.length, 2)
  t.equal(full.unsent, 2)
  // An unsent message displaces a whole sent run; every message in it counts as dropped.
  b.confirm(-1)
  b.push(msg('a', 'u3'))
  t.equal(b.dropped, 1, 'u1, the oldest, goes first')
  b.push(msg('a', 'u4'))
  t.equal(b.dropped, 2)
  b.push(msg('a', 'u5')) // the oldest now is the run s6–s8: three messages go
  t.equal(b.dropped, 5)
  t.equal(b.length, 3, 'u3, u4, u5')
})

t.test('runs under memory pressure: over max_memory they only replace older sent ones', async (t) => {
  const budget = new Budget(1000, { now: () => 0, defer: () => {}, log: { warn: () => {}, info: () => {} }, candidates: () => [] })
  const b = new StoreBuffer(1000, 100_000, false, budget)
  const f = lmsg('a', 'x'.repeat(50))
  b.pushFrames(run(f, f), 2)
  t.equal(budget.held, f.length * 2, 'charged to the budget')
  budget.charge(800) // someone else fills it: over 3/4
  t.ok(budget.full)
  b.pushFrames(run(f), 1)
  t.equal(b.length, 1, 'does not grow: the older run (one record, both its messages) made room')
  t.equal(b.unkept, 0)
  t.equal(b.bytes, f.length)
  b.pushFrames(run(f, f, f), 3)
  t.equal(b.length, 1, 'still one frame\'s bytes: the newest of the run')
  t.equal(b.unkept, 0)
  t.equal(budget.held, 800 + f.length)
  b.push(msg('a', 'u')) // unsent under pressure: drops the oldest (sent) to stay within its bytes
  t.ok(b.bytes <= f.length)
  t.equal(b.unsent, 1)
  b.confirm(b.mark())
  budget.charge(-800)
  t.equal(budget.held, b.bytes, 'everything released that was let go')
})
