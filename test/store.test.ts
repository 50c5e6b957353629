// The on-disk store, in process: the uplink spool survives a restart during a hub outage and
// drains in order, once; its files, damage and bounds. (Real kills: store-crash.test.ts.)

import t from 'tap'
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync, readFileSync, truncateSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { REMOTE_DEFAULTS, type RemoteOptions } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { haveHub, hubInterest, leafUp, startHub, until, type Hub } from './helpers/hub.ts'
import { mqttClient, natsClient, sleep } from './helpers/mqtt.ts'
import { connect } from '@nats-io/transport-node'

const MB = 1024 * 1024

function tempDir(t: { teardown(f: () => unknown): void }): string {
  const d = mkdtempSync(path.join(tmpdir(), 'sprig-store-'))
  t.teardown(() => rmSync(d, { recursive: true, force: true }))
  return d
}

async function edge(hub: Hub, dir: string, remote: Partial<RemoteOptions> = {}, store: Record<string, unknown> = {}): Promise<TestBroker> {
  return startBroker({
    store: { dir, sync_interval: 0, max_bytes: 64 * MB, ...store },
    leafnodes: { reconnect: 100, reconnect_max: 300, remotes: [{ ...REMOTE_DEFAULTS, urls: [hub.leafUrl], ...remote }] },
  })
}

const segFiles = (dir: string): string[] => readdirSync(path.join(dir, 'uplink/remote-1')).filter((n) => n.endsWith('.seg')).sort()

if (haveHub(t)) {
  t.test('spooled during an outage, kept across a restart, drained in order once', async (t) => {
    const dir = tempDir(t)
    const hub = await startHub()
    t.teardown(() => hub.close())
    let b = await edge(hub, dir)
    await leafUp(b)
    const cloud = await connect({ servers: hub.url, reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 100 })
    t.teardown(() => cloud.close())
    const got: string[] = []
    cloud.subscribe('telemetry.>', { callback: (_e, m) => void got.push(m.string()) })
    await cloud.flush()
    await hubInterest(b, 'telemetry.>')
    const en = await natsClient(t, b.url)
    for (let i = 0; i < 100; i++) en.publish('telemetry.a', String(i))
    await en.flush()
    await until(() => got.length === 100, 5000, 'live messages at the hub')
    const r = b.uplink!.remotes[0]!
    await until(() => r.buffer.length === 0, 5000, 'live messages confirmed')
    await hub.stop()
    await until(() => r.state !== 'connected', 5000, 'the link to drop')
    for (let i = 100; i < 5100; i++) en.publish('telemetry.a', String(i))
    await en.flush()
    t.equal(r.buffer.unsent, 5000, '5000 spooled')
    await en.close()
    await b.stop()
    // A new process on the same directory, the hub still down: keeps the spool and the interest.
    b = await edge(hub, dir)
    t.teardown(() => b.stop())
    const r2 = b.uplink!.remotes[0]!
    t.equal(r2.buffer.unsent, 5000, 'the spool survived the restart')
    const en2 = await natsClient(t, b.url)
    for (let i = 5100; i < 5200; i++) en2.publish('telemetry.a', String(i))
    en2.publish('other.x', 'not wanted by the hub')
    await en2.flush()
    t.equal(r2.buffer.unsent, 5100, 'still buffering the hub interest saved before the restart')
    await hub.restart()
    await until(() => got.length >= 5200, 15_000, 'the backlog at the hub')
    await sleep(300)
    t.same(got, Array.from({ length: 5200 }, (_, i) => String(i)), 'all, in order, once')
    await until(() => r2.buffer.length === 0, 5000, 'all confirmed')
    const st = b.srv.status.get('store')!() as { bytes: number; sync: string; recovery: { messages: number } }
    t.equal(st.sync, 'always')
    t.equal(st.recovery.messages, 5000)
  })

  t.test('torn tail and a flipped byte: start-up logs and counts, keeps the rest', async (t) => {
    const dir = tempDir(t)
    const hub = await startHub()
    t.teardown(() => hub.close())
    let b = await edge(hub, dir, { buffer_subjects: ['telemetry.>'] })
    await hub.stop()
    const en = await natsClient(t, b.url)
    for (let i = 0; i < 1000; i++) en.publish('telemetry.a', `m${String(i).padStart(4, '0')}`)
    await en.flush()
    await en.close()
    await b.stop()
    const seg = path.join(dir, 'uplink/remote-1', segFiles(dir)[0]!)
    const size = statSync(seg).size
    const per = (size - 8) / 1000
    truncateSync(seg, size - Math.floor(per / 2)) // power cut in the middle of the last record
    const bytes = readFileSync(seg)
    bytes[8 + Math.floor(per * 500) + 20] ^= 0xff // a flipped bit inside record 500
    writeFileSync(seg, bytes)
    b = await edge(hub, dir, { buffer_subjects: ['telemetry.>'] })
    t.teardown(() => b.stop())
    const log = b.logs.join('\n')
    t.match(log, /torn or damaged tail .*truncated/, 'the torn tail is logged')
    t.match(log, new RegExp(`${seg.replace(/[.]/g, '\\.')} at offset \\d+: record fails its checksum`), 'the flipped record is logged with file and offset')
    const st = b.srv.status.get('store')!() as { recovery: { corrupt_records: number; truncated_bytes: number } }
    t.equal(st.recovery.corrupt_records, 1)
    t.ok(st.recovery.truncated_bytes > 0)
    const cloud = await connect({ servers: hub.url, reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 100 }).catch(() => null)
    t.equal(cloud, null, 'hub still down')
    await hub.restart()
    const c = await connect({ servers: hub.url })
    t.teardown(() => c.close())
    const got: string[] = []
    c.subscribe('telemetry.>', { callback: (_e, m) => void got.push(m.string()) })
    await c.flush()
    await until(() => got.length >= 998, 15_000, 'what survived at the hub')
    await sleep(200)
    const want = Array.from({ length: 999 }, (_, i) => `m${String(i).padStart(4, '0')}`).filter((m) => m !== 'm0500')
    t.same(got, want, 'everything but the damaged record and the torn one, in order')
  })

  t.test('max_bytes: drop_newest refuses, drop_oldest deletes whole segments; counted, logged once', async (t) => {
    const dir = tempDir(t)
    const hub = await startHub()
    t.teardown(() => hub.close())
    await hub.stop()
    const b = await edge(hub, dir, { buffer_subjects: ['t.>'], buffer_policy: 'drop_oldest' }, { max_bytes: 1 * MB })
    t.teardown(() => b.stop())
    const en = await natsClient(t, b.url)
    const payload = 'x'.repeat(1000)
    for (let i = 0; i < 3000; i++) en.publish('t.a', payload)
    await en.flush()
    const r = b.uplink!.remotes[0]!
    t.ok(r.buffer.bytes <= 1 * MB, `bounded on disk (${r.buffer.bytes})`)
    t.ok(r.buffer.dropped > 1000, `oldest dropped and counted (${r.buffer.dropped})`)
    t.equal(r.buffer.length + r.buffer.dropped, 3000, 'every message kept or counted')
    const total = segFiles(dir).reduce((n, f) => n + statSync(path.join(dir, 'uplink/remote-1', f)).size, 0)
    t.ok(total <= 1 * MB, 'the files agree')
  })

  t.test('a second process on the directory is refused; a newer format is refused', async (t) => {
    const dir = tempDir(t)
    const hub = await startHub()
    t.teardown(() => hub.close())
    const b = await edge(hub, dir)
    t.teardown(() => b.stop())
    writeFileSync(path.join(dir, 'LOCK'), '1\n') // pid 1 runs: as if another sprig held it
    await t.rejects(edge(hub, dir), /store directory .* is in use by another sprig \(pid 1/)
    const d2 = tempDir(t)
    writeFileSync(path.join(d2, 'sprig-store.json'), '{"format": 99}\n')
    await t.rejects(edge(hub, d2), /has format 99, written by a newer sprig/)
    const file = path.join(d2, 'a-file')
    writeFileSync(file, '')
    await t.rejects(edge(hub, `${file}/store`), /store directory .*a-file\/store: cannot create it: ENOTDIR/)
  })
}

if (haveHub(t)) {
  t.test('ENOSPC on a 2 MB tmpfs: drop policy, logged once, no crash, writing again once there is room', async (t) => {
    const dir = tempDir(t)
    const mnt = path.join(dir, 'mnt')
    mkdirSync(mnt)
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mnt], { encoding: 'utf8' })
    if (m.status !== 0) return void t.comment(`skip: cannot mount a small tmpfs (needs root): ${(m.stderr || m.error?.message || '').trim()}; max_bytes is covered above`)
    t.teardown(() => void spawnSync('umount', [mnt]))
    const hub = await startHub()
    t.teardown(() => hub.close())
    await hub.stop()
    const b = await edge(hub, mnt, { buffer_subjects: ['t.>'], buffer_max_bytes: 4 * MB })
    t.teardown(() => b.stop())
    const en = await natsClient(t, b.url)
    const payload = 'x'.repeat(1000)
    for (let i = 0; i < 5000; i++) en.publish('t.a', `${String(i).padStart(4, '0')}${payload}`)
    await en.flush()
    const r = b.uplink!.remotes[0]!
    t.ok(r.buffer.dropped > 2000, `dropped and counted (${r.buffer.dropped})`)
    t.equal(r.buffer.length + r.buffer.dropped, 5000, 'every message kept or counted')
    t.equal(b.logs.filter((l) => /the disk is full \(ENOSPC\)/.test(l)).length, 1, 'logged once for the episode')
    t.equal((b.srv.status.get('store')!() as { full_episodes: number }).full_episodes, 1)
    // The hub comes back: the kept (newest) messages go up in order, their segments are deleted.
    const kept = r.buffer.length
    await hub.restart()
    const c = await connect({ servers: hub.url })
    t.teardown(() => c.close())
    const got: number[] = []
    c.subscribe('t.>', { callback: (_e, x) => void got.push(Number(x.string().slice(0, 4))) })
    await c.flush()
    // The hub confirms (PONG) before its subscriber has read the last ones: wait for both.
    await until(() => got.length >= kept && r.buffer.length === 0, 15_000, 'the spool drained')
    t.same(got, [...got].sort((a, b) => a - b), 'in order')
    t.equal(got[got.length - 1], 4999, 'drop_oldest kept the newest')
    en.publish('t.a', 'after')
    await en.flush()
    await until(() => b.logs.some((l) => /writing again/.test(l)), 5000, 'the episode to end')
    t.pass('writing again once there is room')
  })
}

if (haveHub(t)) {
  for (const disk of [true, false]) {
    t.test(`replay_rate paces the backlog; live messages interleave (${disk ? 'disk spool' : 'memory buffer'})`, async (t) => {
      const dir = tempDir(t)
      const hub = await startHub()
      t.teardown(() => hub.close())
      const remotes = [{ ...REMOTE_DEFAULTS, urls: [hub.leafUrl], buffer_subjects: ['t.>'], replay_rate: 200 }]
      const b = await startBroker({
        ...(disk ? { store: { dir, sync_interval: 1000, max_bytes: 64 * MB } } : {}),
        leafnodes: { reconnect: 100, reconnect_max: 300, remotes },
      })
      t.teardown(() => b.stop())
      await leafUp(b)
      await hub.stop()
      const r = b.uplink!.remotes[0]!
      await until(() => r.state !== 'connected', 5000, 'the link to drop')
      const en = await natsClient(t, b.url)
      for (let i = 0; i < 600; i++) en.publish('t.backlog', String(i))
      await en.flush()
      await hub.restart()
      const c = await connect({ servers: hub.url })
      t.teardown(() => c.close())
      const got: string[] = []
      c.subscribe('t.>', { callback: (_e, m) => void got.push(m.string()) })
      await c.flush()
      await hubInterest(b, 't.>')
      const t0 = Date.now()
      await sleep(500)
      en.publish('t.live', 'live')
      await en.flush()
      await until(() => got.includes('live'), 3000, 'the live message')
      const backlogBefore = got.filter((x) => x !== 'live').length
      t.ok(backlogBefore < 600, `the live message went ahead of the rest of the backlog (${backlogBefore} of 600 out before it)`)
      await until(() => got.length >= 601, 10_000, 'the whole backlog')
      const ms = Date.now() - t0
      t.ok(ms >= 2000, `600 messages at 200/s took ${ms} ms`)
      t.same(got.filter((x) => x !== 'live'), Array.from({ length: 600 }, (_, i) => String(i)), 'the backlog in order, once')
      await until(() => r.buffer.length === 0, 5000, 'all confirmed')
    })
  }
}

if (haveHub(t)) {
  t.test('MQTT 5 QoS 1 into a full store (drop_newest): PUBACK 0x97 Quota exceeded', async (t) => {
    const dir = tempDir(t)
    const hub = await startHub()
    t.teardown(() => hub.close())
    await hub.stop()
    const b = await startBroker({
      mqtt: true,
      store: { dir, sync_interval: 0, max_bytes: 64 * MB },
      leafnodes: { reconnect: 100, reconnect_max: 300, remotes: [{ ...REMOTE_DEFAULTS, urls: [hub.leafUrl], buffer_subjects: ['t.>'], buffer_max_bytes: 64 * 1024, buffer_policy: 'drop_newest' }] },
    })
    t.teardown(() => b.stop())
    const c = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
    const payload = 'x'.repeat(1000)
    let ok = 0
    let quota = 0
    for (let i = 0; i < 100; i++) {
      try {
        await c.publishAsync('t/a', payload, { qos: 1 })
        ok++
      } catch (e) {
        if (/Quota exceeded|151/i.test(String((e as Error).message) + String((e as { code?: number }).code))) quota++
        else throw e
      }
    }
    t.ok(ok > 40 && ok < 70, `${ok} stored and acknowledged`)
    t.equal(quota, 100 - ok, 'the rest refused with 0x97')
    t.equal(b.uplink!.remotes[0]!.buffer.dropped, 100 - ok, 'and counted')
    const e = await c.publishAsync('t/a', payload, { qos: 2 }).then(
      () => null,
      (x: Error) => x,
    )
    t.match(String(e?.message) + String((e as { code?: number } | null)?.code), /Quota exceeded|151/i, 'QoS 2: PUBREC 0x97')
  })
}

t.test('record format: an MQTT QoS header block is stored as a code, other headers as they are', async (t) => {
  const { encodeMsg, decodeAt } = await import('../src/store/record.ts')
  const { newMsg } = await import('../src/msg.ts')
  const { encodeHeaders } = await import('../src/headers.ts')
  const enc = new TextEncoder()
  const rec = (hdr: Uint8Array | null, reply = ''): Uint8Array => {
    const m = newMsg()
    m.subject = 'telemetry.dev0'
    m.subjectBytes = enc.encode(m.subject)
    m.reply = reply
    m.hdr = hdr
    m.payload = enc.encode('x'.repeat(256))
    return encodeMsg(m, 7)
  }
  const plain = rec(null)
  const qos1 = rec(encodeHeaders([['Nmqtt-Pub', '1']]))
  const other = rec(encodeHeaders([['Nmqtt-Pub', '1'], ['X', 'y']]))
  const withReply = rec(encodeHeaders([['Nmqtt-Pub', '1']]), '_INBOX.x')
  t.equal(qos1.length, plain.length, 'the QoS block costs no bytes')
  t.equal(plain.length, 8 + 11 + 14 + 256, 'a short record: 19 bytes before the subject')
  t.ok(other.length > plain.length + 26, 'another block is written out')
  const q1 = 'NATS/1.0\r\nNmqtt-Pub: 1\r\n\r\n'
  for (const [b, want, reply] of [[plain, null, ''], [qos1, q1, ''], [other, 'NATS/1.0\r\nNmqtt-Pub: 1\r\nX: y\r\n\r\n', ''], [withReply, q1, '_INBOX.x']] as const) {
    const r = decodeAt(b, 0, b.length)
    if (typeof r !== 'object' || !('rec' in r)) throw new Error('not decoded')
    t.equal(r.rec.seq, 7)
    t.equal(r.rec.subject, 'telemetry.dev0')
    t.equal(r.rec.reply, reply)
    t.equal(r.rec.hdr === null ? null : new TextDecoder().decode(r.rec.hdr), want)
    t.equal(r.rec.payload.length, 256)
  }
  // An unknown code (a newer sprig's) is damage, never a guess: in a short record and a full one.
  const { crc32 } = await import('../src/store/record.ts')
  const bad = qos1.slice()
  bad[8 + 10] = 0x7f
  new DataView(bad.buffer).setUint32(4, crc32(bad, 8), true)
  t.ok('crc' in (decodeAt(bad, 0, bad.length) as object), 'unknown header code refused (short record)')
  const bad2 = withReply.slice()
  new DataView(bad2.buffer).setUint32(8 + 13, 0xfffffffe, true)
  new DataView(bad2.buffer).setUint32(4, crc32(bad2, 8), true)
  t.ok('crc' in (decodeAt(bad2, 0, bad2.length) as object), 'unknown header code refused (full record)')
})

t.test('crc32 (slicing by 8) is zlib\'s CRC-32 on any slice', async (t) => {
  const { crc32 } = await import('../src/store/record.ts')
  const zlib = (await import('node:zlib')) as unknown as { crc32?: (b: Uint8Array) => number }
  t.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926, 'the check value')
  if (typeof zlib.crc32 !== 'function') return void t.comment('node:zlib has no crc32 here: check value only')
  let bad = 0
  for (let n = 0; n < 500; n++) {
    const b = new Uint8Array(Math.floor(Math.random() * 600))
    for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256)
    const s = Math.floor(Math.random() * (b.length + 1))
    const e = s + Math.floor(Math.random() * (b.length - s + 1))
    if (crc32(b, s, e) !== zlib.crc32(b.subarray(s, e))) bad++
  }
  t.equal(bad, 0, '500 random slices agree with zlib')
})
