// Property-based tests of the NATS client-protocol parser (adapters/nats/parser.ts), driven
// without sockets: whatever bytes arrive, in whatever chunks, nothing throws, what it keeps
// between reads stays within max_control_line / max_payload, a stopped parser stays silent,
// and a valid stream gives the same operations however it is cut.

import t from 'tap'
import fc from 'fast-check'
import { Parser, type Failure, type Handler, type PubArgs } from '../adapters/nats/parser.ts'
import { NatsClient } from '../adapters/nats/client.ts'
import type { Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { defaults } from '../src/options.ts'
import { Server } from '../src/server.ts'
import { cat, check, chunks, cutsOf, hex, mutated, withCuts } from './helpers/fuzz.ts'

const enc = new TextEncoder()
const dec = new TextDecoder('utf-8', { ignoreBOM: true })
const MAX_CL = 64
const MAX_PAYLOAD = 256

type Op = (string | number | null)[]

class Recorder implements Handler {
  ops: Op[] = []
  failed = false
  late = false
  private seen(op: Op): void {
    if (this.failed) this.late = true // nothing may follow a failure
    this.ops.push(op)
  }
  connect(json: string): void {
    this.seen(['connect', json])
  }
  pub(p: PubArgs, buf: Uint8Array, at: number): void {
    if (at < 0 || at + p.size > buf.length) throw new Error(`payload at ${at} + ${p.size} outside a buffer of ${buf.length}`)
    const data = buf.subarray(at, at + p.size)
    if (data.length !== p.size) throw new Error(`payload of ${data.length} bytes for size ${p.size}`)
    if (dec.decode(p.subjectBytes) !== p.subject || dec.decode(p.replyBytes) !== p.reply) throw new Error('byte and string forms differ')
    this.seen(['pub', p.subject, p.reply, p.hdr, p.size, Buffer.from(data).toString('hex')])
  }
  sub(subject: string, queue: string | null, sid: string): void {
    this.seen(['sub', subject, queue, sid])
  }
  unsub(sid: string, max: number): void {
    this.seen(['unsub', sid, max])
  }
  ping(): void {
    this.seen(['ping'])
  }
  pong(): void {
    this.seen(['pong'])
  }
  err(text: string): void {
    this.seen(['err', text])
  }
  fail(why: Failure): void {
    this.seen(['fail', why])
    this.failed = true
  }
}

interface Setup {
  headers: boolean
  connectFirst: boolean
}

/** Feeds the chunks; checks the buffer bounds after each one. Returns the ops, or a broken bound. */
function run(pieces: Uint8Array[], s: Setup): { ops: Op[]; bad: string | null } {
  const r = new Recorder()
  const p = new Parser(r, { maxPayload: MAX_PAYLOAD, maxControlLine: MAX_CL })
  p.headers = s.headers
  p.connectFirst = s.connectFirst
  const inner = p as unknown as { partial: Uint8Array | null; partialLen: number; body: Uint8Array | null }
  let biggest = 0
  for (const c of pieces) {
    biggest = Math.max(biggest, c.length)
    p.feed(c)
    // A kept line start is at most one read plus a control line; a payload at most max_payload + CRLF.
    if (inner.partial !== null && inner.partialLen > biggest + MAX_CL) return { ops: r.ops, bad: `kept ${inner.partialLen} bytes of a line` }
    // grown by doubling: at most twice what it holds (64 bytes at least)
    if (inner.partial !== null && inner.partial.length > Math.max(64, 2 * inner.partialLen)) return { ops: r.ops, bad: `a line buffer of ${inner.partial.length} for ${inner.partialLen} bytes` }
    if (inner.body !== null && inner.body.length > MAX_PAYLOAD + 2) return { ops: r.ops, bad: `payload buffer of ${inner.body.length}` }
    if (r.failed && !p.stopped) return { ops: r.ops, bad: 'failed but not stopped' }
  }
  if (r.late) return { ops: r.ops, bad: 'a handler call after the failure' }
  return { ops: r.ops, bad: null }
}

// --- generators -------------------------------------------------------------------------------

const blanks = fc.stringMatching(/^[ \t]{1,3}$/)
const token = fc.stringMatching(/^[A-Za-z0-9_.*>$-]{1,12}$/)
const caseOf = (w: string): fc.Arbitrary<string> => fc.array(fc.boolean(), { minLength: w.length, maxLength: w.length }).map((u) => [...w].map((c, i) => (u[i] ? c.toUpperCase() : c.toLowerCase())).join(''))
const eol = fc.constantFrom('\r\n', '\n')

/** One valid client operation (as nats-server accepts it), as bytes. */
const validOp: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.tuple(caseOf('pub'), blanks, token, fc.option(fc.tuple(blanks, token)), blanks, fc.uint8Array({ maxLength: 80 }), eol).map(([op, b1, subj, reply, b2, payload, e]) =>
    cat(enc.encode(`${op}${b1}${subj}${reply ? reply[0] + reply[1] : ''}${b2}${payload.length}${e}`), payload, enc.encode('\r\n')),
  ),
  fc.tuple(caseOf('hpub'), token, fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ maxLength: 40 })).map(([op, subj, h, payload]) =>
    cat(enc.encode(`${op} ${subj} ${h.length} ${h.length + payload.length}\r\n`), h, payload, enc.encode('\r\n')),
  ),
  fc.tuple(caseOf('sub'), blanks, token, fc.option(fc.tuple(blanks, token)), blanks, token, eol).map(([op, b1, s, q, b2, sid, e]) => enc.encode(`${op}${b1}${s}${q ? q[0] + q[1] : ''}${b2}${sid}${e}`)),
  fc.tuple(caseOf('unsub'), token, fc.option(fc.nat(999_999))).map(([op, sid, max]) => enc.encode(`${op} ${sid}${max === null ? '' : ` ${max}`}\r\n`)),
  fc.tuple(caseOf('ping'), eol).map(([op, e]) => enc.encode(op + e)),
  fc.tuple(caseOf('pong'), eol).map(([op, e]) => enc.encode(op + e)),
  fc.constant(enc.encode('+OK\r\n')),
  fc.tuple(caseOf('connect'), fc.constantFrom('{}', '{"verbose":false,"headers":true}', '{"name":"x"}')).map(([op, j]) => enc.encode(`${op} ${j}\r\n`)),
)

const validStream = fc.array(validOp, { minLength: 1, maxLength: 8 }).map((ops) => cat(...ops))

/** Bytes made of protocol words, blanks, digits, CR/LF and noise: what hits every branch. */
const protocolish: fc.Arbitrary<Uint8Array> = fc
  .array(
    fc.oneof(
      fc.constantFrom('PUB', 'HPUB', 'SUB', 'UNSUB', 'PING', 'PONG', 'CONNECT', 'INFO', '+OK', '-ERR', 'pu', 'P', 'CON', '{}', 'null', '[1]'),
      fc.constantFrom(' ', '\t', '\r', '\n', '\r\n', '  '),
      fc.nat(400).map(String),
      fc.constantFrom('9999999999', '0', '-1', '1a'),
      token,
      fc.uint8Array({ maxLength: 6 }).map((b) => dec.decode(b)),
      fc.string({ maxLength: 100, unit: fc.constantFrom(' ', 'x', '\t') }),
    ),
    { maxLength: 40 },
  )
  .map((parts) => enc.encode(parts.join('')))

const setup: fc.Arbitrary<Setup> = fc.record({ headers: fc.boolean(), connectFirst: fc.boolean() })
/** Long lines around max_control_line: blanks and argument bytes after an operation name. */
const longLines = fc
  .array(
    fc.tuple(fc.constantFrom('PUB ', 'HPUB ', 'SUB ', 'UNSUB ', 'CONNECT', 'PING', 'INFO ', '-ERR ', 'PU'), fc.string({ unit: fc.constantFrom(' ', '\t', 'x', '1', '.'), maxLength: 200, size: 'max' }), fc.constantFrom('', '\r', '\r\n', '\n')),
    { minLength: 1, maxLength: 4 },
  )
  .map((ls) => enc.encode(ls.map((l) => l.join('')).join('')))

/**
 * A publisher's stream: PUBs to one subject (what the parser's fast path reads), with now and
 * then another form or operation; payloads with CR, LF and protocol text. Returned with the
 * operations it must give (the oracle).
 */
const payloadBytes = fc.oneof(
  fc.uint8Array({ maxLength: 40 }),
  fc.constantFrom('\r\n', 'PUB s 1\r\n', '\r', '\n\r', 'PING\r\n').map((x) => enc.encode(x)),
)
const repeatedOp = (subj: string): fc.Arbitrary<{ bytes: Uint8Array; op: Op }> =>
  fc.oneof(
    { weight: 6, arbitrary: payloadBytes.map((b) => ({ bytes: cat(enc.encode(`PUB ${subj} ${b.length}\r\n`), b, enc.encode('\r\n')), op: ['pub', subj, '', -1, b.length, hex(b)] as Op })) },
    fc.tuple(caseOf('pub'), payloadBytes).map(([w, b]) => ({ bytes: cat(enc.encode(`${w} ${subj} ${b.length}\r\n`), b, enc.encode('\r\n')), op: ['pub', subj, '', -1, b.length, hex(b)] as Op })),
    fc.tuple(token, payloadBytes).map(([r, b]) => ({ bytes: cat(enc.encode(`PUB ${subj} ${r} ${b.length}\r\n`), b, enc.encode('\r\n')), op: ['pub', subj, r, -1, b.length, hex(b)] as Op })),
    fc.tuple(token, payloadBytes).map(([o, b]) => ({ bytes: cat(enc.encode(`PUB ${o} ${b.length}\r\n`), b, enc.encode('\r\n')), op: ['pub', o, '', -1, b.length, hex(b)] as Op })),
    payloadBytes.map((b) => ({ bytes: cat(enc.encode(`HPUB ${subj} 0 ${b.length}\r\n`), b, enc.encode('\r\n')), op: ['pub', subj, '', 0, b.length, hex(b)] as Op })),
    fc.constant({ bytes: enc.encode('PING\r\n'), op: ['ping'] as Op }),
  )
const repeatedStream = token.chain((subj) => fc.array(repeatedOp(subj), { minLength: 1, maxLength: 30 })).map((ops) => ({ bytes: cat(...ops.map((o) => o.bytes)), ops: ops.map((o) => o.op) }))

const anyBytes = fc.oneof(protocolish, longLines, mutated(validStream, 6), mutated(repeatedStream.map((r) => r.bytes), 4), fc.uint8Array({ maxLength: 300 }))

// --- properties ---------------------------------------------------------------------------

t.test('any bytes in any chunks: no exception, bounded buffers, silence after a failure', async (t) => {
  check(
    t,
    'parser survives hostile input',
    fc.property(withCuts(anyBytes, 20), setup, ({ bytes, cuts }, s) => {
      const r = run(chunks(bytes, cuts), s)
      if (r.bad) throw new Error(r.bad)
    }),
    3000,
  )
})

t.test('a valid stream gives the same operations however it is cut', async (t) => {
  const s = { headers: true, connectFirst: false }
  check(
    t,
    'valid stream, random chunks',
    fc.property(withCuts(validStream, 30), ({ bytes, cuts }) => {
      const whole = run([bytes], s)
      const cut = run(chunks(bytes, cuts), s)
      if (whole.bad || cut.bad) throw new Error(whole.bad ?? cut.bad!)
      if (whole.ops.some((o) => o[0] === 'fail')) throw new Error(`valid stream refused: ${JSON.stringify(whole.ops)}`)
      if (JSON.stringify(whole.ops) !== JSON.stringify(cut.ops)) throw new Error(`whole ${JSON.stringify(whole.ops)} != cut ${JSON.stringify(cut.ops)}`)
    }),
    1500,
  )
  check(
    t,
    'valid stream, byte by byte',
    fc.property(validStream, (bytes) => {
      const whole = run([bytes], s)
      const bytewise = run(Array.from(bytes, (b) => new Uint8Array([b])), s)
      if (JSON.stringify(whole.ops) !== JSON.stringify(bytewise.ops)) throw new Error(`whole ${JSON.stringify(whole.ops)} != byte by byte ${JSON.stringify(bytewise.ops)}`)
    }),
    300,
  )
})

t.test('a publisher stream (the repeated-subject fast path) gives its operations however it is cut', async (t) => {
  const s = { headers: true, connectFirst: false }
  check(
    t,
    'publisher stream, whole and random chunks',
    fc.property(repeatedStream.chain((r) => cutsOf(r.bytes.length, 30).map((cuts) => ({ ...r, cuts }))), ({ bytes, ops, cuts }) => {
      const want = JSON.stringify(ops)
      const whole = run([bytes], s)
      if (JSON.stringify(whole.ops) !== want) throw new Error(`whole ${JSON.stringify(whole.ops)} != ${want}`)
      const cut = run(chunks(bytes, cuts), s)
      if (cut.bad || JSON.stringify(cut.ops) !== want) throw new Error(`cut ${cut.bad ?? JSON.stringify(cut.ops)} != ${want}`)
    }),
    1500,
  )
  check(
    t,
    'publisher stream, byte by byte',
    fc.property(repeatedStream, ({ bytes, ops }) => {
      const got = run(Array.from(bytes, (b) => new Uint8Array([b])), s)
      if (JSON.stringify(got.ops) !== JSON.stringify(ops)) throw new Error(`byte by byte ${JSON.stringify(got.ops)} != ${JSON.stringify(ops)}`)
    }),
    200,
  )
})

t.test('hostile bytes: the same operations whole or cut, up to where it fails', async (t) => {
  // A cut stream may be refused a little earlier (nats-server fails a bad operation at its
  // first byte, before the line is complete), but never differently before that point.
  check(
    t,
    'same prefix of operations',
    fc.property(withCuts(anyBytes, 20), setup, ({ bytes, cuts }, s) => {
      const whole = run([bytes], s).ops.filter((o) => o[0] !== 'fail')
      const cut = run(chunks(bytes, cuts), s).ops.filter((o) => o[0] !== 'fail')
      const n = Math.min(whole.length, cut.length)
      if (JSON.stringify(whole.slice(0, n)) !== JSON.stringify(cut.slice(0, n))) throw new Error(`whole ${JSON.stringify(whole)} != cut ${JSON.stringify(cut)}`)
    }),
    2000,
  )
})

// --- whole connections, sans-I/O -----------------------------------------------------------

/**
 * What a watcher subscribed to `>` receives must stay a well-formed NATS stream whatever
 * another client sends: every control line one of the server's operations with its argument
 * count, MSG/HMSG sizes matching their payloads, no bare CR or LF inside a line.
 * Returns the first problem, or null.
 */
function checkStream(b: Uint8Array): string | null {
  let pos = 0
  while (pos < b.length) {
    const nl = b.indexOf(10, pos)
    if (nl < 0) return `a line without LF at ${pos}`
    if (b[nl - 1] !== 13) return `a line ending in a bare LF at ${nl}`
    const line = b.subarray(pos, nl - 1)
    if (line.includes(13)) return `a bare CR inside a line: ${JSON.stringify(dec.decode(line))}`
    const text = dec.decode(line)
    const args = text.split(' ')
    const op = args[0]
    pos = nl + 1
    if (op === 'INFO' || op === 'PING' || op === 'PONG' || op === '+OK' || op === '-ERR') continue
    if (op !== 'MSG' && op !== 'HMSG') return `unknown operation ${JSON.stringify(text.slice(0, 60))}`
    const n = args.length
    if (op === 'MSG' ? n !== 4 && n !== 5 : n !== 5 && n !== 6) return `${op} with ${n - 1} arguments: ${JSON.stringify(text.slice(0, 80))}`
    if (args.some((a) => a === '' || /[\t]/.test(a))) return `an empty or blank argument: ${JSON.stringify(text.slice(0, 80))}`
    const size = Number(args[n - 1])
    if (!Number.isInteger(size) || pos + size + 2 > b.length) return `bad size in ${JSON.stringify(text.slice(0, 80))}`
    if (b[pos + size] !== 13 || b[pos + size + 1] !== 10) return `payload of ${JSON.stringify(text.slice(0, 80))} not followed by CRLF`
    pos += size + 2
  }
  return null
}

/** Known on today's code, fixed on the NATS-CR branch (issue 9 point 4): counted, not failed. */

function runConn(pieces: Uint8Array[]): { bad: string | null; known: string | null } {
  const queue: (() => void)[] = []
  const host = { now: () => 1000, defer: (fn: () => void) => void queue.push(fn), every: () => ({ cancel() {} }) }
  const logs: string[] = []
  const srv = new Server({ ...defaults, port: 4222, max_payload: 4096, max_control_line: 256 }, host, createLogger({ level: 'error', sink: (l) => logs.push(l) }))
  let port = 0
  const open = (): { c: NatsClient; out: Uint8Array[] } => {
    const out: Uint8Array[] = []
    const wire: Wire = { write: (d) => (out.push(d.slice()), true), buffered: () => 0, end: () => {}, destroy: () => {}, remoteAddress: '127.0.0.1', remotePort: ++port }
    return { c: new NatsClient(srv, srv.admit(), wire), out }
  }
  const drain = (): void => {
    while (queue.length) queue.shift()!()
  }
  const w = open()
  w.c.data(enc.encode('CONNECT {"verbose":false,"headers":true}\r\nSUB > 1\r\n'))
  const f = open()
  try {
    for (const p of pieces) {
      f.c.data(p)
      drain()
    }
    f.c.closed('Client Closed')
    drain()
  } catch (e) {
    return { bad: `threw: ${((e as Error).stack ?? String(e)).split('\n').slice(0, 3).join(' | ')}`, known: null }
  }
  const internal = logs.find((l) => /internal|TypeError|undefined/i.test(l))
  if (internal) return { bad: `internal error logged: ${internal}`, known: null }
  const problem = checkStream(cat(...w.out))
  return { bad: problem && `the watcher got ${problem}`, known: null }
}

t.test('another client sees a well-formed stream whatever a publisher sends', async (t) => {
  // Subjects, replies and sids with the bytes that must never reach another client's stream raw.
  const odd = fc.string({ unit: fc.constantFrom('a', '.', '\r', '\u0000', '\u007f', 'é', '\u000b', '\f'), minLength: 1, maxLength: 6 })
  const oddOp = fc.oneof(
    fc.tuple(odd, fc.option(odd), fc.uint8Array({ maxLength: 8 })).map(([s, r, p]) => cat(enc.encode(`PUB ${s}${r === null ? '' : ` ${r}`} ${p.length}\r\n`), p, enc.encode('\r\n'))),
    fc.tuple(odd, odd).map(([s, sid]) => enc.encode(`SUB ${s} ${sid}\r\nPUB ${s} 1\r\nx\r\n`)),
  )
  const sessions = fc.tuple(fc.constant(enc.encode('CONNECT {"headers":true}\r\n')), fc.array(fc.oneof(validOp, oddOp, anyBytes), { maxLength: 5 })).map(([c, rest]) => cat(c, ...rest))
  check(
    t,
    'watcher stream stays well-formed; no exception',
    fc.property(withCuts(sessions, 12), ({ bytes, cuts }) => {
      const r = runConn(chunks(bytes, cuts))
      if (r.bad) throw new Error(`${Buffer.from(bytes).toString('hex')}: ${r.bad}`)
    }),
    1500,
  )
})

t.test('a bare CR in PUB or SUB arguments (issue 9 point 4)', async (t) => {
  t.same(runConn([enc.encode('CONNECT {}\r\nPUB crrep r\rx 2\r\nhi\r\n')]), { bad: null, known: null }, 'PUB crrep r\\rx 2: not relayed with the CR')
})

// Found by the MQTT fast-path property: src/bytes.ts decoded with a TextDecoder that stripped a
// leading U+FEFF, so `PUB \ufeffa` is routed as subject "a" (a subscriber to "a" gets it) while
// its bytes say "\ufeffa"; nats-server treats them as different subjects. Fix: a decoder with
// ignoreBOM: true (src/bytes.ts and adapters/mqtt/frame.ts), now in place.
t.test('a leading U+FEFF stays part of the subject', async (t) => {
  const ops = run([enc.encode('PUB \ufeffa 2\r\nhi\r\nSUB \ufeffb 1\r\n')], { headers: true, connectFirst: false }).ops
  t.same(ops.map((o) => o[1]), ['\ufeffa', '\ufeffb'], 'subjects keep their U+FEFF')
})
