// The soak: `npm run soak -- --minutes N [--devices D] [--json]`.
//
// Runs the bundle (dist/sprig.js) under a steady, realistic load for N minutes:
//   - D MQTT devices on raw sockets (MQTT 3.1.1): each publishes telemetry every 10 s, half at
//     QoS 0 and half at QoS 1, pings at its keepalive; 10% reconnect about once a minute, 10%
//     keep a persistent session (clean session 0) and receive numbered QoS 1 commands, also
//     while they are away;
//   - a collector subscribed at QoS 1 to every device's QoS 1 telemetry, and a commander
//     sending the commands; every QoS 1 message is numbered and must arrive (losses must be 0);
//   - NATS services answering requests in a queue group, and requesters calling them;
//   - an uplink to a real nats-server, restarted every few minutes, with a service on the hub
//     side that a sprig-side client calls.
// Every 5 s it samples sprig's RSS (/proc) and /varz (event-loop lag, drop counters).
// Targets: flat RSS after warm-up, event-loop lag p99 < 50 ms, no crash, no QoS 1 loss.
// Prints a table (or JSON with --json) and exits 1 when a target is missed. test/soak.test.ts
// runs a two-minute version in CI.

import net from 'node:net'
import { Buffer } from 'node:buffer'
import { generate, parser as newParser, type Packet, type IPublishPacket } from 'mqtt-packet'
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node'
import { startSprig, type Sprig } from '../fuzz/broker.ts'
import { startHub, type Hub } from '../helpers/hub.ts'

export interface SoakOptions {
  seconds: number
  devices: number
  /** Seconds between hub restarts. */
  hubRestart?: number
  /** Seconds of warm-up left out of the RSS slope and lag figures. */
  warmup?: number
  runtime?: 'node' | 'bun' | 'deno'
  log?: (line: string) => void
}

export interface Sample {
  t: number
  rssMB: number
  lagP99: number
  lagMax: number
  connections: number
}

export interface SoakResult {
  ok: boolean
  seconds: number
  devices: number
  missed: string[]
  crash: string | null
  rss: { startMB: number; warmMB: number; endMB: number; maxMB: number; slopeMBPerMin: number; growthMB: number; allowedMB: number }
  /** p99Ms: over every 20 ms sample after warm-up (from the /varz histogram); overFiftyPct: share of samples over 50 ms. */
  lag: { p99Ms: number; overFiftyPct: number; p99MaxMs: number; maxMs: number }
  qos1: { telemetrySent: number; telemetryAcked: number; telemetryLost: number; commandsAcked: number; commandsLost: number; lostExamples: string[] }
  mqtt: { connects: number; reconnects: number; published: number; connectFailures: number }
  nats: { requests: number; ok: number; failed: number; p99Ms: number }
  uplink: { hubRestarts: number; requests: number; ok: number; failed: number; okAfterLastRestart: number }
  drops: Record<string, number>
  samples: Sample[]
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const TELEMETRY_S = 10
const KEEPALIVE_S = 15
const COMMAND_S = 15

// --- a raw MQTT device -------------------------------------------------------------------------

interface DeviceOpts {
  id: string
  port: number
  qos: 0 | 1
  persistent: boolean
  /** Subscribe to these at QoS 1 on (first) connect. */
  subscribe?: string[]
  onMessage?: (p: IPublishPacket) => void
}

class Device {
  sock: net.Socket | null = null
  connected = false
  private nextPid = 1
  /** QoS 1 publishes waiting for PUBACK: packet id -> what to report when acked. */
  readonly inflight = new Map<number, () => void>()
  private subscribed = false
  closedByUs = false
  connects = 0
  failures = 0

  constructor(readonly o: DeviceOpts) {}

  private connecting: Promise<boolean> | null = null

  /** Connects, unless already connected or connecting (one socket per client id at a time). */
  connect(): Promise<boolean> {
    if (this.connected) return Promise.resolve(true)
    this.connecting ??= this.open().finally(() => (this.connecting = null))
    return this.connecting
  }

  private open(): Promise<boolean> {
    return new Promise((resolve) => {
      this.closedByUs = false
      const s = net.connect(this.o.port, '127.0.0.1')
      this.sock = s
      const p = newParser({ protocolVersion: 4 })
      let settled = false
      const done = (ok: boolean): void => {
        if (settled) return
        settled = true
        if (!ok) this.failures++
        resolve(ok)
      }
      p.on('packet', (pk: Packet) => this.packet(pk, done))
      p.on('error', () => s.destroy())
      s.on('data', (d) => p.parse(d))
      s.on('error', () => done(false))
      s.on('close', () => {
        this.connected = false
        this.inflight.clear() // not acked: not counted either way
        done(false)
      })
      s.setNoDelay(true)
      s.write(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: this.o.id, clean: !this.o.persistent, keepalive: KEEPALIVE_S }))
      setTimeout(() => done(false), 10_000)
    })
  }

  private packet(pk: Packet, done: (ok: boolean) => void): void {
    switch (pk.cmd) {
      case 'connack':
        if (pk.returnCode !== 0) return void this.sock?.destroy()
        this.connected = true
        this.connects++
        if (this.o.subscribe && (!this.subscribed || !this.o.persistent || !pk.sessionPresent)) {
          this.subscribed = true
          this.sock!.write(generate({ cmd: 'subscribe', messageId: this.pid(), subscriptions: this.o.subscribe.map((topic) => ({ topic, qos: 1 })) }))
        }
        done(true)
        break
      case 'puback': {
        const f = this.inflight.get(pk.messageId!)
        this.inflight.delete(pk.messageId!)
        f?.()
        break
      }
      case 'publish':
        this.o.onMessage?.(pk)
        if (pk.qos === 1) this.sock?.write(generate({ cmd: 'puback', messageId: pk.messageId }))
        break
    }
  }

  private pid(): number {
    const id = this.nextPid
    this.nextPid = (this.nextPid % 65535) + 1
    return id
  }

  /** Publishes; for QoS 1 calls `acked` on PUBACK. False when not connected. */
  publish(topic: string, payload: string, qos: 0 | 1, acked?: () => void): boolean {
    if (!this.connected || !this.sock) return false
    const messageId = qos === 1 ? this.pid() : undefined
    if (messageId !== undefined && acked) this.inflight.set(messageId, acked)
    this.sock.write(generate({ cmd: 'publish', topic, payload: Buffer.from(payload), qos, dup: false, retain: false, messageId }))
    return true
  }

  ping(): void {
    if (this.connected) this.sock?.write(generate({ cmd: 'pingreq' }))
  }

  async disconnect(): Promise<void> {
    this.closedByUs = true
    if (this.connected) this.sock?.write(generate({ cmd: 'disconnect' }))
    this.sock?.end()
    await sleep(50)
    this.sock?.destroy()
  }
}

// --- the run -----------------------------------------------------------------------------------

export async function soak(o: SoakOptions): Promise<SoakResult> {
  const log = o.log ?? (() => {})
  const warmup = o.warmup ?? Math.max(30, Math.round(o.seconds * 0.25))
  const hubRestart = o.hubRestart ?? (o.seconds <= 180 ? Math.round(o.seconds / 2) : 180)
  const hub: Hub = await startHub({ name: 'soakhub' })
  const sprig: Sprig = await startSprig({
    runtime: o.runtime,
    config: { leafnodes: { remotes: [{ urls: [hub.leafUrl] }], reconnect: '1s', reconnect_max: '2s' } },
  })
  const res: SoakResult = {
    ok: false,
    seconds: o.seconds,
    devices: o.devices,
    missed: [],
    crash: null,
    rss: { startMB: 0, warmMB: 0, endMB: 0, maxMB: 0, slopeMBPerMin: 0, growthMB: 0, allowedMB: 0 },
    lag: { p99Ms: 0, overFiftyPct: 0, p99MaxMs: 0, maxMs: 0 },
    qos1: { telemetrySent: 0, telemetryAcked: 0, telemetryLost: 0, commandsAcked: 0, commandsLost: 0, lostExamples: [] },
    mqtt: { connects: 0, reconnects: 0, published: 0, connectFailures: 0 },
    nats: { requests: 0, ok: 0, failed: 0, p99Ms: 0 },
    uplink: { hubRestarts: 0, requests: 0, ok: 0, failed: 0, okAfterLastRestart: 0 },
    drops: {},
    samples: [],
  }
  sprig.onExit((how) => (res.crash = `sprig ${how}\n${sprig.tail()}`))
  const start = Date.now()
  const until = start + o.seconds * 1000
  const running = (): boolean => res.crash === null && Date.now() < until
  const timers: NodeJS.Timeout[] = []
  const every = (ms: number, fn: () => void): void => void timers.push(setInterval(fn, ms))

  // QoS 1 bookkeeping: acked by sprig -> must arrive. Keys "device:seq".
  const telemetryAcked = new Set<string>()
  const telemetryGot = new Set<string>()
  const commandsAcked = new Set<string>()
  const commandsGot = new Set<string>()

  const collector = new Device({
    id: 'soak-collector',
    port: sprig.mqttPort,
    qos: 1,
    persistent: false,
    subscribe: ['soak/tele/+/q1'],
    onMessage: (p) => telemetryGot.add(p.payload.toString()),
  })
  if (!(await collector.connect())) throw new Error('collector could not connect')
  const commander = new Device({ id: 'soak-commander', port: sprig.mqttPort, qos: 1, persistent: false })
  if (!(await commander.connect())) throw new Error('commander could not connect')
  await sleep(300) // the collector's SUBACK

  // Devices: every tenth keeps a session and gets commands, every tenth (others) reconnects.
  const devices: Device[] = []
  for (let i = 0; i < o.devices; i++) {
    const id = `soak-dev-${i}`
    const persistent = i % 10 === 3
    devices.push(new Device({ id, port: sprig.mqttPort, qos: i % 2 === 0 ? 0 : 1, persistent, subscribe: persistent ? [`soak/cmd/${id}`] : undefined, onMessage: (p) => commandsGot.add(p.payload.toString()) }))
  }
  for (let i = 0; i < devices.length; i += 50) {
    await Promise.all(devices.slice(i, i + 50).map((d) => d.connect()))
    await sleep(20)
  }
  log(`${devices.filter((d) => d.connected).length}/${devices.length} devices connected`)

  // Telemetry, spread over the period; keepalive pings.
  const seqs = new Map<Device, number>()
  devices.forEach((d, i) => {
    const offset = ((i * 7919) % (TELEMETRY_S * 1000)) | 0
    timers.push(
      setTimeout(() => {
        const send = (): void => {
          if (!running()) return
          const n = (seqs.get(d) ?? 0) + 1
          const body = `${d.o.id}:${n}`
          const topic = `soak/tele/${d.o.id}/q${d.o.qos}`
          const ok = d.publish(topic, body, d.o.qos, d.o.qos === 1 ? () => telemetryAcked.add(body) : undefined)
          if (ok) {
            seqs.set(d, n)
            res.mqtt.published++
            if (d.o.qos === 1) res.qos1.telemetrySent++
          }
        }
        send()
        timers.push(setInterval(send, TELEMETRY_S * 1000))
        timers.push(setInterval(() => d.ping(), KEEPALIVE_S * 1000))
      }, offset),
    )
  })

  // Reconnecting devices: about once a minute each, spread out.
  const movers = devices.filter((_, i) => i % 10 === 5 || i % 10 === 3)
  if (movers.length > 0) {
    let k = 0
    every(Math.max(50, Math.floor(60_000 / movers.length)), () => {
      if (!running()) return
      const d = movers[k++ % movers.length]!
      res.mqtt.reconnects++
      void d.disconnect().then(async () => {
        await sleep(d.o.persistent ? 3000 : 500) // persistent ones stay away a while: commands queue
        if (running()) await d.connect() // after the end, the final round brings it back
      })
    })
  }

  // Commands to persistent devices, numbered, QoS 1 from the commander.
  const persistent = devices.filter((d) => d.o.persistent)
  const cmdSeq = new Map<Device, number>()
  if (persistent.length > 0) {
    let k = 0
    every(Math.max(20, Math.floor((COMMAND_S * 1000) / persistent.length)), () => {
      if (!running()) return
      const d = persistent[k++ % persistent.length]!
      const n = (cmdSeq.get(d) ?? 0) + 1
      cmdSeq.set(d, n)
      const body = `cmd:${d.o.id}:${n}`
      commander.publish(`soak/cmd/${d.o.id}`, body, 1, () => commandsAcked.add(body))
    })
  }

  // NATS services: responders in a queue group, requesters calling them.
  const ncs: NatsConnection[] = []
  for (let i = 0; i < 4; i++) {
    const nc = await natsConnect({ servers: `127.0.0.1:${sprig.port}`, name: `soak-svc-${i}`, reconnect: false })
    nc.subscribe('soak.svc.echo', { queue: 'svc', callback: (_e, m) => void m.respond(m.data) })
    ncs.push(nc)
  }
  const natsLat: number[] = []
  for (let i = 0; i < 4; i++) {
    const nc = await natsConnect({ servers: `127.0.0.1:${sprig.port}`, name: `soak-req-${i}`, reconnect: false })
    ncs.push(nc)
    every(250, () => {
      if (!running()) return
      const t0 = performance.now()
      res.nats.requests++
      nc.request('soak.svc.echo', `r${i}`, { timeout: 5000 }).then(
        () => {
          res.nats.ok++
          natsLat.push(performance.now() - t0)
        },
        () => res.nats.failed++,
      )
    })
  }

  // The uplink: a service on the hub, called from a sprig-side client; the hub restarts.
  const hubSide = await natsConnect({ servers: hub.url, name: 'soak-hub-svc', reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 250 })
  hubSide.subscribe('soak.hub.echo', { callback: (_e, m) => void m.respond(m.data) })
  const caller = await natsConnect({ servers: `127.0.0.1:${sprig.port}`, name: 'soak-hub-caller', reconnect: false })
  ncs.push(caller)
  let lastRestart = 0
  every(500, () => {
    if (!running()) return
    res.uplink.requests++
    caller.request('soak.hub.echo', 'x', { timeout: 2000 }).then(
      () => {
        res.uplink.ok++
        if (lastRestart > 0) res.uplink.okAfterLastRestart++
      },
      () => res.uplink.failed++,
    )
  })
  let restarting = false
  every(hubRestart * 1000, () => {
    if (!running() || restarting) return
    restarting = true
    log('restarting the hub')
    void (async () => {
      await hub.stop()
      await sleep(1000)
      await hub.restart()
      res.uplink.hubRestarts++
      res.uplink.okAfterLastRestart = 0
      lastRestart = Date.now()
      restarting = false
    })()
  })

  // Samples. The lag histogram is cumulative: the one read first after warm-up is the baseline.
  let histWarm: Record<string, number> | null = null
  let histEnd: Record<string, number> | null = null
  const sample = async (): Promise<void> => {
    const rssMB = sprig.rss() / 1048576
    let lagP99 = 0
    let lagMax = 0
    let conns = 0
    try {
      const v = (await (await fetch(`http://127.0.0.1:${sprig.httpPort}/varz`, { signal: AbortSignal.timeout(5000) })).json()) as Record<string, unknown>
      const el = (v.sprig as { event_loop?: { lag_p99_ms: number; lag_max_ms: number; lag_histogram: Record<string, number> } } | undefined)?.event_loop
      lagP99 = el?.lag_p99_ms ?? 0
      lagMax = el?.lag_max_ms ?? 0
      if (el?.lag_histogram) {
        if (histWarm === null && Date.now() - start >= warmup * 1000) histWarm = el.lag_histogram
        histEnd = el.lag_histogram
      }
      conns = Number(v.connections ?? 0)
      res.drops = drops(v)
    } catch {
      // counted by the lag figures of the next sample, or by the crash
    }
    res.samples.push({ t: Math.round((Date.now() - start) / 1000), rssMB: Math.round(rssMB * 10) / 10, lagP99, lagMax, connections: conns })
    log(`t=${Math.round((Date.now() - start) / 1000)}s rss ${rssMB.toFixed(1)} MB, lag p99 ${lagP99} ms, conns ${conns}, qos1 acked ${telemetryAcked.size} got ${telemetryGot.size}, cmds ${commandsAcked.size}/${commandsGot.size}, nats ${res.nats.ok}/${res.nats.requests}, uplink ${res.uplink.ok}/${res.uplink.requests}`)
  }
  await sample()
  every(5000, () => void sample())

  while (running()) await sleep(250)
  for (const t of timers) {
    clearInterval(t)
    clearTimeout(t)
  }
  if (res.crash === null) {
    await sample()
    // Bring every persistent device back so its queued commands are delivered; let QoS 1 settle.
    await Promise.all(persistent.filter((d) => !d.connected).map((d) => d.connect()))
    const settle = Date.now() + 10_000
    const missing = (): number => [...telemetryAcked].filter((k) => !telemetryGot.has(k)).length + [...commandsAcked].filter((k) => !commandsGot.has(k)).length
    while (missing() > 0 && Date.now() < settle) await sleep(200)
  }

  // Figures.
  const lostT = [...telemetryAcked].filter((k) => !telemetryGot.has(k))
  const lostC = [...commandsAcked].filter((k) => !commandsGot.has(k))
  res.qos1.telemetryAcked = telemetryAcked.size
  res.qos1.telemetryLost = lostT.length
  res.qos1.commandsAcked = commandsAcked.size
  res.qos1.commandsLost = lostC.length
  res.qos1.lostExamples = [...lostT, ...lostC].slice(0, 10)
  res.mqtt.connects = devices.reduce((n, d) => n + d.connects, 0)
  res.mqtt.connectFailures = devices.reduce((n, d) => n + d.failures, 0)
  natsLat.sort((a, b) => a - b)
  res.nats.p99Ms = natsLat.length ? Math.round(natsLat[Math.floor(natsLat.length * 0.99)]!) : 0
  const s = res.samples
  const warm = s.filter((x) => x.t >= warmup)
  res.rss.startMB = s[0]?.rssMB ?? 0
  res.rss.warmMB = warm[0]?.rssMB ?? 0
  res.rss.endMB = s.at(-1)?.rssMB ?? 0
  res.rss.maxMB = Math.max(0, ...s.map((x) => x.rssMB))
  res.rss.slopeMBPerMin = Math.round(slope(warm.map((x) => [x.t / 60, x.rssMB])) * 100) / 100
  const windowMin = warm.length > 1 ? (warm.at(-1)!.t - warm[0]!.t) / 60 : 0
  res.rss.growthMB = Math.round(res.rss.slopeMBPerMin * windowMin * 10) / 10
  // Flat: the trend over the measured window stays within 10% of the warm RSS (at least 10 MB: GC noise).
  res.rss.allowedMB = Math.round(Math.max(10, res.rss.warmMB * 0.1))
  res.lag.p99MaxMs = Math.max(0, ...warm.map((x) => x.lagP99))
  if (histWarm && histEnd) Object.assign(res.lag, lagFigures(histWarm, histEnd))
  res.lag.maxMs = Math.max(0, ...warm.map((x) => x.lagMax))

  if (res.crash !== null) res.missed.push('no crash')
  if (res.qos1.telemetryLost + res.qos1.commandsLost > 0) res.missed.push('QoS 1 losses = 0')
  if (!histWarm || !histEnd) res.missed.push('event-loop lag from /varz')
  else if (res.lag.overFiftyPct >= 1) res.missed.push('event-loop lag p99 < 50 ms')
  if (res.rss.growthMB > res.rss.allowedMB) res.missed.push(`flat RSS (grew ${res.rss.growthMB} MB after warm-up, allowed ${res.rss.allowedMB})`)
  if (warm.length < 2) res.missed.push('enough samples after warm-up')
  res.ok = res.missed.length === 0

  await Promise.allSettled([...devices, collector, commander].map((d) => d.disconnect()))
  await Promise.allSettled([...ncs.map((n) => n.close()), hubSide.close()])
  await sprig.stop()
  await hub.close()
  return res
}

/** p99 (interpolated in its bucket) and the share over 50 ms, between two cumulative histograms. */
function lagFigures(a: Record<string, number>, b: Record<string, number>): { p99Ms: number; overFiftyPct: number } {
  const keys = Object.keys(b)
  const edge = (k: string): number => (k === 'over' ? 10_000 : Number(k.slice(3)))
  const d = keys.map((k) => (b[k] ?? 0) - (a[k] ?? 0))
  const total = d.reduce((x, y) => x + y, 0)
  if (total === 0) return { p99Ms: 0, overFiftyPct: 0 }
  const over50 = keys.reduce((n, k, i) => n + (edge(k) > 50 ? d[i]! : 0), 0)
  let cum = 0
  let p99 = 0
  for (let i = 0; i < keys.length; i++) {
    const before = cum
    cum += d[i]!
    if (cum >= 0.99 * total) {
      const lo = i === 0 ? 0 : edge(keys[i - 1]!)
      p99 = lo + ((0.99 * total - before) / Math.max(1, d[i]!)) * (edge(keys[i]!) - lo)
      break
    }
  }
  return { p99Ms: Math.round(p99 * 10) / 10, overFiftyPct: Math.round((over50 / total) * 10000) / 100 }
}

/** Least-squares slope of y over x. */
function slope(pts: [number, number][]): number {
  const n = pts.length
  if (n < 2) return 0
  const mx = pts.reduce((a, p) => a + p[0], 0) / n
  const my = pts.reduce((a, p) => a + p[1], 0) / n
  let num = 0
  let den = 0
  for (const [x, y] of pts) {
    num += (x - mx) * (y - my)
    den += (x - mx) ** 2
  }
  return den === 0 ? 0 : num / den
}

/** Every counter in /varz that counts something dropped or refused, by its dotted path. */
function drops(v: unknown, path = '', out: Record<string, number> = {}): Record<string, number> {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) {
      const p = path ? `${path}.${k}` : k
      if (typeof x === 'number' && /drop|slow_consumer|refused|overflow|evict|lost|discard/.test(k)) out[p] = x
      else drops(x, p, out)
    }
  }
  return out
}

export function table(r: SoakResult): string {
  const row = (a: string, b: string | number, c = ''): string => `  ${a.padEnd(40)} ${String(b).padEnd(24)} ${c}`
  const mark = (ok: boolean): string => (ok ? 'ok' : 'MISSED')
  const lines = [
    `soak: ${r.seconds} s, ${r.devices} MQTT devices: ${r.ok ? 'all targets met' : `MISSED: ${r.missed.join('; ')}`}`,
    row('what', 'value', 'target'),
    row('crash', r.crash ? 'yes' : 'none', mark(r.crash === null)),
    row('RSS start / warm / end / max (MB)', `${r.rss.startMB} / ${r.rss.warmMB} / ${r.rss.endMB} / ${r.rss.maxMB}`),
    row('RSS slope after warm-up', `${r.rss.slopeMBPerMin} MB/min`, `${mark(r.rss.growthMB <= r.rss.allowedMB)} (trend ${r.rss.growthMB} MB, allowed ${r.rss.allowedMB})`),
    row('event-loop lag p99 after warm-up', `${r.lag.p99Ms} ms (${r.lag.overFiftyPct}% > 50 ms)`, `${mark(r.lag.overFiftyPct < 1)} (< 50 ms; worst minute p99 ${r.lag.p99MaxMs}, max ${r.lag.maxMs} ms)`),
    row('QoS 1 telemetry acked / lost', `${r.qos1.telemetryAcked} / ${r.qos1.telemetryLost}`, mark(r.qos1.telemetryLost === 0)),
    row('QoS 1 commands acked / lost', `${r.qos1.commandsAcked} / ${r.qos1.commandsLost}`, mark(r.qos1.commandsLost === 0)),
    row('MQTT connects / reconnects / failed', `${r.mqtt.connects} / ${r.mqtt.reconnects} / ${r.mqtt.connectFailures}`),
    row('MQTT publishes', r.mqtt.published),
    row('NATS requests ok / failed, p99', `${r.nats.ok} / ${r.nats.failed}, ${r.nats.p99Ms} ms`),
    row('hub restarts; uplink calls ok / failed', `${r.uplink.hubRestarts}; ${r.uplink.ok} / ${r.uplink.failed}`, `${r.uplink.okAfterLastRestart} ok since the last restart`),
    row('drops (from /varz)', Object.entries(r.drops).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(', ') || 'none'),
    '  RSS over time (s: MB):',
    '    ' + r.samples.map((x) => `${x.t}:${x.rssMB}`).join(' '),
  ]
  if (r.qos1.lostExamples.length) lines.push(`  lost QoS 1 messages (first ten): ${r.qos1.lostExamples.join(' ')}`)
  if (r.crash) lines.push('  crash:', ...r.crash.split('\n').slice(-20).map((l) => `    ${l}`))
  return lines.join('\n')
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`)
  return i > 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt
}

if (process.argv[1]?.endsWith('soak/soak.ts')) {
  if (process.argv.includes('--help')) {
    console.log('usage: npm run soak -- [--minutes N] [--devices D] [--hub-restart SECONDS] [--runtime node|bun|deno] [--json]')
    process.exit(0)
  }
  const r = await soak({
    seconds: Math.round(Number(arg('minutes', '10')) * 60),
    devices: Number(arg('devices', '3000')),
    hubRestart: process.argv.includes('--hub-restart') ? Number(arg('hub-restart', '180')) : undefined,
    runtime: arg('runtime', 'node') as SoakOptions['runtime'],
    log: (l) => console.error(l),
  })
  console.log(process.argv.includes('--json') ? JSON.stringify(r, null, 2) : table(r))
  process.exit(r.ok ? 0 : 1)
}
