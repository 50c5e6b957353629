// Entry point of the MQTT adapter for targets: accept a socket, get a connection.

import type { Conn, Wire } from '../../src/host.ts'
import type { Server } from '../../src/server.ts'
import { MqttConn } from './conn.ts'

export { MqttConn, NATS_DEFAULT_QOS } from './conn.ts'
export { mqttState } from './state.ts'

/** A connection for a freshly accepted socket, or null when max_connections refuses it. */
export function acceptMqtt(srv: Server, wire: Wire): Conn | null {
  const cid = srv.admit()
  if (cid === 0) {
    // Before CONNECT we cannot know which CONNACK format the client reads: just close.
    srv.log.error(`${wire.remoteAddress}:${wire.remotePort} - maximum connections (${srv.opts.max_connections}) exceeded`)
    wire.end()
    return null
  }
  return new MqttConn(srv, cid, wire)
}
