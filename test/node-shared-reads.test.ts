// Node's plain listener reads every socket into one shared buffer (targets/net.ts
// useSharedReads), setting on each accepted socket the two fields node:net's `onread` option
// sets. These tests run in-process on Node and check that it is really in use (a Node whose
// fields moved would fall back silently), that every byte arrives in order on many sockets at
// once, that pause() and resume() (the adapters' backpressure) still stop and restart reads,
// and that closing, the listener's count of open sockets and a refused socket behave as with
// the default reads. What adapters keep of a read is checked end to end in
// test/read-release.test.ts (the bundle on Node).

import t from 'tap'
import net from 'node:net'
import { createHash, randomBytes } from 'node:crypto'
import type { Conn, Wire } from '../src/host.ts'
import { listenNet, useSharedReads } from '../targets/net.ts'

const SIZE = 64 * 1024
t.ok(useSharedReads(SIZE), 'this Node has the fields onread sets')

interface Seen {
  wire: Wire
  hash: ReturnType<typeof createHash>
  bytes: number
  buffers: Set<ArrayBufferLike>
  closed: Promise<string | undefined>
  onData?: (d: Uint8Array) => void
}

async function listen(refuse = false): Promise<{ port: number; seen: Seen[]; close: () => void; open: () => number }> {
  const seen: Seen[] = []
  const l = await listenNet('127.0.0.1', 0, (wire) => {
    if (refuse) {
      wire.end()
      return null
    }
    let done!: (r: string | undefined) => void
    const s: Seen = { wire, hash: createHash('sha256'), bytes: 0, buffers: new Set(), closed: new Promise((r) => (done = r)) }
    seen.push(s)
    const conn: Conn = {
      data: (d) => {
        s.hash.update(d)
        s.bytes += d.length
        s.buffers.add(d.buffer)
        s.onData?.(d)
      },
      drained: () => {},
      closed: (why) => done(why),
    }
    return conn
  })
  return { port: l.port, seen, close: () => l.close(), open: () => l.open() }
}

function send(port: number, data: Buffer): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1', () => {
      c.end(data)
      resolve(c)
    })
    c.on('error', reject)
  })
}

t.test('every read of every socket arrives in the one shared buffer, every byte in order', async (t) => {
  const srv = await listen()
  t.teardown(srv.close)
  const payloads = Array.from({ length: 8 }, (_, i) => randomBytes(3 * 1024 * 1024 + i * 777))
  await Promise.all(payloads.map((p) => send(srv.port, p)))
  while (srv.seen.length < payloads.length) await new Promise((r) => setTimeout(r, 10))
  await Promise.all(srv.seen.map((s) => s.closed))
  const want = new Set(payloads.map((p) => createHash('sha256').update(p).digest('hex')))
  const got = new Set(srv.seen.map((s) => s.hash.digest('hex')))
  t.same(got, want, 'each socket saw exactly the bytes its client sent')
  const buffers = new Set(srv.seen.flatMap((s) => [...s.buffers]))
  t.equal(buffers.size, 1, 'all sockets read into one buffer')
  t.equal([...buffers][0]!.byteLength, SIZE, 'of the size asked for')
  t.equal(srv.open(), 0, 'the listener counts the closed sockets out')
})

t.test('pause() stops reads until resume(); the bytes are all there afterwards', async (t) => {
  const srv = await listen()
  t.teardown(srv.close)
  const data = randomBytes(8 * 1024 * 1024)
  let pausedAt = -1
  let duringPause = 0
  const client = send(srv.port, data)
  while (srv.seen.length < 1) await new Promise((r) => setTimeout(r, 5))
  const s = srv.seen[0]!
  s.onData = () => {
    if (pausedAt < 0) {
      pausedAt = s.bytes
      s.wire.pause!()
      setTimeout(() => {
        duringPause = s.bytes - pausedAt
        s.wire.resume!()
      }, 200)
    }
  }
  await s.closed
  await client
  t.ok(pausedAt > 0, 'paused after the first read')
  t.equal(duringPause, 0, 'no read while paused')
  t.equal(s.bytes, data.length, 'every byte after resume()')
  t.equal(s.hash.digest('hex'), createHash('sha256').update(data).digest('hex'), 'in order')
})

t.test('a connection the adapter refuses is closed without a read', async (t) => {
  const srv = await listen(true)
  t.teardown(srv.close)
  const c = net.connect(srv.port, '127.0.0.1')
  const ended = new Promise<void>((r) => c.on('close', () => r()))
  c.on('error', () => {})
  c.on('connect', () => c.write('CONNECT {}\r\n'))
  await ended
  t.equal(srv.seen.length, 0, 'no Conn')
  t.pass('the client sees the close')
})

t.test('the wire writes, and the peer closing early reaches closed()', async (t) => {
  const srv = await listen()
  t.teardown(srv.close)
  const c = net.connect(srv.port, '127.0.0.1')
  c.on('error', () => {})
  const echoed = new Promise<string>((r) => c.once('data', (d) => r(d.toString())))
  while (srv.seen.length < 1) await new Promise((r) => setTimeout(r, 5))
  const s = srv.seen[0]!
  s.onData = (d) => s.wire.write(Uint8Array.from(d))
  c.write('ping')
  t.equal(await echoed, 'ping', 'a read written back')
  c.destroy()
  t.equal(await s.closed, undefined, 'closed() after the peer goes')
})
