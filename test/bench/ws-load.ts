// WebSocket rows: the NATS pub→sub and MQTT QoS 0 rows of nats-load.ts and mqtt-load.ts, run
// over WebSocket (ws-conn.ts) against sprig's `websocket` listener, nats-server's `websocket`
// listener and mosquitto's `protocol websockets` listener, same load, same run. Each server
// also gets a plain TCP listener on a second port: readiness is checked there, and mosquitto
// 2.0.11 will not start with a websockets listener alone ("Unable to start any listening
// sockets": it only counts its plain listeners).

import os from 'node:os'
import path from 'node:path'
import type { Addr, Kind, Scenario, ServerProcess } from './model.ts'
import { mqttScenarios } from './mqtt-load.ts'
import { natsScenarios } from './nats-load.ts'
import { close, connectNats } from './nats-conn.ts'
import { closeMqtt, connectMqtt } from './mqtt-conn.ts'
import { FRAME } from './ws-conn.ts'
import { confFile, freePort, HOST, launch, machineBusySeconds, procCpuSeconds, sleep, stop, waitReady, which, progress } from './proc.ts'
import { combineRounds, cpuPerMillion, scenarioTable, summaryTable, type Column, type RunResult } from './report.ts'

export interface WsBenchOpts {
  quick: boolean
  rounds: number
  /** sprig under each runtime: `<runtime> dist/sprig.js`; the config is added here. */
  sprigs: { name: string; cmd: string[]; version: string }[]
  tmp: string
  root: string
  /** mosquitto's settings for the MQTT rows (bench.ts), the listeners added here. */
  mosquittoSettings: string[]
}

/** The TCP rows that are repeated over WebSocket, and their ids here. */
const ROWS: Record<string, string> = {
  'pub-sub 16B': 'ws-nats-pub-sub 16B',
  'pub-sub 1KiB': 'ws-nats-pub-sub 1KiB',
  'mqtt-qos0 16B': 'ws-mqtt-qos0 16B',
  'mqtt-qos0 1KiB': 'ws-mqtt-qos0 1KiB',
}
export const WS_IDS = Object.values(ROWS)
const OTHER_CPU_WARN = 25

/**
 * `--only` picks the WebSocket rows with `ws` (or `websocket`), or a substring naming them
 * (`ws-mqtt`, `ws-nats-pub-sub 16B`): plain `mqtt` or `pub-sub` stay with the TCP rows.
 */
export function wsSelected(only: string[]): string[] {
  if (!only.length) return WS_IDS
  return WS_IDS.filter((id) => only.some((o) => o === 'ws' || o === 'websocket' || (o.includes('ws') && id.toLowerCase().includes(o))))
}

function wsScenarios(quick: boolean): Scenario[] {
  const tcp = [...natsScenarios({ quick }), ...mqttScenarios({ quick, conns: 1 })]
  return Object.entries(ROWS).map(([from, id]) => {
    const s = tcp.find((x) => x.id === from)!
    const path = s.kind === 'mqtt' ? '/mqtt' : '/'
    return {
      ...s,
      id,
      describe: `${s.describe}; over WebSocket, client frames ≤ ${FRAME / 1024} KiB`,
      target: { ratio: 1, text: '≥ 1×' },
      run: (a: Addr) => s.run({ ...a, ws: { path, protocol: s.kind === 'mqtt' ? 'mqtt' : undefined } }),
      // The TCP row's warm-up would load the TCP port, not this one: the WebSocket rows have none.
      warm: undefined,
    }
  })
}

/** A server measured on a port of its own (WebSocket here, TLS in tls-load.ts), started with a plain TCP port beside it. */
export interface SideServer {
  name: string
  kind: Kind
  reference: boolean
  /** argv with the measured port `side` (here: WebSocket) and the plain TCP port `tcp`. */
  argv: (side: number, tcp: number) => string[]
  describe: string
}

function servers(o: WsBenchOpts, kinds: Kind[]): { list: SideServer[]; notes: string[] } {
  const list: SideServer[] = []
  const notes: string[] = []
  const conf = (name: string, text: string): string => confFile(o.tmp, name, text, 'test/bench/ws-load.ts')
  for (const kind of kinds) {
    if (kind === 'nats') {
      const bin = which('nats-server')
      // No websocket.host: nats-server 2.9.10 then fails to bind ("address already in use").
      if (bin) list.push({ name: 'nats-server', kind, reference: true, argv: (ws, tcp) => [bin, '-c', conf(`ws-nats-${ws}.conf`, `listen: ${HOST}:${tcp}\nwebsocket { port: ${ws}, no_tls: true }`)], describe: `${bin} -c <listen: ${HOST}:{tcp}; websocket { port: {ws}, no_tls: true }>` })
      else notes.push('nats-server not on PATH (apt-get install nats-server): no reference for the ws-nats rows')
    } else {
      const bin = which('mosquitto')
      const settings = o.mosquittoSettings.join('\n')
      // The plain listener is what lets 2.0.11 start at all (see the top of this file).
      if (bin) list.push({ name: 'mosquitto', kind, reference: true, argv: (ws, tcp) => [bin, '-c', conf(`ws-mosq-${ws}.conf`, `listener ${ws} ${HOST}\nprotocol websockets\nlistener ${tcp} ${HOST}\n${settings}`)], describe: `${bin} -c <listener {ws} ${HOST}; protocol websockets; listener {tcp} ${HOST}; the MQTT rows' settings>` })
      else notes.push('mosquitto not found (apt-get install mosquitto): no reference for the ws-mqtt rows')
    }
    for (const s of o.sprigs) {
      list.push({
        name: s.name,
        kind,
        reference: false,
        argv: (ws, tcp) => [...s.cmd, '-c', conf(`ws-sprig-${kind}-${ws}.conf`, `host: ${HOST}\nport: ${tcp}\nmqtt { port: 0 }\nwebsocket { port: ${ws}, no_tls: true }`)],
        describe: `${s.cmd.join(' ')} -c <host: ${HOST}; port: {tcp}; mqtt { port: 0 }; websocket { port: {ws}, no_tls: true }>`,
      })
    }
  }
  return { list, notes }
}

/** Until a client completes its handshake over WebSocket (the TCP port answered already). */
async function wsReady(addr: Addr, kind: Kind): Promise<void> {
  const end = Date.now() + 10_000
  for (;;) {
    try {
      if (kind === 'nats') close(await connectNats({ ...addr, ws: { path: '/' } }, 2000))
      else closeMqtt(await connectMqtt({ ...addr, ws: { path: '/mqtt', protocol: 'mqtt' } }, 2000))
      return
    } catch (e) {
      if (Date.now() > end) throw new Error(`no handshake over WebSocket: ${(e as Error).message}`)
      await sleep(100)
    }
  }
}

/**
 * Starts `srv`, waits for its TCP port and then for `ready` on its side port, runs the
 * scenarios against the side port (CPU and other load measured as bench.ts does), stops it.
 */
export async function runSidePort(srv: SideServer, scenarios: Scenario[], root: string, round: number, out: RunResult[], ready: (addr: Addr, kind: Kind) => Promise<void>): Promise<void> {
  const side = await freePort()
  let tcp = await freePort()
  while (tcp === side) tcp = await freePort()
  const proc: ServerProcess = launch(srv.argv(side, tcp), root)
  try {
    // The TCP port is NATS on sprig (its MQTT rows too) and nats-server, MQTT on mosquitto.
    await waitReady(proc, tcp, srv.name === 'mosquitto' ? 'mqtt' : 'nats')
    await ready({ host: HOST, port: side }, srv.kind)
  } catch (e) {
    const why = `did not start: ${(e as Error).message.split('\n')[0]}${proc.tail() ? ` (${proc.tail().split('\n').slice(-1)[0]})` : ''}`
    progress(`[round ${round}] ${srv.name}: ${why}`)
    for (const s of scenarios) out.push({ scenario: s.id, server: srv.name, round, error: why, wallMs: 0 })
    await stop(proc)
    return
  }
  for (const s of scenarios) {
    const cpu0 = procCpuSeconds(proc.pid)
    const busy0 = machineBusySeconds()
    const gen0 = process.cpuUsage()
    const t0 = performance.now()
    const r: RunResult = { scenario: s.id, server: srv.name, round, wallMs: 0 }
    try {
      r.metrics = await s.run({ host: HOST, port: side, pid: proc.pid })
    } catch (e) {
      r.error = (e as Error).message
      await sleep(200)
      if (proc.exited()) r.error += ` (server ${proc.exited()}: ${proc.tail().slice(-300)})`
    }
    r.wallMs = performance.now() - t0
    const secs = procCpuSeconds(proc.pid) - cpu0
    const cpu = (secs * 1000 * 100) / r.wallMs
    if (Number.isFinite(cpu)) r.serverCpu = cpu
    const perM = cpuPerMillion(r.metrics, { server: secs })
    if (perM) r.cpuPerM = perM
    const gen = process.cpuUsage(gen0)
    r.benchCpu = ((gen.user + gen.system) / 1000 / r.wallMs) * 100
    const other = ((machineBusySeconds() - busy0) * 1000 * 100) / r.wallMs - (r.serverCpu ?? 0) - r.benchCpu
    if (Number.isFinite(other)) r.otherCpu = Math.max(0, other)
    out.push(r)
    const head = s.metrics.find((m) => m.key === s.headline)!
    const hv = r.metrics?.[s.headline]
    progress(`[round ${round}] ${srv.name}: ${s.id}: ${r.error ? 'FAILED: ' + r.error : `${typeof hv === 'number' ? head.fmt(hv) : hv} ${head.label}`} (${(r.wallMs / 1000).toFixed(1)} s)`)
    await sleep(300)
  }
  await stop(proc)
}


/** Runs the WebSocket rows `only` selects (all when empty), prints their tables. */
export async function runWsBench(o: WsBenchOpts, only: string[]): Promise<{ results: RunResult[]; failed: number }> {
  const ids = wsSelected(only)
  const scenarios = wsScenarios(o.quick).filter((s) => ids.includes(s.id))
  const kinds = [...new Set(scenarios.map((s) => s.kind))]
  const { list, notes } = servers(o, kinds)
  console.log(['', 'websocket rows (over ws://, no TLS, no compression):', ...list.map((s) => `           ${s.name} (${s.kind}) = ${s.describe}`), ...notes.map((n) => `note:      ${n}`), ''].join('\n'))
  const raw: RunResult[] = []
  for (let round = 1; round <= o.rounds; round++) {
    const order = list.map((_, i) => list[(i + round - 1) % list.length]!)
    for (const srv of order) await runSidePort(srv, scenarios.filter((s) => s.kind === srv.kind), o.root, round, raw, wsReady)
  }
  const results = combineRounds(raw, scenarios)
  const cols = (kind: Kind): Column[] => [...list.filter((s) => s.kind === kind && !s.reference), ...list.filter((s) => s.kind === kind && s.reference)].map((s) => ({ name: s.name, reference: s.reference }))
  for (const s of scenarios) console.log(scenarioTable(s, cols(s.kind), results) + '\n')
  for (const kind of kinds) console.log(`== summary (websocket, ${kind})\n${summaryTable(scenarios.filter((s) => s.kind === kind), cols(kind), results)}\n`)
  console.log(`(${os.cpus().length} cores; server and load generator share them)`)
  const lossy = raw.filter((r) => typeof r.metrics?.lost === 'number' && r.metrics.lost > 0).length
  const busy = raw.filter((r) => (r.otherCpu ?? 0) > OTHER_CPU_WARN)
  if (busy.length) console.log(`warning: ${busy.length} of ${raw.length} websocket run(s) shared the machine with other load (> ${OTHER_CPU_WARN}% of a core): their numbers are unreliable`)
  if (lossy) console.log(`${lossy} websocket run(s) LOST messages`)
  return { results: raw, failed: raw.filter((r) => r.error).length + lossy }
}
