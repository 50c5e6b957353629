// A fake Bun.listen socket for driving targets/bun.ts's handlers without a runtime: it takes
// as many bytes per write() as `take()` says (Bun.listen's write() takes what the kernel will
// and returns the count) and keeps a copy of what it took.

import type { BunSocket, BunWire } from '../../targets/bun.ts'

export function fakeSocket(take: () => number) {
  const sent: number[] = []
  const s = {
    ended: 0,
    terminated: 0,
    remoteAddress: '::ffff:127.0.0.1',
    remotePort: 5555,
    data: null as unknown as BunWire,
    write(d: Uint8Array): number {
      const n = Math.max(0, Math.min(d.length, take()))
      for (let i = 0; i < n; i++) sent.push(d[i]!)
      return n
    },
    end() {
      s.ended++
    },
    terminate() {
      s.terminated++
    },
  }
  return { s: s as typeof s & BunSocket, sent }
}
