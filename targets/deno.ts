// Deno: node:net listeners by default. TLS on Deno must go through node:tls anyway
// (Deno.listenTls cannot ask for client certificates), so one socket API serves both.
// SPRIG_NET=native selects a Deno.listen listener instead, which the benchmark compares
// (it measured no faster; docs/runtimes.md).

import process from 'node:process'
import type { Conn, Wire } from '../src/host.ts'
import { listenNet, releaseRead, useReadRelease } from './net.ts'
import { denoLibc, libcOnce, pageOutAfter, pageOutExecutable, trimMalloc } from './pageout.ts'
import { acceptFailed, afterAccept, afterClose, END_GRACE_MS, listenError, standardHost, type Accept, type Listener, type Runtime } from './runtime.ts'

interface DenoConn {
  read(p: Uint8Array): Promise<number | null>
  write(p: Uint8Array): Promise<number>
  close(): void
  setNoDelay?(on?: boolean): void
  readonly remoteAddr: { hostname: string; port: number }
}

declare const Deno: {
  version: { deno: string }
  listen(o: { hostname: string; port: number }): { accept(): Promise<DenoConn>; addr: { port: number }; close(): void }
}

/** Bounds of a Deno.listen connection's read buffer: what an idle one holds, and the most one read takes. */
export const READ_MIN = 512
export const READ_MAX = 64 * 1024

/**
 * The next read's buffer size after a read of n bytes into a buffer of `size`: a full read
 * asks for four times more (up to READ_MAX), one under an eighth steps down by four. Every
 * connection has one read pending with its own buffer, which Deno fills in place; a fixed 64
 * KiB made each idle connection hold 64 KiB (10,000 idle: 810 MiB RSS).
 */
export function nextReadSize(size: number, n: number): number {
  if (n >= size) return Math.min(READ_MAX, size * 4)
  if (n <= size >> 3) return Math.max(READ_MIN, size >> 2)
  return size
}

function listenDeno(host: string, port: number, accept: Accept): Promise<Listener> {
  let l
  try {
    l = Deno.listen({ hostname: host, port })
  } catch (e) {
    return Promise.reject(listenError(host, port, e))
  }
  let open = 0
  let closed = false
  const listener = l
  void (async () => {
    let backoff = 5
    while (!closed) {
      let c: DenoConn
      try {
        c = await listener.accept()
      } catch (e) {
        if (closed) return
        // EMFILE and the like: the listener is still there; wait (up to 1 s) and try again.
        acceptFailed(e as Error)
        await new Promise((r) => setTimeout(r, backoff))
        backoff = Math.min(1000, backoff * 2)
        continue
      }
      backoff = 5
      open++
      afterAccept()
      void serveConn(c, accept).finally(() => {
        open--
        afterClose()
      })
    }
  })()
  const close = (): void => {
    closed = true
    listener.close()
  }
  return Promise.resolve({ port: l.addr.port, close, open: () => open })
}

/** One connection: a read loop, and writes chained one at a time (false while one is in flight). */
async function serveConn(c: DenoConn, accept: Accept): Promise<void> {
  c.setNoDelay?.(true)
  const queue: Uint8Array[] = []
  let writing = false
  let gone = false
  let ending = false
  let conn: Conn | null = null
  /** The first I/O error, handed to Conn.closed() as the reason. */
  let error: string | undefined
  // pause(): the read loop waits on this until resume().
  let paused: Promise<void> | null = null
  let unpause: (() => void) | null = null
  const close = (): void => {
    if (gone) return
    gone = true
    unpause?.() // a paused read loop wakes up, finds the connection closed and ends
    try {
      c.close()
    } catch {
      // already closed
    }
  }
  const pump = async (): Promise<void> => {
    writing = true
    try {
      while (queue.length > 0 && !gone) {
        let d = queue[0]!
        while (d.length > 0) d = d.subarray(await c.write(d))
        queue.shift()
      }
    } catch (e) {
      error ??= (e as Error).message
      close()
    }
    writing = false
    if (ending) close()
    else if (!gone) conn?.drained()
  }
  const wire: Wire = {
    write(d) {
      queue.push(d)
      if (!writing) void pump()
      return queue.length <= 1 && !writing
    },
    end() {
      ending = true
      if (!writing) close()
      setTimeout(close, END_GRACE_MS)
    },
    buffered() {
      let n = 0
      for (const d of queue) n += d.length
      return n
    },
    destroy: close,
    pause() {
      paused ??= new Promise((r) => (unpause = r))
    },
    resume() {
      const r = unpause
      paused = unpause = null
      r?.()
    },
    remoteAddress: c.remoteAddr.hostname,
    remotePort: c.remoteAddr.port,
  }
  conn = accept(wire)
  if (conn) {
    let buf = new Uint8Array(READ_MIN)
    try {
      for (;;) {
        if (paused !== null) await paused
        const n = await c.read(buf)
        if (n === null) break
        conn.data(buf.subarray(0, n))
        const size = nextReadSize(buf.length, n)
        if (size !== buf.length) {
          // The adapters copy what they keep (this buffer was always reused), so the old one goes now.
          releaseRead(buf)
          buf = new Uint8Array(size)
        }
      }
    } catch (e) {
      // reset by peer, or closed by us
      if (!gone) error ??= (e as Error).message
    }
  }
  close()
  conn?.closed(error)
}

/** A function, not a constant: this module is also loaded (but not called) under Node and Bun. */
export function deno(): Runtime {
  const native = process.env.SPRIG_NET === 'native'
  // node:net hands each read a new buffer: freed once read (net.ts releaseRead). The native
  // listener reuses one buffer per connection and never goes through this.
  useReadRelease(releaseRead)
  // libc through Deno's FFI, opened on first use (after start-up or a burst), only when the
  // ffi permission was granted (`deno run -A`); without it both calls log why at debug level.
  const libc = libcOnce(denoLibc)
  const after = pageOutAfter(process.env.SPRIG_PAGEOUT)
  return {
    name: `deno ${Deno.version.deno}${native ? ' (Deno.listen)' : ''}`,
    host: standardHost,
    listen: native ? listenDeno : listenNet,
    ...(after !== null ? { pageOut: { after, run: () => pageOutExecutable(libc) } } : {}),
    trim: () => trimMalloc(libc),
  }
}
