// Minimal raw NATS client for load generation over node:net (runs on Bun, Node and Deno).
// Deliberately not the official client: we want the same cheap byte pushing against every
// server, so the measured cost is the server's, not a client library's.
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Addr } from './model.ts'
import { dial } from './ws-conn.ts'

export interface NatsMsg {
  subject: string
  sid: string
  reply: string
  payload: Buffer
}

/** Counting state for a subscriber that skips parsing (see `startCounting`). */
export interface Counter {
  frame: number
  header: Buffer
  /** The first frame's header as received, until it is complete. */
  seen: Buffer
  frames: number
  /** Offset inside the current frame. */
  pos: number
  /** A control line (PING, -ERR…) between frames, while it is incomplete; null otherwise. */
  ctrl: string | null
  firstAt: number
  lastAt: number
  bad: string
}

export interface NatsConn {
  sock: net.Socket
  /** The server's INFO; `gotInfo` because a server may legally send an empty object. */
  info: Record<string, unknown>
  gotInfo: boolean
  pingsSent: number
  pongs: number
  err: string
  closed: boolean
  lastData: number
  onMsg: ((m: NatsMsg) => void) | null
  // protocol parser state
  buf: Buffer
  pendingMsg: { subject: string; sid: string; reply: string; size: number } | null
  counter: Counter | null
}

export type WaitResult = 'ok' | 'timeout' | 'closed'

/** What `waitUntil` needs of a connection (NATS here, MQTT in mqtt-conn.ts). */
export interface Watched {
  closed: boolean
  lastData: number
}

interface Waiter {
  pred: () => boolean
  conns: Watched[]
  done: (r: WaitResult) => void
}

/** The PING that ends each publish batch (flow control: the PONG says the batch was read). */
const PING_LINE = Buffer.from('PING\r\n', 'latin1')

// All pending waits; re-checked after every socket event. There are only ever a handful.
const waiters = new Set<Waiter>()

/** Callbacks run after every socket event, before the waits (for event-driven publishers). */
export const onEvent = new Set<() => void>()

/** Re-checks every pending wait; call after each socket event. */
export function wake(): void {
  for (const f of onEvent) f()
  for (const w of waiters) {
    if (w.pred()) w.done('ok')
    else if (w.conns.some((c) => c.closed)) w.done('closed')
  }
}

/**
 * Resolves when `pred` holds, or with 'timeout'/'closed'. With `idle`, the timeout counts from
 * the last byte any of `conns` received, so long transfers don't need a guessed total duration.
 */
export function waitUntil(conns: Watched[], pred: () => boolean, ms: number, idle = false): Promise<WaitResult> {
  if (pred()) return Promise.resolve('ok')
  return new Promise((resolve) => {
    const start = performance.now()
    const w: Waiter = {
      pred,
      conns,
      done: (r) => {
        waiters.delete(w)
        clearInterval(tick)
        resolve(r)
      },
    }
    // A coarse tick instead of re-arming a timer per chunk: cheap while bytes stream in.
    const tick = setInterval(() => {
      const now = performance.now()
      const since = idle ? Math.max(start, ...conns.map((c) => c.lastData)) : start
      if (now - since > ms) w.done('timeout')
    }, Math.min(250, ms))
    waiters.add(w)
    wake()
  })
}

function fail(c: NatsConn, why: string): void {
  if (!c.err) c.err = why
}

function handleLine(c: NatsConn, line: string): void {
  if (line.startsWith('MSG ') || line.startsWith('HMSG ')) {
    // MSG <subject> <sid> [reply] <#bytes>  /  HMSG <subject> <sid> [reply] <#hdr> <#total>
    const a = line.split(' ')
    const h = a[0] === 'HMSG' ? 1 : 0
    const size = Number(a[a.length - 1])
    const reply = a.length === 5 + h ? a[3]! : ''
    c.pendingMsg = { subject: a[1]!, sid: a[2]!, reply, size }
  } else if (line === 'PING') {
    c.sock.write('PONG\r\n')
  } else if (line === 'PONG') {
    c.pongs++
  } else if (line.startsWith('INFO ')) {
    try {
      c.info = JSON.parse(line.slice(5)) as Record<string, unknown>
      c.gotInfo = true
    } catch {
      fail(c, `bad INFO: ${line.slice(0, 200)}`)
    }
  } else if (line.startsWith('-ERR')) {
    fail(c, line)
  } else if (line !== '+OK' && line !== '') {
    fail(c, `unexpected protocol line: ${line.slice(0, 200)}`)
  }
}

// Line parser for the low-volume paths (handshake, PONGs, request/reply).
function feedProto(c: NatsConn, chunk: Buffer): void {
  const b = c.buf.length ? Buffer.concat([c.buf, chunk]) : chunk
  let off = 0
  for (;;) {
    const pm = c.pendingMsg
    if (pm) {
      if (b.length - off < pm.size + 2) break
      const payload = b.subarray(off, off + pm.size)
      off += pm.size + 2
      c.pendingMsg = null
      c.onMsg?.({ subject: pm.subject, sid: pm.sid, reply: pm.reply, payload })
      continue
    }
    const eol = b.indexOf('\r\n', off)
    if (eol < 0) break
    const line = b.toString('latin1', off, eol)
    off = eol + 2
    handleLine(c, line)
  }
  // Copy the remainder: runtimes may reuse read buffers after the callback returns.
  c.buf = off >= b.length ? Buffer.alloc(0) : Buffer.from(b.subarray(off))
}

// Fast path for bulk subscribers: the MSG framing is fixed, so step from frame to frame by its
// known size instead of parsing it. Per frame we only look at its first byte ('M', else it is a
// control line such as the server's PING, which must still be answered) and its last ('\n'),
// which catches lost framing at once. The first header is compared in full, once.
function feedCount(c: NatsConn, k: Counter, chunk: Buffer, now: number): void {
  if (k.bad) return
  const n = chunk.length
  let i = 0
  let sawFrame = false
  while (i < n) {
    if (k.ctrl !== null) {
      const eol = chunk.indexOf(0x0a, i)
      const end = eol < 0 ? n : eol + 1
      k.ctrl += chunk.toString('latin1', i, end)
      i = end
      if (eol >= 0) {
        handleLine(c, k.ctrl.replace(/\r?\n$/, ''))
        k.ctrl = null
      }
      continue
    }
    if (k.pos === 0 && chunk[i] !== 0x4d) {
      k.ctrl = ''
      continue
    }
    const take = Math.min(k.frame - k.pos, n - i)
    if (k.frames === 0 && k.pos < k.header.length) {
      k.seen = Buffer.concat([k.seen, chunk.subarray(i, i + Math.min(take, k.header.length - k.pos))])
      if (k.seen.length === k.header.length && !k.seen.equals(k.header)) {
        k.bad = `unexpected first frame ${JSON.stringify(k.seen.toString('latin1'))}, want ${JSON.stringify(k.header.toString('latin1'))}`
        return
      }
    }
    sawFrame = true
    k.pos += take
    i += take
    if (k.pos === k.frame) {
      if (chunk[i - 1] !== 0x0a) {
        k.bad = `frame ${k.frames + 1} does not end in CRLF: framing lost (wrong size or unexpected data)`
        return
      }
      k.pos = 0
      k.frames++
    }
  }
  if (sawFrame) {
    if (k.firstAt === 0) k.firstAt = now
    k.lastAt = now
  }
}

/** Connects, reads INFO, sends CONNECT + PING and waits for the PONG. */
export async function connectNats(addr: Addr, timeoutMs = 5000): Promise<NatsConn> {
  const sock = dial(addr)
  sock.setNoDelay(true)
  const c: NatsConn = {
    sock,
    info: {},
    gotInfo: false,
    pingsSent: 0,
    pongs: 0,
    err: '',
    closed: false,
    lastData: performance.now(),
    onMsg: null,
    buf: Buffer.alloc(0),
    pendingMsg: null,
    counter: null,
  }
  sock.on('data', (chunk: Buffer) => {
    const now = performance.now()
    c.lastData = now
    if (c.counter) feedCount(c, c.counter, chunk, now)
    else feedProto(c, chunk)
    wake()
  })
  sock.on('error', (e: Error) => fail(c, e.message))
  sock.on('close', () => {
    c.closed = true
    fail(c, 'connection closed by server')
    wake()
  })
  const gotInfo = await waitUntil([c], () => c.gotInfo || c.err !== '', timeoutMs)
  if (gotInfo !== 'ok' || c.err) {
    sock.destroy()
    throw new Error(`no INFO from ${addr.host}:${addr.port}: ${c.err || gotInfo}`)
  }
  sock.write('CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n')
  const r = await flush(c, timeoutMs)
  if (r !== 'ok') {
    sock.destroy()
    throw new Error(`handshake failed: ${c.err || r}`)
  }
  return c
}

/** Sends PING and waits for its PONG (the server has processed everything before it). */
export async function flush(c: NatsConn, timeoutMs = 10_000): Promise<WaitResult> {
  c.pingsSent++
  c.sock.write('PING\r\n')
  const want = c.pingsSent
  return waitUntil([c], () => c.pongs >= want || c.err !== '', timeoutMs).then((r) => (r === 'ok' && c.err ? 'closed' : r))
}

export async function subscribe(c: NatsConn, subject: string, sid: string): Promise<void> {
  c.sock.write(`SUB ${subject} ${sid}\r\n`)
  const r = await flush(c)
  if (r !== 'ok') throw new Error(`SUB ${subject} not confirmed: ${c.err || r}`)
}

/** Switches a subscribed connection to byte counting; call after its SUB was confirmed. */
export function startCounting(c: NatsConn, header: string, frame: number): Counter {
  const k: Counter = { frame, header: Buffer.from(header, 'latin1'), seen: Buffer.alloc(0), frames: 0, pos: 0, ctrl: null, firstAt: 0, lastAt: 0, bad: '' }
  c.counter = k
  return k
}

export function msgFrameSize(subject: string, sid: string, payload: number): { header: string; frame: number } {
  const header = `MSG ${subject} ${sid} ${payload}\r\n`
  return { header, frame: header.length + payload + 2 }
}

export function close(c: NatsConn): void {
  c.counter = null
  c.sock.destroy()
}

/** `n` copies of `frame` followed by `tail` (a PING / PINGREQ), built into one buffer. */
export function repeatFrame(frame: Buffer, n: number, tail: Buffer): Buffer {
  const b = Buffer.allocUnsafe(n * frame.length + tail.length)
  for (let i = 0; i < n; i++) frame.copy(b, i * frame.length)
  tail.copy(b, n * frame.length)
  return b
}

/** Waits for 'drain' on a connection's socket; fails on close or after `ms` (shared with mqtt-conn). */
export function drain(c: { sock: net.Socket; err: string }, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => done(new Error(`write stalled for ${ms} ms (server not reading)`)), ms)
    const onDrain = (): void => done()
    const onClose = (): void => done(new Error(c.err || 'connection closed'))
    function done(e?: Error): void {
      clearTimeout(t)
      c.sock.off('drain', onDrain)
      c.sock.off('close', onClose)
      if (e) reject(e)
      else resolve()
    }
    c.sock.on('drain', onDrain)
    c.sock.on('close', onClose)
  })
}

export interface PublishOpts {
  subject: string
  payload: number
  count: number
  /** Messages between PINGs. */
  pingEvery: number
  /** How many PINGs may be unanswered before we stop writing. */
  maxAhead: number
  timeoutMs: number
  /**
   * With subscribers: never more than `maxLag` messages ahead of the slowest of them, so a
   * row measures what the server delivers, not how much it will buffer for a reader that
   * falls behind (sprig's max_pending is 8 MiB, nats-server's 64 MB).
   */
  lag?: { maxLag: number; received: () => number; watch: NatsConn[] }
}

/**
 * Publishes `count` messages as pre-built batches, one PING per batch, never more than
 * `maxAhead` PINGs unanswered (and, with `lag`, never too far ahead of the subscribers), so
 * the server must actually keep up instead of soaking everything into socket buffers.
 * Resolves after the last PONG: all messages processed.
 */
export async function publish(c: NatsConn, o: PublishOpts): Promise<{ startAt: number; endAt: number }> {
  const frame = Buffer.concat([Buffer.from(`PUB ${o.subject} ${o.payload}\r\n`), Buffer.alloc(o.payload, 0x61), Buffer.from('\r\n')])
  const batch = (n: number): Buffer => repeatFrame(frame, n, PING_LINE)
  // Built once and written repeatedly; the runtimes never modify what we hand to write().
  const per = Math.min(o.pingEvery, o.count)
  const full = batch(per)
  const startAt = performance.now()
  let sent = 0
  while (sent < o.count) {
    if (c.pingsSent - c.pongs >= o.maxAhead) {
      const want = c.pingsSent - o.maxAhead + 1
      const r = await waitUntil([c], () => c.pongs >= want || c.err !== '', o.timeoutMs)
      if (r !== 'ok' || c.err) throw new Error(`publisher: no PONG within ${o.timeoutMs} ms: ${c.err || r}`)
    }
    const lag = o.lag
    if (lag !== undefined && sent - lag.received() > lag.maxLag) {
      const r = await waitUntil([c, ...lag.watch], () => sent - lag.received() <= lag.maxLag || c.err !== '', o.timeoutMs, true)
      if (r !== 'ok' || c.err) throw new Error(`publisher: subscribers stalled ${sent - lag.received()} msgs behind: ${c.err || lag.watch.map((w) => w.err).find(Boolean) || r}`)
    }
    const n = Math.min(per, o.count - sent)
    const ok = c.sock.write(n === per ? full : batch(n))
    c.pingsSent++
    sent += n
    if (!ok) await drain(c, o.timeoutMs)
  }
  const want = c.pingsSent
  const r = await waitUntil([c], () => c.pongs >= want || c.err !== '', o.timeoutMs)
  if (r !== 'ok' || c.err) throw new Error(`publisher: final PONG missing: ${c.err || r}`)
  return { startAt, endAt: performance.now() }
}
