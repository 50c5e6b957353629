// The store-and-forward buffer on its own: order, both bounds, both drop policies, counts.

import t from 'tap'
import { StoreBuffer } from '../src/leaf/buffer.ts'
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
  const lane = (b as unknown as { cur: { meta: Float64Array; data: Uint8Array } }).cur
  t.ok(lane.meta.length / 6 <= 8192 && lane.data.length < 64 * 1024, 'storage follows the most held at once, not the total')
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

t.test('pushSent: kept unconfirmed until the PONG; a lost link sends it again', async (t) => {
  const b = new StoreBuffer(10, 1000, false)
  const m = msg('a', '1')
  b.pushSent(m)
  m.payload[0] = 0x39 // the router reuses its buffer: the copy stays '1'
  b.pushSent(msg('a', '2'))
  t.equal(b.length, 2)
  t.equal(b.unsent, 0)
  const mark = b.mark()
  b.pushSent(msg('a', '3'))
  b.confirm(mark)
  t.equal(b.length, 1, 'the two before the PING are confirmed')
  t.equal(b.rewind(), 1)
  t.equal(b.resent, 1)
  t.equal(text(b.peek()), '3', 'the unconfirmed one goes again')
})

t.test('pushSent never displaces an unsent message; drop_oldest evicts older sent ones', async (t) => {
  const b = new StoreBuffer(3, 1000, false)
  b.push(msg('a', 'u1'))
  b.push(msg('a', 'u2'))
  b.startReplay() // the link is up: u1, u2 are the backlog; new messages go ahead of it
  b.pushSent(msg('a', 's1')) // fits
  t.equal(b.length, 3)
  b.advance() // u1 sent
  b.pushSent(msg('a', 's2')) // full: evicts u1 (sent), never u2
  t.equal(b.dropped, 0)
  t.equal(b.unkept, 0)
  t.equal(b.unsent, 1)
  t.equal(text(b.peek()), 'u2')
  b.pushSent(msg('a', 's3')) // full: the oldest sent (s1) goes
  b.pushSent(msg('a', 's4'))
  t.equal(b.length, 3)
  t.equal(text(b.peek()), 'u2', 'the unsent one stays')
  const n = new StoreBuffer(2, 1000, true)
  n.push(msg('a', 'u1'))
  n.startReplay()
  n.pushSent(msg('a', 's1'))
  n.pushSent(msg('a', 's2')) // drop_newest: not kept
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
  b.pushSent(msg('a', 'l0')) // went ahead of the backlog
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
      const before = b.unkept
      b.pushSent(msg('s', body))
      if (b.unkept === before) made.set(b.last, body)
      n++
    } else if (op < 8) {
      const s = b.peek()
      if (s !== undefined && made.get(s.seq) !== text(s)) bad++
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
