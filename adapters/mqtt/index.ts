// Entry point of the MQTT adapter for targets: accept a socket, get a connection.

import { onAuthReload } from '../../src/auth.ts'
import type { Conn, Wire } from '../../src/host.ts'
import type { Server } from '../../src/server.ts'
import { MqttConn } from './conn.ts'
import { connectPreamble } from './malformed.ts'
import { installServices } from './services.ts'
import { expireSessions, reloadParked } from './session.ts'
import { mqttState } from './state.ts'

export { MqttConn } from './conn.ts'
export { NATS_DEFAULT_QOS } from './props.ts'
export { mqttState } from './state.ts'
export { RETAINED_GET, RETAIN_PREFIX } from './services.ts'

/**
 * Subscribes the adapter's NATS-side services ($SPRIG.mqtt.*, see services.ts), once, when the
 * MQTT listener starts (targets/run.ts), so the retained store is readable from NATS before
 * any device has connected. Idempotent.
 */
export function startMqtt(srv: Server): void {
  if (started.has(srv)) return
  started.add(srv)
  installServices(srv)
  const st = mqttState(srv)
  // /varz → sprig.mqtt: every MQTT bound's drop counter, next to what it bounds.
  srv.status.set('mqtt', () => ({
    sessions_parked: st.sessions.size,
    sessions_live: st.persistent.size,
    sessions_bytes: st.parkedBytes,
    retained_msgs: st.retained.byTopic.size,
    retained_bytes: st.retained.bytes,
    retained_refused: st.retained.refused,
    ...st.counters,
  }))
  // Parked sessions expire on the server's tick, whether or not any MQTT client is connected.
  srv.onTick((now) => expireSessions(mqttState(srv), now))
  // A reload re-checks parked sessions too: they are no Sessions of the server.
  onAuthReload(srv, () => reloadParked(srv))
}

const started = new WeakSet<Server>()

/**
 * A connection for a freshly accepted socket. Over max_connections the socket gets a small
 * refusing connection instead: it reads the CONNECT's protocol level and answers in that
 * version's format, CONNACK 0x03 "Server unavailable" (3.1.1) or 0x97 "Quota exceeded"
 * (5.0), then closes. Null when even that is not possible.
 */
export function acceptMqtt(srv: Server, wire: Wire): Conn | null {
  const cid = srv.admit()
  if (cid === 0) {
    srv.log.error(`${wire.remoteAddress}:${wire.remotePort} - maximum connections (${srv.opts.max_connections}) exceeded`)
    return refusing(srv, wire)
  }
  return new MqttConn(srv, cid, wire)
}

/** Refusing connections waiting for their CONNECT; the oldest is dropped past this many. */
const MAX_REFUSING = 64
const refusingWires = new WeakMap<Server, Set<Wire>>()

function refusing(srv: Server, wire: Wire): Conn {
  let set = refusingWires.get(srv)
  if (!set) refusingWires.set(srv, (set = new Set()))
  if (set.size >= MAX_REFUSING) {
    const oldest = set.values().next().value!
    set.delete(oldest)
    oldest.end()
  }
  set.add(wire)
  const done = (): void => {
    set.delete(wire)
    wire.end()
  }
  return {
    data(chunk: Uint8Array): void {
      if (!set.has(wire)) return
      // The CONNECT's level, read as for any first packet (malformed.ts).
      const p = connectPreamble(chunk)
      if (p !== 'more' && !('why' in p)) wire.write(p.level === 5 ? new Uint8Array([0x20, 3, 0, 0x97, 0]) : new Uint8Array([0x20, 2, 0, 0x03]))
      done() // a CONNECT cut before its level, or not a CONNECT, just gets the close
    },
    drained(): void {},
    closed(): void {
      set.delete(wire)
    },
  }
}
