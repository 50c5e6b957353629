// Bun: node:net by default. `npm run bench` found Bun's native Bun.listen no faster for this
// load (see README, "Runtime choice"), so all three runtimes share one socket path;
// SPRIG_NET=native selects Bun.listen, which the benchmark keeps comparing.
// Bun.listen's write() may take only part of the data and returns how much it took, so each
// socket keeps the unwritten rest here until Bun calls drain().

import process from 'node:process'
import type { Conn, Wire } from '../src/host.ts'
import { listenNet } from './net.ts'
import { listenError, plainAddress, standardHost, type Accept, type Listener, type Runtime } from './runtime.ts'

interface BunSocket {
  write(data: Uint8Array): number
  end(): void
  terminate(): void
  setNoDelay?(on: boolean): void
  readonly remoteAddress: string
  readonly remotePort: number
  data: State
}

interface State {
  conn: Conn | null
  /** Bytes Bun has not taken yet, oldest first. */
  rest: Uint8Array[]
  closing: boolean
}

declare const Bun: {
  version: string
  listen(o: unknown): { port: number; stop(closeActive?: boolean): void }
}

const END_GRACE_MS = 2000

function listenBun(host: string, port: number, accept: Accept): Promise<Listener> {
  let open = 0
  try {
    const l = Bun.listen({
      hostname: host,
      port,
      socket: {
        open(s: BunSocket) {
          open++
          const st: State = { conn: null, rest: [], closing: false }
          s.data = st
          s.setNoDelay?.(true)
          st.conn = accept(wireFor(s, st))
        },
        data(s: BunSocket, d: Uint8Array) {
          s.data.conn?.data(d)
        },
        drain(s: BunSocket) {
          const st = s.data
          if (!writeRest(s, st)) return
          if (st.closing) s.end()
          else st.conn?.drained()
        },
        close(s: BunSocket) {
          open--
          const st = s.data
          const c = st.conn
          st.conn = null
          c?.closed()
        },
        error() {},
      },
    })
    return Promise.resolve({ port: l.port, close: () => l.stop(false), open: () => open })
  } catch (e) {
    return Promise.reject(listenError(host, port, e))
  }
}

function wireFor(s: BunSocket, st: State): Wire {
  return {
    write(d) {
      if (st.rest.length > 0) {
        st.rest.push(d)
        return false
      }
      const n = s.write(d)
      if (n >= d.length) return true
      st.rest.push(n > 0 ? d.subarray(n) : d)
      return false
    },
    end() {
      st.closing = true
      if (st.rest.length === 0) s.end()
      setTimeout(() => s.terminate(), END_GRACE_MS).unref()
    },
    buffered() {
      let n = 0
      for (const d of st.rest) n += d.length
      return n
    },
    destroy: () => s.terminate(),
    remoteAddress: plainAddress(s.remoteAddress),
    remotePort: s.remotePort,
  }
}

/** Writes queued rest; true once nothing is left. */
function writeRest(s: BunSocket, st: State): boolean {
  while (st.rest.length > 0) {
    const d = st.rest[0]!
    const n = s.write(d)
    if (n < d.length) {
      st.rest[0] = n > 0 ? d.subarray(n) : d
      return false
    }
    st.rest.shift()
  }
  return true
}

/** A function, not a constant: this module is also loaded (but not called) under Node and Deno. */
export function bun(): Runtime {
  return {
    name: `bun ${Bun.version}${process.env.SPRIG_NET === 'native' ? ' (Bun.listen)' : ''}`,
    host: standardHost,
    listen: process.env.SPRIG_NET === 'native' ? listenBun : listenNet,
  }
}
