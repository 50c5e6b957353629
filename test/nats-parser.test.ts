// Unit tests of the NATS client-protocol parser with a recording handler (no sockets): every
// operation, the syntax nats-server tolerates, frames split at every byte, and each kind of
// bad frame with the exact Failure it ends in.

import t from 'tap'
import { Parser, parseSize, splitArgs, type Failure, type Handler, type PubArgs } from '../adapters/nats/parser.ts'

type Op =
  | ['connect', string]
  | ['pub', string, string, number, number, string]
  | ['sub', string, string | null, string]
  | ['unsub', string, number]
  | ['ping']
  | ['pong']
  | ['err', string]
  | ['fail', Failure]

const dec = new TextDecoder()
const enc = new TextEncoder()

/** A handler that records every call; payloads are copied (they are only valid during the call). */
class Recorder implements Handler {
  ops: Op[] = []
  payloads: Uint8Array[] = []
  /** Called from connect(), as the client accepts or refuses a CONNECT there. */
  onConnect = (): void => {}
  connect(json: string): void {
    this.ops.push(['connect', json])
    this.onConnect()
  }
  pub(p: PubArgs, buf: Uint8Array, at: number): void {
    if (at < 0 || at + p.size > buf.length) throw new Error('payload outside the buffer')
    const data = buf.subarray(at, at + p.size)
    // the byte forms must agree with the strings
    if (dec.decode(p.subjectBytes) !== p.subject) throw new Error('subjectBytes differ from subject')
    if (dec.decode(p.replyBytes) !== p.reply) throw new Error('replyBytes differ from reply')
    if (data.length !== p.size) throw new Error('data length differs from size')
    this.payloads.push(data.slice())
    this.ops.push(['pub', p.subject, p.reply, p.hdr, p.size, dec.decode(data)])
  }
  sub(subject: string, queue: string | null, sid: string): void {
    this.ops.push(['sub', subject, queue, sid])
  }
  unsub(sid: string, max: number): void {
    this.ops.push(['unsub', sid, max])
  }
  ping(): void {
    this.ops.push(['ping'])
  }
  pong(): void {
    this.ops.push(['pong'])
  }
  err(text: string): void {
    this.ops.push(['err', text])
  }
  fail(why: Failure): void {
    this.ops.push(['fail', why])
  }
}

interface Setup {
  maxPayload?: number
  maxControlLine?: number
  headers?: boolean
  connectFirst?: boolean
}

function parser(s: Setup = {}): { p: Parser; r: Recorder } {
  const r = new Recorder()
  const p = new Parser(r, { maxPayload: s.maxPayload ?? 1024 * 1024, maxControlLine: s.maxControlLine ?? 4096 })
  p.headers = s.headers ?? true
  p.connectFirst = s.connectFirst ?? false
  return { p, r }
}

const bytes = (x: string | Uint8Array): Uint8Array => (typeof x === 'string' ? enc.encode(x) : x)

/** Feeds the pieces in order; returns what the handler saw. */
function run(pieces: (string | Uint8Array)[], s: Setup = {}): Op[] {
  const { p, r } = parser(s)
  for (const x of pieces) p.feed(bytes(x))
  return r.ops
}

// --- every operation -----------------------------------------------------------------------

t.test('operations', async (t) => {
  const cases: [string, string, Op[]][] = [
    ['CONNECT', 'CONNECT {"verbose":false}\r\n', [['connect', '{"verbose":false}']]],
    ['CONNECT without blank', 'CONNECT{}\r\n', [['connect', '{}']]],
    ['CONNECT bare', 'CONNECT\r\n', [['connect', '']]],
    ['PUB', 'PUB foo 5\r\nhello\r\n', [['pub', 'foo', '', -1, 5, 'hello']]],
    ['PUB with reply', 'PUB foo bar 5\r\nhello\r\n', [['pub', 'foo', 'bar', -1, 5, 'hello']]],
    ['PUB empty payload', 'PUB foo 0\r\n\r\n', [['pub', 'foo', '', -1, 0, '']]],
    ['HPUB', 'HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n', [['pub', 'foo', '', 12, 14, 'NATS/1.0\r\n\r\nhi']]],
    ['HPUB with reply', 'HPUB foo bar 12 14\r\nNATS/1.0\r\n\r\nhi\r\n', [['pub', 'foo', 'bar', 12, 14, 'NATS/1.0\r\n\r\nhi']]],
    ['HPUB empty header block', 'HPUB foo 0 2\r\nhi\r\n', [['pub', 'foo', '', 0, 2, 'hi']]],
    ['SUB', 'SUB foo 1\r\n', [['sub', 'foo', null, '1']]],
    ['SUB with queue', 'SUB foo q 1\r\n', [['sub', 'foo', 'q', '1']]],
    ['UNSUB', 'UNSUB 1\r\n', [['unsub', '1', -1]]],
    ['UNSUB with max', 'UNSUB 1 5\r\n', [['unsub', '1', 5]]],
    ['UNSUB with a non-numeric max', 'UNSUB 1 x\r\n', [['unsub', '1', -1]]],
    ['PING', 'PING\r\n', [['ping']]],
    ['PONG', 'PONG\r\n', [['pong']]],
    ['PING with junk after it (nats-server ignores it)', 'PINGX\r\nPING x\r\n', [['ping'], ['ping']]],
    ['+OK is ignored', '+OK\r\n+ok\r\nPING\r\n', [['ping']]],
    ['-ERR', "-ERR 'boom'\r\n", [['err', "'boom'"]]],
    ['INFO is ignored', 'INFO {"server_id":"x"}\r\nINFO null\r\nPING\r\n', [['ping']]],
    ['UTF-8 subject', 'SUB fø.ü 1\r\nPUB fø.ü 2\r\nhi\r\n', [['sub', 'fø.ü', null, '1'], ['pub', 'fø.ü', '', -1, 2, 'hi']]],
  ]
  for (const [name, input, want] of cases) t.strictSame(run([input]), want, name)
})

t.test('case-insensitive operation names', async (t) => {
  const input = 'connect {}\r\npub a 1\r\nx\r\nPuB a 1\r\ny\r\nhPuB a 0 1\r\nz\r\nsUb a 1\r\nUnSuB 1\r\nping\r\npOnG\r\n+oK\r\n-eRr x\r\ninfo {}\r\n'
  t.strictSame(run([input]), [
    ['connect', '{}'],
    ['pub', 'a', '', -1, 1, 'x'],
    ['pub', 'a', '', -1, 1, 'y'],
    ['pub', 'a', '', 0, 1, 'z'],
    ['sub', 'a', null, '1'],
    ['unsub', '1', -1],
    ['ping'],
    ['pong'],
    ['err', 'x'],
  ])
})

t.test('tabs, repeated blanks, LF without CR', async (t) => {
  t.strictSame(run(['PUB\t foo \t bar\t\t3 \t\r\nabc\r\n']), [['pub', 'foo', 'bar', -1, 3, 'abc']], 'PUB')
  t.strictSame(run(['SUB  \tfoo\t q \t 1\t\r\n']), [['sub', 'foo', 'q', '1']], 'SUB')
  t.strictSame(run(['UNSUB\t1  \t 2\r\n']), [['unsub', '1', 2]], 'UNSUB')
  t.strictSame(run(['CONNECT \t {}\r\n']), [['connect', '{}']], 'CONNECT')
  t.strictSame(run(['PING\nSUB a 1\nPUB a 1\nx\r\nPONG\n']), [['ping'], ['sub', 'a', null, '1'], ['pub', 'a', '', -1, 1, 'x'], ['pong']], 'LF only')
})

t.test('payloads containing CRLF and protocol text', async (t) => {
  const body = 'a\r\nPING\r\nPUB x 1\r\n\r\n'
  t.strictSame(run([`PUB foo ${body.length}\r\n${body}\r\nPING\r\n`]), [['pub', 'foo', '', -1, body.length, body], ['ping']])
})

// --- frames split at every byte -------------------------------------------------------------

const STREAM =
  'CONNECT {"verbose":false,"headers":true}\r\n' +
  'SUB foo.* q 1\r\n' +
  'SUB > 2\r\n' +
  'PUB foo.bar reply.1 7\r\nhi\r\nyou\r\n' +
  'PUB foo.bar 0\r\n\r\n' +
  'HPUB foo.bar 18 23\r\nNATS/1.0\r\nA: b\r\n\r\nhello\r\n' +
  'HPUB foo.baz r 12 12\r\nNATS/1.0\r\n\r\n\r\n' +
  'pub\tfoo.bar\t  3\nabc\r\n' +
  'UNSUB 1 10\r\n' +
  'UNSUB 2\r\n' +
  'PING\r\nPONG\n+OK\r\nINFO {}\r\n' +
  "-ERR 'bye'\r\n"

t.test('a stream split at every byte boundary parses the same', async (t) => {
  const whole = run([STREAM])
  t.strictSame(whole, [
    ['connect', '{"verbose":false,"headers":true}'],
    ['sub', 'foo.*', 'q', '1'],
    ['sub', '>', null, '2'],
    ['pub', 'foo.bar', 'reply.1', -1, 7, 'hi\r\nyou'],
    ['pub', 'foo.bar', '', -1, 0, ''],
    ['pub', 'foo.bar', '', 18, 23, 'NATS/1.0\r\nA: b\r\n\r\nhello'],
    ['pub', 'foo.baz', 'r', 12, 12, 'NATS/1.0\r\n\r\n'],
    ['pub', 'foo.bar', '', -1, 3, 'abc'],
    ['unsub', '1', 10],
    ['unsub', '2', -1],
    ['ping'],
    ['pong'],
    ['err', "'bye'"],
  ], 'the whole stream')
  const oneByOne = [...enc.encode(STREAM)].map((b) => new Uint8Array([b]))
  t.strictSame(run(oneByOne), whole, 'one byte at a time')
  const all = enc.encode(STREAM)
  let bad = 0
  for (let i = 1; i < all.length; i++) {
    const got = run([all.subarray(0, i), all.subarray(i)])
    if (JSON.stringify(got) !== JSON.stringify(whole)) {
      bad++
      t.strictSame(got, whole, `split at ${i}`)
    }
  }
  t.equal(bad, 0, `every split in two (${all.length - 1} points)`)
  // three pieces at pseudo-random points (fixed seed)
  let seed = 7
  const rand = (n: number): number => (seed = (seed * 1103515245 + 12345) % 2147483648) % n
  for (let k = 0; k < 300; k++) {
    const a = 1 + rand(all.length - 2)
    const b = a + 1 + rand(all.length - a - 1)
    const got = run([all.subarray(0, a), all.subarray(a, b), all.subarray(b)])
    if (JSON.stringify(got) !== JSON.stringify(whole)) t.strictSame(got, whole, `split at ${a}, ${b}`)
  }
})

t.test('a split read does not keep the caller’s buffer', async (t) => {
  const { p, r } = parser()
  const buf = enc.encode('PUB foo bar 5\r\nhe')
  p.feed(buf)
  buf.fill(0x21) // the target reuses its read buffer
  p.feed(enc.encode('llo\r\nPUB foo 1\r\n'))
  const again = enc.encode('x\r\n')
  p.feed(again)
  t.strictSame(r.ops, [
    ['pub', 'foo', 'bar', -1, 5, 'hello'],
    ['pub', 'foo', '', -1, 1, 'x'],
  ])
})

t.test('a payload split across many reads', async (t) => {
  const payload = 'abcdefghij\r\nklmnopqrstuvwxyz'
  const pieces = [`PUB foo ${payload.length}\r\n`, ...payload.split(''), '\r', '\n', 'PING\r\n']
  t.strictSame(run(pieces), [['pub', 'foo', '', -1, payload.length, payload], ['ping']])
})

t.test('a 1 MiB payload', async (t) => {
  const size = 1024 * 1024
  const data = new Uint8Array(size)
  for (let i = 0; i < size; i++) data[i] = (i * 31 + 7) & 0xff
  const frame = new Uint8Array([...enc.encode(`PUB big ${size}\r\n`), ...data, 13, 10, ...enc.encode('PING\r\n')])
  for (const chunk of [frame.length, 65536, 1000]) {
    const { p, r } = parser({ maxPayload: size })
    for (let i = 0; i < frame.length; i += chunk) p.feed(frame.subarray(i, i + chunk))
    t.equal(r.ops.length, 2, `reads of ${chunk}: two operations`)
    t.equal(r.ops[0]![0], 'pub')
    t.equal(r.ops[1]![0], 'ping')
    t.ok(Buffer.from(r.payloads[0]!).equals(Buffer.from(data)), `reads of ${chunk}: payload intact`)
  }
  t.strictSame(run([`PUB big ${size + 1}\r\n`], { maxPayload: size }), [['fail', 'max_payload']], 'one byte more')
})

// --- bad frames -----------------------------------------------------------------------------

t.test('bad frames end in the right failure', async (t) => {
  const cases: [string, (string | Uint8Array)[], Failure, Setup?][] = [
    ['unknown operation', ['FOO\r\n'], 'unknown_op'],
    ['unknown operation before its newline', ['FO'], 'unknown_op'],
    ['MSG from a client', ['MSG foo 1 1\r\nx\r\n'], 'unknown_op'],
    ['empty line', ['\r\n'], 'unknown_op'],
    ['leading blank', [' PING\r\n'], 'unknown_op'],
    ['PUB without blank', ['PUB\r\n'], 'unknown_op'],
    ['PUB glued to its subject', ['PUBfoo 1\r\n'], 'unknown_op'],
    ['-ERR without blank', ['-ERR\r\n'], 'unknown_op'],
    ['+X', ['+X\r\n'], 'unknown_op'],
    ['PUB without arguments', ['PUB \r\n'], 'bad_args'],
    ['PUB one argument', ['PUB foo\r\n'], 'bad_args'],
    ['PUB four arguments', ['PUB a b c 1\r\n'], 'bad_args'],
    ['PUB six arguments', ['PUB a b c d e 1\r\n'], 'bad_args'],
    ['negative size', ['PUB foo -1\r\n'], 'bad_args'],
    ['non-numeric size', ['PUB foo x\r\n'], 'bad_args'],
    ['size with a suffix', ['PUB foo 1x\r\n'], 'bad_args'],
    ['size with a sign', ['PUB foo +1\r\n'], 'bad_args'],
    ['ten-digit size', ['PUB foo 1234567890\r\n'], 'bad_args'],
    ['size over max_payload', ['PUB foo 1048577\r\n'], 'max_payload'],
    ['nine-digit size over max_payload', ['PUB foo 999999999\r\n'], 'max_payload'],
    ['HPUB header size over total', ['HPUB foo 14 12\r\n'], 'bad_args'],
    ['HPUB non-numeric header size', ['HPUB foo x 2\r\n'], 'bad_args'],
    ['HPUB two arguments', ['HPUB foo 2\r\n'], 'bad_args'],
    ['HPUB five arguments', ['HPUB foo a b 0 2\r\n'], 'bad_args'],
    ['HPUB total over max_payload', ['HPUB foo 12 101\r\n'], 'max_payload', { maxPayload: 100 }],
    ['HPUB before headers are enabled', ['HPUB foo 12 14\r\n'], 'no_headers', { headers: false }],
    ['SUB one argument', ['SUB foo\r\n'], 'bad_args'],
    ['PUB reply with a bare CR inside', ['PUB crrep r\rx 2\r\n'], 'bad_args'],
    ['PUB subject with a bare CR inside', ['PUB a\rb 2\r\n'], 'bad_args'],
    ['PUB size followed by a bare CR', ['PUB a 2\r\r\n'], 'bad_args'],
    ['HPUB reply with a bare CR inside', ['HPUB crrep r\rx 12 14\r\n'], 'bad_args'],
    ['SUB four CR-separated arguments', ['SUB a\rb\rc\rd\r\n'], 'bad_args'],
    ['UNSUB three CR-separated arguments', ['UNSUB 1\r5\r6\r\n'], 'bad_args'],
    ['SUB four arguments', ['SUB a b c d\r\n'], 'bad_args'],
    ['UNSUB without arguments', ['UNSUB \r\n'], 'bad_args'],
    ['UNSUB three arguments', ['UNSUB 1 2 3\r\n'], 'bad_args'],
    ['INFO that is not JSON', ['INFO x\r\n'], 'bad_args'],
    ['INFO array', ['INFO []\r\n'], 'bad_args'],
    ['payload not followed by CRLF', ['PUB foo 5\r\nhelloXX'], 'unknown_op'],
    ['payload followed by CR only', ['PUB foo 5\r\nhello\rX'], 'unknown_op'],
    ['payload longer than its size', ['PUB foo 5\r\nhello world\r\n'], 'unknown_op'],
    ['wrong byte after a split payload, at once', ['PUB foo 5\r\nhel', 'loX'], 'unknown_op'],
    ['wrong byte after a split payload, one by one', ['PUB foo 2\r\n', 'h', 'i', '\r', 'X'], 'unknown_op'],
    ['argument over max_control_line in one read', [`SUB ${'a'.repeat(63)} 1\r\n`], 'control_line', { maxControlLine: 64 }],
    ['argument over max_control_line split across reads', [`SUB ${'a'.repeat(40)}`, `${'a'.repeat(40)} 1\r\n`], 'control_line', { maxControlLine: 64 }],
    ['argument over max_control_line before its newline', [`PUB ${'a'.repeat(65)}`], 'control_line', { maxControlLine: 64 }],
    ['CONNECT over max_control_line', [`CONNECT {"name":"${'n'.repeat(60)}"}\r\n`], 'control_line', { maxControlLine: 64 }],
    ['long PING line', [`PING${' '.repeat(70)}\r\n`], 'control_line', { maxControlLine: 64 }],
    ['long PING line before its newline', [`PING${' '.repeat(70)}`], 'control_line', { maxControlLine: 64 }],
    ['long unknown operation', [`${'X'.repeat(100)}\r\n`], 'unknown_op', { maxControlLine: 64 }],
    ['long unknown operation before its newline', [`${'X'.repeat(100)}`], 'unknown_op', { maxControlLine: 64 }],
    ['PING before CONNECT when auth is pending', ['PING\r\n'], 'auth_first', { connectFirst: true }],
    ['PUB before CONNECT when auth is pending', ['PUB foo 1\r\nx\r\n'], 'auth_first', { connectFirst: true }],
    ['partial operation when auth is pending', ['P'], 'auth_first', { connectFirst: true }],
    ['long line when auth is pending', [`SUB ${'a'.repeat(100)} 1\r\n`], 'auth_first', { connectFirst: true, maxControlLine: 64 }],
    ['C-operation that is not CONNECT when auth is pending', ['COFFEE\r\n'], 'unknown_op', { connectFirst: true }],
  ]
  for (const [name, pieces, why, setup] of cases) {
    const ops = run(pieces, setup)
    t.strictSame(ops, [['fail', why]], name)
  }
})

t.test('limits that are not exceeded', async (t) => {
  const s = { maxControlLine: 64, maxPayload: 100 }
  t.strictSame(run([`SUB ${'a'.repeat(62)} 1\r\n`], s), [['sub', 'a'.repeat(62), null, '1']], 'argument of exactly max_control_line')
  t.strictSame(run([`SUB${' '.repeat(70)}a 1\r\n`], s), [['sub', 'a', null, '1']], 'blanks after the operation do not count')
  t.strictSame(run([`SUB ${'a'.repeat(30)}`, `${'a'.repeat(30)} 1\r\n`], s), [['sub', 'a'.repeat(60), null, '1']], 'split, under the limit')
  t.strictSame(run([`PUB foo 100\r\n${'x'.repeat(100)}\r\n`], s), [['pub', 'foo', '', -1, 100, 'x'.repeat(100)]], 'payload of exactly max_payload')
})

t.test('CONNECT first while auth is pending', async (t) => {
  const { p, r } = parser({ connectFirst: true })
  r.onConnect = () => (p.connectFirst = false) // the client accepts the credentials
  p.feed(enc.encode('CONNECT {"user":"u"}\r\nPI'))
  t.strictSame(r.ops, [['connect', '{"user":"u"}']], 'CONNECT is let through; the rest waits')
  p.feed(enc.encode('NG\r\n'))
  t.strictSame(r.ops, [['connect', '{"user":"u"}'], ['ping']])
})

t.test('after a failure nothing more is parsed', async (t) => {
  const { p, r } = parser()
  p.feed(enc.encode('PING\r\nFOO\r\nPING\r\nSUB a 1\r\n'))
  p.feed(enc.encode('PING\r\n'))
  t.strictSame(r.ops, [['ping'], ['fail', 'unknown_op']])
  t.ok(p.stopped)

  const split = parser()
  split.p.feed(enc.encode('PUB foo 5\r\nhel'))
  split.p.feed(enc.encode('loX\r\nPING\r\n'))
  split.p.feed(enc.encode('PING\r\n'))
  t.strictSame(split.r.ops, [['fail', 'unknown_op']], 'after a bad split payload')

  const stopped = parser()
  stopped.p.stopped = true // the connection ended (e.g. a CONNECT refused)
  stopped.p.feed(enc.encode('PING\r\n'))
  t.strictSame(stopped.r.ops, [], 'stopped from outside')
})

t.test('a bare CR separates SUB and UNSUB arguments, as nats-server splits them', async (t) => {
  t.strictSame(run(['SUB crsid 7\r8\r\n']), [['sub', 'crsid', '7', '8']])
  t.strictSame(run(['SUB a\r\r 9\r\n']), [['sub', 'a', null, '9']])
  t.strictSame(run(['UNSUB 1\r5\r\n']), [['unsub', '1', 5]])
  // Split at every byte: the same verdict.
  const line = 'SUB crsid 7\r8\r\nPING\r\n'
  for (let i = 1; i < line.length; i++) t.strictSame(run([line.slice(0, i), line.slice(i)]), [['sub', 'crsid', '7', '8'], ['ping']], `split at ${i}`)
})

t.test('parseSize and splitArgs', async (t) => {
  const sz = (s: string): number => parseSize(enc.encode(s), 0, s.length)
  t.equal(sz('0'), 0)
  t.equal(sz('123456789'), 123456789)
  t.equal(sz(''), -1)
  t.equal(sz('1234567890'), -1)
  t.equal(sz('-1'), -1)
  t.equal(sz('1 '), -1)
  const out = new Int32Array(12)
  const b = enc.encode(' \ta  bb\tc ')
  t.equal(splitArgs(b, 0, b.length, out, false), 3)
  t.strictSame([...out.subarray(0, 6)], [2, 3, 5, 7, 8, 9])
  const many = enc.encode('a b c d e f g')
  t.equal(splitArgs(many, 0, many.length, out, false), 6, 'more than five is reported as 6')
  const cr = enc.encode('s 7\r8')
  t.equal(splitArgs(cr, 0, cr.length, out, true), 3, 'CR splits (SUB, UNSUB)')
  t.strictSame([...out.subarray(0, 6)], [0, 1, 2, 3, 4, 5])
  t.equal(splitArgs(cr, 0, cr.length, out, false), -1, 'CR refuses the line (PUB, HPUB)')
})

t.test('after a first PUB sets the subject, the repeated-subject fast path parses like the general one', async (t) => {
  const first = 'PUB foo.bar 1\r\nx\r\n'
  // Each line, parsed after `first` (fast path candidate) and on its own (general path).
  const lines: [string, string][] = [
    ['same subject', 'PUB foo.bar 2\r\nab\r\n'],
    ['same subject, tab', 'PUB\tfoo.bar 2\r\nab\r\n'],
    ['same subject, two blanks', 'PUB foo.bar  2\r\nab\r\n'],
    ['same subject, trailing blank', 'PUB foo.bar 2 \r\nab\r\n'],
    ['same subject, reply', 'PUB foo.bar r.x 2\r\nab\r\n'],
    ['longer subject', 'PUB foo.bar.baz 2\r\nab\r\n'],
    ['shorter subject', 'PUB foo.ba 2\r\nab\r\n'],
    ['prefix of the size', 'PUB foo.bar2 2\r\nab\r\n'],
    ['empty size', 'PUB foo.bar \r\n'],
    ['CR in the size', 'PUB foo.bar 2\r3\r\n'],
    ['non-numeric size', 'PUB foo.bar 2x\r\n'],
    ['ten digits', 'PUB foo.bar 1234567890\r\n'],
    ['over max_payload', 'PUB foo.bar 2000\r\n'],
    ['lower-case pub', 'pub foo.bar 0\r\n\r\n'],
    ['LF only', 'PUB foo.bar 1\nz\r\n'],
    ['HPUB', 'HPUB foo.bar 12 12\r\nNATS/1.0\r\n\r\n\r\n'],
  ]
  for (const [name, line] of lines) {
    const general = run([line], { maxPayload: 1000 })
    const fast = run([first + line], { maxPayload: 1000 }).slice(1)
    t.same(fast, general, name)
    t.same(run([first, line], { maxPayload: 1000 }).slice(1), general, `${name}, in a second read`)
  }
})

// --- the repeated-subject stream (the byte-level fast path) -----------------------------------

t.test('a stream of PUBs to one subject, split at every byte, parses the same', async (t) => {
  // The first PUB sets the subject; the rest take the fast path when whole in a read, the
  // general path when cut. Payloads that look like protocol, empty ones, CR/LF inside.
  const frames = [
    'PUB s.t 3\r\nabc\r\n',
    'PUB s.t 0\r\n\r\n',
    'PUB s.t 5\r\nPUB s\r\n',
    'PUB s.t 2\r\n\r\n\r\n',
    'pub s.t 1\r\nx\r\n',
    'PUB s.t r 1\r\ny\r\n',
    'PUB s.t 12\r\nPUB s.t 1\r\nz\r\n',
    'HPUB s.t 12 13\r\nNATS/1.0\r\n\r\nh\r\n',
    'PUB s.t 1\r\nw\r\n',
    'PING\r\n',
  ]
  const stream = frames.join('')
  const want: Op[] = [
    ['pub', 's.t', '', -1, 3, 'abc'],
    ['pub', 's.t', '', -1, 0, ''],
    ['pub', 's.t', '', -1, 5, 'PUB s'],
    ['pub', 's.t', '', -1, 2, '\r\n'],
    ['pub', 's.t', '', -1, 1, 'x'],
    ['pub', 's.t', 'r', -1, 1, 'y'],
    ['pub', 's.t', '', -1, 12, 'PUB s.t 1\r\nz'],
    ['pub', 's.t', '', 12, 13, 'NATS/1.0\r\n\r\nh'],
    ['pub', 's.t', '', -1, 1, 'w'],
    ['ping'],
  ]
  t.strictSame(run([stream]), want, 'whole')
  const all = enc.encode(stream)
  let bad = 0
  for (let i = 1; i < all.length; i++) {
    const got = run([all.subarray(0, i), all.subarray(i)])
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      bad++
      t.strictSame(got, want, `split at ${i}`)
    }
  }
  t.equal(bad, 0, `every split in two (${all.length - 1} points)`)
  t.strictSame(run([...all].map((b) => new Uint8Array([b]))), want, 'one byte at a time')
  for (const n of [2, 3, 7, 16, 33]) {
    const pieces: Uint8Array[] = []
    for (let i = 0; i < all.length; i += n) pieces.push(all.subarray(i, i + n))
    t.strictSame(run(pieces), want, `reads of ${n} bytes`)
  }
})

t.test('the fast path keeps the limits and failures of the general one', async (t) => {
  const first = 'PUB foo 1\r\nx\r\n'
  const s = { maxPayload: 100, maxControlLine: 64 }
  const cases: [string, string, Op[]][] = [
    ['exactly max_payload', `PUB foo 100\r\n${'y'.repeat(100)}\r\n`, [['pub', 'foo', '', -1, 100, 'y'.repeat(100)]]],
    ['one over max_payload', `PUB foo 101\r\n${'y'.repeat(101)}\r\n`, [['fail', 'max_payload']]],
    ['nine digits over max_payload', 'PUB foo 000000101\r\n', [['fail', 'max_payload']]],
    ['ten digits', 'PUB foo 0000000001\r\nx\r\n', [['fail', 'bad_args']]],
    ['payload longer than its size', 'PUB foo 1\r\nxy\r\n', [['fail', 'unknown_op']]],
    ['payload followed by LF only', 'PUB foo 1\r\nx\nPING\r\n', [['fail', 'unknown_op']]],
    ['payload followed by CR and junk', 'PUB foo 1\r\nx\rX', [['fail', 'unknown_op']]],
    ['leading zeros', 'PUB foo 001\r\nz\r\n', [['pub', 'foo', '', -1, 1, 'z']]],
    ['size then a blank', 'PUB foo 1 \r\nz\r\n', [['pub', 'foo', '', -1, 1, 'z']]],
    ['size then a bare CR', 'PUB foo 1\r\r\nz\r\n', [['fail', 'bad_args']]],
  ]
  for (const [name, line, want] of cases) {
    t.strictSame(run([first + line], s).slice(1), want, name)
    t.strictSame(run([line], s), want, `${name}, without a previous PUB`)
  }
  // A subject that makes its argument exactly max_control_line, then one over.
  const subj = 'a'.repeat(61)
  const at = { maxControlLine: 64 }
  t.strictSame(run([`PUB ${subj} 1\r\nx\r\nPUB ${subj} 22\r\n${'z'.repeat(22)}\r\n`], at).length, 2, 'argument of exactly max_control_line')
  t.strictSame(run([`PUB ${subj} 1\r\nx\r\nPUB ${subj} 222\r\n`], at).slice(1), [['fail', 'control_line']], 'one digit more: over it')
})

t.test('a control line arriving a byte at a time is copied linearly, not re-joined per read', async (t) => {
  // Count the bytes the parser copies into its line buffer through Uint8Array.prototype.set.
  const line = `CONNECT {"name":"${'n'.repeat(3900)}"}\r\n`
  const { p, r } = parser()
  const orig = Uint8Array.prototype.set
  let copied = 0
  Uint8Array.prototype.set = function (this: Uint8Array, src: ArrayLike<number>, off?: number) {
    copied += src.length
    return orig.call(this, src, off)
  } as typeof orig
  try {
    for (const b of enc.encode(line)) p.feed(new Uint8Array([b]))
  } finally {
    Uint8Array.prototype.set = orig
  }
  t.equal(r.ops.length, 1)
  t.equal(r.ops[0]![0], 'connect')
  t.ok(copied < 4 * line.length, `${copied} bytes copied for a ${line.length}-byte line (quadratic: ~${(line.length * line.length) / 2})`)
})

t.test('a read that starts by finishing a line is not copied whole', async (t) => {
  // 16 B PUBs in 64 KiB reads: every read that ends inside a control line used to be joined
  // with the whole next read.
  const frame = 'PUB bench.pub 16\r\n' + 'a'.repeat(16) + '\r\n'
  const all = enc.encode(frame.repeat(20000))
  const { p, r } = parser()
  let n = 0
  r.pub = (): void => {
    n++
  }
  const orig = Uint8Array.prototype.set
  let copied = 0
  Uint8Array.prototype.set = function (this: Uint8Array, src: ArrayLike<number>, off?: number) {
    copied += src.length
    return orig.call(this, src, off)
  } as typeof orig
  try {
    for (let i = 0; i < all.length; i += 65536 + 7) p.feed(all.subarray(i, i + 65536 + 7))
  } finally {
    Uint8Array.prototype.set = orig
  }
  t.equal(n, 20000, 'every PUB')
  t.ok(copied < 100 * 20, `${copied} bytes copied over ${Math.ceil(all.length / 65543)} reads`)
})

t.test('blanks before an argument, over max_control_line and split from the rest of the line, are not held', async (t) => {
  // nats-server skips them unbuffered; sprig would keep the whole read (and, growing its line
  // buffer by doubling, twice that) until the line ends: one read of blanks, then a byte at a time.
  for (const op of ['PUB', 'SUB', 'CONNECT', 'UNSUB', 'HPUB']) {
    const { p, r } = parser({ maxControlLine: 64 })
    p.feed(enc.encode(op + ' '.repeat(100_000) + 'x'))
    const held = (p as unknown as { partial: Uint8Array | null }).partial
    t.strictSame(r.ops, [['fail', 'control_line']], `${op}: refused`)
    t.equal(held, null, `${op}: nothing held`)
  }
  // Within the limit they are still skipped, whole or split, as in nats-server.
  const blanks = ' '.repeat(60)
  const want = [['pub', 'x', '', -1, 1, 'z']]
  t.strictSame(run([`PUB${blanks}x 1\r\nz\r\n`], { maxControlLine: 64 }), want, 'whole')
  t.strictSame(run([`PUB${blanks}x`, ' 1\r\nz\r\n'], { maxControlLine: 64 }), want, 'split after the subject')
  t.strictSame(run([`PUB${blanks}`, 'x 1\r\nz\r\n'], { maxControlLine: 64 }), want, 'split in the blanks')
})
