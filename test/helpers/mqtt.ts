// A raw MQTT connection for conformance tests: send packets (framed by mqtt-packet, or any
// bytes), collect what the server sends back as parsed packets, and see when it closes.
// MQTT.js (the `mqtt` package) is the client for everything a real device would do.

import net from 'node:net'
import { generate, parser, type Packet } from 'mqtt-packet'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { connect, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node'

export class RawMqtt {
  readonly packets: Packet[] = []
  closed = false
  private waiters: (() => void)[] = []
  private constructor(
    readonly sock: net.Socket,
    readonly version: 4 | 5,
  ) {
    const p = parser({ protocolVersion: version })
    p.on('packet', (pk: Packet) => {
      this.packets.push(pk)
      this.wake()
    })
    p.on('error', () => {})
    sock.on('data', (d: Buffer) => p.parse(d))
    sock.on('error', () => {})
    sock.on('close', () => {
      this.closed = true
      this.wake()
    })
  }

  static open(port: number, version: 4 | 5 = 4): Promise<RawMqtt> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1', () => resolve(new RawMqtt(s, version)))
      s.once('error', reject)
    })
  }

  /** Opens and sends CONNECT; resolves with the CONNACK. */
  static async connect(port: number, version: 4 | 5 = 4, extra: Record<string, unknown> = {}): Promise<RawMqtt> {
    const c = await RawMqtt.open(port, version)
    c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: 0, clientId: `raw-${Math.random()}`, ...extra } as Packet)
    await c.next('connack')
    return c
  }

  send(p: Packet | Uint8Array): void {
    this.sock.write(p instanceof Uint8Array ? p : generate(p, { protocolVersion: this.version }))
  }

  private wake(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  /** Waits until `ok()` holds, the connection closes, or `ms` pass; returns ok(). */
  async until(ok: () => boolean, ms = 3000): Promise<boolean> {
    const end = Date.now() + ms
    while (!ok() && !this.closed && Date.now() < end) {
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.max(1, end - Date.now()))
        this.waiters.push(() => {
          clearTimeout(t)
          r()
        })
      })
    }
    return ok()
  }

  /** The first not-yet-taken packet of this type (waits for it), or undefined. */
  async next(cmd: Packet['cmd'], ms = 3000): Promise<Packet | undefined> {
    await this.until(() => this.packets.some((p) => p.cmd === cmd), ms)
    const i = this.packets.findIndex((p) => p.cmd === cmd)
    return i < 0 ? undefined : this.packets.splice(i, 1)[0]
  }

  /** Resolves true once the server closed the connection (within ms). */
  async waitClosed(ms = 3000): Promise<boolean> {
    await this.until(() => this.closed, ms)
    return this.closed
  }

  close(): void {
    this.sock.destroy()
  }
}

/** An MQTT.js client; the test closes it when it ends. */
export async function mqttClient(t: { teardown(f: () => unknown): void }, url: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  t.teardown(() => c.endAsync(true))
  return c
}

/** Resolves with the first `n` messages a client receives (or what came within ms). */
export function messages(c: MqttClient, n: number, ms = 3000): Promise<{ topic: string; payload: string; qos: number; retain: boolean }[]> {
  const got: { topic: string; payload: string; qos: number; retain: boolean }[] = []
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      c.removeListener('message', on)
      resolve(got)
    }
    const on = (topic: string, payload: Buffer, pk: { qos: number; retain: boolean }): void => {
      got.push({ topic, payload: payload.toString(), qos: pk.qos, retain: pk.retain })
      if (got.length >= n) done()
    }
    const timer = setTimeout(done, ms)
    c.on('message', on)
  })
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** A nats.js connection to `url` (no reconnects) that the test closes when it ends. */
export async function natsClient(
  t: { teardown(f: () => unknown): void },
  url: string,
  opts: Partial<ConnectionOptions> = {},
): Promise<NatsConnection> {
  const nc = await connect({ servers: url, reconnect: false, ...opts })
  t.teardown(async () => {
    if (!nc.isClosed()) await nc.close()
  })
  return nc
}

/** Subjects NATS subscriptions to `subjects` receive until `marker` arrives (or 3 s pass). */
export function natsUntil(nc: NatsConnection, subjects: string | string[], marker: string): Promise<string[]> {
  const got: string[] = []
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(got), 3000)
    for (const s of typeof subjects === 'string' ? [subjects] : subjects) {
      nc.subscribe(s, {
        callback: (err, m) => {
          if (err) return
          got.push(m.subject)
          if (m.subject === marker) {
            clearTimeout(timer)
            resolve(got)
          }
        },
      })
    }
  })
}
