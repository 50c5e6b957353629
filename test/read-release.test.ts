// On Bun and Deno each socket read's buffer is freed as soon as the connection has read it
// (targets/net.ts releaseRead: transfer(0) detaches it), instead of waiting for a collection;
// on Node every plain socket reads into one shared buffer (useSharedReads), so the same
// rule holds: a Conn may not keep a read past data().
// That is safe only while (a) the runtime hands every read a buffer of its own, which is
// checked here per runtime and socket API, and (b) no adapter keeps the bytes of a read past
// Conn.data() (src/host.ts). For (b): the Bun.listen handler itself (the read is detached
// after data(), a view into a larger buffer is left alone), then the bundle on each socket
// path that frees reads, with every path that keeps bytes of a read for later: a CONNECT's
// will, PUBLISHes held while a bcrypt password is checked, retained messages, a QoS 1 message
// queued for an offline session, packets and a NATS HPUB cut across reads. A kept view of a
// detached read would come out empty, one of a shared buffer overwritten.

import t from 'tap'
import bcrypt from 'bcryptjs'
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { generate, type Packet } from 'mqtt-packet'
import mqtt from 'mqtt'
import { privateBundle, runtimeBin } from './helpers/bins.ts'
import { mqttClient, natsClient, RawMqtt, sleep } from './helpers/mqtt.ts'
import { freePort, skipOrFail, spawnServer, waitForPort } from './helpers/peers.ts'
import { RawConn } from './helpers/rawconn.ts'

const bun = runtimeBin('bun')
const deno = runtimeBin('deno')
const clean: NodeJS.ProcessEnv = { NODE_OPTIONS: '', SPRIG_NET: '' }

t.test('each runtime that frees reads hands every read a buffer of its own', async (t) => {
  const script = fileURLToPath(new URL('./helpers/read-buffers.ts', import.meta.url))
  for (const [name, bin, args] of [['bun', bun, [script]], ['deno', deno, ['run', '-A', script]]] as const) {
    if (!bin) {
      skipOrFail(t, `${name} not found: it is a devDependency, run npm install`)
      continue
    }
    const r = JSON.parse(execFileSync(bin, [...args], { encoding: 'utf8', env: { ...process.env, ...clean } }).trim().split('\n').at(-1)!) as Record<string, { reads: number; reused: number; wider: number; offset: number; maxLen: number }>
    t.same(Object.keys(r).sort(), name === 'bun' ? ['Bun.listen', 'node:net'] : ['node:net'], `${name}: the socket APIs it serves with`)
    for (const [api, x] of Object.entries(r)) {
      t.ok(x.reads > 100 && x.maxLen >= 65536, `${name} ${api}: ${x.reads} reads, the largest ${x.maxLen} bytes (full read buffers among them)`)
      t.equal(x.reused, 0, `${name} ${api}: no buffer handed out twice`)
      t.equal(x.wider + x.offset, 0, `${name} ${api}: each read is the whole of its buffer`)
    }
  }
})

t.test('Bun.listen data(): the read is freed after the call, a view into a larger buffer is not', async (t) => {
  if (!bun) return skipOrFail(t, 'bun not found: it is a devDependency (package bun), run npm install')
  const script = fileURLToPath(new URL('./helpers/release-read.ts', import.meta.url))
  const r = JSON.parse(execFileSync(bun, [script], { encoding: 'utf8', env: { ...process.env, ...clean } }).trim().split('\n').at(-1)!)
  for (const k of ['plain', 'guarded'] as const) {
    t.same(r[k].seen, [[1, 2, 3, 4, 5], [7, 6, 5]], `${k}: the connection saw every byte during data()`)
    t.ok(r[k].ownDetached && r[k].ownAfter === 0, `${k}: a read that is its whole buffer is detached afterwards`)
    t.same(r[k].viewAfter, [7, 6, 5], `${k}: a view into a larger buffer is left alone`)
    t.same(r[k].bigAfter, [9, 8, 7, 6, 5, 4], `${k}: so is the larger buffer`)
  }
  t.equal(r.wideAfter, 4, 'a view shorter than its buffer is not detached')
  t.ok(r.emptyOk, 'an empty read is no error')
})

/** Writes `b` in pieces of `n` bytes, a few ms apart, so that each arrives as a read of its own. */
async function dribble(s: net.Socket, b: Uint8Array, n: number): Promise<void> {
  for (let i = 0; i < b.length; i += n) {
    s.write(b.subarray(i, Math.min(b.length, i + n)))
    await sleep(3)
  }
}

const dir = mkdtempSync(join(tmpdir(), 'sprig-release-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const config = join(dir, 'sprig.json')
writeFileSync(config, JSON.stringify({ authorization: { timeout: '5s', users: [{ user: 'dev', password: bcrypt.hashSync('pw', 6) }] } }))

const variants = [
  { name: 'Bun, Bun.listen', bin: bun, pre: [] as string[], env: clean, banner: / on bun \d[\d.]*$/m },
  { name: "Bun, Bun's node:net (SPRIG_NET=node, as TLS listeners and the uplink)", bin: bun, pre: [] as string[], env: { ...clean, SPRIG_NET: 'node' }, banner: / on bun \d[\d.]* \(node:net\)/ },
  { name: 'Deno, node:net', bin: deno, pre: ['run', '-A'], env: clean, banner: / on deno \d[\d.]*$/m },
  // Node does not free reads: it reads every plain socket into one shared buffer
  // (targets/net.ts useSharedReads), so a kept view would show the next read's bytes instead.
  { name: 'Node, node:net', bin: process.execPath, pre: [] as string[], env: clean, banner: / on node \d[\d.]*$/m },
]

t.before(() => {
  privateBundle(join(dir, 'sprig.js'))
})

for (const v of variants) t.test(`the bundle on ${v.name}: what adapters keep of a read survives the read being freed`, async (t) => {
  if (!v.bin) return skipOrFail(t, `${v.name.split(',')[0]!.toLowerCase()} not found: it is a devDependency, run npm install`)
  const bundle = join(dir, 'sprig.js')
  const [np, mp] = [await freePort(), await freePort()]
  const p = await spawnServer(v.bin, [...v.pre, bundle, '-c', config, '-a', '127.0.0.1', '-p', String(np), '--mqtt-port', String(mp)], np, v.env)
  t.teardown(() => p.stop())
  await waitForPort(mp)
  t.match(p.output(), v.banner, `on ${v.name}`)
  const mqttUrl = `mqtt://127.0.0.1:${mp}`
  const auth = { username: 'dev', password: 'pw' }

  const W = randomBytes(1000) // the will
  const R = randomBytes(3000) // retained, held while the password is checked
  const Q = randomBytes(2000) // queued for an offline session, held as well
  const C = randomBytes(5000) // cut across many reads
  const R2 = randomBytes(1200) // retained straight from a read
  const H = randomBytes(1500) // a NATS HPUB cut across reads

  // An MQTT session that is offline when Q is published.
  const keep = await mqttClient(t, mqttUrl, { ...auth, clientId: 'keep', clean: false })
  await keep.subscribeAsync('rel/queued', { qos: 1 })
  await keep.endAsync()

  const nc = await natsClient(t, `nats://127.0.0.1:${np}`, { user: 'dev', pass: 'pw' })
  const got = new Map<string, { data: Uint8Array; hdr?: string }>()
  const all = new Promise<void>((resolve) => {
    nc.subscribe('rel.>', {
      callback: (err, m) => {
        if (err) return
        got.set(m.subject, { data: m.data, hdr: m.headers?.get('X-K') })
        if (got.size === 6) resolve()
      },
    })
  })
  await nc.flush()

  // CONNECT with a will, then two QoS 1 PUBLISHes, in one write: they are held until the
  // bcrypt check ends, long after the read that brought them.
  const dev = await RawMqtt.open(mp, 5)
  const g = (pk: Packet): Buffer => generate(pk, { protocolVersion: 5 })
  dev.send(
    Buffer.concat([
      g({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'dev1', username: 'dev', password: Buffer.from('pw'), will: { topic: 'rel/will', payload: W, qos: 1, retain: true } } as Packet),
      g({ cmd: 'publish', topic: 'rel/retained', payload: R, qos: 1, messageId: 1, retain: true, dup: false } as Packet),
      g({ cmd: 'publish', topic: 'rel/queued', payload: Q, qos: 1, messageId: 2, retain: false, dup: false } as Packet),
    ]),
  )
  t.ok(await dev.next('connack', 5000), 'CONNACK')
  t.ok(await dev.next('puback', 5000), 'PUBACK 1')
  t.ok(await dev.next('puback', 5000), 'PUBACK 2')
  // A retained PUBLISH in a read of its own: the retained store copies it from the read.
  dev.send(g({ cmd: 'publish', topic: 'rel/retained2', payload: R2, qos: 0, retain: true, dup: false } as Packet))
  // A PUBLISH in 7-byte reads: its first bytes wait for the rest in a buffer of its own.
  await dribble(dev.sock, g({ cmd: 'publish', topic: 'rel/cut', payload: C, qos: 0, retain: false, dup: false } as Packet), 7)
  await sleep(50)
  dev.sock.destroy() // no DISCONNECT: the will goes

  // A NATS client whose CONNECT and HPUB arrive in 11-byte reads.
  const raw = await RawConn.open(np, { keepText: false })
  t.teardown(() => raw.sock.destroy())
  const hdr = 'NATS/1.0\r\nX-K: v\r\n\r\n'
  const body = Buffer.concat([Buffer.from(hdr), H])
  const natsBytes = Buffer.concat([
    Buffer.from(`CONNECT {"user":"dev","pass":"pw","verbose":false,"headers":true}\r\nHPUB rel.hdr ${hdr.length} ${body.length}\r\n`),
    body,
    Buffer.from('\r\nPING\r\n'),
  ])
  await dribble(raw.sock, natsBytes, 11)

  await Promise.race([all, sleep(10_000)])
  const same = (a: Uint8Array | undefined, b: Uint8Array): boolean => a !== undefined && Buffer.from(a).equals(b)
  t.ok(same(got.get('rel.will')?.data, W), 'the will, kept from the CONNECT read, arrives whole')
  t.ok(same(got.get('rel.retained')?.data, R), 'a PUBLISH held during the password check arrives whole')
  t.ok(same(got.get('rel.queued')?.data, Q), 'so does the second one')
  t.ok(same(got.get('rel.retained2')?.data, R2), 'a retained PUBLISH arrives whole')
  t.ok(same(got.get('rel.cut')?.data, C), 'a PUBLISH cut across 7-byte reads arrives whole')
  t.ok(same(got.get('rel.hdr')?.data, H), 'an HPUB cut across 11-byte reads arrives whole')
  t.equal(got.get('rel.hdr')?.hdr, 'v', 'with its header')

  // Kept for later: the retained messages (R, and the will, retained) and the offline queue.
  const late = await mqttClient(t, mqttUrl, auth)
  const retained = new Map<string, Buffer>()
  const both = new Promise<void>((resolve) => {
    late.on('message', (topic, payload) => {
      retained.set(topic, payload)
      if (retained.size === 3) resolve()
    })
  })
  await late.subscribeAsync('rel/#', { qos: 1 })
  await Promise.race([both, sleep(5000)])
  t.ok(same(retained.get('rel/retained'), R), 'the retained message, stored from a freed read, is whole')
  t.ok(same(retained.get('rel/retained2'), R2), 'so is the one retained straight from a read')
  t.ok(same(retained.get('rel/will'), W), 'the retained will is whole')

  // The listener first: the queued message follows the CONNACK at once.
  const back = mqtt.connect(mqttUrl, { ...auth, clientId: 'keep', clean: false, reconnectPeriod: 0 })
  t.teardown(() => back.endAsync(true))
  const queued = await new Promise<Buffer | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 5000)
    back.on('message', (topic, payload) => {
      if (topic !== 'rel/queued') return
      clearTimeout(timer)
      resolve(payload)
    })
  })
  t.ok(same(queued, Q), 'the message queued for the offline session is whole')
  t.notMatch(p.output(), /error/i, 'nothing logged as an error')
})
