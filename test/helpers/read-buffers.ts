// Run under Bun and Deno by test/read-release.test.ts: whether each socket read arrives in an
// ArrayBuffer of its own (never one the runtime hands out again, never larger than the read),
// which is what lets net.ts releaseRead detach it. Over node:net, and Bun.listen on Bun; 200 MB
// in 1 MiB writes, so that reads fill the runtime's read buffer. Prints one JSON line.

import net from 'node:net'

interface Tally {
  reads: number
  reused: number
  wider: number
  offset: number
  maxLen: number
}

function tally(): { t: Tally; on: (d: Uint8Array) => void } {
  const seen = new WeakSet<ArrayBufferLike>()
  const t: Tally = { reads: 0, reused: 0, wider: 0, offset: 0, maxLen: 0 }
  return {
    t,
    on(d) {
      t.reads++
      t.maxLen = Math.max(t.maxLen, d.length)
      if (seen.has(d.buffer)) t.reused++
      seen.add(d.buffer)
      if (d.buffer.byteLength !== d.length) t.wider++
      if (d.byteOffset !== 0) t.offset++
    },
  }
}

const CHUNK = new Uint8Array(1 << 20).fill(7)
const WRITES = 200

/** A node:net client writing WRITES chunks to port, then ending. */
function flood(port: number): void {
  const c = net.connect(port, '127.0.0.1', () => {
    let n = 0
    const go = (): void => {
      while (n < WRITES) {
        n++
        if (!c.write(CHUNK)) return void c.once('drain', go)
      }
      c.end()
    }
    go()
  })
}

function viaNodeNet(): Promise<Tally> {
  return new Promise((resolve) => {
    const { t, on } = tally()
    const srv = net.createServer((s) => {
      s.on('data', on)
      s.on('end', () => {
        srv.close()
        resolve(t)
      })
    })
    srv.listen(0, '127.0.0.1', () => flood((srv.address() as net.AddressInfo).port))
  })
}

declare const Bun: { listen(o: unknown): { port: number; stop(all?: boolean): void } } | undefined

function viaBunListen(): Promise<Tally> {
  return new Promise((resolve) => {
    const { t, on } = tally()
    const l = Bun!.listen({
      hostname: '127.0.0.1',
      port: 0,
      socket: {
        data: (_s: unknown, d: Uint8Array) => on(d),
        end: () => {
          l.stop(true)
          resolve(t)
        },
      },
    })
    flood(l.port)
  })
}

const out: Record<string, Tally> = { 'node:net': await viaNodeNet() }
if (typeof Bun !== 'undefined') out['Bun.listen'] = await viaBunListen()
console.log(JSON.stringify(out))
process.exit(0)
