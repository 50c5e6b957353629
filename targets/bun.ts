// Bun: node:net by default for NATS. `npm run bench` found Bun's native Bun.listen no faster
// for that load (see docs/runtimes.md); SPRIG_NET=native selects Bun.listen for NATS
// too. The MQTT listener uses Bun.listen (SPRIG_NET=node: node:net), for its smaller
// per-socket memory.
// Bun.listen's write() may take only part of the data and returns how much it took, so each
// socket keeps the unwritten rest here until Bun calls drain().

import process from 'node:process'
import type { Conn, Wire } from '../src/host.ts'
import { listenNet } from './net.ts'
import { afterAccept, END_GRACE_MS, listenError, plainAddress, standardHost, type Accept, type Listener, type Runtime } from './runtime.ts'

interface BunSocket {
  write(data: Uint8Array): number
  end(): void
  terminate(): void
  setNoDelay?(on: boolean): void
  pause?(): void
  resume?(): void
  readonly remoteAddress: string
  readonly remotePort: number
  data: BunWire
}

declare const Bun: {
  version: string
  listen(o: unknown): { port: number; stop(closeActive?: boolean): void }
}

function listenBun(host: string, port: number, accept: Accept): Promise<Listener> {
  let open = 0
  try {
    const l = Bun.listen({
      hostname: host,
      port,
      socket: {
        open(s: BunSocket) {
          open++
          afterAccept()
          const w = new BunWire(s)
          s.data = w
          s.setNoDelay?.(true)
          w.conn = accept(w)
        },
        data(s: BunSocket, d: Uint8Array) {
          s.data.conn?.data(d)
        },
        drain(s: BunSocket) {
          const w = s.data
          if (!w.writeRest()) return
          if (w.closing) s.end()
          else w.conn?.drained()
        },
        close(s: BunSocket, err?: Error) {
          open--
          const w = s.data
          const c = w.conn
          w.conn = null
          c?.closed(w.error ?? err?.message)
        },
        // 'close' follows; the adapter logs the reason with the peer.
        error(s: BunSocket, err: Error) {
          if (s.data) s.data.error ??= err.message
        },
      },
    })
    return Promise.resolve({ port: l.port, close: () => l.stop(false), open: () => open })
  } catch (e) {
    return Promise.reject(listenError(host, port, e))
  }
}

/**
 * A Bun socket as the adapters see it. A class, so an idle connection costs one small object
 * (methods on the prototype, no closures); the unwritten rest exists only while Bun is behind.
 */
class BunWire implements Wire {
  conn: Conn | null = null
  /** Bytes Bun has not taken yet, oldest first; null when there are none. */
  rest: Uint8Array[] | null = null
  closing = false
  /** The first socket error, handed to Conn.closed() as the reason. */
  error: string | null = null
  readonly remoteAddress: string
  readonly remotePort: number

  constructor(readonly s: BunSocket) {
    this.remoteAddress = plainAddress(s.remoteAddress)
    this.remotePort = s.remotePort
  }

  write(d: Uint8Array): boolean {
    if (this.rest !== null) {
      this.rest.push(d)
      return false
    }
    const n = this.s.write(d)
    if (n >= d.length) return true
    this.rest = [n > 0 ? d.subarray(n) : d]
    return false
  }

  end(): void {
    this.closing = true
    if (this.rest === null) this.s.end()
    setTimeout(terminate, END_GRACE_MS, this.s).unref()
  }

  buffered(): number {
    let n = 0
    if (this.rest !== null) for (const d of this.rest) n += d.length
    return n
  }

  destroy(): void {
    this.s.terminate()
  }

  pause(): void {
    this.s.pause?.()
  }

  resume(): void {
    this.s.resume?.()
  }

  /** Writes the queued rest; true once nothing is left. */
  writeRest(): boolean {
    const rest = this.rest
    if (rest === null) return true
    while (rest.length > 0) {
      const d = rest[0]!
      const n = this.s.write(d)
      if (n < d.length) {
        rest[0] = n > 0 ? d.subarray(n) : d
        return false
      }
      rest.shift()
    }
    this.rest = null
    return true
  }
}

function terminate(s: BunSocket): void {
  s.terminate()
}

/** A function, not a constant: this module is also loaded (but not called) under Node and Deno. */
export function bun(): Runtime {
  const net = process.env.SPRIG_NET
  return {
    name: `bun ${Bun.version}${net === 'native' ? ' (Bun.listen)' : net === 'node' ? ' (node:net)' : ''}`,
    host: standardHost,
    listen: net === 'native' ? listenBun : listenNet,
    // MQTT: Bun.listen unless SPRIG_NET=node. Thousands of idle devices are the MQTT load, and
    // a Bun.listen socket costs ~4 KB of RSS where a node:net one costs ~13 KB (measured
    // with 1,000 idle connections); throughput was the same (docs/runtimes.md).
    listenMqtt: net === 'node' ? listenNet : listenBun,
  }
}
