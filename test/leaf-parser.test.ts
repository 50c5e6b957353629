// The leafnode protocol parser, sans I/O: every operation a hub sends, frames split at every
// byte, and malformed input refused with a reason (the link then drops, never crashes).

import t from 'tap'
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
