// The socket-level fuzzer: `npm run fuzz -- --minutes N [--seed S] [--runtime node|bun|deno]`.
//
// Starts the bundle with NATS, MQTT and monitoring listeners on loopback and, for the given
// time, hits every listener with mutated real frames, garbage, valid frames split into random
// writes, and slowloris connections (a byte every second or two), a bounded number at a time.
// Meanwhile canary clients (a NATS request/reply pair, an MQTT QoS 1 publisher/subscriber pair)
// check every second that other clients are unaffected. A crash (the process exits) or a
// canary stall ends the run with a report of the listener and the exact bytes of the last
// inputs sent (hex); after a crash each recent input is replayed alone against a fresh broker
// to name the one that kills it. Exit code 1 on a crash or stall. Also used by
// test/fuzz-socket.test.ts for a short fixed-seed run.

import net from 'node:net'
import { Buffer } from 'node:buffer'
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node'
import mqtt, { type MqttClient } from 'mqtt'
import { startSprig, type Sprig } from './broker.ts'
import { mutate, mutateField, rand, session, type Listener, type Rand } from './corpus.ts'

export interface FuzzOptions {
  seconds: number
  seed: number
  runtime?: 'node' | 'bun' | 'deno'
  /** Fuzzing connections open at once (besides slowloris ones). */
  workers?: number
  /** Slowloris connections open at once at most. */
  slow?: number
  /** Listeners to attack (default: all three); the canaries run regardless. */
  listeners?: Listener[]
  /** A canary message later than this is a stall. */
  stallMs?: number
  log?: (line: string) => void
}

export interface Input {
  listener: Listener
  kind: string
  /** Everything written on that connection, in order. */
  hex: string
  at: number
}

export interface FuzzResult {
  ok: boolean
  seed: number
  seconds: number
  connections: Record<Listener, number>
  slowloris: { opened: number; closedByServer: number }
  bytes: number
  canary: { nats: CanaryStats; mqtt: CanaryStats }
  maxRssMB: number
  crash: null | { how: string; listener: Listener | 'unknown'; culprit: Input | null; recent: Input[]; log: string }
  stalls: { canary: string; seq: number; waitedMs: number; recent: Input[] }[]
}

interface CanaryStats {
  sent: number
  received: number
  worstMs: number
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export async function fuzz(o: FuzzOptions): Promise<FuzzResult> {
  const log = o.log ?? (() => {})
  const r = rand(o.seed)
  const workers = o.workers ?? 6
  const maxSlow = o.slow ?? 20
  const stallMs = o.stallMs ?? 5000
  const sprig = await startSprig({ runtime: o.runtime, config: { max_payload: 65536, mqtt: { max_ack_pending: 64 } } })
  const res: FuzzResult = {
    ok: true,
    seed: o.seed,
    seconds: o.seconds,
    connections: { nats: 0, mqtt: 0, http: 0 },
    slowloris: { opened: 0, closedByServer: 0 },
    bytes: 0,
    canary: { nats: { sent: 0, received: 0, worstMs: 0 }, mqtt: { sent: 0, received: 0, worstMs: 0 } },
    maxRssMB: 0,
    crash: null,
    stalls: [],
  }
  const recent: Input[] = []
  const remember = (i: Input): void => {
    recent.push(i)
    if (recent.length > 60) recent.shift()
  }
  let stop = false
  let crashed: string | null = null
  sprig.onExit((how) => {
    crashed = how
    stop = true
  })
  const portOf = (l: Listener): number => (l === 'nats' ? sprig.port : l === 'mqtt' ? sprig.mqttPort : sprig.httpPort)

  const canaries = await startCanaries(sprig, res, stallMs, (name, seq, waited) => {
    res.stalls.push({ canary: name, seq, waitedMs: waited, recent: recent.slice(-10) })
    stop = true
  }).catch(async (e: unknown) => {
    await sprig.stop()
    throw e
  })

  const targets: Listener[] = o.listeners ?? ['nats', 'mqtt', 'mqtt', 'http']
  const until = Date.now() + o.seconds * 1000
  let slowOpen = 0
  const tasks: Promise<void>[] = []
  for (let w = 0; w < workers; w++) {
    const wr = rand(o.seed * 31 + w + 1)
    tasks.push(
      (async () => {
        while (!stop && Date.now() < until) {
          const listener = wr.pick<Listener>(targets)
          if (wr() < 0.05 && slowOpen < maxSlow) {
            slowOpen++
            res.slowloris.opened++
            void slowloris(portOf(listener), listener, wr, until, () => !stop).then((closed) => {
              slowOpen--
              if (closed) res.slowloris.closedByServer++
            })
            continue
          }
          const { kind, writes } = attack(listener, wr)
          const input: Input = { listener, kind, hex: Buffer.concat(writes).toString('hex'), at: Date.now() }
          remember(input)
          res.connections[listener]++
          res.bytes += writes.reduce((n, x) => n + x.length, 0)
          await send(portOf(listener), writes, wr, kind === 'split')
        }
      })(),
    )
  }
  const sampler = setInterval(() => {
    res.maxRssMB = Math.max(res.maxRssMB, Math.round(sprig.rss() / 1048576))
    log(`${new Date().toISOString()} conns nats ${res.connections.nats} mqtt ${res.connections.mqtt} http ${res.connections.http}, slowloris ${res.slowloris.opened}, canary nats ${res.canary.nats.received}/${res.canary.nats.sent} mqtt ${res.canary.mqtt.received}/${res.canary.mqtt.sent}, rss ${res.maxRssMB} MB`)
  }, 5000)
  // Poll rather than race: a crash may land between two awaits.
  while (!stop && Date.now() < until) await sleep(200)
  stop = true
  await Promise.all(tasks)
  clearInterval(sampler)
  await canaries.close()
  if (crashed !== null) {
    const last = recent.slice(-12)
    log(`sprig ${crashed}; replaying the last ${recent.length} inputs one at a time to find the one that kills it`)
    const culprit = await findCulprit(recent, o.runtime, log)
    res.stalls = [] // the canaries lost their server: the crash says it all
    res.crash = { how: crashed, listener: culprit?.listener ?? last.at(-1)?.listener ?? 'unknown', culprit, recent: last, log: sprig.tail() }
  }
  await sprig.stop()
  res.ok = res.crash === null && res.stalls.length === 0
  return res
}

/** What to send on one connection: a mutated session, garbage, or a valid session cut up. */
function attack(l: Listener, r: Rand): { kind: string; writes: Uint8Array[] } {
  const frames = session(l, r)
  const text = l !== 'mqtt'
  const roll = r()
  if (roll < 0.1) return { kind: 'garbage', writes: [r.bytes(1 + r.int(200))] }
  if (roll < 0.25) return { kind: 'split', writes: splitWrites(Buffer.concat(frames), r) }
  // mutate one to three frames, keep the others valid (the first is usually the handshake)
  const out = frames.slice()
  const n = 1 + r.int(3)
  for (let i = 0; i < n; i++) {
    const k = r() < 0.3 ? 0 : r.int(out.length)
    const field = r() < 0.3 ? mutateField(out[k]!, r, l) : null
    if (field !== null) out[k] = field
    else for (let m = 1 + r.int(3); m > 0; m--) out[k] = mutate(out[k]!, r, text)
  }
  return { kind: 'mutated', writes: r() < 0.5 ? out : splitWrites(Buffer.concat(out), r) }
}

function splitWrites(b: Uint8Array, r: Rand): Uint8Array[] {
  const out: Uint8Array[] = []
  let at = 0
  while (at < b.length) {
    const n = 1 + r.int(Math.max(1, Math.min(b.length - at, r() < 0.3 ? 3 : 64)))
    out.push(b.slice(at, at + n))
    at += n
  }
  return out
}

/** Writes the pieces (with short gaps when split), waits briefly for the server, closes. */
function send(port: number, writes: Uint8Array[], r: Rand, gaps: boolean): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    let done = false
    const finish = (): void => {
      if (done) return
      done = true
      s.destroy()
      resolve()
    }
    s.on('error', finish)
    s.on('close', finish)
    s.on('data', () => {})
    s.on('connect', async () => {
      for (const w of writes) {
        if (done) return
        s.write(w)
        if (gaps && r() < 0.3) await sleep(r.int(15))
      }
      // Give the server a moment to answer (or to close), then half of the time end politely.
      await sleep(50 + r.int(250))
      if (r() < 0.5) s.end()
      setTimeout(finish, 300)
    })
    setTimeout(finish, 5000)
  })
}

/** A connection that sends a valid start one byte at a time, every 1-2 s, until closed. */
function slowloris(port: number, l: Listener, r: Rand, until: number, alive: () => boolean): Promise<boolean> {
  const bytes = Buffer.concat(session(l, r))
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    let i = 0
    let closedByServer = false
    let timer: NodeJS.Timeout | null = null
    const tick = (): void => {
      if (!alive() || Date.now() > until || i >= bytes.length) return void s.destroy()
      s.write(bytes.subarray(i, i + 1))
      i++
      timer = setTimeout(tick, 1000 + r.int(1000))
    }
    s.on('connect', tick)
    s.on('data', () => {})
    s.on('error', () => {})
    s.on('end', () => {
      if (alive()) closedByServer = true
    })
    s.on('close', () => {
      if (timer) clearTimeout(timer)
      resolve(closedByServer)
    })
  })
}

interface Canaries {
  close(): Promise<void>
}

/**
 * A NATS request/reply pair and an MQTT QoS 1 pair, each sending a numbered message every
 * second; one that has not arrived after stallMs is a stall.
 */
async function startCanaries(s: Sprig, res: FuzzResult, stallMs: number, stalled: (name: string, seq: number, waited: number) => void): Promise<Canaries> {
  const replier: NatsConnection = await natsConnect({ servers: `127.0.0.1:${s.port}`, reconnect: false, name: 'canary-replier' })
  const requester: NatsConnection = await natsConnect({ servers: `127.0.0.1:${s.port}`, reconnect: false, name: 'canary-requester' })
  const rsub = replier.subscribe('canary.echo', { callback: (_e, m) => void m.respond(m.data) })
  await replier.flush()
  const opts = { host: '127.0.0.1', port: s.mqttPort, reconnectPeriod: 0, connectTimeout: 5000, keepalive: 30, protocolVersion: 4 as const }
  const msub: MqttClient = await mqttReady(mqtt.connect({ ...opts, clientId: 'canary-sub', clean: true }))
  const mpub: MqttClient = await mqttReady(mqtt.connect({ ...opts, clientId: 'canary-pub', clean: true }))
  await msub.subscribeAsync('canary/seq', { qos: 1 })
  // Watchers on everything, so fuzzed publishes and wills are delivered somewhere (MQTT 5 to
  // get the properties through, NATS to get MQTT messages as headers).
  const watcher: MqttClient = await mqttReady(mqtt.connect({ ...opts, protocolVersion: 5, clientId: 'canary-watch', clean: true }))
  await watcher.subscribeAsync('#', { qos: 1 })
  const nwatch: NatsConnection = await natsConnect({ servers: `127.0.0.1:${s.port}`, reconnect: false, name: 'canary-watch' })
  // The canaries' own messages reach the watchers too: one that stops seeing them was broken
  // by something relayed to it, even if its connection stays open.
  const seen = { nats: Date.now(), mqtt: Date.now() }
  const wsub = nwatch.subscribe('>', { callback: () => void (seen.nats = Date.now()) })
  watcher.on('message', () => void (seen.mqtt = Date.now()))
  const pending = new Map<number, number>()
  msub.on('message', (_t, payload) => {
    const seq = Number(payload.toString())
    const sent = pending.get(seq)
    if (sent === undefined) return
    pending.delete(seq)
    res.canary.mqtt.received++
    res.canary.mqtt.worstMs = Math.max(res.canary.mqtt.worstMs, Date.now() - sent)
  })
  let failed = false
  // A canary or watcher connection that ends: the server closed it, or what it relayed broke
  // the client's parser; either way another client was affected.
  const lost = (name: string) => (err?: unknown) => {
    if (closing || failed) return
    failed = true
    const why = err instanceof Error ? `: ${err.message.slice(0, 300)}` : ''
    stalled(`${name} connection ended${why}`, 0, 0)
  }
  let closing = false
  msub.on('close', () => lost('mqtt subscriber')())
  mpub.on('close', () => lost('mqtt publisher')())
  watcher.on('close', () => lost('mqtt watcher (subscribed to #)')())
  watcher.on('error', (e) => lost('mqtt watcher (subscribed to #)')(e))
  void replier.closed().then(lost('nats replier'))
  void requester.closed().then(lost('nats requester'))
  void nwatch.closed().then(lost('nats watcher (subscribed to >)'))
  let seq = 0
  const timer = setInterval(() => {
    if (closing || failed) return
    const n = ++seq
    const t0 = Date.now()
    res.canary.nats.sent++
    requester
      .request('canary.echo', String(n), { timeout: stallMs })
      .then((m) => {
        if (m.string() !== String(n)) throw new Error(`reply ${m.string()} for ${n}`)
        res.canary.nats.received++
        res.canary.nats.worstMs = Math.max(res.canary.nats.worstMs, Date.now() - t0)
      })
      .catch(() => {
        if (!closing && !failed) {
          failed = true
          stalled('nats request/reply', n, Date.now() - t0)
        }
      })
    res.canary.mqtt.sent++
    pending.set(n, t0)
    mpub.publish('canary/seq', String(n), { qos: 1 })
    for (const w of ['nats', 'mqtt'] as const) {
      if (Date.now() - seen[w] > stallMs && !failed) {
        failed = true
        stalled(`${w} watcher stopped receiving (what was relayed to it broke the client?)`, n, Date.now() - seen[w])
      }
    }
    for (const [k, at] of pending) {
      if (Date.now() - at > stallMs && !failed) {
        failed = true
        stalled('mqtt QoS 1', k, Date.now() - at)
      }
    }
  }, 1000)
  return {
    async close() {
      closing = true
      clearInterval(timer)
      // Let the last ones arrive before counting them lost.
      const end = Date.now() + Math.min(stallMs, 3000)
      while (pending.size > 0 && Date.now() < end) await sleep(50)
      rsub.unsubscribe()
      wsub.unsubscribe()
      await Promise.allSettled([replier.close(), requester.close(), nwatch.close(), msub.endAsync(true), mpub.endAsync(true), watcher.endAsync(true)])
    },
  }
}

function mqttReady(c: MqttClient): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c))
    c.once('error', reject)
  })
}

/**
 * Replays the inputs in their original order, one connection at a time, on a fresh broker
 * (with a watcher on '#' so wills are delivered); the one after which it dies is the culprit.
 */
async function findCulprit(inputs: Input[], runtime: FuzzOptions['runtime'], log: (l: string) => void): Promise<Input | null> {
  const s = await startSprig({ runtime })
  let dead = false
  s.onExit(() => (dead = true))
  const watcher = await mqttReady(mqtt.connect({ host: '127.0.0.1', port: s.mqttPort, reconnectPeriod: 0, clientId: 'watcher', protocolVersion: 5 })).catch(() => null)
  await watcher?.subscribeAsync('#', { qos: 1 }).catch(() => {})
  watcher?.on('error', () => {})
  try {
    for (const input of inputs) {
      const port = input.listener === 'nats' ? s.port : input.listener === 'mqtt' ? s.mqttPort : s.httpPort
      await send(port, [Buffer.from(input.hex, 'hex')], rand(1), false)
      await sleep(100)
      if (dead) {
        log(`culprit: ${input.listener} ${input.kind} ${input.hex}`)
        return input
      }
    }
    return null
  } finally {
    watcher?.end(true)
    await s.stop()
  }
}

/** The human report. */
export function report(r: FuzzResult): string {
  const lines = [
    `socket fuzz: ${r.seconds} s, seed ${r.seed}: ${r.ok ? 'OK' : 'FAILED'}`,
    `  connections: nats ${r.connections.nats}, mqtt ${r.connections.mqtt}, http ${r.connections.http}; ${r.bytes} bytes; slowloris ${r.slowloris.opened} (closed by the server: ${r.slowloris.closedByServer})`,
    `  canary nats request/reply: ${r.canary.nats.received}/${r.canary.nats.sent}, worst ${r.canary.nats.worstMs} ms`,
    `  canary mqtt QoS 1:         ${r.canary.mqtt.received}/${r.canary.mqtt.sent}, worst ${r.canary.mqtt.worstMs} ms`,
    `  max RSS: ${r.maxRssMB} MB`,
  ]
  if (r.crash) {
    lines.push(`  CRASH: sprig ${r.crash.how}; listener: ${r.crash.listener}`)
    if (r.crash.culprit) lines.push(`  input that kills it alone (${r.crash.culprit.listener}, ${r.crash.culprit.kind}): ${r.crash.culprit.hex}`)
    else lines.push('  no single input kills it alone; the last inputs sent:')
    for (const i of r.crash.recent) lines.push(`    ${i.listener} ${i.kind}: ${i.hex}`)
    lines.push('  sprig log tail:', ...r.crash.log.split('\n').slice(-15).map((l) => `    ${l}`))
  }
  for (const s of r.stalls) {
    lines.push(`  STALL: ${s.canary} #${s.seq} after ${s.waitedMs} ms; the last inputs sent:`)
    for (const i of s.recent) lines.push(`    ${i.listener} ${i.kind}: ${i.hex}`)
  }
  return lines.join('\n')
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt
}

if (process.argv[1]?.endsWith('fuzz/socket.ts')) {
  if (process.argv.includes('--help')) {
    console.log('usage: npm run fuzz -- [--minutes N] [--seed S] [--runtime node|bun|deno] [--listeners nats,mqtt,http] [--json]')
    process.exit(0)
  }
  // A client library choking on what sprig relayed must not end the fuzzer: the watchers report it.
  process.on('uncaughtException', (e) => console.error(`fuzzer: uncaught ${e.message.slice(0, 300)}`))
  process.on('unhandledRejection', (e) => console.error(`fuzzer: unhandled ${String(e).slice(0, 300)}`))
  const minutes = Number(arg('minutes', '1'))
  const seed = Number(arg('seed', String(Date.now() % 1e9)))
  const r = await fuzz({ seconds: Math.round(minutes * 60), seed, runtime: arg('runtime', 'node') as FuzzOptions['runtime'], listeners: arg('listeners', 'nats,mqtt,mqtt,http').split(',') as Listener[], log: (l) => console.error(l) })
  console.log(process.argv.includes('--json') ? JSON.stringify(r, null, 2) : report(r))
  process.exit(r.ok ? 0 : 1)
}
