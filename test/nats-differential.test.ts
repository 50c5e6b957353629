// Differential tests: the same raw bytes go to sprig (in-process) and to a real nats-server,
// both on loopback with the same settings, and what comes back after INFO must be the same,
// byte for byte, as must whether the server closed the connection. Nothing is normalized
// except the INFO line a refused connection gets (ids differ), see `maxConnections`.
//
// Cases are a table: {name, setup, bytes} (a string, or pieces sent 20 ms apart), or a
// `run` scenario over several connections. A case where sprig knowingly differs carries
// `differs` with the reason and both exact outputs, so a change on either side shows up.
//
// Servers are reused: each setup gets a small pool of sprig/nats-server pairs, each pair runs
// its cases one at a time (cases subscribe to `>`, so they must not share a server at once).

import t from 'tap'
import net from 'node:net'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Options } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { havePeer, startNatsServer, type Proc } from './helpers/peers.ts'

interface Result {
  out: string
  closed: boolean
}

interface Setup {
  sprig: Partial<Options>
  /** nats-server configuration file text. */
  nats: string
  /** Server pairs run in parallel; 1 for cases that count connections. */
  pool: number
}

const AUTH_TIMEOUT_S = 0.3

const SETUPS = {
  plain: { sprig: {}, nats: '', pool: 6 },
  limits: {
    sprig: { max_payload: 100, max_control_line: 64, max_subscriptions: 2 },
    nats: 'max_payload: 100\nmax_control_line: 64\nmax_subscriptions: 2\n',
    pool: 2,
  },
  user: {
    sprig: { authorization: { user: 'u', password: 'p', timeout: AUTH_TIMEOUT_S * 1000 } },
    nats: `authorization { user: u, password: p, timeout: ${AUTH_TIMEOUT_S} }\n`,
    pool: 2,
  },
  token: {
    sprig: { authorization: { token: 's3cret', timeout: AUTH_TIMEOUT_S * 1000 } },
    nats: `authorization { token: s3cret, timeout: ${AUTH_TIMEOUT_S} }\n`,
    pool: 1,
  },
  maxconn: { sprig: { max_connections: 1 }, nats: 'max_connections: 1\n', pool: 1 },
} satisfies Record<string, Setup>

type SetupName = keyof typeof SETUPS

interface Case {
  name: string
  setup?: SetupName
  bytes?: string | string[]
  run?: (port: number) => Promise<Result>
  /** How long to listen after the last write (ms). */
  wait?: number
  /** An accepted difference: why, and exactly what each server does. */
  differs?: { why: string; sprig: Result; nats: Result }
}

const ok = (out: string): Result => ({ out, closed: false })
const closed = (out = ''): Result => ({ out, closed: true })

const CONNECT = (o: Record<string, unknown>): string => `CONNECT ${JSON.stringify(o)}\r\n`
const QUIET = CONNECT({ verbose: false })
const QUIET_HDR = CONNECT({ verbose: false, headers: true })
const UNKNOWN = "-ERR 'Unknown Protocol Operation'\r\n"

// --- a persistent raw connection, for scenarios with several clients -----------------------

class Peer {
  out = ''
  closed = false
  private waiters: (() => void)[] = []

  private constructor(private readonly s: net.Socket) {
    s.on('data', (d) => {
      this.out += d.toString('latin1')
      this.wake()
    })
    s.on('close', () => {
      this.closed = true
      this.wake()
    })
    s.on('error', () => {})
  }

  /** Connects and waits for the first line (INFO, or whatever the server says first). */
  static async open(port: number): Promise<Peer> {
    const p = new Peer(net.connect(port, '127.0.0.1'))
    await p.until(() => p.out.includes('\r\n') || p.closed)
    return p
  }

  /** What came after the INFO line. */
  get body(): string {
    return this.out.startsWith('INFO ') ? this.out.slice(this.out.indexOf('\r\n') + 2) : this.out
  }

  send(s: string): void {
    this.s.write(s)
  }

  /** PING and wait for its PONG: everything sent before has been processed. */
  async sync(): Promise<void> {
    const n = this.out.split('PONG\r\n').length
    this.send('PING\r\n')
    await this.until(() => this.out.split('PONG\r\n').length > n || this.closed)
  }

  close(): void {
    this.s.destroy()
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  private until(cond: () => boolean, ms = 3000): Promise<void> {
    return new Promise((resolve, reject) => {
      const end = Date.now() + ms
      const check = (): void => {
        if (cond()) return resolve()
        if (Date.now() > end) return reject(new Error(`timed out; got ${JSON.stringify(this.out)}`))
        this.waiters.push(check)
        setTimeout(() => this.wake(), 50)
      }
      check()
    })
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface Exchange extends Result {
  info: Record<string, unknown>
}

/**
 * Like helpers/raw.ts exchange(): read INFO, send the pieces 20 ms apart, collect the rest.
 * It ends when the server closes, or when the input ends with PING and a PONG ended the
 * output (plus 50 ms for anything stray); otherwise, and at most, after `waitMs`. The early
 * end keeps the run short, the long limit keeps it right on a busy machine.
 */
function talk(port: number, pieces: string | string[], waitMs: number): Promise<Exchange> {
  const list = typeof pieces === 'string' ? [pieces] : pieces
  const pinged = list.length > 0 && list[list.length - 1]!.endsWith('PING\r\n')
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let buf = ''
    let info: Record<string, unknown> | null = null
    let closed = false
    let sent = false
    let timer: NodeJS.Timeout | undefined
    const finish = (): void => {
      clearTimeout(timer)
      s.destroy()
      resolve({ info: info!, out: buf, closed })
    }
    const check = (): void => {
      if (!sent) return
      if (closed) finish()
      else if (pinged && buf.endsWith('PONG\r\n')) {
        clearTimeout(timer)
        timer = setTimeout(finish, 50)
      }
    }
    s.on('error', () => {})
    s.on('close', () => {
      closed = true
      check()
    })
    s.on('data', (d) => {
      buf += d.toString('latin1')
      if (info === null) {
        const i = buf.indexOf('\r\n')
        if (i < 0) return
        const line = buf.slice(0, i)
        if (!line.startsWith('INFO ')) return reject(new Error(`expected INFO, got ${line}`))
        info = JSON.parse(line.slice(5)) as Record<string, unknown>
        buf = buf.slice(i + 2)
        void send()
      } else check()
    })
    async function send(): Promise<void> {
      for (let i = 0; i < list.length && !closed; i++) {
        if (i > 0) await sleep(20)
        s.write(list[i]!)
      }
      sent = true
      timer = setTimeout(finish, pinged ? Math.max(waitMs, 3000) : waitMs)
      check()
    }
  })
}

// --- the cases ------------------------------------------------------------------------------

const cases: Case[] = [
  // operations and their syntax
  { name: 'PING', bytes: 'PING\r\n' },
  { name: 'lower and mixed case operations', bytes: 'connect {"verbose":false}\r\nsub a.b 1\r\npub a.b 1\r\nx\r\nPuB a.b 1\r\ny\r\nunsub 1\r\nping\r\n' },
  { name: 'tabs and repeated blanks', bytes: 'CONNECT\t{"verbose":false}\r\nSUB\ta.b\t \t1\r\nPUB \t a.b\t\t1  \r\nx\r\nPING\r\n' },
  { name: 'LF without CR', bytes: 'CONNECT {"verbose":false}\nSUB a.b 1\nPUB a.b 1\nx\r\nPING\n' },
  { name: 'payload ends with LF only', bytes: 'CONNECT {"verbose":false}\nSUB a.b 1\nPUB a.b 1\nx\nPING\n' },
  { name: 'payload containing CRLF', bytes: QUIET + 'SUB a.b 1\r\nPUB a.b 6\r\n\r\nab\r\n\r\nPING\r\n' },
  { name: 'zero-length payload', bytes: QUIET + 'SUB a.b 1\r\nPUB a.b 0\r\n\r\nPING\r\n' },
  { name: 'PUB with reply', bytes: QUIET + 'SUB a.b 1\r\nPUB a.b r.1 2\r\nhi\r\nPING\r\n' },
  { name: 'frames split across reads', bytes: ['CONNECT {"verbose":fa', 'lse}\r\nSU', 'B a.b 1\r', '\nPUB a.b 5\r\nhel', 'lo\r', '\nPI', 'NG\r\n'] },
  { name: 'PINGX is a PING', bytes: 'PINGX\r\n' },
  { name: 'PING with an argument', bytes: 'PING x\r\n' },
  { name: 'PONG', bytes: 'PONG\r\nPING\r\n' },
  { name: '+OK and +OKX from a client', bytes: '+OK\r\n+OKX\r\nPING\r\n' },
  { name: 'INFO from a client', bytes: 'INFO {}\r\nPING\r\n' },
  { name: 'INFO null', bytes: 'INFO null\r\nPING\r\n' },
  { name: 'INFO without JSON', bytes: 'INFO\r\nPING\r\n' },
  { name: 'INFOX', bytes: 'INFOX\r\nPING\r\n' },
  { name: 'INFO array', bytes: 'INFO []\r\nPING\r\n' },
  {
    name: 'INFO with a field of the wrong type',
    bytes: 'INFO {"port":"x"}\r\nPING\r\n',
    differs: {
      why: "sprig checks that a client's INFO is a JSON object, not the types of Info's fields",
      sprig: ok('PONG\r\n'),
      nats: closed(),
    },
  },

  // unknown and malformed operations
  { name: 'unknown operation', bytes: 'FOO\r\n' },
  { name: 'unknown operation without newline', bytes: 'XY' },
  { name: 'valid start of an operation without newline', bytes: 'PI' },
  { name: 'empty line', bytes: '\r\nPING\r\n' },
  { name: 'leading blank', bytes: ' PING\r\n' },
  { name: 'MSG from a client', bytes: 'MSG foo 1 2\r\nhi\r\n' },
  { name: 'client -ERR', bytes: "-ERR 'boom'\r\nPING\r\n" },
  { name: '-ERR without argument', bytes: '-ERR\r\nPING\r\n' },
  { name: '-ERRX', bytes: '-ERRX\r\n' },
  { name: 'CONNECTX', bytes: 'CONNECTX {}\r\nPING\r\n' },
  { name: 'PUB alone', bytes: 'PUB\r\n' },
  { name: 'PUB and a blank', bytes: 'PUB \r\n' },
  { name: 'PUB one argument', bytes: 'PUB foo\r\n' },
  { name: 'PUB four arguments', bytes: 'PUB a b c 1\r\nx\r\n' },
  { name: 'PUB glued', bytes: 'PUBfoo 1\r\nx\r\n' },
  { name: 'SUB alone', bytes: 'SUB\r\n' },
  { name: 'SUB one argument', bytes: 'SUB foo\r\n' },
  { name: 'SUB four arguments', bytes: 'SUB a b c d\r\n' },
  { name: 'UNSUB alone', bytes: 'UNSUB\r\n' },
  { name: 'UNSUB three arguments', bytes: 'UNSUB 1 2 3\r\n' },
  { name: 'UNSUB unknown sid', bytes: 'UNSUB 9\r\nPING\r\n' },
  { name: 'UNSUB non-numeric max', bytes: QUIET + 'SUB a.b 1\r\nUNSUB 1 x\r\nPUB a.b 1\r\nx\r\nPING\r\n' },
  { name: 'UNSUB negative max', bytes: QUIET + 'SUB a.b 1\r\nUNSUB 1 -1\r\nPUB a.b 1\r\nx\r\nPING\r\n' },
  { name: 'UNSUB max 0', bytes: QUIET + 'SUB a.b 1\r\nUNSUB 1 0\r\nPUB a.b 1\r\nx\r\nPING\r\n' },

  // sizes
  { name: 'non-numeric size', bytes: 'PUB foo x\r\n' },
  { name: 'negative size', bytes: 'PUB foo -1\r\n' },
  { name: 'size with a plus sign', bytes: 'PUB foo +1\r\nx\r\n' },
  { name: 'size with a suffix', bytes: 'PUB foo 1x\r\nx\r\n' },
  { name: 'size of ten digits', bytes: 'PUB foo 1234567890\r\n' },
  { name: 'size over max_payload (default 1 MiB)', bytes: 'PUB foo 1048577\r\n' },
  { name: 'payload longer than its size', bytes: 'PUB foo 5\r\nhello world\r\n' },
  { name: 'payload not followed by CRLF', bytes: 'PUB foo 5\r\nhelloXX' },
  { name: 'wrong byte after a split payload', bytes: ['PUB foo 5\r\nhel', 'loX'] },
  { name: 'HPUB header size over total', bytes: QUIET_HDR + 'HPUB foo 14 12\r\nNATS/1.0\r\n\r\nhi\r\n' },
  { name: 'HPUB non-numeric header size', bytes: QUIET_HDR + 'HPUB foo x 2\r\nhi\r\n' },
  { name: 'HPUB two arguments', bytes: QUIET_HDR + 'HPUB foo 2\r\nhi\r\n' },
  { name: 'HPUB five arguments', bytes: QUIET_HDR + 'HPUB foo a b 0 2\r\nhi\r\n' },
  { name: 'HPUB without headers in CONNECT', bytes: 'HPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n' },
  { name: 'HPUB after headers were turned off', bytes: QUIET_HDR + 'CONNECT {"headers":false}\r\nHPUB foo 12 14\r\nNATS/1.0\r\n\r\nhi\r\n' },

  // subjects
  { name: 'SUB empty token', bytes: 'SUB foo..bar 1\r\nPING\r\n' },
  { name: 'SUB leading dot', bytes: 'SUB .foo 1\r\nPING\r\n' },
  { name: 'SUB trailing dot', bytes: 'SUB foo. 1\r\nPING\r\n' },
  { name: 'SUB > not last', bytes: 'SUB foo.>.bar 1\r\nPING\r\n' },
  { name: 'SUB >', bytes: 'SUB > 1\r\nPING\r\n' },
  { name: 'SUB queue names', bytes: 'SUB foo q 1\r\nSUB foo q.x 2\r\nSUB foo * 3\r\nSUB foo > 4\r\nSUB foo a..b 5\r\nPING\r\n' },
  { name: 'SUB repeated sid with an invalid subject', bytes: 'SUB foo 1\r\nSUB foo..bar 1\r\nPING\r\n' },
  { name: 'SUB repeated sid keeps the first subject', bytes: QUIET + 'SUB a.b 1\r\nSUB a.c 1\r\nPUB a.c 1\r\nx\r\nPUB a.b 1\r\ny\r\nPING\r\n' },
  {
    name: 'SUB subject with a form feed',
    bytes: 'SUB foo\fbar 1\r\nPING\r\n',
    differs: { why: 'nats-server 2.9 accepts whitespace (\\f, \\r) inside subjects; sprig refuses it', sprig: ok("-ERR 'Invalid Subject'\r\nPONG\r\n"), nats: ok('+OK\r\nPONG\r\n') },
  },
  {
    name: 'SUB queue name with a form feed',
    bytes: 'SUB foo q\fx 1\r\nPING\r\n',
    differs: { why: 'nats-server 2.9 accepts whitespace inside queue names; sprig refuses it', sprig: ok("-ERR 'Invalid Subject'\r\nPONG\r\n"), nats: ok('+OK\r\nPONG\r\n') },
  },
  ...publishSubjectCases(),
  {
    name: 'PUB subject with a form feed (pedantic)',
    bytes: QUIET + 'SUB > 1\r\nPUB foo\fbar 1\r\nx\r\nPING\r\n',
    differs: {
      why: 'nats-server 2.9 routes whitespace subjects; sprig refuses them (-ERR when pedantic)',
      sprig: ok("-ERR 'Invalid Publish Subject'\r\nPONG\r\n"),
      nats: ok('MSG foo\fbar 1 1\r\nx\r\nPONG\r\n'),
    },
  },
  {
    name: 'PUB subject with a form feed (not pedantic)',
    bytes: CONNECT({ verbose: false, pedantic: false }) + 'SUB > 1\r\nPUB foo\fbar 1\r\nx\r\nPING\r\n',
    differs: { why: 'nats-server 2.9 routes whitespace subjects; sprig drops them', sprig: ok('PONG\r\n'), nats: ok('MSG foo\fbar 1 1\r\nx\r\nPONG\r\n') },
  },
  {
    name: 'PUB subject with a CR inside',
    bytes: QUIET + 'SUB > 1\r\nPUB foo\rbar 1\r\nx\r\nPING\r\n',
    differs: {
      why: 'nats-server routes a CR inside PUB arguments into MSG lines; sprig closes the publisher (a parse error, as for any bad PUB)',
      sprig: closed(),
      nats: ok('MSG foo\rbar 1 1\r\nx\r\nPONG\r\n'),
    },
  },
  // A bare CR inside arguments (issue 9): nats-server's SUB/UNSUB split on it; its PUB/HPUB
  // keep it and relay it in other clients' MSG lines, which sprig refuses.
  { name: 'SUB with a CR between queue and sid', bytes: QUIET + 'SUB crsid 7\r8\r\nPUB crsid 1\r\nx\r\nPING\r\n' },
  { name: 'SUB with CRs as the only separators', bytes: QUIET + 'SUB crq\rq\r9\r\nPUB crq 1\r\nx\r\nPING\r\n' },
  { name: 'SUB with blanks and CRs mixed', bytes: QUIET + 'SUB crrep\r\r 9\r\nPUB crrep 1\r\nx\r\nPING\r\n' },
  { name: 'SUB with four CR-separated arguments', bytes: QUIET + 'SUB a\rb\rc\rd\r\nPING\r\n' },
  { name: 'UNSUB with a CR before max', bytes: QUIET + 'SUB u 1\r\nUNSUB 1\r1\r\nPUB u 1\r\nx\r\nPUB u 1\r\ny\r\nPING\r\n' },
  { name: 'UNSUB with three CR-separated arguments', bytes: QUIET + 'UNSUB 1\r5\r6\r\nPING\r\n' },
  { name: 'PUB with a CR after the size', bytes: QUIET + 'PUB crrep 2\r\r\nhi\r\nPING\r\n' },
  { name: 'PUB with a CR before the size', bytes: QUIET + 'PUB crrep \r2\r\nhi\r\nPING\r\n' },
  { name: 'PUB with a CR as the only separator', bytes: QUIET + 'PUB crrep\r2\r\nhi\r\nPING\r\n' },
  { name: 'PUB reply with a NUL is relayed as it is', bytes: QUIET + 'SUB crnul 1\r\nPUB crnul r\u0000x 2\r\nhi\r\nPING\r\n' },
  {
    name: 'PUB reply with a CR inside',
    bytes: QUIET + 'SUB crrep 1\r\nPUB crrep r\rx 2\r\nhi\r\nPING\r\n',
    differs: {
      why: 'nats-server relays the CR in the MSG line (any publisher could inject it into other clients\' streams); sprig closes the publisher',
      sprig: closed(),
      nats: ok('MSG crrep 1 r\rx 2\r\nhi\r\nPONG\r\n'),
    },
  },
  {
    name: 'HPUB reply with a CR inside',
    bytes: QUIET_HDR + 'SUB crrep 1\r\nHPUB crrep r\rx 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n',
    differs: {
      why: 'nats-server relays the CR in the HMSG line; sprig closes the publisher',
      sprig: closed(),
      nats: ok('HMSG crrep 1 r\rx 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPONG\r\n'),
    },
  },
  {
    name: 'delivery order of overlapping subscriptions on one connection',
    // one subscription per trie node: nats-server's order within a node is a Go map's (random)
    bytes: QUIET + 'SUB ord.x 1\r\nSUB > 2\r\nSUB ord.* 3\r\nSUB *.x 4\r\nSUB ord.> 5\r\nPUB ord.x 1\r\nx\r\nPING\r\n',
    differs: {
      why: "src/sublist.ts collects a last-token `*` before the literal token's subs; nats-server's matchLevel adds it after them",
      sprig: ok(['2', '4', '5', '3', '1'].map((s) => `MSG ord.x ${s} 1\r\nx\r\n`).join('') + 'PONG\r\n'),
      nats: ok(['2', '4', '5', '1', '3'].map((s) => `MSG ord.x ${s} 1\r\nx\r\n`).join('') + 'PONG\r\n'),
    },
  },

  // CONNECT
  { name: 'CONNECT bad JSON', bytes: 'CONNECT {bad}\r\nPING\r\n' },
  { name: 'CONNECT without JSON', bytes: 'CONNECT\r\nPING\r\n' },
  { name: 'CONNECT blank', bytes: 'CONNECT \r\nPING\r\n' },
  { name: 'CONNECT array', bytes: 'CONNECT []\r\nPING\r\n' },
  { name: 'CONNECT null', bytes: 'CONNECT null\r\nPING\r\n' },
  { name: 'CONNECT string', bytes: 'CONNECT "x"\r\nPING\r\n' },
  { name: 'CONNECT number', bytes: 'CONNECT 1\r\nPING\r\n' },
  { name: 'CONNECT trailing junk', bytes: 'CONNECT {} x\r\nPING\r\n' },
  { name: 'CONNECT empty object', bytes: 'CONNECT {}\r\nPING\r\n' },
  { name: 'CONNECT protocol 1', bytes: 'CONNECT {"protocol":1}\r\nPING\r\n' },
  { name: 'CONNECT protocol 2', bytes: 'CONNECT {"protocol":2}\r\nPING\r\n' },
  { name: 'CONNECT protocol -1', bytes: 'CONNECT {"protocol":-1}\r\nPING\r\n' },
  { name: 'CONNECT protocol as a string', bytes: 'CONNECT {"protocol":"1"}\r\nPING\r\n' },
  { name: 'CONNECT protocol 1.5', bytes: 'CONNECT {"protocol":1.5}\r\nPING\r\n' },
  { name: 'CONNECT protocol 1e30', bytes: 'CONNECT {"protocol":1e30}\r\nPING\r\n' },
  { name: 'CONNECT verbose as a string', bytes: 'CONNECT {"verbose":"yes"}\r\nPING\r\n' },
  { name: 'CONNECT verbose null', bytes: 'CONNECT {"verbose":null}\r\nPING\r\n' },
  { name: 'CONNECT echo as a number', bytes: 'CONNECT {"echo":1}\r\nPING\r\n' },
  { name: 'CONNECT name as a number', bytes: 'CONNECT {"name":1}\r\nPING\r\n' },
  { name: 'CONNECT tls_required as a string', bytes: 'CONNECT {"tls_required":"x"}\r\nPING\r\n' },
  { name: 'CONNECT import as a number', bytes: 'CONNECT {"import":1}\r\nPING\r\n' },
  { name: 'CONNECT unknown fields', bytes: 'CONNECT {"foo":[1],"remote_account":1}\r\nPING\r\n' },
  { name: 'CONNECT upper-case keys', bytes: 'CONNECT {"VERBOSE":false,"Pedantic":false}\r\nPUB a.* 1\r\nx\r\nPING\r\n' },
  { name: 'CONNECT account', bytes: 'CONNECT {"account":"x"}\r\nPING\r\n' },
  { name: 'CONNECT empty account', bytes: 'CONNECT {"account":""}\r\nPING\r\n' },
  { name: 'CONNECT new_account', bytes: 'CONNECT {"new_account":true}\r\nPING\r\n' },
  { name: 'CONNECT no_responders without headers', bytes: 'CONNECT {"no_responders":true}\r\nPING\r\n' },
  { name: 'CONNECT no_responders with headers', bytes: 'CONNECT {"no_responders":true,"headers":true}\r\nPING\r\n' },
  { name: 'CONNECT twice keeps omitted fields', bytes: QUIET + 'CONNECT {}\r\nPING\r\n' },

  // verbose, echo, auto-unsubscribe, headers, no responders
  { name: 'verbose +OK order around SUB, PUB, UNSUB, PING', bytes: 'CONNECT {"verbose":true}\r\nSUB a.b 1\r\nPUB a.b 2\r\nhi\r\nUNSUB 1\r\nPING\r\n' },
  { name: 'verbose before CONNECT', bytes: 'SUB a.b 1\r\nPUB a.b 1\r\nx\r\nUNSUB 1\r\nPING\r\n' },
  { name: 'UNSUB max delivers exactly max', bytes: QUIET + 'SUB a.b 1\r\nUNSUB 1 2\r\nPUB a.b 1\r\na\r\nPUB a.b 1\r\nb\r\nPUB a.b 1\r\nc\r\nPING\r\n' },
  { name: 'UNSUB max counts earlier deliveries', bytes: QUIET + 'SUB a.b 1\r\nPUB a.b 1\r\na\r\nUNSUB 1 3\r\nPUB a.b 1\r\nb\r\nPUB a.b 1\r\nc\r\nPUB a.b 1\r\nd\r\nPING\r\n' },
  { name: 'UNSUB max already reached', bytes: QUIET + 'SUB a.b 1\r\nPUB a.b 1\r\na\r\nPUB a.b 1\r\nb\r\nUNSUB 1 2\r\nPUB a.b 1\r\nc\r\nPING\r\n' },
  { name: 'UNSUB max on a queue subscription', bytes: QUIET + 'SUB a.b q 1\r\nUNSUB 1 1\r\nPUB a.b 1\r\na\r\nPUB a.b 1\r\nb\r\nPING\r\n' },
  { name: 'echo false', bytes: CONNECT({ verbose: false, echo: false }) + 'SUB a.b 1\r\nSUB a.b q 2\r\nPUB a.b 1\r\na\r\nPING\r\n' },
  { name: 'echo false across connections', run: echoAcross },
  { name: 'HPUB to a header subscriber', bytes: QUIET_HDR + 'SUB a.b 1\r\nHPUB a.b 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n' },
  { name: 'HPUB with reply', bytes: QUIET_HDR + 'SUB a.b 1\r\nHPUB a.b r.1 22 24\r\nNATS/1.0\r\nA: b\r\n\r\nhi\r\nPING\r\n' },
  { name: 'HPUB with an empty header block', bytes: QUIET_HDR + 'SUB a.b 1\r\nHPUB a.b 0 2\r\nhi\r\nPING\r\n' },
  { name: 'headers to header and header-less subscribers', run: headersAcross },
  { name: 'no responders 503', bytes: CONNECT({ verbose: false, headers: true, no_responders: true }) + 'SUB inbox.1 1\r\nPUB req.x inbox.1 2\r\nhi\r\nPING\r\n' },
  { name: 'no responders 503 for HPUB', bytes: CONNECT({ verbose: false, headers: true, no_responders: true }) + 'SUB inbox.1 1\r\nHPUB req.x inbox.1 12 14\r\nNATS/1.0\r\n\r\nhi\r\nPING\r\n' },
  { name: 'no responders 503 to a wildcard inbox', bytes: CONNECT({ verbose: false, headers: true, no_responders: true }) + 'SUB _INBOX.* 1\r\nPUB req.x _INBOX.x 2\r\nhi\r\nPING\r\n' },
  { name: 'no responders 503 to a queue inbox', bytes: CONNECT({ verbose: false, headers: true, no_responders: true }) + 'SUB inbox.2 q 7\r\nPUB req.x inbox.2 2\r\nhi\r\nPING\r\n' },
  { name: 'no responders without a reply subscription', bytes: CONNECT({ verbose: false, headers: true, no_responders: true }) + 'PUB req.x inbox.3 2\r\nhi\r\nPING\r\n' },
  { name: 'no responders and echo false', bytes: CONNECT({ verbose: false, headers: true, no_responders: true, echo: false }) + 'SUB req.y 2\r\nSUB inbox.4 1\r\nPUB req.y inbox.4 2\r\nhi\r\nPING\r\n' },
  { name: 'no responders 503 and UNSUB max', bytes: CONNECT({ verbose: false, headers: true, no_responders: true }) + 'SUB inbox.5 1\r\nUNSUB 1 1\r\nPUB req.x inbox.5 2\r\nhi\r\nPUB inbox.5 1\r\na\r\nPUB inbox.5 1\r\nb\r\nPING\r\n' },
  { name: 'no responders off', bytes: QUIET_HDR + 'SUB inbox.1 1\r\nPUB req.x inbox.1 2\r\nhi\r\nPING\r\n' },
  { name: 'request with a responder', run: requestAcross },

  // limits: max_payload 100, max_control_line 64, max_subscriptions 2
  { setup: 'limits', name: 'PUB at max_payload', bytes: `PUB foo 100\r\n${'x'.repeat(100)}\r\nPING\r\n` },
  { setup: 'limits', name: 'PUB over max_payload', bytes: 'PUB foo 101\r\n' },
  { setup: 'limits', name: 'HPUB total over max_payload', bytes: QUIET_HDR + 'HPUB foo 12 101\r\n' },
  { setup: 'limits', name: 'HPUB header size over max_payload', bytes: QUIET_HDR + 'HPUB foo 101 101\r\n' },
  { setup: 'limits', name: 'argument at max_control_line', bytes: `SUB ${'a'.repeat(62)} 1\r\nPING\r\n` },
  { setup: 'limits', name: 'argument over max_control_line', bytes: `SUB ${'a'.repeat(63)} 1\r\nPING\r\n` },
  { setup: 'limits', name: 'PUB argument over max_control_line', bytes: `PUB ${'a'.repeat(71)} 1\r\nx\r\n` },
  { setup: 'limits', name: 'long blanks after the operation do not count', bytes: `SUB${' '.repeat(70)}a 1\r\nPING\r\n` },
  { setup: 'limits', name: 'CONNECT over max_control_line', bytes: CONNECT({ verbose: false, name: 'n'.repeat(50) }) + 'PING\r\n' },
  { setup: 'limits', name: 'over max_control_line without newline', bytes: `SUB ${'a'.repeat(70)}` },
  { setup: 'limits', name: 'over max_control_line split across reads', bytes: [`SUB ${'a'.repeat(40)}`, `${'a'.repeat(40)} 1\r\nPING\r\n`] },
  { setup: 'limits', name: 'under max_control_line split across reads', bytes: [`SUB ${'a'.repeat(30)}`, `${'a'.repeat(30)} 1\r\nPING\r\n`] },
  { setup: 'limits', name: 'long unknown operation', bytes: `${'X'.repeat(80)}\r\n` },
  {
    setup: 'limits',
    name: 'long PING line',
    bytes: `PING${' '.repeat(80)}\r\n`,
    differs: {
      why: 'nats-server skips any amount of junk after PING/PONG/+OK; sprig bounds every line by max_control_line',
      sprig: closed("-ERR 'maximum control line exceeded'\r\n"),
      nats: ok('PONG\r\n'),
    },
  },
  { setup: 'limits', name: 'max_subscriptions', bytes: QUIET + 'SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nPING\r\n' },
  { setup: 'limits', name: 'max_subscriptions with a repeated sid', bytes: QUIET + 'SUB a 1\r\nSUB b 2\r\nSUB b 2\r\nPING\r\n' },
  { setup: 'limits', name: 'max_subscriptions verbose', bytes: 'SUB a 1\r\nSUB b 2\r\nSUB c 3\r\nUNSUB 1\r\nSUB c 3\r\nPING\r\n' },

  // auth: user and password
  { setup: 'user', name: 'PUB before CONNECT', bytes: 'PUB foo 1\r\nx\r\n' },
  { setup: 'user', name: 'PING before CONNECT', bytes: 'PING\r\n' },
  { setup: 'user', name: 'partial operation before CONNECT', bytes: 'PU' },
  { setup: 'user', name: 'empty line before CONNECT', bytes: '\r\n' },
  { setup: 'user', name: 'unknown C-operation before CONNECT', bytes: 'COFFEE\r\n' },
  { setup: 'user', name: 'bad password', bytes: CONNECT({ user: 'u', pass: 'x' }) + 'PING\r\n' },
  { setup: 'user', name: 'no credentials', bytes: 'CONNECT {}\r\nPING\r\n' },
  { setup: 'user', name: 'token instead of a password', bytes: CONNECT({ auth_token: 'p' }) + 'PING\r\n' },
  { setup: 'user', name: 'good password', bytes: CONNECT({ user: 'u', pass: 'p' }) + 'SUB a.b 1\r\nPUB a.b 1\r\nx\r\nPING\r\n' },
  { setup: 'user', name: 'good password, upper-case keys', bytes: 'CONNECT {"USER":"u","Pass":"p"}\r\nPING\r\n' },
  { setup: 'user', name: 'bad password and protocol 2', bytes: CONNECT({ protocol: 2 }) + 'PING\r\n' },
  { setup: 'user', name: 'good password and protocol 2', bytes: CONNECT({ user: 'u', pass: 'p', protocol: 2 }) + 'PING\r\n' },
  { setup: 'user', name: 'good password and no_responders without headers', bytes: CONNECT({ user: 'u', pass: 'p', no_responders: true }) + 'PING\r\n' },
  { setup: 'user', name: 'second CONNECT with a bad password', bytes: CONNECT({ user: 'u', pass: 'p' }) + CONNECT({ user: 'u', pass: 'x' }) + 'PING\r\n' },
  { setup: 'user', name: 'second CONNECT without credentials', bytes: CONNECT({ user: 'u', pass: 'p' }) + 'CONNECT {}\r\nPING\r\n' },
  { setup: 'user', name: 'second CONNECT with only a user', bytes: CONNECT({ user: 'u', pass: 'p' }) + CONNECT({ user: 'u' }) + 'PING\r\n' },
  { setup: 'user', name: 'auth timeout', bytes: [], wait: AUTH_TIMEOUT_S * 1000 + 500 },
  { setup: 'user', name: 'auth timeout during a partial CONNECT', bytes: 'CONNECT {"us', wait: AUTH_TIMEOUT_S * 1000 + 500 },
  { setup: 'user', name: 'no auth timeout after CONNECT', bytes: CONNECT({ user: 'u', pass: 'p', verbose: false }), wait: AUTH_TIMEOUT_S * 1000 + 500 },

  // auth: token
  { setup: 'token', name: 'token: PUB before CONNECT', bytes: 'PUB foo 1\r\nx\r\n' },
  { setup: 'token', name: 'token: good token', bytes: CONNECT({ auth_token: 's3cret' }) + 'PING\r\n' },
  { setup: 'token', name: 'token: bad token', bytes: CONNECT({ auth_token: 'nope' }) + 'PING\r\n' },
  { setup: 'token', name: 'token: user and password instead', bytes: CONNECT({ user: 'u', pass: 's3cret' }) + 'PING\r\n' },
  { setup: 'token', name: 'token: auth timeout', bytes: [], wait: AUTH_TIMEOUT_S * 1000 + 500 },

  // max_connections 1
  { setup: 'maxconn', name: 'max_connections', run: maxConnections },
]

/** Invalid publish subjects, pedantic on/off and verbose on/off. */
function publishSubjectCases(): Case[] {
  const out: Case[] = []
  const subjects = ['ps.*', 'ps.>', '*', '>', 'ps..x', '.ps', 'ps.']
  for (const pedantic of [true, false]) {
    for (const verbose of [true, false]) {
      for (const s of subjects) {
        out.push({
          name: `PUB ${s} pedantic=${pedantic} verbose=${verbose}`,
          bytes: CONNECT({ verbose, pedantic }) + `SUB > 1\r\nPUB ${s} 1\r\nx\r\nPING\r\n`,
        })
      }
    }
  }
  // a wildcard subject reaches a wildcard subscription with the same shape, not literals
  out.push({ name: 'PUB ps.* reaches ps.* but not ps.x', bytes: CONNECT({ verbose: false, pedantic: false }) + 'SUB ps.* 1\r\nSUB ps.x 2\r\nPUB ps.* 1\r\nx\r\nPING\r\n' })
  return out
}

// --- scenarios over several connections -----------------------------------------------------

async function echoAcross(port: number): Promise<Result> {
  const a = await Peer.open(port)
  const b = await Peer.open(port)
  a.send(CONNECT({ verbose: false, echo: false }) + 'SUB e.x 1\r\n')
  b.send(QUIET + 'SUB e.x 1\r\n')
  await a.sync()
  await b.sync()
  a.send('PUB e.x 1\r\na\r\n')
  await a.sync()
  b.send('PUB e.x 1\r\nb\r\n')
  await b.sync()
  await a.sync()
  a.close()
  b.close()
  return ok(`A: ${a.body} | B: ${b.body}`)
}

async function headersAcross(port: number): Promise<Result> {
  const plain = await Peer.open(port)
  const hdr = await Peer.open(port)
  const pub = await Peer.open(port)
  plain.send(QUIET + 'SUB h.x 1\r\n')
  hdr.send(QUIET_HDR + 'SUB h.x 1\r\n')
  await plain.sync()
  await hdr.sync()
  pub.send(QUIET_HDR + 'HPUB h.x 22 24\r\nNATS/1.0\r\nA: b\r\n\r\nhi\r\nHPUB h.x r 12 12\r\nNATS/1.0\r\n\r\n\r\nPUB h.x 2\r\nho\r\n')
  await pub.sync()
  await plain.sync()
  await hdr.sync()
  for (const p of [plain, hdr, pub]) p.close()
  return ok(`plain: ${plain.body} | headers: ${hdr.body} | publisher: ${pub.body}`)
}

async function requestAcross(port: number): Promise<Result> {
  const responder = await Peer.open(port)
  const requester = await Peer.open(port)
  responder.send(QUIET + 'SUB svc.x 1\r\n')
  await responder.sync()
  requester.send(CONNECT({ verbose: false, headers: true, no_responders: true }) + 'SUB inbox.9 1\r\nPUB svc.x inbox.9 2\r\nhi\r\n')
  await requester.sync()
  await responder.sync()
  responder.send('PUB inbox.9 2\r\nok\r\n')
  await responder.sync()
  await requester.sync()
  responder.close()
  requester.close()
  return ok(`responder: ${responder.body} | requester: ${requester.body}`)
}

async function maxConnections(port: number): Promise<Result> {
  await sleep(200) // the INFO probe's connection must be gone first
  const a = await Peer.open(port)
  const b = await Peer.open(port)
  await sleep(200)
  a.close()
  await sleep(200)
  const c = await Peer.open(port)
  await c.sync()
  c.close()
  // Normalized: the INFO lines (ids and ports differ) become bare `INFO`.
  const norm = (s: string): string => s.replace(/^INFO .*\r\n/, 'INFO\r\n')
  return { out: `B: ${norm(b.out)} | C: ${norm(c.out)}`, closed: b.closed }
}

// --- running ----------------------------------------------------------------------------------

interface Pair {
  sprig: TestBroker
  nats: Proc
}

async function runCase(c: Case, p: Pair): Promise<[Result, Result]> {
  const one = async (port: number): Promise<Result> => {
    if (c.run) return c.run(port)
    const e = await talk(port, c.bytes ?? [], c.wait ?? 300)
    return { out: e.out, closed: e.closed }
  }
  return Promise.all([one(p.sprig.port), one(p.nats.port)])
}

if (havePeer(t, 'nats-server', 'nats-server')) {
  const dir = mkdtempSync(join(tmpdir(), 'sprig-diff-'))
  const pairs: Pair[] = []
  t.teardown(async () => {
    await Promise.all(pairs.flatMap((p) => [p.sprig.stop(), p.nats.stop()]))
    rmSync(dir, { recursive: true, force: true })
  })

  const start = async (name: SetupName): Promise<Pair> => {
    const s: Setup = SETUPS[name]
    const file = join(dir, `${name}.conf`)
    writeFileSync(file, s.nats)
    const [sprig, nats] = await Promise.all([startBroker(s.sprig), startNatsServer(['-c', file])])
    const p = { sprig, nats }
    pairs.push(p)
    return p
  }

  const results = new Map<Case, [Result, Result]>()
  const infos = new Map<SetupName, [Exchange, Exchange]>()
  await Promise.all(
    (Object.keys(SETUPS) as SetupName[]).map(async (name) => {
      const list = cases.filter((c) => (c.setup ?? 'plain') === name)
      const size = Math.max(1, Math.min(SETUPS[name].pool, list.length))
      const mine = await Promise.all(Array.from({ length: size }, () => start(name)))
      infos.set(name, await Promise.all([talk(mine[0]!.sprig.port, [], 50), talk(mine[0]!.nats.port, [], 50)]))
      let next = 0
      await Promise.all(
        mine.map(async (p) => {
          while (next < list.length) {
            const c = list[next++]!
            results.set(c, await runCase(c, p))
          }
        }),
      )
    }),
  )

  for (const c of cases) {
    const [s, n] = results.get(c)!
    if (c.differs) {
      t.strictSame(s, c.differs.sprig, `${c.name}: sprig (expected difference: ${c.differs.why})`)
      t.strictSame(n, c.differs.nats, `${c.name}: nats-server (expected difference)`)
    } else {
      t.strictSame(s, n, c.name)
    }
  }

  t.test('INFO', async (t) => {
    for (const [name, [s, n]] of infos) {
      // `go` is the Go runtime's version: nothing for sprig to report; `sprig_version` is sprig's own.
      t.strictSame(Object.keys(s.info).filter((k) => k !== 'sprig_version').sort(), Object.keys(n.info).filter((k) => k !== 'go').sort(), `${name}: keys`)
      t.type(s.info.sprig_version, 'string', `${name}: sprig_version`)
      for (const k of ['proto', 'headers', 'max_payload', 'client_ip', 'auth_required', 'host']) {
        t.strictSame(s.info[k], n.info[k], `${name}: ${k}`)
      }
      t.match(s.info.server_id, /^N[A-Z2-7]{55}$/, `${name}: server_id shape`)
      t.equal(typeof s.info.client_id, 'number', `${name}: client_id`)
      t.equal(typeof n.info.go, 'string', `${name}: nats-server reports go`)
    }
    // same key order as nats-server (minus `go`)
    const [s, n] = infos.get('user')!
    t.strictSame(Object.keys(s.info).filter((k) => k !== 'sprig_version'), Object.keys(n.info).filter((k) => k !== 'go'), 'key order')
  })
}
