// /metrics (issue 12 point 1): Prometheus text that Debian's promtool accepts, made from the
// same numbers as /varz, with bounded labels; and a real Prometheus process that scrapes
// sprig and answers a query with a value that moved with traffic.

import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpsRequest } from 'node:https'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startBroker } from './helpers/broker.ts'
import { haveHub, leafUp, startHub } from './helpers/hub.ts'
import { mqttClient, natsClient, sleep } from './helpers/mqtt.ts'
import { freePort, havePeer, spawnServer, waitForPort } from './helpers/peers.ts'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { makeCerts, serverTlsOptions } from './helpers/certs.ts'

async function text(port: number, p: string): Promise<{ status: number; type: string; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${p}`)
  return { status: r.status, type: r.headers.get('content-type') ?? '', body: await r.text() }
}

/** The value of one sample (`name` or `name{labels}` exactly as printed). */
function sample(body: string, series: string): number | undefined {
  for (const line of body.split('\n')) {
    if (line.startsWith(series + ' ')) return Number(line.slice(series.length + 1))
  }
  return undefined
}

function promtool(t: Test, body: string): void {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: body, encoding: 'utf8' })
  t.equal(r.status, 0, `promtool check metrics passes${r.status === 0 ? '' : `:\n${r.stdout}${r.stderr}`}`)
  t.equal(`${r.stdout}${r.stderr}`.trim(), '', 'and has no lint remarks')
}

const remote = (url: string) => ({
  urls: [url], no_randomize: false, deny_imports: [], deny_exports: [], allow_exports: [], allow_imports: [], map: [],
  buffer_subjects: [], buffer_max_msgs: 1000, buffer_max_bytes: 1 << 20, buffer_policy: 'drop_oldest' as const, buffer_hold: 10_000,
})

t.test('/metrics: Prometheus text, the same numbers as /varz, promtool-clean', async (t) => {
  const http = await freePort()
  const b = await startBroker({ mqtt: true, http_port: http })
  t.teardown(() => b.stop())
  const nc = await natsClient(t, b.url)
  nc.subscribe('a.>')
  const m = await mqttClient(t, b.mqttUrl, { clientId: 'dev-1' })
  await m.subscribeAsync('a/#')
  for (let i = 0; i < 10; i++) nc.publish('a.b', 'hello')
  await nc.flush()
  await sleep(100)
  const r = await text(http, '/metrics')
  t.equal(r.status, 200)
  t.match(r.type, /^text\/plain; version=0\.0\.4/)
  const varz = (await (await fetch(`http://127.0.0.1:${http}/varz`)).json()) as Record<string, any>
  t.equal(sample(r.body, 'sprig_connections{protocol="nats"}'), 1)
  t.equal(sample(r.body, 'sprig_connections{protocol="mqtt"}'), 1)
  t.equal(sample(r.body, 'sprig_subscriptions'), varz.subscriptions)
  t.ok(sample(r.body, 'sprig_in_messages_total')! >= 10, 'publishes counted')
  t.equal(sample(r.body, 'sprig_max_payload_bytes'), varz.max_payload)
  t.equal(sample(r.body, 'sprig_ping_interval_seconds'), 120, 'durations in seconds')
  t.equal(sample(r.body, 'sprig_mqtt_retained_messages'), 0)
  t.equal(sample(r.body, 'sprig_ready'), 1)
  t.ok(sample(r.body, 'sprig_process_resident_memory_bytes')! > 1e6, 'resident memory in bytes')
  t.ok(sample(r.body, 'sprig_process_cpu_seconds_total')! > 0, 'CPU seconds')
  t.match(r.body, /# TYPE sprig_slow_consumers_total counter/)
  t.match(r.body, /# HELP sprig_connections Open client connections by protocol\./)
  // Bounded labels: nothing names a client, a subject or an address.
  t.notMatch(r.body, /dev-1|127\.0\.0\.1|a\.b/, 'no per-client or per-subject labels')
  for (const line of r.body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    t.match(line, /^sprig_[a-z0-9_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$/, `sample line ${line}`, { diagnostic: false })
  }
  t.equal((await text(http, '/metrics?x=%zz')).status, 200, 'an undecodable query pair is skipped, as everywhere')
  if (havePeer(t, 'promtool', 'prometheus')) promtool(t, r.body)
})

t.test('/metrics with an uplink: per-remote state and buffers, promtool-clean', async (t) => {
  if (!haveHub(t)) return
  const hub = await startHub()
  t.teardown(() => hub.close())
  const http = await freePort()
  const b = await startBroker({ http_port: http, leafnodes: { reconnect: 200, reconnect_max: 1000, remotes: [remote(hub.leafUrl)] } })
  t.teardown(() => b.stop())
  await leafUp(b)
  const r = await text(http, '/metrics')
  t.equal(sample(r.body, 'sprig_leaf_state{remote="0",state="connected"}'), 1)
  t.equal(sample(r.body, 'sprig_leaf_state{remote="0",state="disconnected"}'), 0)
  t.equal(sample(r.body, 'sprig_leafnodes'), 1)
  t.equal(sample(r.body, 'sprig_leaf_buffered_messages{remote="0"}'), 0)
  t.ok(sample(r.body, 'sprig_leaf_reconnects_total{remote="0"}') !== undefined)
  if (havePeer(t, 'promtool', 'prometheus')) promtool(t, r.body)
})

t.test('a real Prometheus scrapes sprig and its query sees traffic', async (t) => {
  if (!havePeer(t, 'prometheus', 'prometheus')) return
  const http = await freePort()
  const b = await startBroker({ http_port: http, log_level: 'info' })
  t.teardown(() => b.stop())
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-prom-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const conf = path.join(dir, 'prometheus.yml')
  writeFileSync(
    conf,
    ['global:', '  scrape_interval: 1s', '  evaluation_interval: 1s', 'scrape_configs:', '  - job_name: sprig', '    static_configs:', `      - targets: ['127.0.0.1:${http}']`, ''].join('\n'),
  )
  const web = await freePort()
  const proc = spawn('prometheus', [`--config.file=${conf}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${web}`, '--log.level=warn'], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  proc.stderr.on('data', (d) => (log += d))
  t.teardown(() => new Promise<void>((r) => (proc.exitCode !== null ? r() : (proc.once('exit', () => r()), proc.kill('SIGTERM')))))
  await waitForPort(web, 30_000)
  const query = async (q: string): Promise<number | null> => {
    const r = await fetch(`http://127.0.0.1:${web}/api/v1/query?query=${encodeURIComponent(q)}`)
    if (!r.ok) return null // 503 until Prometheus has opened its storage
    const j = (await r.json()) as { status: string; data: { result: { value: [number, string] }[] } }
    return j.status === 'success' && j.data.result.length > 0 ? Number(j.data.result[0]!.value[1]) : null
  }
  const until = async (what: string, ok: (v: number | null) => boolean, q: string): Promise<number | null> => {
    for (let i = 0; i < 150; i++) {
      const v = await query(q)
      if (ok(v)) return v
      await sleep(200)
    }
    t.fail(`${what}: Prometheus never saw it (log: ${log.slice(-500)})`)
    return null
  }
  const up = await until('the scrape target up', (v) => v === 1, 'up{job="sprig"}')
  t.equal(up, 1, 'Prometheus scrapes sprig (up == 1)')
  const before = await until('a first sample', (v) => v !== null, 'sprig_in_messages_total')
  t.equal(before, 0, 'no publishes yet')
  const nc = await natsClient(t, b.url)
  for (let i = 0; i < 25; i++) nc.publish('x.y', 'z')
  await nc.flush()
  const after = await until('the publishes', (v) => v !== null && v >= 25, 'sprig_in_messages_total')
  t.equal(after, 25, 'the query answers with the 25 publishes')
  t.equal(await until('connections', (v) => v === 1, 'sprig_connections{protocol="nats"}'), 1, 'the gauge by protocol too')
})

t.test('the bundle under node, bun and deno serves promtool-clean /metrics with process figures', async (t) => {
  const bundle = freshBundle()
  const clean = { NODE_OPTIONS: '', SPRIG_NET: '' }
  const runs = [
    ['node', runtimeBin('node'), [bundle]],
    ['bun', runtimeBin('bun'), [bundle]],
    // deno.json's task permissions, not -A: what an operator runs with.
    ['deno', runtimeBin('deno'), ['run', '--allow-net', '--allow-read', '--allow-env', '--allow-sys', bundle]],
  ] as const
  for (const [name, cmd, args] of runs) {
    t.test(name, async (t) => {
      if (!cmd || !existsSync(cmd)) return t.fail(`${name} not found: it is a devDependency, run npm install`)
      const port = await freePort()
      const http = await freePort()
      const p = await spawnServer(cmd, [...args, '-a', '127.0.0.1', '-p', String(port), '-m', String(http)], port, clean)
      t.teardown(() => p.stop())
      await waitForPort(http)
      const r = await text(http, '/metrics')
      t.equal(r.status, 200)
      t.ok(sample(r.body, 'sprig_process_resident_memory_bytes')! > 1e6, 'resident memory')
      t.ok(sample(r.body, 'sprig_process_cpu_seconds_total')! > 0, 'CPU seconds')
      t.ok(sample(r.body, 'sprig_cores')! >= 1, 'cores')
      t.equal(sample(r.body, 'sprig_ready'), 1)
      if (havePeer(t, 'promtool', 'prometheus')) promtool(t, r.body)
      t.notMatch(p.output(), /TypeError|\n\s+at /, 'no exception in the log')
    })
  }
})

t.test('/metrics on https_port, behind the TLS listener settings', async (t) => {
  const certs = makeCerts(t)
  if (!certs) return
  const https = await freePort()
  const b = await startBroker({ tls: serverTlsOptions(certs), https_port: https })
  t.teardown(() => b.stop())
  const body = await new Promise<{ status: number; type: string; body: string }>((resolve, reject) => {
    const req = httpsRequest(
      { host: '127.0.0.1', port: https, path: '/metrics', ca: readFileSync(certs.ca), servername: 'localhost', cert: readFileSync(certs.client.cert), key: readFileSync(certs.client.key) },
      (res) => {
        let s = ''
        res.on('data', (d) => (s += d))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body: s }))
      },
    )
    req.on('error', reject)
    req.end()
  })
  t.equal(body.status, 200)
  t.match(body.type, /^text\/plain; version=0\.0\.4/)
  t.equal(sample(body.body, 'sprig_http_requests_total{endpoint="/metrics"}'), 1, 'served over HTTPS')
})
