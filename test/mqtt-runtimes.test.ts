// MQTT on every runtime's socket path, as a real process from a fresh bundle: Bun (whose plain
// listeners are Bun.listen by default, node:net with SPRIG_NET=node), Node and Deno (node:net).
// The other MQTT tests run the broker in-process on Node's node:net only, so this is what
// covers targets/bun.ts for MQTT: handshake, QoS 0/1/2 both ways with NATS, a payload large
// enough that Bun takes it in parts (the wire's unwritten rest), and a clean SIGTERM.

import t, { type Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { privateBundle, runtimeBin } from './helpers/bins.ts'
import { messages, mqttClient, natsClient } from './helpers/mqtt.ts'
import { freePort, skipOrFail, spawnServer, waitForPort, type Proc } from './helpers/peers.ts'

const dir = mkdtempSync(join(tmpdir(), 'sprig-mqtt-rt-'))
const bundle = join(dir, 'sprig.js')
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

t.before(() => {
  // Its own bundle of the tree as it is, so no other test's dist/sprig.js is raced.
  privateBundle(bundle)
})

// Without tap's coverage loader, as in production.
const clean: NodeJS.ProcessEnv = { NODE_OPTIONS: '', SPRIG_NET: '' }

const variants: { name: string; bin: string; args: string[]; env: NodeJS.ProcessEnv; banner: RegExp }[] = [
  { name: 'bun (MQTT on Bun.listen, the default)', bin: runtimeBin('bun'), args: [bundle], env: clean, banner: / on bun \d[\d.]*$/m },
  { name: 'bun, SPRIG_NET=node (MQTT on node:net)', bin: runtimeBin('bun'), args: [bundle], env: { ...clean, SPRIG_NET: 'node' }, banner: / on bun \d[\d.]* \(node:net\)/ },
  { name: 'node', bin: runtimeBin('node'), args: [bundle], env: clean, banner: / on node \d/ },
  { name: 'deno', bin: runtimeBin('deno'), args: ['run', '-A', bundle], env: clean, banner: / on deno \d/ },
]

async function start(t: Test, v: (typeof variants)[number]): Promise<{ p: Proc; nats: string; mqtt: string } | null> {
  const [np, mp] = [await freePort(), await freePort()]
  let p: Proc
  try {
    p = await spawnServer(v.bin, [...v.args, '-a', '127.0.0.1', '-p', String(np), '--mqtt-port', String(mp)], np, v.env)
    await waitForPort(mp)
  } catch (e) {
    t.fail(`did not start: ${(e as Error).message}`)
    return null
  }
  t.teardown(() => p.stop())
  return { p, nats: `nats://127.0.0.1:${np}`, mqtt: `mqtt://127.0.0.1:${mp}` }
}

for (const v of variants) {
  t.test(v.name, async (t) => {
    if (!v.bin) return skipOrFail(t, `${v.name.split(' ')[0]} not found: it is a devDependency, run npm install`)
    const s = await start(t, v)
    if (!s) return
    t.match(s.p.output(), v.banner, 'runs on the socket path it says')

    t.test('MQTT 3.1.1 and 5.0 clients, QoS 0/1/2, to and from NATS', async (t) => {
      const nc = await natsClient(t, s.nats)
      const sub4 = await mqttClient(t, s.mqtt, { protocolVersion: 4 })
      const sub5 = await mqttClient(t, s.mqtt, { protocolVersion: 5 })
      await sub4.subscribeAsync('rt/#', { qos: 2 })
      await sub5.subscribeAsync('rt/#', { qos: 2 })
      const natsGot = nc.subscribe('rt.>', { max: 3 })
      await nc.flush()
      const got4 = messages(sub4, 4)
      const got5 = messages(sub5, 4)
      const pub = await mqttClient(t, s.mqtt, { protocolVersion: 5 })
      for (const qos of [0, 1, 2] as const) await pub.publishAsync(`rt/q${qos}`, `m${qos}`, { qos })
      nc.publish('rt.from.nats', 'n') // no Nmqtt-Pub: QoS 1
      // Sorted: MQTT.js hands a QoS 2 message over only at PUBREL, so arrival order varies.
      const want = [['rt/from/nats', 'n', 1], ['rt/q0', 'm0', 0], ['rt/q1', 'm1', 1], ['rt/q2', 'm2', 2]]
      const seen = (got: { topic: string; payload: string; qos: number }[]): unknown => got.map((m) => [m.topic, m.payload, m.qos]).sort()
      t.same(seen(await got4), want, '3.1.1 subscriber')
      t.same(seen(await got5), want, '5.0 subscriber')
      const subjects: string[] = []
      for await (const m of natsGot) subjects.push(m.subject)
      t.same(subjects, ['rt.q0', 'rt.q1', 'rt.q2'], 'NATS subscriber')
    })

    t.test('a payload larger than one socket write arrives whole (backpressure path)', async (t) => {
      const sub = await mqttClient(t, s.mqtt)
      await sub.subscribeAsync('rt/big', { qos: 1 })
      const big = Buffer.alloc(900 * 1024, 0x61)
      const got = new Promise<Buffer[]>((r) => {
        const all: Buffer[] = []
        sub.on('message', (_topic, payload) => {
          all.push(payload)
          if (all.length === 3) r(all)
        })
      })
      const nc = await natsClient(t, s.nats)
      for (let i = 0; i < 3; i++) nc.publish('rt.big', big)
      const all = await Promise.race([got, new Promise<Buffer[]>((r) => setTimeout(() => r([]), 5000))])
      t.equal(all.length, 3, 'all three arrived')
      t.ok(all.every((b) => b.equals(big)), 'byte for byte')
    })

    t.test('SIGTERM: exit 0, MQTT clients disconnected, no errors logged', async (t) => {
      const c = await mqttClient(t, s.mqtt, { protocolVersion: 5 })
      const closed = new Promise<boolean>((r) => {
        c.once('close', () => r(true))
        setTimeout(() => r(false), 3000)
      })
      const exited = new Promise<number | null>((r) => s.p.proc.once('exit', (code) => r(code)))
      s.p.proc.kill('SIGTERM')
      t.equal(await exited, 0, 'exit code 0')
      t.ok(await closed, 'the client was disconnected')
      t.notMatch(s.p.output(), /\[ERR\]|\n\s+at /, 'no errors or stack traces in the log')
    })
  })
}
