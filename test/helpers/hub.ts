// Real nats-server hubs for the uplink tests: one hub, or a cluster, each with a leafnodes
// listener, on free loopback ports, config files in a temp dir. NATS_SERVER_BIN picks another
// build (e.g. one unpacked by .ci/fetch-nats-server) instead of the Debian one.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import net from 'node:net'
import path from 'node:path'
import { freePort, havePeer, spawnServer, waitForPort, type Proc } from './peers.ts'

export const NATS_SERVER = process.env.NATS_SERVER_BIN || 'nats-server'

interface T {
  fail(msg: string): unknown
  plan(n: number, comment?: string): unknown
}

/** True when a nats-server is here (skips, or fails in CI, otherwise). */
export function haveHub(t: T): boolean {
  if (process.env.NATS_SERVER_BIN) return true
  return havePeer(t, 'nats-server', 'nats-server')
}

export interface Hub {
  readonly name: string
  /** Client port, and nats://127.0.0.1:port for nats.js. */
  readonly port: number
  readonly url: string
  /** Leafnode port, and nats://127.0.0.1:leafPort for sprig's remote. */
  readonly leafPort: number
  readonly leafUrl: string
  readonly dir: string
  /** The hub's log so far (all runs, since restarts append). */
  output(): string
  /** SIGTERM and wait. */
  stop(): Promise<void>
  /** SIGKILL: the node dies without a goodbye. */
  kill(): Promise<void>
  /** Starts it again, same ports and config. */
  restart(): Promise<void>
  /** stop() and remove the temp dir. */
  close(): Promise<void>
}

export interface HubOptions {
  name?: string
  /** Inside `leafnodes { ... }` after the listen line, e.g. `authorization { user: a, password: b }`. */
  leafConfig?: string
  /** Top-level config lines (accounts, cluster, ping_interval, ...). */
  extra?: string
  /** Fixed ports (the cluster helper picks them up front for the routes). */
  port?: number
  leafPort?: number
  dir?: string
}

export async function startHub(o: HubOptions = {}): Promise<Hub> {
  const port = o.port ?? (await freePort())
  const leafPort = o.leafPort ?? (await freePort())
  const name = o.name ?? `hub${port}`
  const dir = o.dir ?? mkdtempSync(path.join(tmpdir(), 'sprig-hub-'))
  const conf = path.join(dir, `${name}.conf`)
  writeFileSync(
    conf,
    [`server_name: ${name}`, `listen: 127.0.0.1:${port}`, o.extra ?? '', `leafnodes {`, `  listen: 127.0.0.1:${leafPort}`, o.leafConfig ?? '', `}`, ''].join('\n'),
  )
  let log = ''
  let proc: Proc | null = null
  const run = async (): Promise<void> => {
    proc = await spawnServer(NATS_SERVER, ['-c', conf], port)
    await waitForPort(leafPort)
  }
  await run()
  const stopWith = async (sig: 'SIGTERM' | 'SIGKILL'): Promise<void> => {
    const p = proc
    if (!p) return
    proc = null
    log += p.output()
    if (sig === 'SIGKILL') {
      const exited = new Promise<void>((r) => (p.proc.exitCode !== null || p.proc.signalCode !== null ? r() : p.proc.once('exit', () => r())))
      p.proc.kill('SIGKILL')
      await exited
    } else await p.stop()
  }
  return {
    name,
    port,
    url: `nats://127.0.0.1:${port}`,
    leafPort,
    leafUrl: `nats://127.0.0.1:${leafPort}`,
    dir,
    output: () => log + ((proc as Proc | null)?.output() ?? ''),
    stop: () => stopWith('SIGTERM'),
    kill: () => stopWith('SIGKILL'),
    restart: run,
    async close() {
      await stopWith('SIGTERM')
      if (!o.dir) rmSync(dir, { recursive: true, force: true })
    },
  }
}

export interface Cluster {
  readonly hubs: Hub[]
  /** Client URLs of every node (for nats.js `servers`). */
  readonly urls: string[]
  readonly leafUrls: string[]
  close(): Promise<void>
}

/** `n` nodes in one cluster (name HUB), each with a leafnodes listener. */
export async function startCluster(n = 3, o: { leafConfig?: string; extra?: string } = {}): Promise<Cluster> {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-cluster-'))
  const nodes: { port: number; leafPort: number; routePort: number }[] = []
  for (let i = 0; i < n; i++) nodes.push({ port: await freePort(), leafPort: await freePort(), routePort: await freePort() })
  const routes = nodes.map((x) => `nats-route://127.0.0.1:${x.routePort}`).join(', ')
  const hubs = await Promise.all(
    nodes.map((x, i) =>
      startHub({
        name: `n${i + 1}`,
        port: x.port,
        leafPort: x.leafPort,
        dir,
        leafConfig: o.leafConfig,
        extra: `cluster { name: HUB, listen: 127.0.0.1:${x.routePort}, routes: [ ${routes} ] }\n${o.extra ?? ''}`,
      }),
    ),
  )
  return {
    hubs,
    urls: hubs.map((h) => h.url),
    leafUrls: hubs.map((h) => h.leafUrl),
    async close() {
      await Promise.all(hubs.map((h) => h.stop()))
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Polls `cond` every 20 ms; throws naming `what` after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

interface WithUplink {
  readonly uplink: import('../../src/leaf/index.ts').Uplink | null
}

/** Waits until remote `i` of broker `b` is connected and has the hub's interest. */
export function leafUp(b: WithUplink, ms = 10_000, i = 0): Promise<void> {
  return until(() => b.uplink?.remotes[i]?.state === 'connected', ms, `leaf remote ${i} to connect`)
}

/** Waits until the hub has told remote `i` about interest in exactly `subject` (optionally with a queue). */
export function hubInterest(b: WithUplink, subject: string, ms = 5000, i = 0): Promise<void> {
  return until(() => b.uplink?.remotes[i]?.link?.hubKeys.has(subject) === true, ms, `hub interest in ${subject}`)
}

export interface FakeConn {
  sock: net.Socket
  /** Everything sprig sent on this connection. */
  text: string
}

/** A raw TCP server playing hub (announces LS+ up.>); `onConnect` says what it does once CONNECT arrives. */
export async function fakeHub(t: { teardown(f: () => unknown): void }, onConnect: (c: FakeConn) => void, opts: { answerPing?: boolean } = {}): Promise<{ port: number; conns: FakeConn[] }> {
  const conns: FakeConn[] = []
  const server = net.createServer((sock) => {
    const c: FakeConn = { sock, text: '' }
    conns.push(c)
    sock.on('error', () => {})
    sock.write(`INFO {"server_id":"NFAKE","server_name":"fake","version":"2.9.10","proto":1,"headers":true,"max_payload":1048576,"client_id":${conns.length},"nonce":"abc","leafnode_urls":["127.0.0.1:1"]} \r\n`)
    let connected = false
    let pings = 0
    let tail = ''
    sock.on('data', (d) => {
      // Only the new text (plus the last 6 characters) is searched for PINGs: a bulk test
      // sends megabytes, and searching all of c.text each time would flatten it each time.
      const fresh = tail + d.toString()
      c.text += fresh.slice(tail.length)
      let i = tail === '' ? 0 : 1
      tail = fresh.slice(-6)
      if (!connected && c.text.includes('CONNECT ')) {
        connected = true
        sock.write(`INFO {"server_id":"NFAKE","server_name":"fake","connect_info":true,"remote_account":"$G"} \r\nLS+ up.>\r\n`)
        onConnect(c)
      }
      for (; (i = fresh.indexOf('PING\r\n', i)) >= 0; i += 6) if (i === 0 || fresh[i - 1] === '\n') pings++
      for (; opts.answerPing !== false && pings > 0; pings--) sock.write('PONG\r\n')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  t.teardown(() => {
    for (const c of conns) c.sock.destroy()
    server.close()
  })
  return { port: (server.address() as net.AddressInfo).port, conns }
}
