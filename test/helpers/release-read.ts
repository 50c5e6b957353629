// Run under Bun by test/read-release.test.ts: Bun.listen's data handler (targets/bun.ts) with a
// fake socket and a connection that keeps what it was handed. Prints one JSON line: what the
// connection saw during data() and what its kept reference holds afterwards.

import { bunHandlers, type BunSocket } from '../../targets/bun.ts'
import { releaseRead } from '../../targets/net.ts'
import type { Conn, Wire } from '../../src/host.ts'
import { guardAccept } from '../../targets/runtime.ts'
import { createLogger } from '../../src/log.ts'

function fakeSocket(): BunSocket {
  return {
    remoteAddress: '127.0.0.1',
    remotePort: 5555,
    data: null as unknown as BunSocket['data'],
    write: (d: Uint8Array) => d.length,
    end() {},
    terminate() {},
  }
}

/** A connection that copies what data() hands it (as the contract asks) and also keeps the reference (which it may not use). */
function keeper(): Conn & { seen: number[][]; kept: Uint8Array[] } {
  const c = {
    seen: [] as number[][],
    kept: [] as Uint8Array[],
    data(d: Uint8Array) {
      c.seen.push([...d])
      c.kept.push(d)
    },
    drained() {},
    closed() {},
  }
  return c as unknown as Conn & { seen: number[][]; kept: Uint8Array[] }
}

function run(guarded: boolean) {
  const c = keeper()
  const accept = (_w: Wire) => c
  const h = bunHandlers(guarded ? guardAccept(accept, createLogger({ level: 'error', sink: () => {} })) : accept, () => {})
  const s = fakeSocket()
  h.open(s)
  // A read of its own, as Bun hands over (a Buffer that is all of its ArrayBuffer)...
  const own = Buffer.from(new Uint8Array([1, 2, 3, 4, 5]).buffer)
  h.data(s, own)
  // ...and a view into a larger buffer, which is not the handler's to free.
  const big = new Uint8Array([9, 8, 7, 6, 5, 4])
  const view = big.subarray(2, 5)
  h.data(s, view)
  return {
    seen: c.seen,
    ownAfter: c.kept[0]!.byteLength,
    ownDetached: c.kept[0]!.buffer.byteLength === 0,
    viewAfter: [...c.kept[1]!],
    bigAfter: [...big],
  }
}

// A plain ArrayBuffer of another length than its view, and an empty read: left as they are.
const wide = new Uint8Array(new ArrayBuffer(8), 0, 4)
releaseRead(wide)
const empty = new Uint8Array(0)
releaseRead(empty)

console.log(JSON.stringify({ plain: run(false), guarded: run(true), wideAfter: wide.byteLength, emptyOk: empty.byteLength === 0 }))
