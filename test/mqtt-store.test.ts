// MQTT state in the on-disk store, with real processes and real SIGKILLs: retained messages, a
// persistent session's subscriptions and offline QoS 1/2 queue, a QoS 1 message in flight with
// its packet id, and QoS 2 exchanges cut by a kill (outbound: PUBREC received, then PUBREL after
// the restart; inbound: PUBLISH stored, its PUBREC lost, resent with DUP) all complete exactly
// once; session expiry holds across the restart; damaged records are skipped and counted.
// Node (bundle), Bun, Deno.

import t, { type Test } from 'tap'
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import mqtt from 'mqtt'
import type { IPublishPacket, Packet } from 'mqtt-packet'
import { privateBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, skipOrFail, spawnServer, waitForPort, type Proc } from './helpers/peers.ts'
import { RawMqtt, sleep } from './helpers/mqtt.ts'

const main = path.resolve(import.meta.dirname, '..', 'targets', 'main.ts')
type Runtime = 'node' | 'bun' | 'deno'

async function varz(http: number): Promise<Record<string, any>> {
  await waitForPort(http) // the monitor opens after the MQTT port spawnServer waits for
  const r = await fetch(`http://127.0.0.1:${http}/varz`)
  return (await r.json()) as Record<string, any>
}

/** `got` hears messages from the start: a resumed session's queue may come with the CONNACK. */
async function connectMqtt(port: number, opts: mqtt.IClientOptions, got?: string[]): Promise<{ c: mqtt.MqttClient; present: boolean }> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  if (got) c.on('message', (topic, p) => got.push(`${topic}=${p}`))
  const present = await new Promise<boolean>((resolve, reject) => {
    c.once('connect', (ack) => resolve(ack.sessionPresent))
    c.once('error', reject)
  })
  return { c, present }
}

async function suite(t: Test, runtime: Runtime): Promise<void> {
  const bin = runtimeBin(runtime)
  if (!bin) return skipOrFail(t, `${runtime} not found: run npm ci (it installs ${runtime === 'bun' ? 'bun' : '@deno/linux-x64-glibc'})`)
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-mqtt-store-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const [port, mq, http] = [await freePort(), await freePort(), await freePort()]
  const conf = path.join(dir, 'sprig.json')
  const store = path.join(dir, 'store')
  writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port, http_port: http, mqtt: { port: mq }, store: { dir: store, sync_interval: 'always' } }))
  const args = runtime === 'node' ? [privateBundle(path.join(dir, 'sprig.js')), '-c', conf] : runtime === 'bun' ? [main, '-c', conf] : ['run', '-A', main, '-c', conf]
  let sprig: Proc | null = await spawnServer(bin, args, mq)
  const logs: string[] = []
  t.teardown(async () => {
    if (sprig) await sprig.stop()
  })
  const kill = async (): Promise<void> => {
    const p = sprig!
    sprig = null
    const exited = new Promise<void>((r) => (p.proc.exitCode !== null || p.proc.signalCode !== null ? r() : p.proc.once('exit', () => r())))
    p.proc.kill('SIGKILL')
    await exited
    logs.push(p.output())
  }
  const clients: { end(force: boolean): unknown }[] = []
  t.teardown(() => clients.forEach((c) => c.end(true)))

  // --- before the kill
  const pub = (await connectMqtt(mq, { clientId: 'pub', clean: true })).c
  clients.push(pub)
  await pub.publishAsync('state/a', 'on', { qos: 1, retain: true })
  await pub.publishAsync('state/b', 'x', { qos: 1, retain: true })
  await pub.publishAsync('state/b', '', { qos: 1, retain: true }) // cleared
  // A persistent session, subscribed, then away: its QoS 1/2 messages queue while it is parked.
  const s1 = await connectMqtt(mq, { clientId: 'sub1', clean: false })
  t.equal(s1.present, false, 'a new session')
  await s1.c.subscribeAsync({ 'tele/#': { qos: 1 }, 'q2/#': { qos: 2 } })
  await s1.c.endAsync()
  for (let i = 1; i <= 5; i++) await pub.publishAsync(`tele/${i}`, `m${i}`, { qos: 1 })
  // A QoS 1 message in flight to a raw subscriber that never acknowledges it.
  const raw = await RawMqtt.connect(mq, 4, { clientId: 'raw1', clean: false })
  clients.push({ end: () => raw.close() })
  raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'inf/#', qos: 1 }] } as Packet)
  await raw.next('suback')
  await pub.publishAsync('inf/x', 'unacked', { qos: 1 })
  const inflight = (await raw.next('publish')) as IPublishPacket
  t.equal(inflight.payload.toString(), 'unacked')
  // QoS 2 out, cut after PUBREC: the publisher sends PUBREL only after the restart.
  const p2 = await RawMqtt.connect(mq, 4, { clientId: 'pub2', clean: false })
  p2.send({ cmd: 'publish', topic: 'q2/out', payload: Buffer.from('once-out'), qos: 2, messageId: 10, dup: false, retain: false } as Packet)
  t.ok(await p2.next('pubrec'), 'PUBREC before the kill')
  // QoS 2 in, its PUBREC lost: the publisher resends the PUBLISH with DUP after the restart.
  const p3 = await RawMqtt.connect(mq, 4, { clientId: 'pub3', clean: false })
  p3.send({ cmd: 'publish', topic: 'q2/in', payload: Buffer.from('once-in'), qos: 2, messageId: 20, dup: false, retain: false } as Packet)
  t.ok(await p3.next('pubrec'), 'stored (PUBREC, which the client never sees)')
  // An MQTT 5 session with a 1 s expiry: gone after the restart once its time is up.
  const short = await connectMqtt(mq, { clientId: 'short', clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 1 } })
  await short.c.subscribeAsync('short/#', { qos: 1 })
  await short.c.endAsync()
  const shortGone = Date.now() + 1000
  // A long one, also MQTT 5: present after the restart.
  const long = await connectMqtt(mq, { clientId: 'long', clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 3600 } })
  await long.c.endAsync()
  const before = await varz(http)
  t.match(before.sprig.store.mqtt, { retained_msgs: 1, sessions: 6 }, '/varz store.mqtt counts before the kill')
  raw.close()
  p2.close()
  p3.close()

  await kill()
  sprig = await spawnServer(bin, args, mq)

  // --- after the restart
  const after = await varz(http)
  // 'short' (1 s) may have expired by the restart already.
  t.match(after.sprig.store.mqtt, { retained_msgs: 1, qos2_pending: 2 }, '/varz store.mqtt counts after the restart')
  t.ok(after.sprig.store.mqtt.sessions >= 5, `${after.sprig.store.mqtt.sessions} sessions restored`)
  t.ok(after.sprig.store.mqtt.session_msgs >= 7, `${after.sprig.store.mqtt.session_msgs} session messages stored`)
  t.match(after.sprig.mqtt, { sessions_parked: after.sprig.store.mqtt.sessions, retained_msgs: 1 }, 'restored into the MQTT state')

  const look = (await connectMqtt(mq, { clientId: 'look', clean: true })).c
  clients.push(look)
  const retained: string[] = []
  look.on('message', (topic, p, pk) => retained.push(`${topic}=${p}${pk.retain ? ' (retained)' : ''}`))
  await look.subscribeAsync('state/#', { qos: 1 })
  await sleep(300)
  t.same(retained, ['state/a=on (retained)'], 'retained messages survive the kill; a cleared one stays cleared')

  const raw2 = await RawMqtt.open(mq, 4)
  clients.push({ end: () => raw2.close() })
  raw2.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 0, clientId: 'raw1' } as Packet)
  const ack = (await raw2.next('connack')) as { sessionPresent: boolean }
  t.equal(ack.sessionPresent, true, 'session present')
  const again = (await raw2.next('publish')) as IPublishPacket
  t.match(again, { messageId: inflight.messageId, dup: true, topic: 'inf/x' }, 'the message in flight comes again with its packet id and DUP')
  raw2.send({ cmd: 'puback', messageId: inflight.messageId } as Packet)

  const p2b = await RawMqtt.open(mq, 4)
  clients.push({ end: () => p2b.close() })
  p2b.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 0, clientId: 'pub2' } as Packet)
  t.match(await p2b.next('connack'), { sessionPresent: true })
  p2b.send({ cmd: 'pubrel', messageId: 10 } as Packet)
  t.match(await p2b.next('pubcomp'), { messageId: 10 }, 'QoS 2 out completed after the restart')

  const p3b = await RawMqtt.open(mq, 4)
  clients.push({ end: () => p3b.close() })
  p3b.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 0, clientId: 'pub3' } as Packet)
  t.match(await p3b.next('connack'), { sessionPresent: true })
  p3b.send({ cmd: 'publish', topic: 'q2/in', payload: Buffer.from('once-in'), qos: 2, messageId: 20, dup: true, retain: false } as Packet)
  t.match(await p3b.next('pubrec'), { messageId: 20 })
  p3b.send({ cmd: 'pubrel', messageId: 20 } as Packet)
  t.match(await p3b.next('pubcomp'), { messageId: 20 }, 'QoS 2 in completed after the restart')

  const got: string[] = []
  const s1b = await connectMqtt(mq, { clientId: 'sub1', clean: false }, got)
  clients.push(s1b.c)
  t.equal(s1b.present, true, 'the persistent session is present after the kill')
  await sleep(700)
  t.same(got.filter((g) => g.startsWith('tele/')), ['tele/1=m1', 'tele/2=m2', 'tele/3=m3', 'tele/4=m4', 'tele/5=m5'], 'the offline QoS 1 queue, in order')
  t.same(got.filter((g) => g.startsWith('q2/')).sort(), ['q2/in=once-in', 'q2/out=once-out'], 'each QoS 2 message delivered exactly once')
  // The subscription itself came back too.
  const pub2 = (await connectMqtt(mq, { clientId: 'pubb', clean: true })).c
  clients.push(pub2)
  await pub2.publishAsync('tele/live', 'after', { qos: 1 })
  await sleep(200)
  t.ok(got.includes('tele/live=after'), 'its subscriptions were restored')

  await sleep(Math.max(0, shortGone - Date.now() + 100))
  const sh = await connectMqtt(mq, { clientId: 'short', clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 1 } })
  clients.push(sh.c)
  t.equal(sh.present, false, 'a session whose expiry passed (across the restart) is gone')
  const lg = await connectMqtt(mq, { clientId: 'long', clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 3600 } })
  clients.push(lg.c)
  t.equal(lg.present, true, 'a session within its expiry is present')

  // --- damage: a flipped byte in a record, a torn tail
  await pub2.publishAsync('z/last', 'MARKER-last', { qos: 1, retain: true })
  await kill()
  const dirKv = path.join(store, 'mqtt')
  const segsKv = readdirSync(dirKv).filter((n) => n.endsWith('.kv')).sort()
  let flipped = false
  for (const n of segsKv) {
    const f = path.join(dirKv, n)
    const b = readFileSync(f)
    const at = b.indexOf('MARKER-last')
    if (at < 0) continue
    b[at + 3] ^= 0xff
    writeFileSync(f, b)
    flipped = true
  }
  t.ok(flipped, 'the record was found on disk')
  appendFileSync(path.join(dirKv, segsKv[segsKv.length - 1]!), Buffer.from([50, 0, 0, 0, 9]))
  sprig = await spawnServer(bin, args, mq)
  const v = await varz(http)
  t.ok(v.sprig.store.recovery.corrupt_records >= 1, `damaged record counted (${v.sprig.store.recovery.corrupt_records})`)
  t.ok(v.sprig.store.recovery.truncated_bytes >= 5, 'torn tail cut off')
  t.equal(v.sprig.store.mqtt.retained_msgs, 1, 'the retained message before the damage is intact; the damaged one skipped')
  const lg2 = await connectMqtt(mq, { clientId: 'long', clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 3600 } })
  clients.push(lg2.c)
  t.equal(lg2.present, true, 'after the damage too')
  // A clean stop (SIGTERM, the connection still open) keeps everything as well.
  await sprig.stop()
  let out = sprig.output()
  sprig = await spawnServer(bin, args, mq)
  const v2 = await varz(http)
  t.equal(v2.sprig.store.mqtt.retained_msgs, 1, 'retained after a clean stop')
  const lg3 = await connectMqtt(mq, { clientId: 'long', clean: false, protocolVersion: 5, properties: { sessionExpiryInterval: 3600 } })
  clients.push(lg3.c)
  t.equal(lg3.present, true, 'session present after a clean stop')
  await sprig.stop()
  out += sprig.output()
  sprig = null
  t.match(out, /record fails its checksum; skipped/, 'logged')
  t.notMatch(logs.join('\n') + out, /internal error|uncaught|TypeError|RangeError/i, 'no internal errors')
}

const only = process.env.MQTT_STORE_ONLY
for (const rt of ['node', 'bun', 'deno'] as Runtime[]) {
  if (only && only !== rt) continue
  t.test(`${rt}: retained messages and persistent sessions survive SIGKILL; QoS 2 completes once`, (t) => suite(t, rt))
}

t.test('in process: over store.max_bytes a retained message is not kept, MQTT 5 PUBACK says 0x97; clearing frees room', async (t) => {
  const { startBroker } = await import('./helpers/broker.ts')
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-mqtt-store-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const b = await startBroker({ mqtt: true, store: { dir, sync_interval: 0, max_bytes: 1024 * 1024 } })
  t.teardown(() => b.stop())
  const c = await RawMqtt.connect(b.mqttPort, 5, { clientId: 'p5' })
  t.teardown(() => c.close())
  const codes: number[] = []
  for (let i = 0; i < 14; i++) {
    c.send({ cmd: 'publish', topic: `big/${i}`, payload: Buffer.alloc(100 * 1024, i), qos: 1, messageId: i + 1, dup: false, retain: true } as Packet)
    const ack = (await c.next('puback')) as { reasonCode?: number }
    codes.push(ack.reasonCode ?? 0)
  }
  t.ok(codes.slice(0, 8).every((x) => x === 0), `the first ones are stored: ${codes.join(',')}`)
  t.equal(codes[codes.length - 1], 0x97, 'then 0x97 Quota exceeded')
  const st = b.srv.status.get('store')!() as { mqtt: { retained_msgs: number; refused: number; bytes: number }; full_episodes: number }
  const mq = b.srv.status.get('mqtt')!() as { retained_msgs: number; retained_refused: number }
  t.equal(mq.retained_msgs, st.mqtt.retained_msgs, 'what is retained in memory is what is on disk')
  t.ok(mq.retained_refused > 0 && st.mqtt.refused === mq.retained_refused, `refused, counted (${st.mqtt.refused})`)
  t.ok(st.mqtt.bytes <= 1024 * 1024, `within max_bytes (${st.mqtt.bytes})`)
  t.equal(st.full_episodes, 1, 'one full episode, logged once')
  // Clearing retained messages always works (tombstones), and frees room again.
  for (let i = 0; i < 9; i++) {
    c.send({ cmd: 'publish', topic: `big/${i}`, payload: Buffer.alloc(0), qos: 1, messageId: 100 + i, dup: false, retain: true } as Packet)
    t.equal(((await c.next('puback')) as { reasonCode?: number }).reasonCode ?? 0, 0)
  }
  await sleep(100) // the compaction's fdatasync, then the old segments go
  c.send({ cmd: 'publish', topic: 'big/again', payload: Buffer.alloc(100 * 1024, 7), qos: 1, messageId: 200, dup: false, retain: true } as Packet)
  t.equal(((await c.next('puback')) as { reasonCode?: number }).reasonCode ?? 0, 0, 'room again once cleared ones are compacted away')
})

// Kills during traffic: every message PUBACKed to the publisher reaches a persistent QoS 1
// subscriber (which never subscribes again: its subscription comes back from the store), in order of first arrival.
async function killLoop(t: Test, runtime: Runtime, kills: number): Promise<void> {
  const bin = runtimeBin(runtime)
  if (!bin) return skipOrFail(t, `${runtime} not found: run npm ci`)
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-mqtt-store-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const mq = await freePort()
  const conf = path.join(dir, 'sprig.json')
  writeFileSync(conf, JSON.stringify({ host: '127.0.0.1', port: await freePort(), mqtt: { port: mq }, store: { dir: path.join(dir, 'store'), sync_interval: 'always' } }))
  const args = runtime === 'node' ? [privateBundle(path.join(dir, 'sprig.js')), '-c', conf] : runtime === 'bun' ? [main, '-c', conf] : ['run', '-A', main, '-c', conf]
  let sprig: Proc | null = await spawnServer(bin, args, mq)
  t.teardown(async () => {
    if (sprig) await sprig.stop()
  })
  const got: number[] = []
  const sub = mqtt.connect(`mqtt://127.0.0.1:${mq}`, { clientId: 'ksub', clean: false, reconnectPeriod: 50, resubscribe: false })
  sub.on('error', () => {})
  sub.on('message', (_t, p) => got.push(Number(String(p))))
  t.teardown(() => sub.end(true))
  await new Promise((r) => sub.once('connect', r))
  await sub.subscribeAsync('n/#', { qos: 1 })
  const pub = mqtt.connect(`mqtt://127.0.0.1:${mq}`, { clientId: 'kpub', clean: true, reconnectPeriod: 50 })
  pub.on('error', () => {})
  t.teardown(() => pub.end(true))
  const acked: number[] = []
  let running = true
  const publishing = (async () => {
    for (let n = 0; running; ) {
      if (!pub.connected) {
        await sleep(20)
        continue
      }
      const ok = await Promise.race([pub.publishAsync('n/x', String(n), { qos: 1 }).then(() => true, () => false), sleep(2000).then(() => false)])
      if (ok) acked.push(n++)
    }
  })()
  for (let k = 0; k < kills; k++) {
    await sleep(200 + Math.random() * 300)
    const p = sprig!
    sprig = null
    const exited = new Promise<void>((r) => p.proc.once('exit', () => r()))
    p.proc.kill('SIGKILL')
    await exited
    sprig = await spawnServer(bin, args, mq)
  }
  await sleep(300)
  running = false
  await publishing
  const have = new Set(got)
  for (let i = 0; i < 100 && !acked.every((n) => have.has(n)); i++) {
    await sleep(100)
    for (const n of got) have.add(n)
  }
  const lost = acked.filter((n) => !have.has(n))
  let disorder = 0
  let max = -1
  const seen = new Set<number>()
  for (const n of got) {
    if (seen.has(n)) continue
    seen.add(n)
    if (n < max) disorder++
    max = Math.max(max, n)
  }
  t.ok(acked.length > 50, `${acked.length} PUBACKed across ${kills} kills`)
  t.same(lost.slice(0, 10), [], `every PUBACKed message reached the persistent subscriber (${lost.length} missing)`)
  t.equal(disorder, 0, 'in order')
  t.comment(`${runtime}: ${acked.length} acked, ${got.length - seen.size} duplicates (redelivered after a kill)`)
}

for (const rt of ['node', 'bun'] as Runtime[]) {
  if (only && only !== rt) continue
  t.test(`${rt}: kills -9 during traffic: a persistent QoS 1 subscriber gets every PUBACKed message`, (t) => killLoop(t, rt, 5))
}

t.test('in process: stored sessions and queues over a lowered max_sessions / max_offline_msgs are dropped at start-up, counted, logged once', async (t) => {
  const { startBroker } = await import('./helpers/broker.ts')
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-mqtt-store-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const store = { dir, sync_interval: 0, max_bytes: 16 * 1024 * 1024 }
  let b = await startBroker({ mqtt: true, store })
  for (const id of ['s0', 's1', 's2']) {
    const c = await RawMqtt.connect(b.mqttPort, 4, { clientId: id, clean: false })
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'q/#', qos: 1 }] } as Packet)
    await c.next('suback')
    c.send({ cmd: 'disconnect' } as Packet)
    await c.waitClosed()
    await sleep(20) // parked one after the other: s0 ends first
  }
  const pub = await RawMqtt.connect(b.mqttPort, 4, { clientId: 'pub' })
  for (let i = 0; i < 10; i++) {
    pub.send({ cmd: 'publish', topic: `q/${i}`, payload: Buffer.from(String(i)), qos: 1, messageId: i + 1, dup: false, retain: false } as Packet)
    await pub.next('puback')
  }
  pub.close()
  await b.stop()
  b = await startBroker({ mqtt: { max_sessions: 2, max_offline_msgs: 4 }, store })
  t.teardown(() => b.stop())
  const mq = b.srv.status.get('mqtt')!() as Record<string, number>
  const st = b.srv.status.get('store')!() as { mqtt: { sessions: number; session_msgs: number } }
  t.equal(st.mqtt.sessions, 2, 'two sessions kept')
  t.equal(st.mqtt.session_msgs, 8, 'four messages each')
  t.equal(mq.sessions_evicted, 1, 'one session evicted, counted')
  t.equal(mq.offline_dropped, 12, 'the newest six of each kept queue dropped, counted')
  t.equal(b.logs.filter((l) => /not restored.*max_sessions/.test(l)).length, 1, 'logged once')
  t.equal(b.logs.filter((l) => /offline messages dropped/.test(l)).length, 1, 'logged once')
  const s0 = await RawMqtt.connect(b.mqttPort, 4, { clientId: 's0', clean: false })
  t.teardown(() => s0.close())
  const s2 = await RawMqtt.connect(b.mqttPort, 4, { clientId: 's2', clean: false })
  t.teardown(() => s2.close())
  const got: string[] = []
  for (let i = 0; i < 4; i++) {
    const p = (await s2.next('publish')) as IPublishPacket | undefined
    got.push(p ? String(p.payload) : 'none')
    if (p) s2.send({ cmd: 'puback', messageId: p.messageId! } as Packet)
  }
  t.same(got, ['0', '1', '2', '3'], 's2 (ends last) gets its oldest four')
  t.equal(await s2.next('publish', 300), undefined, 'and no more')
  t.equal(await s0.next('publish', 300), undefined, 's0 (ends first) was evicted: nothing for it')
})

t.test('in process: a SUBSCRIBE with many filters writes each filter once, never the whole list per filter', async (t) => {
  const { startBroker } = await import('./helpers/broker.ts')
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-mqtt-store-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const store = { dir, sync_interval: 0, max_bytes: 16 * 1024 * 1024 }
  let b = await startBroker({ mqtt: true, store })
  const written = (): number => (b.srv.status.get('store')!() as { mqtt: { bytes_written: number } }).mqtt.bytes_written
  const c = await RawMqtt.connect(b.mqttPort, 4, { clientId: 'many', clean: false })
  const before = written()
  const subscriptions = Array.from({ length: 300 }, (_, i) => ({ topic: `site/${i}/temperature/#`, qos: 1 }))
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions } as Packet)
  await c.next('suback')
  const once = written() - before
  t.ok(once > 300 * 20 && once < 2 * 300 * 40, `300 filters, one small record each: ${once} bytes (the list rewritten per filter would be ~${300 * 150 * 20})`)
  c.send({ cmd: 'unsubscribe', messageId: 2, unsubscriptions: subscriptions.slice(0, 100).map((s) => s.topic) } as Packet)
  await c.next('unsuback')
  t.ok(written() - before - once < once, 'an UNSUBSCRIBE of 100 filters: 100 tombstones')
  c.close()
  await sleep(50)
  await b.stop()
  b = await startBroker({ mqtt: true, store })
  t.teardown(() => b.stop())
  const c2 = await RawMqtt.connect(b.mqttPort, 4, { clientId: 'many', clean: false })
  t.teardown(() => c2.close())
  const pub = await RawMqtt.connect(b.mqttPort, 4, { clientId: 'pub' })
  t.teardown(() => pub.close())
  for (const i of [50, 250]) pub.send({ cmd: 'publish', topic: `site/${i}/temperature/x`, payload: Buffer.from(String(i)), qos: 0, dup: false, retain: false } as Packet)
  const p = (await c2.next('publish')) as IPublishPacket | undefined
  t.equal(String(p?.payload), '250', 'the filters kept after the UNSUBSCRIBE came back; the removed one did not')
  t.equal(await c2.next('publish', 300), undefined)
})

t.test('in process: a SUBSCRIBE or UNSUBSCRIBE writes only the filters it changes; they come back after a restart', async (t) => {
  const { startBroker } = await import('./helpers/broker.ts')
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-mqtt-store-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const written = (b: { srv: { status: Map<string, () => unknown> } }): number => (b.srv.status.get('store')!() as { mqtt: { bytes_written: number } }).mqtt.bytes_written
  let b = await startBroker({ mqtt: true, store: { dir, sync_interval: 0, max_bytes: 64 * 1024 * 1024 } })
  let c = await RawMqtt.connect(b.mqttPort, 4, { clientId: 'many', clean: false })
  const subs = Array.from({ length: 200 }, (_, i) => ({ topic: `site/${i}/+/temperature`, qos: 1 }))
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: subs } as Packet)
  await c.next('suback')
  const w0 = written(b)
  c.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'extra/+', qos: 1 }] } as Packet)
  await c.next('suback')
  const w1 = written(b)
  t.ok(w1 - w0 > 0 && w1 - w0 < 100, `one more filter writes one small record (${w1 - w0} bytes), not the session's 200 filters`)
  c.send({ cmd: 'unsubscribe', messageId: 3, unsubscriptions: ['site/0/+/temperature'] } as Packet)
  await c.next('unsuback')
  const w2 = written(b)
  t.ok(w2 - w1 > 0 && w2 - w1 < 100, `an UNSUBSCRIBE writes one tombstone (${w2 - w1} bytes)`)
  c.close()
  await sleep(100)
  await b.stop()
  b = await startBroker({ mqtt: true, store: { dir, sync_interval: 0, max_bytes: 64 * 1024 * 1024 } })
  t.teardown(() => b.stop())
  c = await RawMqtt.open(b.mqttPort, 4)
  t.teardown(() => c.close())
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 0, clientId: 'many' } as Packet)
  t.match(await c.next('connack'), { sessionPresent: true })
  const pub = await RawMqtt.connect(b.mqttPort, 4)
  t.teardown(() => pub.close())
  for (const topic of ['site/0/a/temperature', 'site/1/a/temperature', 'extra/x']) pub.send({ cmd: 'publish', topic, payload: Buffer.from(topic), qos: 0, dup: false, retain: false } as Packet)
  const got: string[] = []
  for (let i = 0; i < 2; i++) got.push(((await c.next('publish')) as IPublishPacket).topic)
  await sleep(200)
  got.push(...c.packets.filter((p) => p.cmd === 'publish').map((p) => (p as IPublishPacket).topic))
  t.same(got.sort(), ['extra/x', 'site/1/a/temperature'], 'the added filter is back, the removed one stays removed')
  t.equal((b.srv.status.get('store')!() as { mqtt: { sessions: number } }).mqtt.sessions, 1)
})

t.test('in process: a session record of an older store (its filters in the list) is read and moved to per-filter records', async (t) => {
  const { startBroker } = await import('./helpers/broker.ts')
  const { createLogger } = await import('../src/log.ts')
  const { KeyedFile } = await import('../src/store/keyed.ts')
  const { Store } = await import('../src/store/store.ts')
  const { nodeFiles } = await import('../targets/files.ts')
  const { node } = await import('../targets/node.ts')
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-mqtt-store-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const opts = { dir, sync_interval: 0, max_bytes: 64 * 1024 * 1024 }
  const old = Store.open(opts, nodeFiles, node().host, createLogger({ level: 'error', time: false, sink: () => {} }))
  const kv = new KeyedFile(old, `${dir}/mqtt`)
  const parkedUntil = Date.now() + 3600_000
  kv.put('s\u0000legacy', new TextEncoder().encode(JSON.stringify({ u: '', e: 3600_000, x: parkedUntil, s: [['a/+', 1, false, false, null], ['b/#', 1, false, false, null]] })))
  old.close()
  let b = await startBroker({ mqtt: true, store: opts })
  const c = await RawMqtt.open(b.mqttPort, 4)
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 0, clientId: 'legacy' } as Packet)
  t.match(await c.next('connack'), { sessionPresent: true }, 'the older record is read')
  c.send({ cmd: 'unsubscribe', messageId: 1, unsubscriptions: ['a/+'] } as Packet)
  await c.next('unsuback')
  c.close()
  await sleep(100)
  await b.stop()
  b = await startBroker({ mqtt: true, store: opts })
  t.teardown(() => b.stop())
  const c2 = await RawMqtt.open(b.mqttPort, 4)
  t.teardown(() => c2.close())
  c2.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: false, keepalive: 0, clientId: 'legacy' } as Packet)
  t.match(await c2.next('connack'), { sessionPresent: true })
  const pub = await RawMqtt.connect(b.mqttPort, 4)
  t.teardown(() => pub.close())
  for (const topic of ['a/x', 'b/x']) pub.send({ cmd: 'publish', topic, payload: Buffer.from(topic), qos: 0, dup: false, retain: false } as Packet)
  t.equal(((await c2.next('publish')) as IPublishPacket).topic, 'b/x')
  await sleep(200)
  t.same(c2.packets.filter((p) => p.cmd === 'publish'), [], 'the filter unsubscribed after the move does not come back from the old list')
})
