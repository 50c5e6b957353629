// src/lifecycle.ts: one connection lifecycle for every protocol. Sans-I/O: a Server with a
// manual clock and a bcrypt engine the test answers, a NATS and an MQTT connection on plain
// Wires. The same rules must hold for both: operations held while a password is checked and
// replayed in order, bounded by max_pending as a slow consumer, the connect deadline, and
// the retained-header hook never seeing an MQTT publish.

import t from 'tap'
import { Buffer } from 'node:buffer'
import { generate, type Packet } from 'mqtt-packet'
import { MqttConn } from '../adapters/mqtt/conn.ts'
import { NatsClient } from '../adapters/nats/client.ts'
import type { BcryptEngine, Wire } from '../src/host.ts'
import { Client } from '../src/lifecycle.ts'
import { createLogger } from '../src/log.ts'
import { defaults, type Options } from '../src/options.ts'
import { Server } from '../src/server.ts'

// A bcrypt-shaped hash: its check waits for the test (the engine never computes anything).
const HASH = '$2a$04$' + 'x'.repeat(53)

function rig(over: Partial<Options> = {}) {
  const queue: (() => void)[] = []
  const timers: { due: number; fn: () => void; on: boolean }[] = []
  let now = 1000
  const host = {
    now: () => now,
    defer: (fn: () => void) => void queue.push(fn),
    every: (ms: number, fn: () => void) => {
      const tm = { due: now + ms, fn, on: true }
      timers.push(tm)
      return { cancel: () => void (tm.on = false) }
    },
  }
  const opts: Options = { ...defaults, port: 4222, authorization: { users: [{ user: 'u', password: HASH }] }, ...over }
  const srv = new Server(opts, host, createLogger({ level: 'error', sink: () => {} }))
  const pending: ((ok: boolean) => void)[] = []
  const engine: BcryptEngine = { parallel: 4, compare: () => new Promise<boolean>((r) => pending.push(r)) }
  srv.bcrypt = engine
  let port = 0
  const wire = () => {
    const writes: Uint8Array[] = []
    const w: Wire & { ended: boolean } = {
      ended: false,
      write: (d) => (writes.push(d.slice()), true),
      buffered: () => 0,
      end: () => void (w.ended = true),
      destroy: () => void (w.ended = true),
      remoteAddress: '127.0.0.1',
      remotePort: ++port,
    }
    return { w, out: () => Buffer.concat(writes).toString('latin1') }
  }
  const run = async (): Promise<void> => {
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setImmediate(r))
      while (queue.length) queue.shift()!()
    }
  }
  const advance = (ms: number): void => {
    now += ms
    for (const tm of timers) if (tm.on && tm.due <= now) tm.fn()
  }
  return { srv, wire, run, advance, answer: (ok: boolean) => pending.shift()!(ok), pending }
}

const mqttConnect = (user: string, pass: string) =>
  generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'dev', username: user, password: Buffer.from(pass) })
const mqtt = (p: Packet) => generate(p)

t.test('NATS and MQTT connections are one Client', async (t) => {
  const r = rig()
  t.ok(new NatsClient(r.srv, r.srv.admit(), r.wire().w) instanceof Client)
  t.ok(new MqttConn(r.srv, r.srv.admit(), r.wire().w) instanceof Client)
})

t.test('what arrives while a password is checked waits, then runs in order (NATS and MQTT)', async (t) => {
  const r = rig()
  const n = r.wire()
  const nc = new NatsClient(r.srv, r.srv.admit(), n.w)
  nc.data(Buffer.from('CONNECT {"user":"u","pass":"p","verbose":false}\r\nSUB a 1\r\nPUB a 2\r\nhi\r\nPING\r\n'))
  const m = r.wire()
  const mc = new MqttConn(r.srv, r.srv.admit(), m.w)
  mc.data(Buffer.concat([mqttConnect('u', 'p'), mqtt({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'b', qos: 0 }] }), mqtt({ cmd: 'publish', topic: 'b', payload: Buffer.from('yo'), qos: 0, dup: false, retain: false }), mqtt({ cmd: 'pingreq' })]))
  await r.run()
  t.equal(r.pending.length, 1, 'one check for the same user and password (joined)')
  t.ok(nc.holding && mc.holding, 'both hold')
  t.notMatch(n.out(), /MSG|PONG/, 'NATS: nothing answered yet')
  r.answer(true)
  await r.run()
  t.notOk(nc.holding || mc.holding)
  t.match(n.out(), /MSG a 1 2\r\nhi\r\nPONG\r\n$/, 'NATS: SUB, PUB, PING in order')
  const mout = Buffer.from(m.out(), 'latin1')
  t.same([...mout.subarray(0, 4)], [0x20, 2, 0, 0], 'MQTT: CONNACK first')
  t.ok(mout.includes(Buffer.from([0x90, 3, 0, 1, 0])), 'then SUBACK')
  t.ok(mout.includes(Buffer.from('byo')), 'then its own publish back')
  t.same([...mout.subarray(mout.length - 2)], [0xd0, 0], 'PINGRESP last')
  t.equal(nc.user, 'u')
  t.equal(mc.user, 'u')
})

t.test('piling up more than max_pending while authenticating: a slow consumer, NATS and MQTT alike', async (t) => {
  const r = rig({ max_pending: 4096 })
  const big = 'x'.repeat(5000)
  const n = r.wire()
  const nc = new NatsClient(r.srv, r.srv.admit(), n.w)
  nc.data(Buffer.from(`CONNECT {"user":"u","pass":"p"}\r\nPUB a ${big.length}\r\n${big}\r\n`))
  t.ok(nc.done, 'NATS closed')
  t.match(n.out(), /-ERR 'Slow Consumer'/)
  const m = r.wire()
  const mc = new MqttConn(r.srv, r.srv.admit(), m.w)
  mc.data(Buffer.concat([mqttConnect('u', 'p'), mqtt({ cmd: 'publish', topic: 'b', payload: Buffer.from(big), qos: 0, dup: false, retain: false })]))
  t.ok(mc.done, 'MQTT closed')
  t.equal(r.srv.counters.slow_consumers, 2, 'both counted as slow consumers')
})

t.test('the connect deadline closes both the same way, and ends at CONNECT', async (t) => {
  const r = rig({ authorization: { users: [{ user: 'u', password: 'p' }], timeout: 500 } })
  const idleN = new NatsClient(r.srv, r.srv.admit(), r.wire().w)
  const idleM = new MqttConn(r.srv, r.srv.admit(), r.wire().w)
  const okM = new MqttConn(r.srv, r.srv.admit(), r.wire().w)
  okM.data(mqttConnect('u', 'p'))
  t.ok(okM.connected)
  r.advance(600)
  t.ok(idleN.done && idleM.done, 'no CONNECT in time: closed')
  t.notOk(okM.done, 'connected in time: stays')
})

t.test('an MQTT publish never reaches the retained-header hook; a NATS one with headers does', async (t) => {
  const r = rig({ authorization: undefined })
  const seen: string[] = []
  r.srv.router.headerHook = (m) => void seen.push(m.subject)
  const mc = new MqttConn(r.srv, r.srv.admit(), r.wire().w)
  mc.data(Buffer.concat([generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'p' }), mqtt({ cmd: 'publish', topic: 'm', payload: Buffer.from('1'), qos: 0, dup: false, retain: true })]))
  const nc = new NatsClient(r.srv, r.srv.admit(), r.wire().w)
  nc.data(Buffer.from('CONNECT {"headers":true}\r\nHPUB n 12 13\r\nNATS/1.0\r\n\r\nx\r\n'))
  t.same(seen, ['n'])
})
