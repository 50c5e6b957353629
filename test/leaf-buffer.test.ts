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
  t.ok((b as unknown as { items: unknown[] }).items.length < 2100, 'the consumed front is released')
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
