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
  // One set of listeners for all sockets (`this` is the socket), not closures per socket.
  function onClose(this: net.Socket): void {
    sockets.delete(this)
    ;(this as WiredSocket)[WIRE].conn?.closed()
  }
  const server = net.createServer({ noDelay: true }, (sock) => {
    sockets.add(sock)
    const wire = new NetWire(sock)
    ;(sock as WiredSocket)[WIRE] = wire
    sock.on('error', ignore) // 'close' follows and tells the connection
    sock.on('close', onClose)
    const conn = accept(wire)
    if (!conn) return
    wire.conn = conn
    sock.on('data', onData)
    sock.on('drain', onDrain)
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

const WIRE = Symbol('wire')
type WiredSocket = net.Socket & { [WIRE]: NetWire }

/** A socket as the adapters see it; methods on the prototype, so nothing per socket but the object. */
class NetWire implements Wire {
  conn: Conn | null = null
  readonly remoteAddress: string
  readonly remotePort: number

  constructor(readonly sock: net.Socket) {
    this.remoteAddress = plainAddress(sock.remoteAddress)
    this.remotePort = sock.remotePort ?? 0
  }

  write(d: Uint8Array): boolean {
    return this.sock.write(d)
  }

  buffered(): number {
    return this.sock.writableLength
  }

  end(): void {
    this.sock.end()
    setTimeout(destroySocket, END_GRACE_MS, this.sock).unref()
  }

  destroy(): void {
    this.sock.destroy()
  }
}

function destroySocket(sock: net.Socket): void {
  sock.destroy()
}

function ignore(): void {}

function onData(this: net.Socket, d: Uint8Array): void {
  ;(this as WiredSocket)[WIRE].conn!.data(d)
}

function onDrain(this: net.Socket): void {
  ;(this as WiredSocket)[WIRE].conn!.drained()
}
