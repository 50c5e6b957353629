// Run by test/footprint.test.ts under Bun: one idle MQTT connection the way Bun.listen makes
// it (bunHandlers with the guarded accept, a fake socket), CONNECT and SUBSCRIBE, then the
// JSC heap snapshot's size of each per-connection object, as JSON on stdout.

import { bunHandlers, type BunSocket, type BunWire } from '../../targets/bun.ts'
import { guardAccept } from '../../targets/runtime.ts'
import { acceptMqtt } from '../../adapters/mqtt/index.ts'
import { createLogger } from '../../src/log.ts'
import { defaults } from '../../src/options.ts'
import { Server } from '../../src/server.ts'

declare const Bun: { generateHeapSnapshot(): { nodes: number[]; nodeClassNames: string[] } }

const queue: (() => void)[] = []
const host = { now: () => 1000, defer: (fn: () => void) => void queue.push(fn), every: () => ({ cancel: () => {} }) }
const log = createLogger({ level: 'error', sink: () => {} })
const srv = new Server({ ...defaults, port: 4222 }, host as never, log)
const handlers = bunHandlers(guardAccept((w) => acceptMqtt(srv, w), log), () => {})
const sockets: BunSocket[] = []
const N = 50
for (let i = 0; i < N; i++) {
  const s = { remoteAddress: '127.0.0.1', remotePort: 1000 + i, data: null as unknown as BunWire, write: (d: Uint8Array) => d.length, end() {}, terminate() {} }
  handlers.open(s)
  const id = `footprint-${i}`
  const topic = `dev/${i}/cmd`
  const connect = [0x10, 12 + id.length, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 60, 0, id.length, ...Buffer.from(id)]
  const subscribe = [0x82, 5 + topic.length, 0, 1, 0, topic.length, ...Buffer.from(topic), 1]
  handlers.data(s, new Uint8Array(connect))
  handlers.data(s, new Uint8Array(subscribe))
  while (queue.length) queue.shift()!()
  sockets.push(s)
}
const snap = Bun.generateHeapSnapshot()
const sizes: Record<string, number> = {}
const counts: Record<string, number> = {}
for (let i = 0; i < snap.nodes.length; i += 4) {
  const c = snap.nodeClassNames[snap.nodes[i + 2]!]!
  if (['MqttConn', 'Outbound', 'Subscription', 'BunWire', 'GuardedConn'].includes(c)) {
    sizes[c] = Math.max(sizes[c] ?? 0, snap.nodes[i + 1]!)
    counts[c] = (counts[c] ?? 0) + 1
  }
}
console.log(JSON.stringify({ sizes, counts, connected: srv.sessions.size }))
