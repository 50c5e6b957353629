// WebSocket throughput, sprig against the references on the same machine, same load:
// NATS pub→sub over WebSocket against nats-server's websocket listener, and MQTT QoS 0 over
// WebSocket against mosquitto's (`protocol websockets`). One publisher sends 32 KB frames of
// 16-byte messages (as nats.js batches), one subscriber counts what arrives; rates are
// delivered messages per second, median of the rounds. The clients are raw sockets sending
// frames built once, so the servers are what is measured. Not part of `npm run bench` yet:
//   npm run bundle && bun test/bench/ws-load.ts [--runtimes node,bun,deno] [--n 300000] [--rounds 3]

import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { runtimeBin } from '../helpers/bins.ts'

const argv = process.argv.slice(2)
const arg = (k: string, d: string): string => {
  const i = argv.indexOf(`--${k}`)
  return i >= 0 ? argv[i + 1]! : d
}
const N = Number(arg('n', '300000'))
const ROUNDS = Number(arg('rounds', '3'))
const RUNTIMES = arg('runtimes', 'node,bun,deno').split(',')
const BUNDLE = path.resolve(import.meta.dirname, '../../dist/sprig.js')
const TMP = mkdtempSync(path.join(os.tmpdir(), 'sprig-wsbench-'))
process.on('exit', () => rmSync(TMP, { recursive: true, force: true }))
const PAYLOAD = 'x'.repeat(16)
const BATCH = 1000
const SUBACK = Buffer.from([0x90, 0x03, 0x00, 0x01])

function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => r(p))
    })
  })
}

async function waitPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => (s.destroy(), r(true)))
      s.on('error', () => r(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`port ${port} never opened`)
}

/**
 * A raw WebSocket client on a TCP socket: the upgrade by hand, then frames built once with a
 * zero masking key (legal, and it makes masking free), so the load generator costs almost
 * nothing and the servers are what is measured.
 */
function open(url: string, protocol?: string): Promise<net.Socket> {
  const u = new URL(url)
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname)
    sock.setNoDelay(true)
    let head = Buffer.alloc(0)
    const onData = (d: Buffer): void => {
      head = Buffer.concat([head, d])
      const end = head.indexOf('\r\n\r\n')
      if (end < 0) return
      sock.removeListener('data', onData)
      if (!head.subarray(0, 12).toString().includes('101')) return reject(new Error(head.subarray(0, end).toString()))
      const rest = head.subarray(end + 4)
      sock.pause()
      resolve(sock)
      if (rest.length > 0) process.nextTick(() => sock.emit('data', rest))
    }
    sock.on('data', onData)
    sock.once('error', reject)
    sock.write(`GET ${u.pathname} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : ''}\r\n`)
  })
}

/** A masked binary frame with a zero key (payload < 64 KiB). */
function frame(payload: Buffer): Buffer {
  const h = payload.length < 126 ? Buffer.from([0x82, 0x80 | payload.length, 0, 0, 0, 0]) : Buffer.from([0x82, 0x80 | 126, payload.length >> 8, payload.length & 255, 0, 0, 0, 0])
  return Buffer.concat([h, payload])
}

/** Writes `f` `count` times, waiting for drain when the socket is full. */
async function pump(w: net.Socket, f: Buffer, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    if (!w.write(f)) await new Promise((r) => w.once('drain', r))
  }
}

/** `ready` once subscribed (NATS PONG, MQTT SUBACK); `done` once `bytes` more have arrived. */
function receive(w: net.Socket, bytes: number): { ready: Promise<void>; done: Promise<void> } {
  let got = 0
  let armed = false
  let onReady!: () => void
  const ready = new Promise<void>((r) => (onReady = r))
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${bytes} bytes`)), 120_000)
    w.on('data', (d: Buffer) => {
      if (!armed) {
        if (d.includes('PONG') || d.includes(SUBACK)) {
          armed = true
          onReady()
        }
        return
      }
      // Frame headers (2-10 bytes per server frame of up to 64 KiB) count too: < 0.1%.
      got += d.length
      if (got >= bytes) {
        clearTimeout(timer)
        resolve()
      }
    })
    w.resume()
  })
  return { ready, done }
}

async function natsRun(url: string): Promise<number> {
  const sub = await open(url)
  const pub = await open(url)
  pub.resume()
  const r = receive(sub, N * `MSG bench 1 16\r\n${PAYLOAD}\r\n`.length)
  sub.write(frame(Buffer.from('CONNECT {"verbose":false,"pedantic":false}\r\nSUB bench 1\r\nPING\r\n')))
  await r.ready
  pub.write(frame(Buffer.from('CONNECT {"verbose":false,"pedantic":false}\r\n')))
  const t0 = performance.now()
  await pump(pub, frame(Buffer.from(`PUB bench 16\r\n${PAYLOAD}\r\n`.repeat(BATCH))), N / BATCH)
  await r.done
  const ms = performance.now() - t0
  sub.destroy()
  pub.destroy()
  return (N / ms) * 1000
}

function mqttConnect(id: string): Buffer {
  const body = Buffer.concat([Buffer.from([0, 4]), Buffer.from('MQTT'), Buffer.from([4, 2, 0, 60, 0, id.length]), Buffer.from(id)])
  return Buffer.concat([Buffer.from([0x10, body.length]), body])
}

async function mqttRun(url: string): Promise<number> {
  const sub = await open(url, 'mqtt')
  const pub = await open(url, 'mqtt')
  const publish = Buffer.concat([Buffer.from([0x30, 2 + 5 + 16, 0, 5]), Buffer.from('bench'), Buffer.from(PAYLOAD)])
  const r = receive(sub, N * publish.length)
  sub.write(frame(mqttConnect('wsbench-sub')))
  sub.write(frame(Buffer.concat([Buffer.from([0x82, 2 + 2 + 5 + 1, 0, 1, 0, 5]), Buffer.from('bench'), Buffer.from([0])])))
  await r.ready
  const connack = new Promise((res) => pub.once('data', res))
  pub.resume()
  pub.write(frame(mqttConnect('wsbench-pub')))
  await connack
  const t0 = performance.now()
  await pump(pub, frame(Buffer.concat(Array.from({ length: BATCH }, () => publish))), N / BATCH)
  await r.done
  const ms = performance.now() - t0
  sub.destroy()
  pub.destroy()
  return (N / ms) * 1000
}

async function server(cmd: string, args: string[], port: number): Promise<ChildProcess> {
  const p = spawn(cmd, args, { stdio: 'ignore', env: { ...process.env, NODE_OPTIONS: '' } })
  const exited = new Promise<never>((_, reject) => p.once('exit', (code) => reject(new Error(`${cmd} exited (${code})`))))
  await Promise.race([waitPort(port), exited])
  return p
}

async function stop(p: ChildProcess): Promise<void> {
  const exited = new Promise((r) => p.once('exit', r))
  p.kill('SIGTERM')
  setTimeout(() => p.kill('SIGKILL'), 3000).unref()
  await exited
}

type Spec = { name: string; kind: 'nats' | 'mqtt'; start(ws: number, aux: number): Promise<ChildProcess> }

const specs: Spec[] = []
for (const kind of ['nats', 'mqtt'] as const) {
  specs.push(
    kind === 'nats'
      ? {
          name: 'nats-server', kind, start: (ws, aux) => {
            const conf = path.join(TMP, `nats-${ws}.conf`)
            // No websocket.host: nats-server 2.9 fails to bind with one ("address already in use").
            writeFileSync(conf, `listen: 127.0.0.1:${aux}\nwebsocket { port: ${ws}, no_tls: true }\n`)
            return server(process.env.NATS_SERVER_BIN || 'nats-server', ['-c', conf], ws)
          },
        }
      : {
          name: 'mosquitto', kind, start: (ws) => {
            const conf = path.join(TMP, `mosq-${ws}.conf`)
            writeFileSync(conf, `listener ${ws} 127.0.0.1\nprotocol websockets\nallow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\npersistence false\nlog_dest stderr\nlog_type error\n`)
            return server('mosquitto', ['-c', conf], ws)
          },
        },
  )
  for (const rt of RUNTIMES) {
    const bin = runtimeBin(rt as 'node' | 'bun' | 'deno')
    if (!bin) continue
    specs.push({
      name: `sprig/${rt}`, kind, start: (ws, aux) => {
        const conf = path.join(TMP, `sprig-${ws}.conf`)
        writeFileSync(conf, `host: 127.0.0.1\nport: ${aux}\nmqtt { port: 0 }\nwebsocket { port: ${ws}, no_tls: true }\n`)
        return server(bin, [...(rt === 'deno' ? ['run', '-A'] : []), BUNDLE, "-c", conf], ws)
      },
    })
  }
}

const results = new Map<string, number[]>()
for (let round = 0; round < ROUNDS; round++) {
  for (const s of specs) {
    const [ws, aux] = [await freePort(), await freePort()]
    let p: ChildProcess
    try {
      p = await s.start(ws, aux)
    } catch (e) {
      // mosquitto 2.0.11 (Debian 12) here: "Unable to start any listening sockets" for websockets.
      if (round === 0) console.error(`${s.kind} ${s.name}: did not start: ${(e as Error).message}`)
      continue
    }
    try {
      const rate = s.kind === 'nats' ? await natsRun(`ws://127.0.0.1:${ws}`) : await mqttRun(`ws://127.0.0.1:${ws}${s.name.startsWith('sprig') ? '/mqtt' : ''}`)
      const k = `${s.kind} ${s.name}`
      results.set(k, [...(results.get(k) ?? []), rate])
    } catch (e) {
      console.error(`${s.kind} ${s.name}: ${(e as Error).message}`)
    } finally {
      await stop(p)
    }
  }
}
const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!
console.log(`WebSocket, 1 publisher → 1 subscriber, ${N} × 16 B messages in 32 KB frames, median of ${ROUNDS} rounds (msgs/s delivered)`)
for (const kind of ['nats', 'mqtt']) {
  const ref = results.get(`${kind} ${kind === 'nats' ? 'nats-server' : 'mosquitto'}`)
  for (const [k, v] of results) {
    if (!k.startsWith(kind)) continue
    const ratio = ref && !k.includes('nats-server') && !k.includes('mosquitto') ? `  ${(median(v) / median(ref)).toFixed(2)}×` : ''
    console.log(`${k.padEnd(22)} ${Math.round(median(v)).toLocaleString('en').padStart(12)}${ratio}`)
  }
}
