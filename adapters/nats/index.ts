// Entry point of the NATS adapter for targets: accept a socket, get a connection.

import type { Conn, Wire } from '../../src/host.ts'
import type { Server } from '../../src/server.ts'
import { NatsClient } from './client.ts'
import { ERR } from './proto.ts'

export { NatsClient } from './client.ts'

/** A connection for a freshly accepted socket, or null when max_connections refuses it. */
export function acceptNats(srv: Server, wire: Wire): Conn | null {
  const cid = srv.admit()
  if (cid === 0) {
    srv.log.warn(`${wire.remoteAddress}:${wire.remotePort} maximum connections (${srv.opts.max_connections}) exceeded, refusing`)
    wire.write(ERR.maxConnections)
    wire.end()
    return null
  }
  return new NatsClient(srv, cid, wire)
}
