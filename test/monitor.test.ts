// The monitoring listener (http_port): nats-server's endpoint names and field names, the
// connections of both protocols in /connz, and the drop counters of the bounded queues.

import t from 'tap'
import { startBroker } from './helpers/broker.ts'
import { mqttClient, natsClient, sleep } from './helpers/mqtt.ts'
import { freePort, havePeer, startNatsServer } from './helpers/peers.ts'
import { monitorRequest, uptime } from '../src/monitor.ts'
import { validateOptions } from '../src/config.ts'
import { readFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { makeCerts, serverTlsOptions } from './helpers/certs.ts'
import { errorOf } from './helpers/config.ts'

async function get(port: number, path: string): Promise<{ status: number; body: Record<string, any> }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`)
  return { status: r.status, body: (await r.json()) as Record<string, any> }
}

t.test('uptime is formatted as nats-server does', async (t) => {
  t.equal(uptime(0), '0s')
  t.equal(uptime(59_999), '59s')
  t.equal(uptime(61_000), '1m1s')
  t.equal(uptime(3_600_000 + 2_000), '1h0m2s')
  t.equal(uptime(2 * 86_400_000 + 3_723_000), '2d1h2m3s')
})

t.test('endpoints over HTTP', async (t) => {
  const http = await freePort()
  const b = await startBroker({ mqtt: true, http_port: http })
  t.teardown(() => b.stop())
  t.equal(b.httpPort, http)
  t.ok(b.logs.some((l) => l.includes(`Starting http monitor on 127.0.0.1:${http}`)))

  const nc = await natsClient(t, b.url)
  const sub = nc.subscribe('a.>')
  const m = await mqttClient(t, b.mqttUrl, { clientId: 'dev-1', protocolVersion: 5 })
  await m.subscribeAsync('a/#')
  // A subject with no MQTT form (a token with a slash) is skipped for the MQTT subscriber and counted.
  nc.publish('a.b/c', 'x')
  nc.publish('a.ok', 'y')
  await nc.flush()
  await sleep(100)

  const varz = await get(http, '/varz')
  t.equal(varz.status, 200)
  t.equal(varz.body.server_id, b.srv.id)
  t.equal(varz.body.port, b.port)
  t.equal(varz.body.http_port, http)
  t.equal(varz.body.connections, 2)
  t.ok(varz.body.in_msgs >= 2, 'in_msgs counts the publishes')
  t.ok(varz.body.subscriptions >= 2)
  t.equal(varz.body.sprig.mqtt.unmappable_subjects, 1, 'the skipped message is visible')
  t.equal(varz.body.sprig.mqtt.offline_dropped, 0)
  t.equal(typeof varz.body.mem, 'number')
  // The memory budget: the default here (no total memory given), what is held now, what it did.
  t.equal(varz.body.sprig.max_memory, 128 * 1024 * 1024)
  t.equal(typeof varz.body.sprig.mem_held, 'number')
  t.ok(varz.body.sprig.mem_held >= 0 && varz.body.sprig.mem_held < 1024 * 1024, `mem_held counts what is held (${varz.body.sprig.mem_held})`)
  for (const k of ['mem_paused', 'mem_pauses', 'mem_closes', 'mem_drops', 'mem_episodes']) t.equal(varz.body.sprig[k], 0, k)
  t.equal(varz.body.ping_interval, 120_000_000_000, 'durations in nanoseconds, like nats-server')

  const connz = await get(http, '/connz')
  t.equal(connz.body.num_connections, 2)
  const [a, c] = connz.body.connections
  t.equal(a.type, 'nats')
  t.equal(a.subscriptions, 1)
  t.equal(a.lang, 'nats.js')
  t.equal(c.type, 'mqtt')
  t.equal(c.mqtt_client, 'dev-1')
  t.equal(c.subscriptions, 1)
  t.match(a.start, /^\d{4}-\d\d-\d\dT/)

  const page = await get(http, '/connz?offset=1&limit=1')
  t.equal(page.body.connections.length, 1)
  t.equal(page.body.connections[0].type, 'mqtt')
  t.equal((await get(http, '/connz?limit=x')).status, 400)

  t.same((await get(http, '/healthz')).body, { status: 'ok' })
  const leafz = await get(http, '/leafz')
  t.equal(leafz.body.server_id, b.srv.id)
  t.ok('leafs' in leafz.body)
  const nope = await get(http, '/nope')
  t.equal(nope.status, 404)
  t.match(nope.body.error, /no such endpoint/)
  const post = await fetch(`http://127.0.0.1:${http}/varz`, { method: 'POST' })
  t.equal(post.status, 405)
  sub.unsubscribe()
})

t.test('no monitoring listener unless asked for', async (t) => {
  const b = await startBroker({})
  t.teardown(() => b.stop())
  t.equal(b.httpPort, 0)
})

t.test('healthz says unavailable once the server stops', async (t) => {
  const b = await startBroker({})
  await b.stop()
  const r = monitorRequest(b.srv, '/healthz', new URLSearchParams(), { mem: 0, cores: 1 })
  t.equal(r.status, 503)
})

t.test('the /varz and /connz fields sprig shares with nats-server have the same names and types', async (t) => {
  if (!havePeer(t, 'nats-server', 'nats-server')) return
  const http = await freePort()
  const ref = await startNatsServer(['-m', String(http)])
  t.teardown(() => ref.stop())
  const refVarz = (await get(http, '/varz')).body
  const mine = await freePort()
  const b = await startBroker({ http_port: mine })
  t.teardown(() => b.stop())
  const varz = (await get(mine, '/varz')).body
  for (const k of Object.keys(varz)) {
    if (k === 'sprig') continue
    t.ok(k in refVarz, `nats-server's /varz has ${k}`)
    t.equal(typeof varz[k], typeof refVarz[k], `${k} has nats-server's type`)
  }
  const refConnz = (await get(http, '/connz')).body
  const connz = (await get(mine, '/connz')).body
  t.same(Object.keys(connz).sort(), Object.keys(refConnz).sort())
})

t.test('https_port: the same endpoints behind the NATS listener\'s TLS, client certificates verified', async (t) => {
  const certs = makeCerts(t)
  if (!certs) return
  const https = await freePort()
  const b = await startBroker({ tls: serverTlsOptions(certs), https_port: https })
  t.teardown(() => b.stop())
  t.equal(b.httpsPort, https)
  t.ok(b.logs.some((l) => l.includes(`Starting https monitor on 127.0.0.1:${https}`)))
  const get = (pair: { cert: string; key: string } | null): Promise<{ status: number; body: string } | { error: string }> =>
    new Promise((resolve) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: https,
          path: '/varz',
          ca: readFileSync(certs.ca),
          servername: 'localhost',
          ...(pair ? { cert: readFileSync(pair.cert), key: readFileSync(pair.key) } : {}),
        },
        (res) => {
          let body = ''
          res.on('data', (d) => (body += d))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        },
      )
      req.on('error', (e) => resolve({ error: e.message }))
      req.end()
    })
  const ok = await get(certs.client)
  t.ok('status' in ok && ok.status === 200, 'a good client certificate gets /varz')
  if ('body' in ok) t.equal(JSON.parse(ok.body).https_port, https)
  const rogue = await get(certs.selfSigned)
  t.ok('error' in rogue, 'a self-signed client certificate is refused')
  const none = await get(null)
  t.ok('error' in none, 'no client certificate is refused')
  await sleep(150)
  t.ok(b.logs.some((l) => l.includes('- https - TLS handshake error')), 'the refusal is logged with the peer')
})

t.test('https_port needs the tls block', async (t) => {
  t.equal(errorOf(t, () => validateOptions({ https_port: 8443 })), 'config error: https_port: needs the top-level tls block (its certificate serves HTTPS)')
})
