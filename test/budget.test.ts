// The memory budget's policy, driven with plain objects: a fake clock and deferred checks,
// wires that record pause/resume, and connections that say how many bytes they hold stuck.

import t from 'tap'
import { Budget, GRACE_MS, type BudgetEnv, type Evictable } from '../src/budget.ts'
import type { Wire } from '../src/host.ts'
import { Outbound } from '../src/outbound.ts'
import { StoreBuffer } from '../src/leaf/buffer.ts'
import { newRetainedStore, retain } from '../adapters/mqtt/retained.ts'
import { newMsg } from '../src/msg.ts'

const MiB = 1024 * 1024

interface TestWire extends Wire {
  paused: boolean
  writes: number
  text: string
  destroyed: boolean
  accept: boolean
  held: number
  reuse: boolean
}

function wire(): TestWire {
  const w: TestWire = {
    paused: false,
    writes: 0,
    text: '',
    destroyed: false,
    accept: true,
    held: 0,
    reuse: false,
    write(d) {
      w.writes++
      if (w.accept) w.text += Buffer.from(d).toString('latin1')
      if (!w.accept) w.held += d.length
      return w.accept
    },
    buffered: () => w.held,
    idle: () => w.reuse && w.held === 0,
    end() {},
    destroy: () => void (w.destroyed = true),
    pause: () => void (w.paused = true),
    resume: () => void (w.paused = false),
    remoteAddress: '127.0.0.1',
    remotePort: 1,
  }
  return w
}

interface Conn extends Evictable {
  bytes: number
  closed: string
}

function conn(bytes: number): Conn {
  const c: Conn = {
    bytes,
    closed: '',
    stuck: () => (c.closed ? 0 : c.bytes),
    evict: (why) => void (c.closed = why),
  }
  return c
}

function env(conns: Conn[] = []): BudgetEnv & { clock: number; run(): void; logs: string[]; collects: number } {
  const queue: (() => void)[] = []
  const e = {
    clock: 1000,
    logs: [] as string[],
    collects: 0,
    now: () => e.clock,
    defer: (fn: () => void) => void queue.push(fn),
    log: { warn: (m: string) => void e.logs.push(`WRN ${m}`), info: (m: string) => void e.logs.push(`INF ${m}`) },
    candidates: () => conns,
    collectSoon: () => void e.collects++,
    run() {
      while (queue.length) queue.shift()!()
    },
  }
  return e
}

t.test('watermarks: 3/4 pauses, 5/8 resumes, max_memory closes; 0 is no budget', async (t) => {
  const b = new Budget(64 * MiB, env())
  t.equal(b.high, 48 * MiB)
  t.equal(b.low, 40 * MiB)
  t.equal(b.hard, 64 * MiB)
  const none = new Budget(0, env())
  none.charge(10 * 1024 * MiB)
  t.notOk(none.full, 'never full without a budget')
  t.equal(none.status().max_memory, 0)
})

t.test('order: pause the feeding publisher first, close the largest stuck consumers after the grace', async (t) => {
  const small = conn(2 * MiB)
  const big = conn(30 * MiB)
  const mid = conn(20 * MiB)
  const e = env([small, big, mid])
  const b = new Budget(64 * MiB, e)
  const pub = wire()
  const other = wire()
  b.charge(44 * MiB)
  t.equal(b.episodes, 0, 'under 3/4: nothing happens')
  b.charge(5 * MiB)
  t.equal(b.episodes, 1, 'over 3/4: an episode starts')
  t.match(e.logs[0], /over 3\/4 of max_memory/)
  // A publish that went to a congested queue marks the budget hot; the router then pauses its sender.
  b.over(true)
  t.ok(b.hot)
  b.pause(pub)
  t.ok(pub.paused, 'step 1: the publisher is paused')
  t.notOk(b.hot)
  b.pause(other) // not hot any more: the router would not call; a direct call still pauses
  t.equal(b.pausedCount, 2)
  e.run()
  t.equal(b.closes, 0, 'no closes within the grace period')
  e.clock += GRACE_MS
  b.check()
  t.equal(big.closed !== '', true, 'step 2: the largest stuck consumer is closed')
  t.match(big.closed, /Max Memory of 67108864 Exceeded/)
  t.equal(mid.closed, '', 'closing the largest was enough (49 - 30 < 40)')
  t.equal(small.closed, '')
  t.equal(b.closes, 1)
  t.equal(e.collects, 1, 'a collection is asked for after closes')
  t.notOk(pub.paused, 'paused publishers run again after the closes')
  t.equal(b.pausedCount, 0)
})

t.test('at max_memory the close does not wait for the grace period', async (t) => {
  const a = conn(10 * MiB)
  const c = conn(12 * MiB)
  const e = env([a, c])
  const b = new Budget(64 * MiB, e)
  b.charge(64 * MiB)
  e.run()
  t.ok(c.closed, 'largest first')
  t.ok(a.closed, 'then the next, until under 5/8')
  t.equal(b.closes, 2)
  t.match(e.logs.join('\n'), /closed 2 slow consumers/)
})

t.test('back under 5/8: the episode ends and publishers resume', async (t) => {
  const e = env()
  const b = new Budget(64 * MiB, e)
  const pub = wire()
  b.charge(60 * MiB)
  b.pause(pub)
  t.ok(pub.paused)
  b.charge(-16 * MiB) // 44: between 5/8 and 3/4, still paused
  e.run()
  t.ok(pub.paused, 'between the watermarks the pause holds')
  b.charge(-5 * MiB) // 39
  e.run()
  t.notOk(pub.paused, 'resumed under the low-water mark')
  t.match(e.logs.at(-1), /back under/)
  b.charge(10 * MiB)
  t.equal(b.episodes, 2, 'the next excess is a new episode')
})

t.test('with nothing stuck to close, a pause ends after the grace period', async (t) => {
  const e = env([conn(0)])
  const b = new Budget(64 * MiB, e)
  const pub = wire()
  b.charge(57 * MiB)
  b.pause(pub)
  e.clock += GRACE_MS - 1
  b.check()
  t.ok(pub.paused)
  e.clock += 1
  b.check()
  t.notOk(pub.paused)
  t.equal(b.closes, 0)
})

t.test('step 3: buffers without a reader do not grow over 3/4', async (t) => {
  const e = env()
  const b = new Budget(1 * MiB, e)
  const msg = (n: number) => Object.assign(newMsg(), { subject: 's', reply: '', payload: new Uint8Array(n) })
  const oldest = new StoreBuffer(1000, 10 * MiB, false, b)
  t.ok(oldest.push(msg(100_000)))
  t.equal(b.held, 100_001)
  b.charge(900 * 1024)
  t.ok(b.full)
  t.ok(oldest.push(msg(100_000)), 'drop_oldest: the new one is kept...')
  t.equal(oldest.length, 1, '...and the oldest goes')
  t.equal(oldest.dropped, 1)
  t.equal(b.held, 100_001 + 900 * 1024, 'no growth')
  const newest = new StoreBuffer(1000, 10 * MiB, true, b)
  t.notOk(newest.push(msg(10)), 'drop_newest: the new one is dropped')
  const st = newRetainedStore(100, 10 * MiB, b)
  t.notOk(retain(st, 't', 't', new Uint8Array(10), 0), 'the retained store refuses a new topic')
  t.equal(st.refused, 1)
  t.equal(b.drops, 3)
  t.equal(e.logs.filter((l) => l.includes('drops messages')).length, 1, 'logged once per episode')
  oldest.shift()
  t.equal(b.held, 900 * 1024, 'what leaves a buffer is released')
})

t.test('Outbound charges buffer capacity, keeps what a blocked socket holds, releases on drain and close', async (t) => {
  const e = env()
  const b = new Budget(64 * MiB, e)
  const w = wire()
  const o = new Outbound(w, 8 * MiB, () => {}, b)
  t.ok(o.push(new Uint8Array(100)))
  t.equal(b.held, 128, 'the first buffer (64 bytes) grew to 128')
  o.flush(1)
  t.equal(b.held, 0, 'the wire took it: released')
  w.accept = false
  o.push(new Uint8Array(3000))
  o.flush(2)
  t.equal(o.blockedSince, 2)
  const blocked = b.held
  t.ok(blocked >= 3000, 'the blocked socket holds it: still charged')
  // While blocked the queue grows in 64 KiB segments, not by copying.
  for (let i = 0; i < 40; i++) t.ok(o.push(new Uint8Array(4000)))
  t.equal(o.pending, 3000 + 160_000, 'pending counts segments, buffer and socket')
  t.ok(b.held - blocked <= 3 * 64 * 1024, 'charged by segment')
  t.equal(o.charged, b.held)
  w.accept = true
  w.held = 0
  o.drained(3)
  t.equal(b.held, 0, 'drained and written: nothing held')
  t.equal(o.pending, 0)
  o.push(new Uint8Array(10))
  o.closed()
  t.equal(b.held, 0, 'closed: released')
})

t.test('Outbound: segments go out in order after a drain', async (t) => {
  const chunks: Uint8Array[] = []
  let accept = false
  const w: Wire = {
    write: (d) => (chunks.push(d.slice()), accept),
    buffered: () => 0,
    end() {},
    destroy() {},
    remoteAddress: '',
    remotePort: 0,
  }
  const o = new Outbound(w, 8 * MiB, () => {})
  o.push(Uint8Array.of(0))
  o.flush(1) // refused: blocked
  let n = 1
  for (let i = 0; i < 100; i++) {
    const d = new Uint8Array(3000).fill(n++ & 0xff)
    t.ok(o.push(d))
  }
  accept = true
  o.drained(2)
  const all = Buffer.concat(chunks.slice(1))
  t.equal(all.length, 300_000)
  let ok = true
  for (let i = 0; i < 100; i++) if (all[i * 3000] !== ((i + 1) & 0xff) || all[i * 3000 + 2999] !== ((i + 1) & 0xff)) ok = false
  t.ok(ok, 'every message whole and in order')
})

t.test('Outbound reuses a busy buffer only when the wire holds nothing', async (t) => {
  const w = wire()
  const o = new Outbound(w, 8 * MiB, () => {})
  o.push(new Uint8Array(10_000))
  const first = o.buf
  o.flush(1)
  t.not(o.buf, first, 'a wire that may keep the data: a fresh buffer')
  w.reuse = true
  o.push(new Uint8Array(10_000))
  const second = o.buf
  o.flush(2)
  t.equal(o.buf, second, 'written at once and nothing held: reused')
  o.push(new Uint8Array(100))
  o.flush(3)
  t.equal(o.buf.length, 0, 'a small batch lets a quiet connection drop the big buffer')
})

t.test('what a real broker charges comes back to zero when its clients are gone (no drift)', async (t) => {
  const { startBroker } = await import('./helpers/broker.ts')
  const { mqttClient, natsClient, sleep } = await import('./helpers/mqtt.ts')
  const net = await import('node:net')
  const b = await startBroker({ mqtt: true })
  t.teardown(() => b.stop())
  const budget = b.srv.budget
  // NATS: traffic, and a payload left half-sent by a client that goes away.
  const nc = await natsClient(t, b.url)
  const got: number[] = []
  nc.subscribe('d.x', { callback: (_e, m) => void got.push(m.data.length) })
  await nc.flush()
  for (let i = 0; i < 50; i++) nc.publish('d.x', new Uint8Array(20_000))
  await nc.flush()
  const half = net.connect(b.port, '127.0.0.1')
  await new Promise((r) => half.once('connect', r))
  half.write('CONNECT {}\r\nPUB d.y 100000\r\n' + 'z'.repeat(50_000))
  await sleep(200)
  t.ok(budget.held >= 100_000, `a split payload is charged while it waits (${budget.held})`)
  half.destroy()
  // MQTT: QoS 1 to a persistent session that goes away (parked), comes back, and is cleaned.
  const dev = await mqttClient(t, b.mqttUrl, { clientId: 'drift-1', clean: false })
  await dev.subscribeAsync('d/#', { qos: 1 })
  dev.end(true)
  await sleep(100)
  for (let i = 0; i < 20; i++) nc.publish('d.z', new Uint8Array(1000))
  await nc.flush()
  await sleep(100)
  t.ok(budget.held >= 20_000, `the parked session's queue is charged (${budget.held})`)
  const back = await mqttClient(t, b.mqttUrl, { clientId: 'drift-1', clean: false })
  await sleep(300)
  back.end(true)
  await sleep(100)
  const clean = await mqttClient(t, b.mqttUrl, { clientId: 'drift-1', clean: true })
  // Retained: set, then deleted.
  await clean.publishAsync('r/1', Buffer.alloc(5000), { retain: true, qos: 1 })
  await sleep(50)
  t.ok(budget.held >= 5000, 'a retained message is charged')
  await clean.publishAsync('r/1', Buffer.alloc(0), { retain: true, qos: 1 })
  clean.end(true)
  await nc.close()
  await sleep(300)
  t.equal(got.length, 50)
  t.equal(budget.held, 0, 'everything released')
})

t.test('wired into the server: a publisher feeding stuck NATS subscribers is paused, then the largest is closed', async (t) => {
  const { NatsClient } = await import('../adapters/nats/client.ts')
  const { Server } = await import('../src/server.ts')
  const { defaults } = await import('../src/options.ts')
  const { createLogger } = await import('../src/log.ts')
  const queue: (() => void)[] = []
  const host = {
    clock: 1000,
    now: () => host.clock,
    defer: (fn: () => void) => void queue.push(fn),
    every: () => ({ cancel() {} }),
  }
  const run = (): void => {
    while (queue.length) queue.shift()!()
  }
  const logs: string[] = []
  const srv = new Server({ ...defaults, port: 4222, max_memory: MiB }, host, createLogger({ level: 'info', sink: (l) => void logs.push(l) }))
  const enc = (x: string): Uint8Array => new TextEncoder().encode(x)
  const client = (w: TestWire, lines: string) => {
    const c = new NatsClient(srv, srv.admit(), w)
    c.data(enc(`CONNECT {"verbose":false}\r\n${lines}`))
    return c
  }
  const bigW = wire()
  const smallW = wire()
  const fastW = wire()
  const pubW = wire()
  const big = client(bigW, 'SUB x 1\r\n')
  const small = client(smallW, 'SUB x 1\r\n')
  const fast = client(fastW, 'SUB x 1\r\n')
  const pub = client(pubW, '')
  run()
  bigW.accept = false // stops reading
  const body = 'p'.repeat(1000)
  let sent = 0
  for (let round = 0; round < 400 && !pubW.paused; round++) {
    if (round === 50) smallW.accept = false // stops reading later: holds less
    pub.data(enc(`PUB x ${body.length}\r\n${body}\r\n`.repeat(10)))
    sent += 10
    run()
  }
  t.ok(pubW.paused, `the publisher is paused (after ${sent} messages)`)
  t.ok(srv.budget.held > srv.budget.high, 'over 3/4 of max_memory')
  t.equal(srv.budget.pauses, 1)
  t.notOk(fastW.paused || bigW.paused || smallW.paused, 'only the publisher')
  t.match(logs.join('\n'), /Memory budget: \d+ bytes held for messages, over 3\/4 of max_memory/)
  srv.tick()
  run()
  t.equal(srv.budget.closes, 0, 'not within the grace period')
  host.clock += 1000
  srv.tick()
  run()
  t.ok(big.done && bigW.destroyed, 'the subscriber holding the most is closed at once')
  t.notOk(small.done, 'closing the largest was enough')
  t.equal(srv.counters.slow_consumers, 1, 'counted as a slow consumer')
  t.equal(srv.budget.closes, 1)
  t.match(logs.join('\n'), /Slow Consumer Detected: Max Memory of 1048576 Exceeded/)
  t.notOk(pubW.paused, 'the publisher runs again')
  t.notOk(fast.done)
  t.notOk(pub.done)
  t.equal(fastW.text.split('MSG x 1 1000').length - 1, sent, 'the reading subscriber got every message')
  t.equal(srv.budget.status().mem_closes, 1)
})

t.test('the guarded host the server gets still offers collect() (the budget asks for it after closes)', async (t) => {
  const { guardHost } = await import('../targets/runtime.ts')
  const log = { warn() {}, info() {}, error() {}, debug() {} } as unknown as Parameters<typeof guardHost>[1]
  let collected = 0
  const g = guardHost({ now: () => 0, defer: (fn) => fn(), every: () => ({ cancel() {} }), collect: () => collected++ }, log)
  t.type(g.collect, 'function', 'collect is passed through')
  g.collect?.()
  t.equal(collected, 1, 'and reaches the runtime')
  t.equal(guardHost({ now: () => 0, defer: (fn) => fn(), every: () => ({ cancel() {} }) }, log).collect, undefined, 'absent where the runtime has none')
})

t.test('QoS 1 messages an MQTT connection drops (permissions change) give their bytes back to the budget', async (t) => {
  const { MqttConn } = await import('../adapters/mqtt/conn.ts')
  const { Server } = await import('../src/server.ts')
  const { defaults } = await import('../src/options.ts')
  const { createLogger } = await import('../src/log.ts')
  const queue: (() => void)[] = []
  const host = { now: () => 1000, defer: (fn: () => void) => void queue.push(fn), every: () => ({ cancel() {} }) }
  const run = (): void => {
    while (queue.length) queue.shift()!()
  }
  const srv = new Server({ ...defaults, port: 4222, max_memory: 64 * MiB }, host, createLogger({ level: 'error', sink: () => {} }))
  const w = wire()
  const c = new MqttConn(srv, srv.admit(), w)
  c.data(new Uint8Array([0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 60, 0, 1, 0x61])) // CONNECT, client id "a"
  run()
  t.ok(c.connected, 'connected')
  c.maxInflight = 2 // two in flight, the rest waiting
  const before = srv.budget.held
  for (let i = 0; i < 5; i++) c.enqueue({ topic: 't', payload: Buffer.alloc(100), qos: 1, retain: false, released: false })
  run()
  t.equal(c.held, 500)
  t.equal(srv.budget.held - before, 500, 'charged while held')
  t.equal(c.dropHeld(() => false), 5, 'all dropped')
  run()
  t.equal(c.held, 0)
  t.equal(srv.budget.held - before, 0, 'released: the budget holds none of them any more')
})
