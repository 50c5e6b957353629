// /connz and /subsz completed to nats-server's shape (issue 12 point 2): subs=1|detail,
// sort=, state=open|closed|any with a bounded ring of closed connections and their reason,
// per-connection in/out msgs and bytes for both protocols, /subsz with subs and test, and
// /healthz not ready while starting or in lame duck. Compared against a real nats-server
// where both have the field.

import t from 'tap'
import { createLogger } from '../src/log.ts'
import { ClosedRing } from '../src/closed.ts'
import { monitorRequest } from '../src/monitor.ts'
import { defaults } from '../src/options.ts'
import { Server } from '../src/server.ts'
import { startBroker } from './helpers/broker.ts'
import { mqttClient, natsClient, sleep } from './helpers/mqtt.ts'
import { freePort, havePeer, startNatsServer } from './helpers/peers.ts'

type J = Record<string, any>

async function get(port: number, path: string): Promise<{ status: number; body: J }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`)
  return { status: r.status, body: (await r.json()) as J }
}

async function until<T>(f: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> {
  for (let i = 0; ; i++) {
    const v = await f()
    if (ok(v) || i > 50) return v
    await sleep(50)
  }
}

t.test('connz: per-connection counters, subs lists, sort, closed ring with reasons', async (t) => {
  const http = await freePort()
  const b = await startBroker({ mqtt: true, http_port: http })
  t.teardown(() => b.stop())
  const nc = await natsClient(t, b.url, { name: 'pub' })
  const quiet = await natsClient(t, b.url, { name: 'quiet' })
  quiet.subscribe('q.>', { queue: 'workers' })
  quiet.subscribe('x.y', { max: 5 })
  await quiet.flush()
  const m = await mqttClient(t, b.mqttUrl, { clientId: 'dev-1' })
  await m.subscribeAsync('a/#')
  for (let i = 0; i < 4; i++) nc.publish('a.b', '12345')
  await nc.flush()
  await sleep(150)
  m.publish('a/c', 'abc')
  await sleep(150)

  const c = (await get(http, '/connz')).body
  t.equal(c.total, 3)
  const [pub, q, dev] = c.connections
  t.equal(pub.name, 'pub')
  t.equal(pub.in_msgs, 4, 'NATS in_msgs')
  t.equal(pub.in_bytes, 20, 'NATS in_bytes: payload bytes')
  t.equal(dev.type, 'mqtt')
  t.equal(dev.out_msgs, 5, 'MQTT out_msgs: 4 from NATS and its own')
  t.equal(dev.out_bytes, 23, 'MQTT out_bytes')
  t.equal(dev.in_msgs, 1)
  t.equal(dev.in_bytes, 3)
  t.notOk('subscriptions_list' in q, 'no list unless asked')

  const subs = (await get(http, '/connz?subs=1')).body.connections
  t.same(subs[1].subscriptions_list.sort(), ['q.>', 'x.y'], 'subs=1: subjects')
  t.same(subs[2].subscriptions_list.sort(), ['a', 'a.>'], 'an MQTT filter a/# is the subjects it maps to')
  const detail = (await get(http, '/connz?subs=detail')).body.connections[1].subscriptions_list_detail as J[]
  const qd = detail.find((d) => d.subject === 'q.>')!
  t.match(qd, { account: '$G', subject: 'q.>', qgroup: 'workers', sid: String, msgs: 0, cid: q.cid })
  t.match(detail.find((d) => d.subject === 'x.y'), { max: 5 })

  // sort: msgs_from puts the publisher first; bytes_to the MQTT device; subs the quiet one.
  t.equal((await get(http, '/connz?sort=msgs_from')).body.connections[0].name, 'pub')
  t.equal((await get(http, '/connz?sort=bytes_to')).body.connections[0].type, 'mqtt')
  t.equal((await get(http, '/connz?sort=subs')).body.connections[0].name, 'quiet')
  t.equal((await get(http, '/connz?sort=cid&limit=1&offset=2')).body.connections[0].cid, dev.cid)
  for (const s of ['start', 'pending', 'msgs_to', 'bytes_from', 'last', 'idle', 'uptime']) {
    const r = await get(http, `/connz?sort=${s}`)
    t.equal(r.status, 200, `sort=${s}`)
    t.equal(r.body.connections.length, 3)
  }
  t.equal((await get(http, '/connz?sort=nope')).status, 400, 'an unknown sort: 400')
  t.match((await get(http, '/connz?sort=stop')).body.error, /closed/, 'sort=stop needs state=closed')
  t.equal((await get(http, '/connz?state=bogus')).status, 400)
  t.equal((await get(http, '/connz?subs=maybe')).status, 400)
  t.equal((await get(http, `/connz?cid=${q.cid}`)).body.connections[0].name, 'quiet', 'cid= picks one')
  t.equal((await get(http, '/connz?mqtt_client=dev-1')).body.connections[0].cid, dev.cid, 'mqtt_client= picks one')

  // Closing: each reason as the adapter names it, newest first by stop.
  await quiet.close()
  await until(() => get(http, '/connz?state=closed'), (r) => r.body.total === 1, 'the first closed')
  await sleep(20) // distinct stop times
  await m.endAsync()
  const closed = await until(() => get(http, '/connz?state=closed'), (r) => r.body.total === 2, 'two closed')
  t.equal(closed.body.total, 2)
  const byCid = new Map((closed.body.connections as J[]).map((x) => [x.cid, x]))
  t.equal(byCid.get(q.cid)!.reason, 'Client Closed')
  t.equal(byCid.get(q.cid)!.name, 'quiet', 'what /connz showed at close is kept')
  t.equal(byCid.get(q.cid)!.subscriptions, 2, 'with its subscriptions counted as they were')
  t.match(byCid.get(dev.cid)!.reason, /Disconnect|Closed/)
  t.equal(byCid.get(dev.cid)!.subscriptions, 1, 'an MQTT connection too')
  t.equal(byCid.get(dev.cid)!.mqtt_client, 'dev-1')
  t.match(byCid.get(q.cid)!.stop, /^\d{4}-\d\d-\d\dT/)
  const any = (await get(http, '/connz?state=any&sort=cid')).body
  t.equal(any.total, 3, 'state=any: open and closed')
  t.same(any.connections.map((x: J) => x.cid), [pub.cid, q.cid, dev.cid])
  const stop = (await get(http, '/connz?state=closed&sort=stop')).body.connections
  t.equal(stop[0].cid, dev.cid, 'sort=stop: most recent first')
  t.equal((await get(http, '/connz?state=closed&sort=reason')).status, 200)
  for (const s of ['uptime', 'idle', 'last', 'subs', 'bytes_to', 'stop', 'reason']) {
    const r = await get(http, `/connz?state=any&sort=${s}`)
    t.equal(r.body.connections?.length, 3, `state=any&sort=${s}: open and closed together`)
  }
  // uptime: the publisher (open since the start) outlived the quiet one (closed): first.
  const up = (await get(http, '/connz?state=any&sort=uptime')).body.connections as J[]
  t.ok(up.findIndex((x) => x.cid === pub.cid) < up.findIndex((x) => x.cid === q.cid), 'sort=uptime mixes open and closed by how long each lived')
  const varz = (await get(http, '/varz')).body
  t.match(varz.sprig.closed_connections, { held: 2, dropped: 0 })
})

t.test('the closed ring is bounded by entries and bytes; what falls out is counted', async (t) => {
  const r = new ClosedRing(3, 10_000)
  const info = (cid: number, name = '') => ({ cid, type: 'nats', ip: '1.2.3.4', port: 1, last_activity: 0, pending_bytes: 0, subscriptions: 0, name })
  for (let i = 1; i <= 5; i++) r.add(info(i), 'Client Closed', i)
  t.same(r.all().map((c) => c.info.cid), [3, 4, 5])
  t.equal(r.dropped, 2)
  const small = new ClosedRing(1000, 5000)
  for (let i = 1; i <= 20; i++) small.add(info(i, 'x'.repeat(1000)), 'Client Closed', i)
  t.ok(small.bytes <= 5000, `bytes held ${small.bytes} <= 5000`)
  t.ok(small.size >= 1 && small.size < 20, `entries ${small.size}`)
  t.equal(small.dropped, 20 - small.size)
  t.same(small.all().at(-1)!.info.cid, 20, 'the newest is kept')
  const none = new ClosedRing(0)
  none.add(info(1), 'x', 1)
  t.equal(none.size, 0)
  t.equal(none.dropped, 1)
})

t.test('/subsz: nats-server shape, subs=1 and test=SUBJECT', async (t) => {
  const http = await freePort()
  const b = await startBroker({ http_port: http })
  t.teardown(() => b.stop())
  const nc = await natsClient(t, b.url)
  nc.subscribe('foo.*')
  nc.subscribe('foo.bar', { queue: 'g' })
  nc.subscribe('baz')
  await nc.flush()
  const s = (await get(http, '/subsz')).body
  t.match(s, { server_id: b.srv.id, num_subscriptions: Number, num_cache: Number, num_inserts: Number, num_removes: Number, num_matches: Number, cache_hit_rate: Number, max_fanout: Number, avg_fanout: Number })
  t.notOk('subscriptions_list' in s)
  const all = (await get(http, '/subsz?subs=1')).body
  const mine = (all.subscriptions_list as J[]).filter((x) => x.cid !== 0)
  t.same(mine.map((x) => x.subject).sort(), ['baz', 'foo.*', 'foo.bar'])
  const test = (await get(http, '/subsz?subs=1&test=foo.bar')).body
  t.same((test.subscriptions_list as J[]).map((x) => x.subject).sort(), ['foo.*', 'foo.bar'], 'test= lists what a publish would reach')
  t.equal(test.total, 2)
  t.equal((await get(http, '/subsz?subs=1&test=foo.*')).status, 400, 'a wildcard test subject: 400')
  t.equal((await get(http, '/subsz?subs=1&limit=1')).body.subscriptions_list.length, 1, 'paged')
  t.equal((await get(http, '/subsz?subs=x')).status, 400)
})

t.test('/subsz and /connz?subs=1 have nats-server\'s fields', async (t) => {
  if (!havePeer(t, 'nats-server', 'nats-server')) return
  const http = await freePort()
  const ref = await startNatsServer(['-m', String(http)])
  t.teardown(() => ref.stop())
  const mine = await freePort()
  const b = await startBroker({ http_port: mine })
  t.teardown(() => b.stop())
  for (const url of [`nats://127.0.0.1:${ref.port}`, b.url]) {
    const nc = await natsClient(t, url)
    nc.subscribe('foo.bar', { queue: 'g' })
    await nc.flush()
  }
  const refSubsz = (await get(http, '/subsz?subs=1')).body
  const subsz = (await get(mine, '/subsz?subs=1')).body
  t.same(Object.keys(subsz).sort(), Object.keys(refSubsz).sort(), '/subsz?subs=1 keys')
  const refSub = (refSubsz.subscriptions_list as J[]).find((x) => x.subject === 'foo.bar')
  const sub = (subsz.subscriptions_list as J[]).find((x) => x.subject === 'foo.bar')
  // nats-server 2.10 added `account` to the detail (Debian's 2.9 lacks it); sprig has it.
  const withoutAccount = (o: J | undefined): string[] => Object.keys(o ?? {}).filter((k) => k !== 'account').sort()
  t.same(withoutAccount(sub), withoutAccount(refSub), 'subscription detail keys')
  const refConn = (await get(http, '/connz?subs=detail')).body.connections[0]
  const conn = (await get(mine, '/connz?subs=detail')).body.connections[0]
  for (const k of ['in_msgs', 'out_msgs', 'in_bytes', 'out_bytes', 'subscriptions_list_detail', 'cid', 'start', 'uptime', 'idle', 'last_activity', 'pending_bytes']) {
    t.equal(typeof conn[k], typeof refConn[k], `connz ${k}: nats-server's type`)
  }
  t.same(withoutAccount(conn.subscriptions_list_detail[0]), withoutAccount(refConn.subscriptions_list_detail[0]))
  const refClosed = (await get(http, '/connz?state=closed')).body
  const closed = (await get(mine, '/connz?state=closed')).body
  t.same(Object.keys(closed).sort(), Object.keys(refClosed).sort(), 'state=closed page keys')
  // nats-server answers these in plain text; sprig in JSON with the same words.
  for (const q of ['/connz?sort=nope', '/connz?sort=stop', '/connz?state=bogus', '/connz?subs=maybe', '/subsz?subs=1&test=foo.*']) {
    const r = await fetch(`http://127.0.0.1:${http}${q}`)
    const m = await get(mine, q)
    t.equal(m.status, r.status, `${q}: nats-server's status`)
    t.equal(m.body.error, await r.text(), `${q}: nats-server's words`)
  }
})

t.test('/healthz: 503 while starting and in lame duck, 200 when ready', async (t) => {
  const host = { now: () => 1000, defer: (fn: () => void) => fn(), every: () => ({ cancel() {} }) }
  const srv = new Server({ ...defaults }, host, createLogger({ level: 'error', sink: () => {} }))
  const h = () => monitorRequest(srv, '/healthz', new Map())
  t.equal(srv.phase, 'starting')
  t.same(h(), { status: 503, body: { status: 'unavailable', status_code: 503, error: 'server is starting' } })
  srv.start()
  srv.phase = 'ready'
  t.same(h(), { status: 200, body: { status: 'ok' } })
  srv.phase = 'lame_duck'
  t.equal(h().status, 503)
  t.match(h().body, { error: /lame duck/ })
  srv.phase = 'ready'
  srv.shutdown()
  t.match(h(), { status: 503, body: { error: 'server is stopping' } })
  const b = await startBroker({})
  t.teardown(() => b.stop())
  t.equal(b.srv.phase, 'ready', 'serve() sets ready once every listener is bound')
})
