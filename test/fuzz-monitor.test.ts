// Property-based tests of the monitoring endpoint's request handling (src/monitor.ts
// monitorRequest): any path and any query give a JSON-serialisable reply with a sensible
// status (200, 400, 404 or 503), never an exception; /connz paging reports the integers it
// used. The paths and queries new URL() derives from odd request targets are fed in too.

import t from 'tap'
import fc from 'fast-check'
import { generate } from 'mqtt-packet'
import { MqttConn } from '../adapters/mqtt/conn.ts'
import type { Wire } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { monitorRequest } from '../src/monitor.ts'
import { defaults } from '../src/options.ts'
import { Server } from '../src/server.ts'
import { check } from './helpers/fuzz.ts'

const host = { now: () => 1_700_000_000_000, defer: (fn: () => void) => fn(), every: () => ({ cancel() {} }) }
const srv = new Server({ ...defaults, port: 4222 }, host, createLogger({ level: 'error', sink: () => {} }))
// A few connections, so /connz has something to page through.
for (let i = 0; i < 5; i++) {
  const wire: Wire = { write: () => true, buffered: () => 0, end: () => {}, destroy: () => {}, remoteAddress: '127.0.0.1', remotePort: 1000 + i }
  new MqttConn(srv, srv.admit(), wire).data(generate({ cmd: 'connect', clientId: `dev${i}`, clean: true, keepalive: 60, protocolId: 'MQTT', protocolVersion: 4 }))
}
const proc = { mem: 1, cores: 2 }

const segment = fc.oneof(
  fc.constantFrom('varz', 'connz', 'subsz', 'metrics', 'leafz', 'healthz', '', '.', '..', '%2e', 'VARZ', 'varz?', '[', ':', '@', '%zz', '%00', '\u0000', 'é'),
  fc.webSegment(),
)
const path = fc.array(segment, { maxLength: 4 }).map((s) => '/' + s.join('/'))
const number = fc.oneof(
  fc.nat().map(String),
  fc.constantFrom('', '-1', '1.5', '1e3', '0x10', ' 1', '1 ', '+1', '9'.repeat(40), 'detail', 'true', 'closed', 'any', 'stop', 'reason', 'msgs_to', 'idle', 'a.b', 'a.*', '__proto__', 'constructor'),
  fc.string({ maxLength: 5 }),
)
const query = fc.array(fc.tuple(fc.constantFrom('offset', 'limit', 'subs', 'sort', 'state', 'test', 'cid', 'mqtt_client', 'x', ''), number), { maxLength: 4 }).map((kv) => new URLSearchParams(kv))

function ok(status: number, body: unknown, type?: string): string | null {
  if (![200, 400, 404, 503].includes(status)) return `status ${status}`
  if (type !== undefined) return typeof body === 'string' && body.endsWith('\n') ? null : `text body ${String(body).slice(0, 40)}`
  let json: string
  try {
    json = JSON.stringify(body)
  } catch (e) {
    return `body not JSON: ${(e as Error).message}`
  }
  if (typeof json !== 'string' || !json.startsWith('{')) return `body ${json}`
  return null
}

t.test('any path and query: a JSON reply with a known status, no exception', async (t) => {
  check(
    t,
    'monitorRequest',
    fc.property(fc.oneof(path, fc.string({ maxLength: 20 }), fc.webPath()), query, (p, q) => {
      const r = monitorRequest(srv, p, q, proc)
      const bad = ok(r.status, r.body, r.type)
      if (bad) throw new Error(`${JSON.stringify(p)} ?${q}: ${bad}`)
    }),
    3000,
  )
})

t.test('/connz pages with the integers it reports', async (t) => {
  check(
    t,
    'connz offset/limit',
    // Up to 15 digits: beyond that see the test below.
    fc.property(fc.option(fc.nat(20), { nil: undefined }), fc.option(fc.nat(20), { nil: undefined }), (offset, limit) => {
      const q = new URLSearchParams()
      if (offset !== undefined) q.set('offset', String(offset))
      if (limit !== undefined) q.set('limit', String(limit))
      const r = monitorRequest(srv, '/connz', q, proc)
      const b = r.body as { offset: number; limit: number; num_connections: number; total: number; connections: unknown[] }
      if (r.status !== 200) throw new Error(`status ${r.status}`)
      // As nats-server: no limit, or one of 0 or less, is the default 1024 (sprig caps it there).
      const wantLimit = limit === undefined || limit <= 0 ? 1024 : Math.min(limit, 1024)
      if (b.offset !== (offset ?? 0) || b.limit !== wantLimit) throw new Error(`reports offset ${b.offset} limit ${b.limit}`)
      const want = Math.max(0, Math.min(b.limit, b.total - b.offset))
      if (b.num_connections !== want || b.connections.length !== want) throw new Error(`${b.connections.length} connections, want ${want}`)
    }),
    500,
  )
})

/** A request target turned into path and query with new URL() (as targets/http.ts does), a bad one into a 400. */
function route(target: string): { status: number; body: unknown; type?: string } {
  let url: URL
  try {
    url = new URL(target, 'http://monitor')
  } catch {
    return { status: 400, body: { error: 'bad request target' } }
  }
  return monitorRequest(srv, url.pathname, url.searchParams, proc)
}

t.test('paths and queries derived from odd request targets', async (t) => {
  const target = fc.oneof(
    fc.tuple(path, query).map(([p, q]) => `${p}${q.size ? `?${q}` : ''}`),
    fc.webUrl({ withQueryParameters: true, withFragments: true }),
    fc.string({ maxLength: 30, unit: fc.constantFrom('/', '[', ']', ':', '@', '%', 'z', '?', '#', '9', 'h', 't', 'p', '.', '\\', ' ') }),
    fc.constantFrom('//[', 'http://[', '//a:b@:99999/', 'http://a%zz/', '//varz', '*', '', '/connz?offset=' + '9'.repeat(400)),
  )
  check(
    t,
    'route(target) never throws',
    fc.property(target, (s) => {
      const r = route(s)
      const bad = ok(r.status, r.body, r.type)
      if (bad) throw new Error(`${JSON.stringify(s)}: ${bad}`)
    }),
    3000,
  )
})

// Found by the fuzzer before issue 9 point 1 was fixed.
t.test('monitoring problems found by fuzzing (issue 9 point 1) stay fixed', async (t) => {
  const r = monitorRequest(srv, '/connz', new URLSearchParams({ offset: '9'.repeat(400) }), proc)
  const b = r.body as { offset: unknown }
  t.ok(r.status === 400 || Number.isSafeInteger(b.offset), `offset of 400 digits: 400, or an integer offset (got ${r.status} ${JSON.stringify(b.offset)})`)
})
