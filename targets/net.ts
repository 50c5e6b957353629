// Listener on node:net, the API all three runtimes share. Node and Deno use it; Bun has a
// native listener (bun.ts) but can fall back to this one.

import net from 'node:net'
import type { Conn, Wire } from '../src/host.ts'
import type { Accept, Listener } from './runtime.ts'
import { listenError, plainAddress } from './runtime.ts'

/** How long a closing socket may take to flush before it is destroyed. */
const END_GRACE_MS = 2000

export function listenNet(host: string, port: number, accept: Accept): Promise<Listener> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ noDelay: true }, (sock) => {
    sockets.add(sock)
    let conn: Conn | null = null
    const wire: Wire = {
      write: (d) => sock.write(d),
      buffered: () => sock.writableLength,
      end: () => {
        sock.end()
        setTimeout(() => sock.destroy(), END_GRACE_MS).unref()
      },
      destroy: () => sock.destroy(),
      remoteAddress: plainAddress(sock.remoteAddress),
      remotePort: sock.remotePort ?? 0,
    }
    sock.on('error', () => {}) // 'close' follows and tells the connection
    sock.on('close', () => {
      sockets.delete(sock)
      conn?.closed()
    })
    conn = accept(wire)
    if (!conn) return
    const c = conn
    sock.on('data', (d: Uint8Array) => c.data(d))
    sock.on('drain', () => c.drained())
  })
  return new Promise((resolve, reject) => {
    server.once('error', (e) => reject(listenError(host, port, e)))
    server.listen({ host, port }, () => {
      const addr = server.address() as net.AddressInfo
      resolve({
        port: addr.port,
        close: () => server.close(),
        open: () => sockets.size,
      })
    })
  })
}
