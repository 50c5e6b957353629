// MQTT 5 delayed wills (Will Delay Interval) in the on-disk store, with a real sprig killed -9
// and real MQTT.js clients: a will held back when its connection dropped survives the kill and
// goes at its due time after the restart (not before), at once if that passed while sprig was
// down, at its session's end when that comes first (5.0 §3.1.3.2.2), and never once its client
// is back [MQTT-3.1.3-9]. Node (bundle) and Bun.

import t, { type Test } from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import mqtt from 'mqtt'
import { privateBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, skipOrFail, spawnServer, waitForPort, type Proc } from './helpers/peers.ts'
import { sleep } from './helpers/mqtt.ts'

const main = path.resolve(import.meta.dirname, '..', 'targets', 'main.ts')
type Runtime = 'node' | 'bun'

async function connect(port: number, opts: mqtt.IClientOptions): Promise<mqtt.MqttClient> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 5, ...opts })
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve())
    c.once('error', reject)
  })
  return c
}

/** A persistent MQTT 5 session with a delayed (retained) will, whose connection then just drops. */
async function dropWithWill(port: number, id: string, delayS: number, expiryS: number): Promise<number> {
  const c = await connect(port, {
    clientId: id,
    clean: false,
    properties: { sessionExpiryInterval: expiryS },
    will: { topic: `will/${id}`, payload: Buffer.from(`gone-${id}`), qos: 1, retain: true, properties: { willDelayInterval: delayS } },
  })
  const at = Date.now()
  c.stream.destroy() // no DISCONNECT: the will is due
  c.end(true)
  return at
}

async function varz(http: number): Promise<Record<string, any>> {
  await waitForPort(http)
  const r = await fetch(`http://127.0.0.1:${http}/varz`)
  return (await r.json()) as Record<string, any>
}

async function suite(t: Test, runtime: Runtime): Promise<void> {
  const bin = runtimeBin(runtime)
  if (!bin) return skipOrFail(t, `${runtime} not found: run npm ci`)
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-mqtt-will-store-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const [port, mq, http] = [await freePort(), await freePort(), await freePort()]
  const conf = path.join(dir, 'sprig.json')
  writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port, http_port: http, mqtt: { port: mq }, store: { dir: path.join(dir, 'store'), sync_interval: 'always' } }))
  const args = runtime === 'node' ? [privateBundle(path.join(dir, 'sprig.js')), '-c', conf] : [main, '-c', conf]
  let sprig: Proc | null = await spawnServer(bin, args, mq)
  t.teardown(async () => {
    if (sprig) await sprig.stop()
  })
  const clients: mqtt.MqttClient[] = []
  t.teardown(() => clients.forEach((c) => c.end(true)))

  // overdue: due 1 s after the drop, sprig is down longer. timed: due 7 s after the drop.
  // back: due 9 s after, but its client returns first. session: will delay 1 h, the session
  // ends 2 s after the drop.
  const drops: Record<string, number> = {}
  drops.overdue = await dropWithWill(mq, 'overdue', 1, 3600)
  drops.timed = await dropWithWill(mq, 'timed', 7, 3600)
  drops.back = await dropWithWill(mq, 'back', 9, 3600)
  drops.session = await dropWithWill(mq, 'session', 3600, 2)
  await sleep(300) // sprig sees the drops and stores the held wills
  t.equal((await varz(http)).sprig.store.mqtt.delayed_wills, 4, 'four wills held back in the store')
  const p = sprig
  sprig = null
  const exited = new Promise<void>((r) => p.proc.once('exit', () => r()))
  p.proc.kill('SIGKILL')
  await exited
  t.notMatch(p.output(), /will\/.* not published|internal error/i)
  await sleep(Math.max(0, drops.overdue! + 1500 - Date.now()))
  sprig = await spawnServer(bin, args, mq)

  // The client of 'back' returns before its will is due: it never goes.
  const back = await connect(mq, { clientId: 'back', clean: false, properties: { sessionExpiryInterval: 3600 } })
  clients.push(back)
  const got = new Map<string, number>()
  const watch = await connect(mq, { clientId: 'watch', clean: true })
  clients.push(watch)
  watch.on('message', (topic) => {
    if (!got.has(topic)) got.set(topic, Date.now())
  })
  await watch.subscribeAsync('will/#', { qos: 1 })
  const until = async (ms: number, pred: () => boolean): Promise<void> => {
    const end = Date.now() + ms
    while (!pred() && Date.now() < end) await sleep(50)
  }
  await until(5000, () => got.has('will/overdue') && got.has('will/session'))
  t.ok(got.has('will/overdue'), 'a will due while sprig was down goes after the restart')
  t.ok(got.has('will/session'), 'a will whose session ended (first) goes after the restart')
  t.notOk(got.has('will/timed'), 'not before its time')
  await until(drops.timed! + 7000 + 5000 - Date.now(), () => got.has('will/timed'))
  t.ok(got.has('will/timed'), 'a will due after the restart goes')
  t.ok(got.get('will/timed')! >= drops.timed! + 7000 - 300, `at its due time (${got.get('will/timed')! - drops.timed!} ms after the drop, 7000 due)`)
  await sleep(Math.max(0, drops.back! + 9000 + 1500 - Date.now()))
  t.notOk(got.has('will/back'), 'no will for a client that came back [MQTT-3.1.3-9]')
  t.equal((await varz(http)).sprig.store.mqtt.delayed_wills, 0, 'none held any more')
  // And after one more restart nothing is sent again.
  await sprig.stop()
  sprig = await spawnServer(bin, args, mq)
  const again: string[] = []
  const w2 = await connect(mq, { clientId: 'watch2', clean: true })
  clients.push(w2)
  w2.on('message', (topic, _p, pk) => {
    if (!pk.retain) again.push(topic)
  })
  await w2.subscribeAsync('will/#', { qos: 1 })
  await sleep(1500)
  t.same(again, [], 'sent wills are not sent again after a restart')
  await sprig.stop()
  t.notMatch(sprig.output(), /internal error|uncaught|TypeError|RangeError/i, 'no internal errors')
  sprig = null
}

for (const rt of ['bun', 'node'] as Runtime[]) {
  if (process.env.MQTT_STORE_ONLY && process.env.MQTT_STORE_ONLY !== rt) continue
  t.test(`${rt}: delayed wills survive SIGKILL and go at their time`, (t) => suite(t, rt))
}
