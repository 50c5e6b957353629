// Entry point of the NATS adapter for targets: accept a socket, get a connection.

import type { Conn, Wire } from '../../src/host.ts'
import type { Server } from '../../src/server.ts'
import { NatsClient } from './client.ts'
import { utf8 } from '../../src/bytes.ts'
import { ERR, infoLine } from './proto.ts'

export { NatsClient } from './client.ts'

/** A connection for a freshly accepted socket, or null when max_connections refuses it. */
export function acceptNats(srv: Server, wire: Wire): Conn | null {
  const cid = srv.admit()
  if (cid === 0) {
    // nats-server still sends INFO first, so clients report the limit rather than a missing INFO.
    srv.log.error(`${wire.remoteAddress}:${wire.remotePort} - maximum connections (${srv.opts.max_connections}) exceeded`)
    wire.write(utf8(infoLine(srv, { cid: 0, wire })))
    wire.write(ERR.maxConnections)
    wire.end()
    return null
  }
  return new NatsClient(srv, cid, wire)
}
