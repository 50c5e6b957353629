// The TLS side of Bun.listen's handlers (targets/bun.ts, a listener with `secure`), driven by
// a fake socket: writes held until the handshake is over and then sent in order, a failed
// handshake, a missing or unreadable certificate, a timeout and a close mid-handshake each
// refused with one log line, nothing said twice, and an exception from the connection after
// the handshake caught by the listener's guard. The real thing, under Bun with real
// certificates, is test/tls-bun.test.ts.

import t from 'tap'
import { bunHandlers, type BunSocket } from '../targets/bun.ts'
import type { Conn, Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { guardAccept } from '../targets/runtime.ts'
import type { ServerTls } from '../targets/tls.ts'
import { fakeSocket } from './helpers/fake-bun.ts'

/** The TLS parts of Bun's socket, writable here (a certificate of any shape, or one that throws). */
interface TlsFake {
  authorized?: boolean
  getPeerCertificate?: () => unknown
  getTLSVersion?: () => string
}

function listener(verify: boolean, timeout = 10_000, drained: () => void = () => {}) {
  const refused: string[] = []
  const logs: string[] = []
  const st: ServerTls = { mode: 'first', timeout, verify, map: 'auto', serverOptions: {}, revoked: null, refused: (l) => void refused.push(l) }
  const seen = { drained: 0, closed: [] as (string | undefined)[], wire: null as Wire | null }
  const accept = guardAccept((w) => {
    seen.wire = w
    const c: Conn = {
      data: () => {},
      drained: () => {
        seen.drained++
        drained()
      },
      closed: (why) => void seen.closed.push(why),
    }
    return c
  }, createLogger({ level: 'debug', sink: (l) => void logs.push(l) }))
  const h = bunHandlers(accept, () => {}, st) as ReturnType<typeof bunHandlers> & { handshake(s: BunSocket, ok: boolean, err: Error | null): void }
  const { s, sent } = fakeSocket(() => Infinity)
  h.open(s)
  return { h, s: s as unknown as Omit<typeof s, keyof TlsFake> & TlsFake, bun: s as BunSocket, sent, seen, refused, logs, w: seen.wire! }
}

const bytes = (n: number, from: number): Uint8Array => Uint8Array.from({ length: n }, (_, i) => (from + i) & 255)

t.test('writes wait for the handshake, then go out in order; the connection hears drained()', async (t) => {
  const { h, s, bun, sent, seen, refused, w } = listener(false)
  t.equal(w.write(bytes(5, 0)), false, 'a write before the handshake is held (Bun would drop it)')
  t.equal(w.write(bytes(3, 5)), false)
  t.equal(sent.length, 0, 'nothing reaches the socket yet')
  t.equal(w.buffered(), 8)
  s.authorized = false
  s.getPeerCertificate = () => undefined
  s.getTLSVersion = () => 'TLSv1.3'
  h.handshake(bun, true, null)
  t.same(sent, [...bytes(8, 0)], 'both writes, in order, once the handshake is over')
  t.equal(seen.drained, 1, 'the connection may write again')
  t.same(w.tls, { protocol: 'TLSv1.3', authorized: false, identities: [], subject: '' }, 'no certificate asked for: none recorded')
  t.same(refused, [])
  h.handshake(bun, true, null)
  t.equal(seen.drained, 1, 'a second call changes nothing')
  t.equal(s.terminated, 0)
  h.close(bun)
})

t.test('refusals: failed handshake, no certificate, an unreadable one; one line each, nothing sent', async (t) => {
  const cases: { name: string; ok: boolean; err: (Error & { code?: string }) | null; cert: () => unknown; reason: RegExp }[] = [
    { name: 'not TLS', ok: false, err: Object.assign(new Error('error:1000009c:SSL routines:OPENSSL_internal:HTTP_REQUEST'), { code: 'EPROTO' }), cert: () => undefined, reason: /TLS handshake error: error:1000009c:SSL routines:OPENSSL_internal:HTTP_REQUEST \(EPROTO\)$/ },
    { name: 'no certificate', ok: true, err: Object.assign(new Error('unable to get issuer certificate'), { code: 'UNABLE_TO_GET_ISSUER_CERT' }), cert: () => undefined, reason: /TLS handshake error: client certificate required, none sent$/ },
    { name: 'expired', ok: true, err: Object.assign(new Error('certificate has expired'), { code: 'CERT_HAS_EXPIRED' }), cert: () => ({ raw: new Uint8Array(10), subject: { CN: 'x' } }), reason: /client certificate refused: certificate has expired \(CERT_HAS_EXPIRED\)$/ },
    {
      name: 'unreadable',
      ok: true,
      err: null,
      cert: () => {
        throw new Error('bad DER')
      },
      reason: /TLS handshake error: cannot read the client certificate: bad DER$/,
    },
  ]
  for (const c of cases) {
    const { h, s, bun, sent, seen, refused, w } = listener(true)
    w.write(bytes(4, 0))
    s.authorized = c.err === null
    s.getPeerCertificate = c.cert
    h.handshake(bun, c.ok, c.err)
    t.equal(refused.length, 1, `${c.name}: one line`)
    t.match(refused[0], /^127\.0\.0\.1:5555 - /, `${c.name}: it names the peer`)
    t.match(refused[0], c.reason, `${c.name}: ${refused[0]}`)
    t.equal(s.terminated, 1, `${c.name}: the socket is closed`)
    t.equal(sent.length, 0, `${c.name}: the held write never goes out`)
    h.close(bun)
    t.equal(refused.length, 1, `${c.name}: the close adds no second line`)
    t.equal(seen.closed.length, 1, `${c.name}: the connection hears of the close once`)
  }
})

t.test('a stalled handshake times out; a close mid-handshake is logged; a late callback is ignored', async (t) => {
  const a = listener(true, 30)
  await new Promise((r) => setTimeout(r, 80))
  t.same(a.refused, ['127.0.0.1:5555 - TLS handshake error: TLS handshake timeout'])
  t.equal(a.s.terminated, 1)
  a.h.handshake(a.bun, false, Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))
  a.h.close(a.bun)
  t.equal(a.refused.length, 1, 'Bun reporting the failure afterwards adds nothing')

  const b = listener(true, 30)
  b.h.close(b.bun)
  t.same(b.refused, ['127.0.0.1:5555 - TLS handshake error: connection closed during the TLS handshake'])
  await new Promise((r) => setTimeout(r, 80))
  t.equal(b.refused.length, 1, 'the timer went with the close')
  t.same(b.seen.closed, [undefined])
})

t.test("an exception from the connection once the handshake is over: the guard's, not Bun's", async (t) => {
  const { h, s, bun, logs, w } = listener(false, 10_000, () => {
    throw new Error('injected drain failure')
  })
  w.write(bytes(2, 0))
  s.authorized = false
  s.getPeerCertificate = () => undefined
  t.doesNotThrow(() => h.handshake(bun, true, null), 'nothing escapes into the runtime')
  t.equal(s.terminated, 1, 'the socket is closed')
  t.ok(logs.some((l) => l.includes('127.0.0.1:5555 - internal error in drained: Error: injected drain failure')), 'logged with the peer')
  h.close(bun)
})

t.test('a socket turned away at accept (descriptors short) is not reported as a failed handshake', async (t) => {
  const refused: string[] = []
  const st: ServerTls = { mode: 'first', timeout: 30, verify: true, map: 'auto', serverOptions: {}, revoked: null, refused: (l) => void refused.push(l) }
  // What guardAccept does when descriptors run short: destroy the wire, return no connection.
  const h = bunHandlers((w) => (w.destroy(), null), () => {}, st) as ReturnType<typeof bunHandlers> & { handshake(s: BunSocket, ok: boolean, err: Error | null): void }
  for (const how of ['close', 'handshake', 'timeout'] as const) {
    const { s } = fakeSocket(() => Infinity)
    h.open(s)
    t.equal(s.terminated, 1, `${how}: closed at once`)
    if (how === 'close') h.close(s)
    if (how === 'handshake') h.handshake(s, false, Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }))
    await new Promise((r) => setTimeout(r, 60))
    h.close(s)
  }
  t.same(refused, [], 'no TLS line for any of them: the guard logs the episode once')
})
