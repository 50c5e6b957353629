// Property-based tests of the leafnode parser (src/leaf/parser.ts), the hub's side of the
// uplink: whatever a hub (or a broken middlebox) sends, in whatever chunks, feed() returns an
// error text or null and never throws, what it keeps between reads is bounded by the line and
// payload limits, and a valid stream gives the same callbacks however it is cut.

import t from 'tap'
import fc from 'fast-check'
import { LeafParser, type LeafHandler } from '../src/leaf/parser.ts'
import { cat, check, chunks, mutated, withCuts } from './helpers/fuzz.ts'

const enc = new TextEncoder()
const MAX_LINE = 96
const MAX_PAYLOAD = 200

function run(pieces: Uint8Array[]): { ops: unknown[]; error: string | null; bad: string | null } {
  const ops: unknown[] = []
  const h: LeafHandler = {
    info: (j) => ops.push(['info', j]),
    ping: () => ops.push(['ping']),
    pong: () => ops.push(['pong']),
    err: (e) => ops.push(['err', e]),
    sub: (s, q, w) => ops.push(['sub', s, q, w]),
    unsub: (s, q) => ops.push(['unsub', s, q]),
    msg: (s, r, q, hdr, p) => ops.push(['msg', s, r, q, hdr && Buffer.from(hdr).toString('hex'), Buffer.from(p).toString('hex')]),
  }
  const p = new LeafParser(h, MAX_LINE, MAX_PAYLOAD)
  const inner = p as unknown as { pending: Uint8Array | null }
  for (const c of pieces) {
    let e: string | null
    try {
      e = p.feed(c)
    } catch (x) {
      return { ops, error: null, bad: `threw: ${(x as Error).message}` }
    }
    if (e !== null) {
      if (typeof e !== 'string' || e.length === 0 || e.length > 300) return { ops, error: e, bad: `odd error text: ${JSON.stringify(e)}` }
      return { ops, error: e, bad: null } // the link stops feeding after an error
    }
    // A kept frame: at most one line (and its CRLF) plus a payload of max_payload and its CRLF.
    const kept = inner.pending?.length ?? 0
    if (kept > MAX_LINE + 2 + MAX_PAYLOAD + 2) return { ops, error: null, bad: `keeps ${kept} bytes` }
  }
  return { ops, error: null, bad: null }
}

const blanks = fc.stringMatching(/^[ \t]{1,2}$/)
const tok = fc.stringMatching(/^[A-Za-z0-9_.*>$-]{1,10}$/)
const eol = fc.constantFrom('\r\n', '\n')

const validOp: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.constantFrom('PING\r\n', 'PONG\r\n', '+OK\r\n', 'INFO {"server_id":"h","max_payload":1024}\r\n', "-ERR 'Permissions Violation'\r\n").map((s) => enc.encode(s)),
  fc.tuple(tok, fc.option(fc.tuple(tok, fc.nat(1000))), eol).map(([s, q, e]) => enc.encode(`LS+ ${s}${q ? ` ${q[0]} ${q[1]}` : ''}${e}`)),
  fc.tuple(tok, fc.option(tok), eol).map(([s, q, e]) => enc.encode(`LS- ${s}${q ? ` ${q}` : ''}${e}`)),
  fc
    .tuple(tok, fc.oneof(fc.constant(''), tok.map((r) => ` ${r}`), fc.array(tok, { minLength: 1, maxLength: 3 }).map((q) => ` | ${q.join(' ')}`), fc.tuple(tok, fc.array(tok, { minLength: 1, maxLength: 2 })).map(([r, q]) => ` + ${r} ${q.join(' ')}`)), blanks, fc.uint8Array({ maxLength: 60 }))
    .map(([s, mid, b, p]) => cat(enc.encode(`LMSG ${s}${mid}${b}${p.length}\r\n`), p, enc.encode('\r\n'))),
  fc.tuple(tok, fc.uint8Array({ maxLength: 30 }), fc.uint8Array({ maxLength: 30 })).map(([s, h, p]) => cat(enc.encode(`HMSG ${s} ${h.length} ${h.length + p.length}\r\n`), h, p, enc.encode('\r\n'))),
)
const validStream = fc.array(validOp, { minLength: 1, maxLength: 8 }).map((ops) => cat(...ops))

const protocolish = fc
  .array(
    fc.oneof(
      fc.constantFrom('LMSG', 'HMSG', 'LS+', 'LS-', 'PING', 'PONG', 'INFO', '-ERR', '+OK', '|', '+', "'"),
      fc.constantFrom(' ', '\t', '\r', '\n', '\r\n'),
      fc.nat(400).map(String),
      fc.constantFrom('99999999999999999999', '1e3', '-1', '0x10', '00'),
      tok,
      fc.string({ maxLength: 150, unit: fc.constantFrom(' ', 'x', '\t'), size: 'max' }),
    ),
    { maxLength: 30 },
  )
  .map((parts) => enc.encode(parts.join('')))

const anyBytes = fc.oneof(protocolish, mutated(validStream, 6), fc.uint8Array({ maxLength: 300 }))

t.test('any bytes in any chunks: an error text or nothing, never a throw, bounded buffer', async (t) => {
  check(
    t,
    'leaf parser survives hostile input',
    fc.property(withCuts(anyBytes, 20), ({ bytes, cuts }) => {
      const r = run(chunks(bytes, cuts))
      if (r.bad) throw new Error(r.bad)
    }),
    3000,
  )
})

t.test('a valid stream gives the same callbacks however it is cut', async (t) => {
  check(
    t,
    'valid stream, random chunks',
    fc.property(withCuts(validStream, 30), ({ bytes, cuts }) => {
      const whole = run([bytes])
      const cut = run(chunks(bytes, cuts))
      if (whole.bad || cut.bad || whole.error) throw new Error(whole.bad ?? cut.bad ?? `valid stream refused: ${whole.error}`)
      if (JSON.stringify(whole) !== JSON.stringify(cut)) throw new Error(`whole ${JSON.stringify(whole.ops)} != cut ${JSON.stringify(cut.ops)}`)
    }),
    1500,
  )
})

t.test('hostile bytes: the same callbacks whole or cut, up to an error', async (t) => {
  check(
    t,
    'same prefix of callbacks',
    fc.property(withCuts(anyBytes, 20), ({ bytes, cuts }) => {
      const whole = run([bytes]).ops
      const cut = run(chunks(bytes, cuts)).ops
      const n = Math.min(whole.length, cut.length)
      if (JSON.stringify(whole.slice(0, n)) !== JSON.stringify(cut.slice(0, n))) throw new Error(`whole ${JSON.stringify(whole)} != cut ${JSON.stringify(cut)}`)
    }),
    2000,
  )
})
