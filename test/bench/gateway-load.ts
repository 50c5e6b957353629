// Gateway path rows: a reading the way it really travels. N MQTT devices publish telemetry into
// the gateway broker, which forwards it over its uplink to the cloud, where one subscriber counts
// it; and the reverse, one cloud command fanned out through the gateway to 1,000 devices.
// Three gateways, each with a cloud of its own, one at a time:
//   sprig            MQTT listener + leafnode uplink → nats-server hub (NATS subscriber)
//   nats-server gw   its MQTT listener (JetStream, temp store) + leafnode remote → the same hub
//   mosquitto bridge mosquitto bridged (telemetry/# out, cmd/# in) to a second mosquitto
// CPU seconds per million messages are taken over the rate phase only (not the device
// connects or the latency probes), for the gateway and the cloud broker separately.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import type { Addr, Metrics, MetricSpec, Scenario, ServerProcess } from './model.ts'
import { closeMqtt, connectMqtt, publishFrame, startCounting as startMqttCounting, subscribeMqtt, type MqttConn, type MqttCounter } from './mqtt-conn.ts'
import { close, connectNats, onEvent, subscribe, wake, waitUntil, type NatsConn, type Watched } from './nats-conn.ts'
import { freePort, HOST, launch, machineBusySeconds, procCpuSeconds, sleep, stop, waitReady, which, progress, warmUp } from './proc.ts'
import { combineRounds, fmtCount, fmtMB, fmtRate, fmtUs, scenarioTable, summaryTable, type Column, type RunResult } from './report.ts'

export interface GatewayBenchOpts {
  quick: boolean
  rounds: number
  /** sprig gateways: `<runtime> dist/sprig.js` and friends; ports and --leaf are added here. */
  sprigs: { name: string; cmd: string[]; version: string }[]
  tmp: string
  root: string
  /** Mosquitto settings shared with the MQTT rows (anonymous, no inflight/queue limits ...). */
  mosquittoSettings: string[]
  /** Reference gateways to run (default both): 'nats', 'mosquitto'; [] for sprig alone (profiling). */
  refs?: string[]
  /** Telemetry messages per row × this (default 1): longer rate phases, where a JIT's warm-up weighs less. */
  scale?: number
  /**
   * Before its first row each gateway carries this × a row's messages from one device, QoS 0
   * then QoS 1, unmeasured (default 1; 0: none). A gateway started once for all rows would
   * otherwise pay a JIT's compiling (background threads, counted in its CPU) in the first row.
   */
  warmup?: number
}

/** Telemetry payload: a small reading (JSON of a few fields). */
const PAYLOAD = 64
const DEVICES = [1, 100, 1000] as const
const FANOUT_DEVICES = 1000
/** Messages per telemetry row (all devices together), per QoS. */
const COUNTS = { 0: 400_000, 1: 150_000 } as const
/** Commands in the fan-out row (each reaches every device). */
const COMMANDS = 300
/** One-at-a-time probes for the latency figures. */
const PROBES = 1000
const CMD_PROBES = 20
const IDLE_MS = 5000
const STALL_MS = 15_000
/** Devices connecting at a time. */
const OPENERS = 16
const OTHER_CPU_WARN = 25

function qosWindow(n: number): number {
  // In-flight QoS 1 PUBLISHes per device: ~100 in all, at least one each.
  return Math.max(1, Math.floor(100 / n))
}

function batchOf(perDevice: number): number {
  // QoS 0 messages per write: ≥ 10 writes per device, ≤ ~1 MiB per write.
  return Math.max(1, Math.min(Math.floor((1 << 20) / (PAYLOAD + 30)), Math.floor(perDevice / 10)))
}

const TELEMETRY_IDS = DEVICES.flatMap((n) => [0, 1].map((q) => `gateway-telemetry-qos${q} x${n}`))
const FANOUT_ID = `gateway-cmd-fan-out 1x${FANOUT_DEVICES}`
export const GATEWAY_IDS = [...TELEMETRY_IDS, FANOUT_ID]

/** A counter on a cloud or device connection: frames seen and when the last read came. */
interface FrameCounter extends Watched {
  frames: number
  firstAt: number
  lastAt: number
  err: string
}

/** What a gateway row runs against. */
interface Topology {
  /** The gateway's MQTT listener (devices). */
  mqtt: Addr
  /** The cloud broker: NATS (hub) or MQTT (mosquitto). */
  cloud: { kind: 'nats' | 'mqtt'; addr: Addr }
  /** CPU seconds so far, per broker role. */
  cpu(): Record<string, number>
}

interface GwResult {
  metrics: Metrics
  /** CPU seconds per role during the rate phase. */
  cpuSecs: Record<string, number>
}

interface GatewayScenario extends Scenario {
  runGw: (t: Topology) => Promise<GwResult>
}

/** Device topics (and subjects) all of one length, so every frame of a row has one size. */
function deviceTopic(i: number): string {
  return `telemetry/d${String(i).padStart(5, '0')}`
}

// ---------------------------------------------------------------------------------------------
// Cloud side: a subscriber that counts messages (NATS MSG/HMSG or MQTT PUBLISH), parsing just
// enough to step over each frame, and a publisher for the commands.

/**
 * Switches `sock` to counting frames. `head(chunk, i)` reads frame heads from `i` on and says
 * where the head ended (`next`; -1: it goes on in the next chunk, kept by `head` itself), how
 * many body bytes follow it (`body`, skipped here, across reads) and whether it counts.
 */
function countFrames(sock: NatsConn['sock'], head: (chunk: Buffer, i: number) => { next: number; body: number; counts: boolean }): FrameCounter {
  const k: FrameCounter = { frames: 0, firstAt: 0, lastAt: 0, err: '', closed: false, lastData: performance.now() }
  let skip = 0
  sock.removeAllListeners('data')
  sock.on('close', () => (k.closed = true))
  sock.on('data', (chunk: Buffer) => {
    const now = performance.now()
    k.lastData = now
    const n = chunk.length
    let i = 0
    let got = 0
    while (i < n) {
      if (skip > 0) {
        const take = Math.min(skip, n - i)
        skip -= take
        i += take
        continue
      }
      const h = head(chunk, i)
      if (h.next < 0) break
      i = h.next
      skip = h.body
      if (h.counts) got++
    }
    if (got) {
      if (!k.frames) k.firstAt = now
      k.frames += got
      k.lastAt = now
    }
    wake()
  })
  return k
}

/** A NATS connection switched to counting every MSG/HMSG (any subject, with or without headers). */
function countNats(c: NatsConn): FrameCounter {
  let partial = ''
  const k = countFrames(c.sock, (chunk, i) => {
    const lf = chunk.indexOf(0x0a, i)
    if (lf < 0) {
      partial += chunk.toString('latin1', i)
      return { next: -1, body: 0, counts: false }
    }
    const line = partial + chunk.toString('latin1', i, lf > i && chunk[lf - 1] === 0x0d ? lf - 1 : lf)
    partial = ''
    const op = line.charCodeAt(0)
    // MSG <subj> <sid> [reply] <size> / HMSG ... <hdr> <total>: the last number is what follows.
    if (op === 0x4d || op === 0x48) return { next: lf + 1, body: Number(line.slice(line.lastIndexOf(' ') + 1)) + 2, counts: true }
    if (line === 'PING') c.sock.write('PONG\r\n')
    else if (line.startsWith('-ERR') && !k.err) k.err = line
    return { next: lf + 1, body: 0, counts: false }
  })
  return k
}

/** An MQTT connection switched to counting every PUBLISH (any topic, QoS 0 subscription). */
function countMqtt(c: MqttConn): FrameCounter {
  let hdr: number[] = []
  return countFrames(c.sock, (chunk, i) => {
    hdr.push(chunk[i]!)
    if (hdr.length < 2 || (hdr[hdr.length - 1]! & 0x80 && hdr.length < 5)) return { next: i + 1, body: 0, counts: false }
    let len = 0
    for (let j = hdr.length - 1; j >= 1; j--) len = len * 128 + (hdr[j]! & 0x7f)
    const counts = hdr[0]! >> 4 === 3
    hdr = []
    return { next: i + 1, body: len, counts }
  })
}

/** The cloud subscriber on `telemetry.>` (hub) or `telemetry/#` (mosquitto cloud). */
async function cloudSubscriber(t: Topology): Promise<{ k: FrameCounter; done: () => void }> {
  if (t.cloud.kind === 'nats') {
    const c = await connectNats(t.cloud.addr)
    await subscribe(c, 'telemetry.>', '1')
    return { k: countNats(c), done: () => close(c) }
  }
  const c = await connectMqtt(t.cloud.addr)
  await subscribeMqtt(c, 'telemetry/#', 0)
  return { k: countMqtt(c), done: () => closeMqtt(c) }
}

/** A command publisher at the cloud: `send(n)` writes n commands and a PING(REQ); `acked` counts answers. */
interface CloudPublisher extends Watched {
  send(n: number): void
  sent: number
  pings: number
  acked(): number
  err(): string
  done(): void
}

async function cloudPublisher(t: Topology): Promise<CloudPublisher> {
  if (t.cloud.kind === 'nats') {
    const c = await connectNats(t.cloud.addr)
    const frame = Buffer.concat([Buffer.from(`PUB cmd.all ${PAYLOAD}\r\n`), Buffer.alloc(PAYLOAD, 0x61), Buffer.from('\r\n')])
    const p: CloudPublisher = {
      get closed() {
        return c.closed
      },
      get lastData() {
        return c.lastData
      },
      sent: 0,
      pings: 0,
      send(n) {
        c.sock.write(Buffer.concat([...Array<Buffer>(n).fill(frame), Buffer.from('PING\r\n')]))
        c.pingsSent++
        p.pings++
        p.sent += n
      },
      acked: () => c.pongs,
      err: () => c.err,
      done: () => close(c),
    }
    // connectNats's own PING/PONG: count from here.
    const base = c.pongs
    p.acked = () => c.pongs - base
    return p
  }
  const c = await connectMqtt(t.cloud.addr)
  const { frame } = publishFrame('cmd/all', PAYLOAD, 0)
  const p: CloudPublisher = {
    get closed() {
      return c.closed
    },
    get lastData() {
      return c.lastData
    },
    sent: 0,
    pings: 0,
    send(n) {
      c.sock.write(Buffer.concat([...Array<Buffer>(n).fill(frame), Buffer.from([0xc0, 0x00])]))
      c.pingsSent++
      p.pings++
      p.sent += n
    },
    acked: () => c.pingResps,
    err: () => c.err,
    done: () => closeMqtt(c),
  }
  return p
}

// ---------------------------------------------------------------------------------------------
// Devices.

async function connectDevices(t: Topology, n: number): Promise<MqttConn[]> {
  const out: MqttConn[] = new Array(n)
  let next = 0
  const opener = async (): Promise<void> => {
    while (next < n) {
      const i = next++
      out[i] = await connectMqtt(t.mqtt, 10_000, `gw-bench-${process.pid}-${i}`)
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.min(OPENERS, n) }, opener))
  } catch (e) {
    for (const c of out) if (c) closeMqtt(c)
    throw e
  }
  return out
}

/** Repeats until the cloud subscriber has seen a message from device 0: the path is up. */
async function pathReady(dev: MqttConn, k: FrameCounter, qos: 0 | 1): Promise<void> {
  const { frame, pidOff } = publishFrame(deviceTopic(0), PAYLOAD, qos)
  if (qos) frame.writeUInt16BE(0xffff, pidOff)
  const end = performance.now() + STALL_MS
  while (k.frames === 0) {
    if (performance.now() > end) throw new Error(`nothing reached the cloud subscriber after ${STALL_MS} ms: gateway uplink not passing messages${dev.err ? ` (${dev.err})` : ''}`)
    dev.sock.write(frame)
    await waitUntil([dev, k], () => k.frames > 0 || dev.err !== '', 100)
    if (dev.err) throw new Error(`device: ${dev.err}`)
  }
  // Let stray probes arrive, then count from zero.
  await sleep(300)
  k.frames = 0
  k.firstAt = 0
}

/**
 * The rate phase: `count` messages from `devs` (each its share), QoS 0 as batches each ending in a
 * PINGREQ (one unanswered per device), QoS 1 as a window of unacknowledged PUBLISHes per device;
 * and never more than `maxLag` messages published but not yet at the cloud subscriber.
 */
function telemetryLoad(devs: MqttConn[], k: FrameCounter, count: number, qos: 0 | 1): Promise<{ startAt: number; endAt: number }> {
  const n = devs.length
  const per = Math.floor(count / n)
  const extra = count - per * n
  const batch = batchOf(per)
  const win = qosWindow(n)
  const maxLag = qos ? Math.max(400, 4 * n * win) : Math.max(4 * batch, Math.min(100_000, 2 * n * batch))
  interface Dev {
    c: MqttConn
    /** PUBACKs before the rate phase (the readiness probes'). */
    acks0: number
    onData: () => void
    left: number
    sent: number
    frame: Buffer
    pidOff: number
    buf: Buffer
    pid: number
    parked: boolean
  }
  const ds: Dev[] = devs.map((c, i) => {
    const f = publishFrame(deviceTopic(i), PAYLOAD, qos)
    const m = qos ? win : batch
    const buf = Buffer.allocUnsafe(m * f.frame.length + (qos ? 0 : 2))
    for (let j = 0; j < m; j++) f.frame.copy(buf, j * f.frame.length)
    if (!qos) buf.set([0xc0, 0x00], m * f.frame.length)
    return { c, acks0: c.pubacks, onData: () => undefined, left: per + (i < extra ? 1 : 0), sent: 0, frame: f.frame, pidOff: f.pidOff, buf, pid: 0, parked: false }
  })
  let sent = 0
  const parked: Dev[] = []
  const startAt = performance.now()
  return new Promise((resolve, reject) => {
    let finished = false
    const finish = (e?: Error): void => {
      if (finished) return
      finished = true
      clearInterval(tick)
      onEvent.delete(unpark)
      for (const d of ds) d.c.sock.off('data', d.onData)
      if (e) reject(e)
      else resolve({ startAt, endAt: performance.now() })
    }
    const pump = (d: Dev): void => {
      if (d.c.err) return finish(new Error(`device ${d.c.clientId}: ${d.c.err}`))
      if (d.left === 0) return
      if (sent - k.frames > maxLag) {
        if (!d.parked) {
          d.parked = true
          parked.push(d)
        }
        return
      }
      const fl = d.frame.length
      let m: number
      if (qos) {
        m = Math.min(win - (d.sent - (d.c.pubacks - d.acks0)), d.left)
        if (m <= 0) return
        for (let j = 0; j < m; j++) {
          d.pid = d.pid >= 0xffff ? 1 : d.pid + 1
          d.buf.writeUInt16BE(d.pid, j * fl + d.pidOff)
        }
        d.c.sock.write(Buffer.from(d.buf.subarray(0, m * fl)))
      } else {
        if (d.c.pingsSent > d.c.pingResps) return
        m = Math.min(batch, d.left)
        if (m === batch) d.c.sock.write(d.buf)
        else {
          const b = Buffer.allocUnsafe(m * fl + 2)
          d.buf.copy(b, 0, 0, m * fl)
          b.set([0xc0, 0x00], m * fl)
          d.c.sock.write(b)
        }
        d.c.pingsSent++
      }
      d.left -= m
      d.sent += m
      sent += m
    }
    // Devices waiting for the cloud to catch up resume as it does.
    const unpark = (): void => {
      while (parked.length && sent - k.frames <= maxLag) {
        const d = parked.pop()!
        d.parked = false
        pump(d)
      }
      if (sent >= count && k.frames >= count) finish()
      if (k.err) finish(new Error(`cloud subscriber: ${k.err}`))
    }
    let lastFrames = 0
    let progressAt = startAt
    const tick = setInterval(() => {
      const now = performance.now()
      if (k.frames !== lastFrames) {
        lastFrames = k.frames
        progressAt = now
      } else if (now - progressAt > (sent >= count ? IDLE_MS : STALL_MS)) {
        // All sent and nothing more arriving: the rest is lost (reported, not an error).
        if (sent >= count) return finish()
        finish(new Error(`no progress for ${STALL_MS} ms (${sent}/${count} sent, ${k.frames} at the cloud)`))
      }
      for (const d of ds) if (!d.parked) pump(d)
      unpark()
    }, 250)
    onEvent.add(unpark)
    for (const d of ds) {
      d.onData = () => pump(d)
      d.c.sock.on('data', d.onData)
      pump(d)
    }
  })
}

/** A cloud subscriber and n devices with the path up (device 0 reached the cloud) for `fn`; all closed after it. */
async function withPath<T>(t: Topology, n: number, qos: 0 | 1, fn: (devs: MqttConn[], k: FrameCounter) => Promise<T>): Promise<T> {
  const sub = await cloudSubscriber(t)
  let devs: MqttConn[] = []
  try {
    devs = await connectDevices(t, n)
    await pathReady(devs[0]!, sub.k, qos)
    // Wait for the devices' own acks from the readiness probes before the load.
    await sleep(100)
    return await fn(devs, sub.k)
  } finally {
    sub.done()
    for (const d of devs) closeMqtt(d)
    await sleep(300)
  }
}

/** The warm-up: `count` messages from one device at `qos` through the whole path, nothing kept. */
async function warmUpQos(t: Topology, qos: 0 | 1, count: number): Promise<void> {
  await withPath(t, 1, qos, (devs, k) => telemetryLoad(devs, k, count, qos))
}

/** One message at a time from device i % n: time from the write to the cloud subscriber's read. */
async function probeLatency(devs: MqttConn[], k: FrameCounter, qos: 0 | 1, probes: number): Promise<Float64Array> {
  const lat = new Float64Array(probes)
  const frames = devs.map((_, i) => publishFrame(deviceTopic(i), PAYLOAD, qos))
  for (let i = 0; i < probes; i++) {
    const d = devs[i % devs.length]!
    const f = frames[i % devs.length]!
    if (qos) f.frame.writeUInt16BE((i % 0xfffe) + 1, f.pidOff)
    const want = k.frames + 1
    const t0 = performance.now()
    d.sock.write(f.frame)
    const r = await waitUntil([k, d], () => k.frames >= want || d.err !== '', 5000)
    if (r !== 'ok' || d.err) throw new Error(`latency probe ${i}: ${d.err || `not at the cloud within 5 s (${r})`}`)
    lat[i] = (k.lastAt - t0) * 1000
  }
  return lat.sort()
}

function pct(sorted: Float64Array, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

async function runTelemetry(t: Topology, n: number, qos: 0 | 1, count: number, probes: number): Promise<GwResult> {
  return withPath(t, n, qos, async (devs, k) => {
    const cpu0 = t.cpu()
    const r = await telemetryLoad(devs, k, count, qos)
    // The last message's arrival, not the idle wait after a loss.
    const cpu1 = t.cpu()
    if (k.frames === 0) throw new Error('nothing reached the cloud')
    const secs = (k.lastAt - r.startAt) / 1000
    const got = k.frames
    const metrics: Metrics = {
      msgs: count,
      msgsPerSec: got / secs,
      mbPerSec: (got * PAYLOAD) / 1e6 / secs,
      lost: Math.max(0, count - got),
    }
    await sleep(200)
    k.frames = 0
    const lat = await probeLatency(devs, k, qos, probes)
    metrics.p50 = pct(lat, 0.5)
    metrics.p99 = pct(lat, 0.99)
    const cpuSecs = Object.fromEntries(Object.keys(cpu0).map((role) => [role, cpu1[role]! - cpu0[role]!]))
    return { metrics, cpuSecs }
  })
}

async function runFanOut(t: Topology, n: number, commands: number, probes: number): Promise<GwResult> {
  let devs: MqttConn[] = []
  let pub: CloudPublisher | null = null
  try {
    devs = await connectDevices(t, n)
    for (const d of devs) await subscribeMqtt(d, 'cmd/all', 0)
    pub = await cloudPublisher(t)
    const p = pub
    // Until every device has one command: the gateway's interest has reached the cloud.
    const got = new Array<number>(n).fill(0)
    devs.forEach((d, i) => (d.onPublish = () => got[i]!++))
    const end = performance.now() + STALL_MS
    while (got.some((g) => g === 0)) {
      if (performance.now() > end) throw new Error(`after ${STALL_MS} ms only ${got.filter((g) => g > 0).length} of ${n} devices get commands`)
      p.send(1)
      await waitUntil([p, ...devs], () => got.every((g) => g > 0) || p.err() !== '', 100)
      if (p.err()) throw new Error(`cloud publisher: ${p.err()}`)
    }
    await sleep(500)
    const ks: MqttCounter[] = devs.map((d) => startMqttCounting(d, 'cmd/all', PAYLOAD, 0))
    const batch = 10
    const maxLag = 4 * batch
    const slowest = (need: number): boolean => ks.every((k) => k.frames >= need || k.bad !== '')
    const cpu0 = t.cpu()
    const startAt = performance.now()
    let sent = 0
    while (sent < commands) {
      if (p.pings - p.acked() >= 2) {
        const want = p.pings - 1
        if ((await waitUntil([p], () => p.acked() >= want || p.err() !== '', STALL_MS)) !== 'ok' || p.err()) throw new Error(`cloud publisher: no PONG: ${p.err()}`)
      }
      if (sent - maxLag > 0 && !slowest(sent - maxLag)) {
        const need = sent - maxLag
        const r = await waitUntil(devs, () => slowest(need), STALL_MS, true)
        if (r !== 'ok') throw new Error(`devices stalled ${maxLag} commands behind (${r})`)
      }
      const m = Math.min(batch, commands - sent)
      p.send(m)
      sent += m
    }
    await waitUntil(devs, () => slowest(commands), IDLE_MS, true)
    const cpu1 = t.cpu()
    const bad = ks.find((k) => k.bad)
    if (bad) throw new Error(bad.bad)
    const delivered = ks.reduce((a, k) => a + k.frames, 0)
    const last = Math.max(...ks.map((k) => k.lastAt))
    const secs = (last - startAt) / 1000
    const metrics: Metrics = {
      msgs: commands,
      cpuMsgs: delivered,
      msgsPerSec: delivered / secs,
      mbPerSec: (delivered * PAYLOAD) / 1e6 / secs,
      lost: n * commands - delivered,
    }
    // Latency: one command at a time, from the publish at the cloud to each device's read.
    await sleep(300)
    const lat = new Float64Array(n * probes)
    for (let i = 0; i < probes; i++) {
      const base = ks.map((k) => k.frames)
      const t0 = performance.now()
      p.send(1)
      const r = await waitUntil(devs, () => ks.every((k, j) => k.frames > base[j]! || k.bad !== ''), 5000)
      if (r !== 'ok') throw new Error(`latency probe ${i}: ${ks.filter((k, j) => k.frames === base[j]).length} devices without the command after 5 s`)
      ks.forEach((k, j) => (lat[i * n + j] = (k.lastAt - t0) * 1000))
    }
    lat.sort()
    metrics.p50 = pct(lat, 0.5)
    metrics.p99 = pct(lat, 0.99)
    const cpuSecs = Object.fromEntries(Object.keys(cpu0).map((role) => [role, cpu1[role]! - cpu0[role]!]))
    return { metrics, cpuSecs }
  } finally {
    pub?.done()
    for (const d of devs) closeMqtt(d)
    await sleep(300)
  }
}

export function gatewayScenarios(o: { quick: boolean; scale?: number }): GatewayScenario[] {
  const scale = (n: number): number => Math.round((o.quick ? Math.max(1000, Math.round(n / 20)) : n) * (o.scale ?? 1))
  const notHere = (): Promise<Metrics> => Promise.reject(new Error('gateway rows run through gateway-load.ts'))
  const latSpecs: MetricSpec[] = [
    { key: 'p50', label: 'latency p50 µs', fmt: fmtUs, better: 'lower' },
    { key: 'p99', label: 'latency p99 µs', fmt: fmtUs, better: 'lower' },
  ]
  const out: GatewayScenario[] = []
  for (const n of DEVICES) {
    for (const qos of [0, 1] as const) {
      const c = scale(COUNTS[qos])
      const probes = o.quick ? 200 : PROBES
      out.push({
        id: `gateway-telemetry-qos${qos} x${n}`,
        kind: 'mqtt',
        describe:
          `${fmtCount(n)} MQTT device${n > 1 ? 's' : ''} → gateway → uplink → cloud subscriber, QoS ${qos}, ${fmtCount(c)} msgs of ${PAYLOAD} B in all ` +
          (qos ? `(${qosWindow(n)} unacked per device)` : `(${batchOf(Math.floor(c / n))} per write per device)`) +
          `; rate at the cloud; then ${probes} single msgs device → cloud for the latency`,
        metrics: [
          { key: 'msgsPerSec', label: 'msgs/s at the cloud', fmt: fmtRate, better: 'higher' },
          { key: 'mbPerSec', label: 'MB/s (payload)', fmt: fmtMB, better: 'higher' },
          { key: 'lost', label: 'lost msgs', fmt: fmtCount, agg: 'max' },
          ...latSpecs,
        ],
        headline: 'msgsPerSec',
        target: qos ? { perRef: { 'nats-server gw': 3, 'mosquitto bridge': 3 }, text: '≥ 3× both' } : { perRef: { 'nats-server gw': 1.5, 'mosquitto bridge': 5 }, text: '≥ 1.5× nats-server, ≥ 5× mosquitto' },
        params: { devices: n, qos, payload: PAYLOAD, msgs: c, probes },
        run: notHere,
        runGw: (t) => runTelemetry(t, n, qos, c, probes),
      })
    }
  }
  const n = FANOUT_DEVICES
  const cmds = o.quick ? 30 : COMMANDS
  const probes = o.quick ? 5 : CMD_PROBES
  out.push({
    id: FANOUT_ID,
    kind: 'mqtt',
    describe: `1 cloud publisher → gateway → ${fmtCount(n)} MQTT devices subscribed at QoS 0, ${fmtCount(cmds)} commands of ${PAYLOAD} B; deliveries/s summed over devices; then ${probes} single commands, latency cloud → each device; CPU per delivery`,
    metrics: [{ key: 'msgsPerSec', label: 'delivered msgs/s', fmt: fmtRate, better: 'higher' }, { key: 'lost', label: 'lost deliveries', fmt: fmtCount, agg: 'max' }, ...latSpecs],
    headline: 'msgsPerSec',
    params: { devices: n, qos: 0, payload: PAYLOAD, commands: cmds, probes },
    run: notHere,
    runGw: (t) => runFanOut(t, n, cmds, probes),
  })
  return out
}

// ---------------------------------------------------------------------------------------------
// The three gateways and their clouds.

interface Gateway {
  name: string
  reference: boolean
  version: string
  /** Starts the cloud and the gateway; returns the topology and a stop function. */
  start(): Promise<{ topo: Topology; procs: Record<string, ServerProcess>; stop: () => Promise<void> }>
  describe: string
}

function conf(tmp: string, name: string, body: string): string {
  const f = path.join(tmp, name)
  writeFileSync(f, `# written by sprig's test/bench/gateway-load.ts\n${body}\n`)
  return f
}

function topology(mqttPort: number, cloud: Topology['cloud'], procs: Record<string, ServerProcess>): Topology {
  return {
    mqtt: { host: HOST, port: mqttPort },
    cloud,
    cpu: () => Object.fromEntries(Object.entries(procs).map(([role, p]) => [role, procCpuSeconds(p.pid)])),
  }
}

async function startAll(list: { role: string; argv: string[]; port: number; kind: 'nats' | 'mqtt' }[], root: string): Promise<{ procs: Record<string, ServerProcess>; stop: () => Promise<void> }> {
  const procs: Record<string, ServerProcess> = {}
  const stopAll = async (): Promise<void> => {
    await Promise.all(Object.values(procs).map((p) => stop(p)))
  }
  try {
    for (const s of list) {
      procs[s.role] = launch(s.argv, root)
      await waitReady(procs[s.role]!, s.port, s.kind)
    }
  } catch (e) {
    await stopAll()
    throw new Error(`${Object.keys(procs).pop()}: ${(e as Error).message.split('\n').slice(0, 3).join(' ')}`)
  }
  return { procs, stop: stopAll }
}

function natsHub(natsServer: string, tmp: string, port: number, leaf: number): string[] {
  return [natsServer, '-c', conf(tmp, `gw-hub-${port}.conf`, `listen: ${HOST}:${port}\nleafnodes { listen: ${HOST}:${leaf} }`)]
}

function gateways(o: GatewayBenchOpts, natsServer: string, mosquitto: string): Gateway[] {
  const out: Gateway[] = []
  for (const s of o.sprigs) {
    out.push({
      name: s.name,
      reference: false,
      version: s.version,
      describe: `${s.cmd.join(' ')} -a ${HOST} -p {natsPort} --mqtt-port {mqttPort} --leaf nats://${HOST}:{hubLeaf}`,
      async start() {
        const [hub, leaf, nats, mqtt] = [await freePort(), await freePort(), await freePort(), await freePort()]
        const { procs, stop: st } = await startAll(
          [
            { role: 'cloud', argv: natsHub(natsServer, o.tmp, hub, leaf), port: hub, kind: 'nats' },
            { role: 'gateway', argv: [...s.cmd, '-a', HOST, '-p', String(nats), '--mqtt-port', String(mqtt), '--leaf', `nats://${HOST}:${leaf}`], port: mqtt, kind: 'mqtt' },
          ],
          o.root,
        )
        return { topo: topology(mqtt, { kind: 'nats', addr: { host: HOST, port: hub } }, procs), procs, stop: st }
      },
    })
  }
  const refs = o.refs ?? ['nats', 'mosquitto']
  if (natsServer && refs.includes('nats')) {
    out.push({
      name: 'nats-server gw',
      reference: true,
      version: '',
      describe: `${natsServer} -c <conf: server_name; listen ${HOST}:{natsPort}; jetstream { store_dir: <temp> }; mqtt { listen ${HOST}:{mqttPort} }; leafnodes { remotes = [ { url: nats://${HOST}:{hubLeaf} } ] }>`,
      async start() {
        const [hub, leaf, nats, mqtt] = [await freePort(), await freePort(), await freePort(), await freePort()]
        const store = mkdtempSync(path.join(o.tmp, 'js-'))
        const gw = conf(
          o.tmp,
          `gw-nats-${nats}.conf`,
          `server_name: gw_${nats}\nlisten: ${HOST}:${nats}\njetstream { store_dir: "${store}" }\nmqtt { listen: ${HOST}:${mqtt} }\nleafnodes { remotes = [ { url: "nats://${HOST}:${leaf}" } ] }`,
        )
        const { procs, stop: st } = await startAll(
          [
            { role: 'cloud', argv: natsHub(natsServer, o.tmp, hub, leaf), port: hub, kind: 'nats' },
            { role: 'gateway', argv: [natsServer, '-c', gw], port: mqtt, kind: 'mqtt' },
          ],
          o.root,
        )
        return {
          topo: topology(mqtt, { kind: 'nats', addr: { host: HOST, port: hub } }, procs),
          procs,
          stop: async () => {
            await st()
            rmSync(store, { recursive: true, force: true })
          },
        }
      },
    })
  }
  if (mosquitto && refs.includes('mosquitto')) {
    out.push({
      name: 'mosquitto bridge',
      reference: true,
      version: '',
      describe: `${mosquitto} -c <gateway conf: listener {mqttPort}; connection cloud; address ${HOST}:{cloudPort}; topic telemetry/# out 1; topic cmd/# in 0> bridged to ${mosquitto} -c <cloud conf: listener {cloudPort}>`,
      async start() {
        const [cloud, mqtt] = [await freePort(), await freePort()]
        const settings = o.mosquittoSettings.join('\n')
        const cloudConf = conf(o.tmp, `gw-mosq-cloud-${cloud}.conf`, `listener ${cloud} ${HOST}\n${settings}`)
        // The bridge forwards at up to QoS 1 (a QoS 0 reading stays QoS 0): the MQTT world's
        // at-least-once hop to the cloud. Clean session, no notification topic.
        const gwConf = conf(
          o.tmp,
          `gw-mosq-${mqtt}.conf`,
          `listener ${mqtt} ${HOST}\n${settings}\nconnection cloud\naddress ${HOST}:${cloud}\ntopic telemetry/# out 1\ntopic cmd/# in 0\ncleansession true\nnotifications false\nbridge_protocol_version mqttv311\nrestart_timeout 1`,
        )
        const { procs, stop: st } = await startAll(
          [
            { role: 'cloud', argv: [mosquitto, '-c', cloudConf], port: cloud, kind: 'mqtt' },
            { role: 'gateway', argv: [mosquitto, '-c', gwConf], port: mqtt, kind: 'mqtt' },
          ],
          o.root,
        )
        return { topo: topology(mqtt, { kind: 'mqtt', addr: { host: HOST, port: cloud } }, procs), procs, stop: st }
      },
    })
  }
  return out
}


async function runGateway(g: Gateway, scenarios: GatewayScenario[], o: GatewayBenchOpts, round: number, out: RunResult[]): Promise<void> {
  let started: Awaited<ReturnType<Gateway['start']>>
  try {
    started = await g.start()
  } catch (e) {
    for (const s of scenarios) out.push({ scenario: s.id, server: g.name, round, error: `did not start: ${(e as Error).message}`, wallMs: 0 })
    progress(`[round ${round}] ${g.name}: FAILED to start: ${(e as Error).message}`)
    return
  }
  const { topo, procs } = started
  progress(`[round ${round}] ${g.name}: gateway MQTT on ${HOST}:${topo.mqtt.port}, cloud ${topo.cloud.kind} on ${HOST}:${topo.cloud.addr.port}`)
  const warm = o.warmup ?? 1
  if (warm > 0 && scenarios.some((s) => s.id.startsWith('gateway-telemetry'))) {
    await warmUp(`[round ${round}] ${g.name}`, async () => {
      for (const qos of [0, 1] as const) await warmUpQos(topo, qos, Math.round((o.quick ? COUNTS[qos] / 20 : COUNTS[qos]) * warm))
    })
  }
  for (const s of scenarios) {
    const r: RunResult = { scenario: s.id, server: g.name, round, wallMs: 0 }
    const t0 = performance.now()
    const busy0 = machineBusySeconds()
    const all0 = topo.cpu()
    const gen0 = process.cpuUsage()
    try {
      const res = await s.runGw(topo)
      r.metrics = res.metrics
      const n = typeof res.metrics.cpuMsgs === 'number' ? res.metrics.cpuMsgs : Number(res.metrics.msgs)
      r.cpuPerM = Object.fromEntries(Object.entries(res.cpuSecs).map(([role, secs]) => [role, (secs * 1e6) / n]))
    } catch (e) {
      r.error = (e as Error).message
      for (const [role, p] of Object.entries(procs)) if (p.exited()) r.error += ` (${role} ${p.exited()}: ${p.tail().slice(-300)})`
    }
    r.wallMs = performance.now() - t0
    const all1 = topo.cpu()
    const gw = ((all1.gateway! - all0.gateway!) * 1000 * 100) / r.wallMs
    if (Number.isFinite(gw)) r.serverCpu = gw
    const gen = process.cpuUsage(gen0)
    r.benchCpu = ((gen.user + gen.system) / 1000 / r.wallMs) * 100
    const brokers = Object.keys(all0).reduce((a, role) => a + (all1[role]! - all0[role]!), 0)
    const other = ((machineBusySeconds() - busy0 - brokers) * 1000 * 100) / r.wallMs - r.benchCpu
    if (Number.isFinite(other)) r.otherCpu = Math.max(0, other)
    out.push(r)
    const head = s.metrics.find((m) => m.key === s.headline)!
    const hv = r.metrics?.[s.headline]
    progress(`[round ${round}] ${g.name}: ${s.id}: ${r.error ? 'FAILED: ' + r.error : `${typeof hv === 'number' ? head.fmt(hv) : hv} ${head.label}`} (${(r.wallMs / 1000).toFixed(1)} s)`)
  }
  await started.stop()
}

/**
 * Runs the gateway rows (those `only` selects; all when empty) for every sprig gateway, the
 * nats-server gateway and the mosquitto bridge; prints their tables; returns the raw results and
 * how many failed or lost messages.
 */
export async function runGatewayBench(o: GatewayBenchOpts, only: string[]): Promise<{ results: RunResult[]; failed: number }> {
  const natsServer = which('nats-server')
  const mosquitto = which('mosquitto')
  const all = gatewayScenarios({ quick: o.quick, scale: o.scale })
  // A whole id picks that row alone ("… x1" is also a prefix of "… x100").
  const exact = (x: string): boolean => all.some((s) => s.id.toLowerCase() === x)
  const scenarios = only.length ? all.filter((s) => only.some((x) => x === 'gateway' || (exact(x) ? s.id.toLowerCase() === x : s.id.toLowerCase().includes(x)))) : all
  if (!natsServer) {
    console.log('gateway rows: nats-server not found on PATH or in /usr/sbin (Debian/Ubuntu: apt-get install nats-server); skipped\n')
    return { results: [], failed: 0 }
  }
  if (!mosquitto) console.log('gateway rows: mosquitto not found (Debian/Ubuntu: apt-get install mosquitto); no mosquitto column\n')
  const gws = gateways(o, natsServer, mosquitto)
  console.log(
    [
      `\ngateway rows: cloud = ${natsServer} -c <conf: listen ${HOST}:{hubPort}; leafnodes { listen ${HOST}:{hubLeaf} }> (NATS subscriber on telemetry.>, publisher on cmd.all)`,
      ...gws.map((g) => `           ${g.name} = ${g.describe}`),
      `           devices: raw MQTT 3.1.1 clean sessions on telemetry/dNNNNN, ${PAYLOAD} B payloads; CPU s / 1M msgs over the rate phase, per process (gateway, cloud)`,
      `           warm-up: ${(o.warmup ?? 1) > 0 ? `before its first row each gateway carries ${fmtCount(Math.round(COUNTS[0] * (o.warmup ?? 1) * (o.quick ? 1 / 20 : 1)))} QoS 0 and ${fmtCount(Math.round(COUNTS[1] * (o.warmup ?? 1) * (o.quick ? 1 / 20 : 1)))} QoS 1 messages from one device, not measured (--gw-warmup)` : 'none (--gw-warmup 0)'}`,
      '',
    ].join('\n'),
  )
  const raw: RunResult[] = []
  for (let round = 1; round <= o.rounds; round++) {
    const order = gws.map((_, i) => gws[(i + round - 1) % gws.length]!)
    for (const g of order) await runGateway(g, scenarios, o, round, raw)
  }
  const results = combineRounds(raw, scenarios)
  const cols: Column[] = [...gws.filter((g) => !g.reference), ...gws.filter((g) => g.reference)].map((g) => ({ name: g.name, reference: g.reference }))
  for (const s of scenarios) console.log(scenarioTable(s, cols, results) + '\n')
  console.log(`== summary (gateway path)\n${summaryTable(scenarios, cols, results)}\n`)
  const lossy = raw.filter((r) => typeof r.metrics?.lost === 'number' && r.metrics.lost > 0).length
  const busy = raw.filter((r) => (r.otherCpu ?? 0) > OTHER_CPU_WARN)
  if (busy.length) console.log(`warning: ${busy.length} of ${raw.length} gateway run(s) shared the machine with other load (> ${OTHER_CPU_WARN}% of a core): their numbers are unreliable`)
  if (lossy) console.log(`${lossy} gateway run(s) LOST messages`)
  return { results: raw, failed: raw.filter((r) => r.error).length + lossy }
}
