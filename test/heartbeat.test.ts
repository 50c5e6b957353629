// Gateway health in the cloud (issue 12 point 6): with an uplink, sprig publishes a compact
// JSON heartbeat on `$SPRIG.status.<server_name>` every leafnodes.status_interval, which a
// cloud client of a real nats-server hub receives with one subscription (unmapped, and under a
// remote's map), and answers /varz-, /connz-, /subsz-, /healthz- and /leafz-shaped requests on
// `$SPRIG.` service subjects through the hub.

import t from 'tap'
import type { NatsConnection } from '@nats-io/transport-node'
import fc from 'fast-check'
import { validateOptions } from '../src/config.ts'
import { compileFilters } from '../src/leaf/filter.ts'
import { reloadUplink } from '../src/leaf/index.ts'
import { createLogger } from '../src/log.ts'
import { defaults } from '../src/options.ts'
import { Server } from '../src/server.ts'
import { REMOTE_DEFAULTS, type RemoteOptions } from '../src/options.ts'
import { check } from './helpers/fuzz.ts'
import { requestParams, statusSubject } from '../src/leaf/status.ts'
import { startBroker } from './helpers/broker.ts'
import { errorOf } from './helpers/config.ts'
import { haveHub, leafUp, startHub } from './helpers/hub.ts'
import { mqttClient, natsClient, sleep } from './helpers/mqtt.ts'

type J = Record<string, any>

const remote = (url: string, more: object = {}) => ({
  urls: [url], no_randomize: false, deny_imports: [], deny_exports: [], allow_exports: [], allow_imports: [], map: [],
  buffer_subjects: [], buffer_max_msgs: 1000, buffer_max_bytes: 1 << 20, buffer_policy: 'drop_oldest' as const, buffer_hold: 10_000,
  ...more,
})

/** The next `n` heartbeats on `subject` (a wildcard), parsed, with the subject each came on. */
function beats(nc: NatsConnection, subject: string, n: number, ms = 10_000): Promise<{ subject: string; body: J; size: number }[]> {
  const got: { subject: string; body: J; size: number }[] = []
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      sub.unsubscribe()
      resolve(got)
    }, ms)
    const sub = nc.subscribe(subject, {
      callback: (_e, m) => {
        got.push({ subject: m.subject, body: m.json<J>(), size: m.data.length })
        if (got.length >= n) {
          clearTimeout(timer)
          sub.unsubscribe()
          resolve(got)
        }
      },
    })
  })
}

async function retryRequest(nc: NatsConnection, subject: string, data = ''): Promise<J> {
  for (let i = 0; ; i++) {
    try {
      return (await nc.request(subject, data, { timeout: 500 })).json<J>()
    } catch (e) {
      if (i > 40) throw e
      await sleep(50)
    }
  }
}

t.test('status_interval: a duration, 0 turns the heartbeat off; a bad one names the key', async (t) => {
  const leaf = (v: unknown) => ({ leafnodes: { status_interval: v, remotes: [{ urls: ['nats://127.0.0.1:7422'] }] } })
  t.equal(validateOptions(leaf('5s')).leafnodes?.status_interval, 5000)
  t.equal(validateOptions(leaf(0)).leafnodes?.status_interval, 0)
  t.equal(validateOptions({ leafnodes: { remotes: [{ urls: ['nats://127.0.0.1:7422'] }] } }).leafnodes?.status_interval, 30_000, 'default 30s')
  t.match(errorOf(t, () => validateOptions(leaf('soon'))), /leafnodes\.status_interval/)
  t.match(errorOf(t, () => validateOptions(leaf(-1))), /leafnodes\.status_interval/)
})

t.test('a reload (SIGHUP) changes status_interval on the running uplink', async (t) => {
  const base = { reconnect: 1000, reconnect_max: 30_000, remotes: [remote('nats://127.0.0.1:1')] }
  const srv = new Server({ ...defaults, leafnodes: { ...base, status_interval: 30_000 } }, { now: () => 0, defer: (f) => f(), every: () => ({ cancel() {} }) }, createLogger({ level: 'error', sink: () => {} }))
  reloadUplink(srv, null, { ...srv.opts, leafnodes: { ...base, status_interval: 5000 } })()
  t.equal(srv.opts.leafnodes?.status_interval, 5000, 'applied without a restart (the heartbeat reads it on each tick)')
})

t.test('heartbeat subject and request parameters (pure)', async (t) => {
  t.equal(statusSubject('gw-42'), '$SPRIG.status.gw-42')
  t.equal(statusSubject('a.b c*>'), '$SPRIG.status.a_b_c__', 'what a token cannot hold is replaced')
  t.same(requestParams(new Uint8Array()), new Map())
  t.same(requestParams(Buffer.from('{"limit":2,"subs":"detail","x":true}')), new Map([['limit', '2'], ['subs', 'detail'], ['x', 'true']]))
  for (const bad of ['[1]', '{"a":{}}', 'nope', '"s"', '{"a":[1]}']) t.type(requestParams(Buffer.from(bad)), 'string', `${bad}: an error`)
  t.type(requestParams(Buffer.alloc(5000, 32)), 'string', 'an oversize request: an error')
})

t.test('the heartbeat subject is the one $SPRIG. subject that goes up unmapped; filters still apply', async (t) => {
  const r = (o: Partial<RemoteOptions>): RemoteOptions => ({ ...REMOTE_DEFAULTS, urls: ['nats://h:7422'], ...o })
  const plain = compileFilters(r({}))
  t.equal(plain.up('$SPRIG.status.gw1'), '$SPRIG.status.gw1', 'unmapped: up as it is')
  t.equal(plain.up('$SPRIG.varz'), null, 'a service subject stays local')
  t.equal(plain.up('$SPRIG.statusx'), null, 'only the status prefix')
  t.equal(plain.down('$SPRIG.status.gw1'), null, 'nothing comes down on it')
  t.same(plain.interestUp('$SPRIG.status.>'), [], 'no local interest on it is announced')
  const mapped = compileFilters(r({ map: [{ local: '$SPRIG.>', hub: 'site.gw1.$SPRIG.>' }] }))
  t.equal(mapped.up('$SPRIG.status.gw1'), 'site.gw1.$SPRIG.status.gw1', 'under a map: placed under the site prefix')
  const denied = compileFilters(r({ deny_exports: ['$SPRIG.status.>'] }))
  t.equal(denied.up('$SPRIG.status.gw1'), null, 'deny_exports keeps it at home')
})

t.test('service request payloads: any bytes give parameters or an error, never an exception', async (t) => {
  check(
    t,
    'requestParams',
    fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.json().map((j) => Buffer.from(j)), fc.object().map((o) => Buffer.from(JSON.stringify(o)))), (b) => {
      const r = requestParams(b)
      if (typeof r !== 'string' && !(r instanceof Map)) throw new Error(`neither: ${String(r)}`)
    }),
    2000,
  )
})

if (haveHub(t)) {
  t.test('a real nats-server hub receives the heartbeats of every gateway with one subscription', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const cloud = await natsClient(t, hub.url)
    const plain = beats(cloud, '$SPRIG.status.>', 2)
    const mapped = beats(cloud, 'site.*.$SPRIG.status.>', 1)
    await cloud.flush()
    const gw1 = await startBroker({ server_name: 'gw1', mqtt: true, leafnodes: { reconnect: 200, reconnect_max: 1000, status_interval: 300, remotes: [remote(hub.leafUrl)] } })
    t.teardown(() => gw1.stop())
    const map = [{ local: '$SPRIG.>', hub: 'site.gw2.$SPRIG.>' }]
    const gw2 = await startBroker({ server_name: 'gw2', leafnodes: { reconnect: 200, reconnect_max: 1000, status_interval: 300, remotes: [remote(hub.leafUrl, { map })] } })
    t.teardown(() => gw2.stop())
    // Traffic on gw1: one device, one NATS client, some publishes.
    const nc = await natsClient(t, gw1.url)
    const m = await mqttClient(t, gw1.mqttUrl, { clientId: 'dev-1' })
    for (let i = 0; i < 50; i++) nc.publish('local.x', 'y')
    await nc.flush()
    const got = await plain
    t.ok(got.length >= 2, `heartbeats arrive unmapped (${got.length})`)
    const b = got.at(-1)!
    t.equal(b.subject, '$SPRIG.status.gw1')
    t.match(b.body, {
      server_id: gw1.srv.id,
      server_name: 'gw1',
      version: String,
      uptime: String,
      healthy: true,
      connections: { nats: 1, mqtt: 1, total: 2 },
      rates: { in_msgs: Number, out_msgs: Number },
      uplink: [{ remote: 0, state: 'connected', reconnects: Number }],
      store: { buffered_msgs: 0, buffered_bytes: 0 },
      drops: { slow_consumers: 0, uplink_dropped_msgs: 0, mqtt_offline_dropped: 0 },
    })
    t.ok(b.body.in_msgs >= 50, 'totals')
    t.ok(b.size < 1500, `compact: ${b.size} bytes`)
    t.notOk(got.some((x) => x.subject.includes('gw2')), 'gw2 (mapped) is not on the unmapped subject')
    const g2 = await mapped
    t.equal(g2[0]?.subject, 'site.gw2.$SPRIG.status.gw2', 'under a map, the heartbeat is placed under the site prefix')
    t.equal(g2[0]?.body.server_name, 'gw2')
    await m.endAsync()

    // Rates: the next heartbeat after 300 publishes shows them per second.
    const next = beats(cloud, '$SPRIG.status.gw1', 2)
    for (let i = 0; i < 300; i++) nc.publish('local.x', 'y')
    await nc.flush()
    const r = await next
    t.ok(r.some((x) => x.body.rates.in_msgs > 0), `a rate moved with traffic (${r.map((x) => x.body.rates.in_msgs).join(', ')}/s)`)
  })

  t.test('requests through the hub reach one gateway: varz, connz, subsz, healthz, leafz', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const map = [{ local: '$SPRIG.>', hub: 'site.gw7.$SPRIG.>' }]
    const gw = await startBroker({ server_name: 'gw7', leafnodes: { reconnect: 200, reconnect_max: 1000, remotes: [remote(hub.leafUrl, { map })] } })
    t.teardown(() => gw.stop())
    await leafUp(gw)
    const local = await natsClient(t, gw.url, { name: 'sensor-reader' })
    local.subscribe('sensors.>')
    await local.flush()
    const cloud = await natsClient(t, hub.url)
    const varz = await retryRequest(cloud, 'site.gw7.$SPRIG.varz')
    t.equal(varz.server_id, gw.srv.id)
    t.equal(varz.server_name, 'gw7')
    t.equal(varz.connections, 1)
    t.equal(varz.leafnodes, 1)
    const connz = await retryRequest(cloud, 'site.gw7.$SPRIG.connz', JSON.stringify({ subs: 'detail', limit: 5 }))
    t.equal(connz.total, 1)
    t.equal(connz.connections[0].name, 'sensor-reader')
    t.equal(connz.connections[0].subscriptions_list_detail[0].subject, 'sensors.>', 'parameters ride in the JSON payload')
    const subsz = await retryRequest(cloud, 'site.gw7.$SPRIG.subsz', JSON.stringify({ subs: 1, test: 'sensors.t1' }))
    t.equal(subsz.total, 1)
    t.same(await retryRequest(cloud, 'site.gw7.$SPRIG.healthz'), { status: 'ok' })
    const leafz = await retryRequest(cloud, 'site.gw7.$SPRIG.leafz')
    t.equal(leafz.leafs[0].state, 'connected')
    const bad = await retryRequest(cloud, 'site.gw7.$SPRIG.connz', '{"sort":"nope"}')
    t.match(bad, { error: 'invalid sorting option: nope', code: 400 }, 'a bad parameter: an error reply, the gateway goes on')
    const junk = await retryRequest(cloud, 'site.gw7.$SPRIG.varz', 'not json')
    t.match(junk, { error: /JSON/, code: 400 })
    t.ok(gw.srv.running)
    // Locally too (no map needed there).
    t.equal((await local.request('$SPRIG.varz', '', { timeout: 1000 })).json<J>().server_id, gw.srv.id)
  })

  t.test('status_interval 0: no heartbeat', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const cloud = await natsClient(t, hub.url)
    const got = beats(cloud, '$SPRIG.status.>', 1, 1500)
    await cloud.flush()
    const gw = await startBroker({ server_name: 'quiet', leafnodes: { reconnect: 200, reconnect_max: 1000, status_interval: 0, remotes: [remote(hub.leafUrl)] } })
    t.teardown(() => gw.stop())
    await leafUp(gw)
    t.same(await got, [], 'nothing published')
  })
}
