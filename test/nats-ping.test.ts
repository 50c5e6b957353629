// An idle NATS client's PING (a read that is just `PING\r\n`) is answered at the read's entry,
// straight to the wire (adapters/nats/client.ts data, src/outbound.ts direct). These tests
// make sure that shortcut changes nothing a client can see: the order behind queued
// messages, a blocked wire, a PING that is really a payload or a cut line, tracing.
// Sans-I/O: a Server with a manual clock and Wires that record what they were given.

import t from 'tap'
import { Buffer } from 'node:buffer'
import { NatsClient } from '../adapters/nats/client.ts'
import type { Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { defaults } from '../src/options.ts'
import { Server } from '../src/server.ts'

const PING = Buffer.from('PING\r\n')

function rig(level: 'error' | 'trace' = 'error') {
  const queue: (() => void)[] = []
  let now = 1000
  const host = { now: () => now, defer: (fn: () => void) => void queue.push(fn), every: () => ({ cancel: () => {} }) }
  const lines: string[] = []
  const srv = new Server({ ...defaults, port: 4222 }, host, createLogger({ level, sink: (l: string) => void lines.push(l) }))
  const run = (): void => {
    while (queue.length) queue.shift()!()
  }
  const client = () => {
    const writes: Uint8Array[] = []
    const c = { block: false, ended: false }
    const w: Wire = {
      write: (d) => (writes.push(d.slice()), !c.block),
      buffered: () => 0,
      end: () => void (c.ended = true),
      destroy: () => void (c.ended = true),
      remoteAddress: '127.0.0.1',
      remotePort: 1,
    }
    const nc = new NatsClient(srv, srv.admit(), w)
    nc.data(Buffer.from('CONNECT {"verbose":false,"pedantic":false}\r\n'))
    run()
    const out = (): string => Buffer.concat(writes).toString('latin1')
    const mark = (): (() => string) => {
      const from = out().length
      return () => out().slice(from)
    }
    return Object.assign(c, { nc, out, mark })
  }
  return { srv, run, client, lines, advance: (ms: number) => void (now += ms) }
}

t.test('a PING alone in a read: PONG within the read, no buffer, counted as activity', async (t) => {
  const r = rig()
  const c = r.client()
  const since = c.mark()
  r.advance(5000)
  c.nc.data(PING) // no deferred work run: only a direct write shows
  t.equal(since(), 'PONG\r\n', 'answered within the read')
  const out = (c.nc as unknown as { out: { buf: Uint8Array; scheduled: boolean } }).out
  t.equal(out.buf.length, 0, 'no outbound buffer made for it')
  t.notOk(out.scheduled, 'no flush scheduled')
  t.equal(c.nc.lastIn, 6000, 'the PING counts as activity')
})

t.test('what is queued before it goes first; a blocked wire holds it back', async (t) => {
  const r = rig()
  const sub = r.client()
  const pub = r.client()
  sub.nc.data(Buffer.from('SUB a 1\r\n'))
  r.run()
  const since = sub.mark()
  pub.nc.data(Buffer.from('PUB a 2\r\nhi\r\n'))
  sub.nc.data(PING)
  t.equal(since(), '', 'nothing written past the queued MSG')
  r.run()
  t.equal(since(), 'MSG a 1 2\r\nhi\r\nPONG\r\n', 'the MSG, then the PONG')

  const next = sub.mark()
  sub.block = true
  sub.nc.data(PING)
  t.equal(next(), 'PONG\r\n', 'written; the wire now holds part of it')
  sub.block = false
  sub.nc.data(PING)
  r.run()
  t.equal(next(), 'PONG\r\n', 'the next one waits while the wire is blocked')
  sub.nc.drained()
  r.run()
  t.equal(next(), 'PONG\r\nPONG\r\n', 'and goes once it drained')
})

t.test('bytes that look like a PING but are not one take the general path', async (t) => {
  const r = rig()
  const sub = r.client()
  const pub = r.client()
  sub.nc.data(Buffer.from('SUB a 1\r\n'))
  r.run()
  const got = sub.mark()
  const said = pub.mark()
  // A 6-byte payload that arrives as its own read.
  pub.nc.data(Buffer.from('PUB a 6\r\n'))
  pub.nc.data(PING)
  pub.nc.data(Buffer.from('\r\n'))
  r.run()
  t.equal(got(), 'MSG a 1 6\r\nPING\r\n\r\n', 'a payload of PING\\r\\n is delivered as a message')
  t.equal(said(), '', 'and not answered')

  // A PING cut over two reads, and two in one read.
  pub.nc.data(Buffer.from('PI'))
  pub.nc.data(Buffer.from('NG\r\n'))
  r.run()
  t.equal(said(), 'PONG\r\n', 'a cut PING is answered')
  pub.nc.data(Buffer.from('PING\r\nPING\r\n'))
  r.run()
  t.equal(said(), 'PONG\r\nPONG\r\nPONG\r\n', 'two in one read: two answers')

  // A control line cut before it: the PING's bytes end that line.
  pub.nc.data(Buffer.from('SUB b '))
  pub.nc.data(PING)
  r.run()
  t.notMatch(said(), /PONG\r\nPONG\r\nPONG\r\nPONG/, 'the end of a cut line is not a PING')
})

t.test('with log_level trace the PING is traced as nats-server does', async (t) => {
  const r = rig('trace')
  const c = r.client()
  const since = c.mark()
  c.nc.data(PING)
  r.run()
  t.equal(since(), 'PONG\r\n')
  t.ok(r.lines.some((l) => l.includes('<<- [PING]')), 'the PING traced')
  t.ok(r.lines.some((l) => l.includes('->> [PONG]')), 'the PONG traced')
})

t.test('a PING before CONNECT is left to the general rules', async (t) => {
  const r = rig()
  const writes: Uint8Array[] = []
  const w: Wire = { write: (d) => (writes.push(d.slice()), true), buffered: () => 0, end: () => {}, destroy: () => {}, remoteAddress: '127.0.0.1', remotePort: 2 }
  const nc = new NatsClient(r.srv, r.srv.admit(), w)
  r.run()
  const before = Buffer.concat(writes).length
  nc.data(PING)
  t.equal(Buffer.concat(writes).length, before, 'not answered within the read')
  r.run()
  t.equal(Buffer.concat(writes).subarray(before).toString(), 'PONG\r\n', 'answered as nats-server does (no auth required)')
})
