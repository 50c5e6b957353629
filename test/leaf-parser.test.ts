// The leafnode protocol parser, sans I/O: every operation a hub sends, frames split at every
// byte, and malformed input refused with a reason (the link then drops, never crashes).

import t from 'tap'
import { Buffer } from 'node:buffer'
import type { Budget } from '../src/budget.ts'
import { LeafParser, type LeafHandler } from '../src/leaf/parser.ts'

function collect(): { h: LeafHandler; ops: string[] } {
  const ops: string[] = []
  const td = new TextDecoder()
  const h: LeafHandler = {
    info: (j) => ops.push(`INFO ${j}`),
    ping: () => ops.push('PING'),
    pong: () => ops.push('PONG'),
    err: (e) => ops.push(`ERR ${e}`),
    sub: (s, q, w) => ops.push(`SUB ${s} ${q} ${w}`),
    unsub: (s, q) => ops.push(`UNSUB ${s} ${q}`),
    msg: (s, r, q, hdr, p) => ops.push(`MSG ${s} [${r}] ${q === null ? '-' : q.join(',')} ${hdr ? td.decode(hdr).replace(/\r\n/g, '|') : '-'} ${td.decode(p)}`),
  }
  return { h, ops }
}

const stream =
  'INFO {"server_id":"N","leafnode_urls":["a:1"]} \r\n' +
  'LS+ foo\r\nLS+ bar.* q1 2\r\nls- foo\r\nLS- bar.* q1\r\n' +
  'PING\r\nPONG\r\n+OK\r\n' +
  "-ERR 'Loop detected'\r\n" +
  'LMSG leaf.sub 5\r\nhello\r\n' +
  'LMSG leaf.sub _INBOX.r1 2\r\nhi\r\n' +
  'LMSG leaf.q | grp 3\r\nqqq\r\n' +
  'LMSG leaf.q + rep.x g1 g2 3\r\nqqr\r\n' +
  'HMSG leaf.sub 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n' +
  'HMSG out.q + _INBOX.x lq 12 14\r\nNATS/1.0\r\n\r\nq2\r\n'

const want = [
  'INFO {"server_id":"N","leafnode_urls":["a:1"]}',
  'SUB foo null 1',
  'SUB bar.* q1 2',
  'UNSUB foo null',
  'UNSUB bar.* q1',
  'PING',
  'PONG',
  'ERR Loop detected',
  'MSG leaf.sub [] - - hello',
  'MSG leaf.sub [_INBOX.r1] - - hi',
  'MSG leaf.q [] grp - qqq',
  'MSG leaf.q [rep.x] g1,g2 - qqr',
  'MSG leaf.sub [] - NATS/1.0|A: b|| hello',
  'MSG out.q [_INBOX.x] lq NATS/1.0|| q2',
]

t.test('every operation, in one chunk', async (t) => {
  const { h, ops } = collect()
  t.equal(new LeafParser(h, 4096, 1024).feed(new TextEncoder().encode(stream)), null)
  t.same(ops, want)
})

t.test('split at every byte', async (t) => {
  const { h, ops } = collect()
  const p = new LeafParser(h, 4096, 1024)
  for (const b of new TextEncoder().encode(stream)) t.equal(p.feed(Uint8Array.of(b)), null) || t.fail('error')
  t.same(ops, want)
})

t.test('malformed input is refused with a reason', async (t) => {
  const bad: [string, RegExp][] = [
    ['GARBAGE\r\n', /unknown operation/],
    ['LS+ foo q\r\n', /malformed LS\+/],
    ['LS+ foo 1\r\n', /malformed LS\+/],
    ['LS- a b c\r\n', /malformed LS-/],
    ['LMSG foo x q 3\r\nabc\r\n', /reply indicator/],
    ['LMSG foo abc\r\n', /size/],
    ['HMSG foo 10 5\r\n', /header length/],
    ['LMSG foo 3\r\nabcXY', /CRLF/],
    ['LMSG foo 2000\r\n', /over the limit/],
    ['x'.repeat(5000), /too long/],
  ]
  for (const [input, re] of bad) {
    const { h } = collect()
    t.match(new LeafParser(h, 4096, 1024).feed(new TextEncoder().encode(input)), re, JSON.stringify(input.slice(0, 30)))
  }
})

t.test('split in two at every byte', async (t) => {
  const bytes = new TextEncoder().encode(stream)
  for (let i = 1; i < bytes.length; i++) {
    const { h, ops } = collect()
    const p = new LeafParser(h, 4096, 1024)
    if (p.feed(bytes.subarray(0, i)) !== null || p.feed(bytes.subarray(i)) !== null) t.fail(`error when split at ${i}`)
    if (JSON.stringify(ops) !== JSON.stringify(want)) t.fail(`different operations when split at ${i}`)
  }
  t.pass('the same operations wherever the stream is cut')
})

/**
 * A budget that sums what the parser holds for a partial frame: each held byte is a byte copied,
 * so the sum counts the copying. Re-joining the held bytes on every chunk makes it quadratic.
 */
function copyCounter(): { budget: Budget; held: () => number; copied: () => number } {
  let held = 0
  let copied = 0
  const budget = {
    charge(n: number) {
      held += n
      if (n > 0) copied += n
    },
  } as unknown as Budget
  return { budget, held: () => held, copied: () => copied }
}

function bigFrame(payload: number, headers: boolean): { frame: Uint8Array; body: Uint8Array } {
  const body = new Uint8Array(payload)
  for (let i = 0; i < payload; i++) body[i] = 97 + (i % 26)
  const hdr = 'NATS/1.0\r\nA: b\r\n\r\n'
  const line = headers ? `HMSG big.subject ${hdr.length} ${hdr.length + payload}\r\n${hdr}` : `LMSG big.subject ${payload}\r\n`
  const head = new TextEncoder().encode(line)
  const frame = new Uint8Array(head.length + payload + 2 + 6)
  frame.set(head, 0)
  frame.set(body, head.length)
  frame.set(new TextEncoder().encode('\r\nPING\r\n'), head.length + payload)
  return { frame, body }
}

for (const [payload, chunk, headers] of [
  [1 << 20, 1024, false],
  [1 << 20, 1000, true],
  [1 << 18, 1, false],
] as const) {
  t.test(`a ${payload >> 10} KiB ${headers ? 'HMSG' : 'LMSG'} split in ${chunk}-byte reads parses with linear copying`, async (t) => {
    const { frame, body } = bigFrame(payload, headers)
    let got: Uint8Array | null = null
    let pings = 0
    const h: LeafHandler = { ...collect().h, msg: (_s, _r, _q, _hdr, p) => (got = p.slice()), ping: () => pings++ }
    const p = new LeafParser(h, 4096, 2 << 20)
    const c = copyCounter()
    p.budget = c.budget
    for (let i = 0; i < frame.length; i += chunk) {
      const r = p.feed(frame.subarray(i, Math.min(frame.length, i + chunk)))
      if (r !== null) return t.fail(r)
    }
    t.ok(got !== null && Buffer.from(got).equals(Buffer.from(body)), 'the payload arrives whole')
    t.equal(pings, 1, 'and the frame after it')
    t.equal(c.held(), 0, 'nothing held afterwards')
    // Each byte is held once (plus the odd line re-held): re-joining per read would copy
    // payload²/(2·chunk) bytes, 512 MiB for 1 MiB in 1 KiB reads.
    t.ok(c.copied() <= frame.length + 4096, `bytes held while partial: ${c.copied()} for a ${frame.length}-byte frame`)
  })
}

t.test('through one reused Buffer read (as runtimes hand over, whose slice() is a view), scribbled after every read', async (t) => {
  const all = new TextEncoder().encode(stream)
  for (const width of [1, 3, 7, 16, 50]) {
    const { h, ops } = collect()
    const p = new LeafParser(h, 4096, 1024)
    const read = Buffer.alloc(width)
    for (let i = 0; i < all.length; i += width) {
      const n = Math.min(width, all.length - i)
      read.set(all.subarray(i, i + n))
      t.equal(p.feed(read.subarray(0, n)), null)
      read.fill(0xee)
    }
    t.same(ops, want, `reads of ${width} bytes`)
  }
})
