// Bun: Bun.listen for the plain NATS and MQTT listeners (SPRIG_NET=node: node:net for both);
// TLS listeners and the uplink's dial stay on node:net + node:tls. Bun.listen costs less CPU
// per message and less memory per socket than Bun's node:net (docs/benchmarks.md).
// Bun.listen's write() may take only part of the data and returns how much it took, so each
// socket keeps the unwritten rest here until Bun calls drain().

import process from 'node:process'
import { Buffer } from 'node:buffer'
import { EMPTY, useRangeCopy } from '../src/bytes.ts'
import type { Conn, Wire } from '../src/host.ts'
import { listenNet } from './net.ts'
import { afterAccept, END_GRACE_MS, listenError, plainAddress, standardHost, type Accept, type Listener, type Runtime } from './runtime.ts'

export interface BunSocket {
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

/** Bun.listen's socket callbacks, one set for every socket (exported for the fake-socket test). */
export function bunHandlers(accept: Accept, count: (delta: number) => void) {
  return {
    open(s: BunSocket) {
      count(1)
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
      count(-1)
      const w = s.data
      const c = w.conn
      w.conn = null
      c?.closed(w.error ?? err?.message)
    },
    // 'close' follows; the adapter logs the reason with the peer.
    error(s: BunSocket, err: Error) {
      if (s.data) s.data.error ??= err.message
    },
  }
}

function listenBun(host: string, port: number, accept: Accept): Promise<Listener> {
  let open = 0
  try {
    const l = Bun.listen({ hostname: host, port, socket: bunHandlers(accept, (d) => (open += d)) })
    return Promise.resolve({ port: l.port, close: () => l.stop(false), open: () => open })
  } catch (e) {
    return Promise.reject(listenError(host, port, e))
  }
}

/**
 * A Bun socket as the adapters see it. A class, so an idle connection costs one small object
 * (methods on the prototype, no closures); the unwritten rest exists only while Bun is behind.
 */
export class BunWire implements Wire {
  conn: Conn | null = null
  /** Bytes Bun has not taken yet, oldest first from `head`; null when there are none. */
  rest: Uint8Array[] | null = null
  /** Index of the first unsent chunk in `rest` (no shift(): a slow reader may queue many). */
  head = 0
  /** Bytes in `rest` from `head`: buffered() is asked per write while blocked. */
  held = 0
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
      this.held += d.length
      return false
    }
    const n = this.s.write(d)
    if (n >= d.length) return true
    const r = n > 0 ? d.subarray(n) : d
    this.rest = [r]
    this.head = 0
    this.held = r.length
    return false
  }

  /** Bun.listen copies nothing it did not send: with no rest, the writer may reuse its buffer. */
  idle(): boolean {
    return this.rest === null
  }

  end(): void {
    this.closing = true
    if (this.rest === null) this.s.end()
    setTimeout(terminate, END_GRACE_MS, this.s).unref()
  }

  buffered(): number {
    return this.held
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
    while (this.head < rest.length) {
      const d = rest[this.head]!
      const n = this.s.write(d)
      if (n < d.length) {
        if (n > 0) {
          rest[this.head] = d.subarray(n)
          this.held -= n
        }
        return false
      }
      this.held -= d.length
      rest[this.head++] = EMPTY // let the sent chunk go before the rest is done
    }
    this.rest = null
    this.head = 0
    this.held = 0
    return true
  }
}

function terminate(s: BunSocket): void {
  s.terminate()
}

/** A function, not a constant: this module is also loaded (but not called) under Node and Deno. */
/** Buffer's copy() takes a range of any Uint8Array natively: no view made (src/bytes.ts rangeCopy). */
const bufferCopy = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number

export function bunRangeCopy(b: Uint8Array, p: number, src: Uint8Array, at: number, n: number): number {
  return p + bufferCopy.call(src, b, p, at, at + n)
}

export function bun(): Runtime {
  const viaNode = process.env.SPRIG_NET === 'node'
  useRangeCopy(bunRangeCopy)
  return {
    name: `bun ${Bun.version}${viaNode ? ' (node:net)' : ''}`,
    host: standardHost,
    listen: viaNode ? listenNet : listenBun,
  }
}
