// What each MQTT packet from a client does: one small handler per packet type, taking the
// connection (conn.ts) and the packet (read by frame.ts's fast path or by mqtt-packet, both
// only after malformed.ts passed its bytes). The handlers change the connection only through
// its methods. Spec references are to MQTT 3.1.1 and 5.0; where the two differ, the handler
// says which. CONNECT: connect.ts; PUBLISH and the acknowledgements: publish.ts; SUBSCRIBE and
// UNSUBSCRIBE: subscribe.ts; PINGREQ and DISCONNECT here.

import { Buffer } from 'node:buffer'
import type { IConnectPacket, IDisconnectPacket, IPublishPacket, ISubscribePacket, IUnsubscribePacket, Packet } from 'mqtt-packet'
import { mqttOptions as mqttOpts } from '../../../src/options.ts'
import type { MqttConn } from '../conn.ts'
import { RC } from './common.ts'
import { onConnect } from './connect.ts'
import { onPuback, onPubcomp, onPublish, onPubrec, onPubrel } from './publish.ts'
import { onSubscribe, onUnsubscribe } from './subscribe.ts'

type Handler = (c: MqttConn, p: Packet) => void

const PINGRESP: Packet = { cmd: 'pingresp' }

const HANDLERS: Partial<Record<Packet['cmd'], Handler>> = {
  connect: (c, p) => onConnect(c, p as IConnectPacket),
  publish: (c, p) => onPublish(c, p as IPublishPacket),
  puback: (c, p) => onPuback(c, p.messageId ?? 0),
  pubrec: (c, p) => onPubrec(c, p.messageId ?? 0),
  pubrel: (c, p) => onPubrel(c, p.messageId ?? 0),
  pubcomp: (c, p) => onPubcomp(c, p.messageId ?? 0),
  subscribe: (c, p) => onSubscribe(c, p as ISubscribePacket),
  unsubscribe: (c, p) => onUnsubscribe(c, p as IUnsubscribePacket),
  pingreq: (c) => c.send(PINGRESP), // [MQTT-3.12.4-1]
  disconnect: (c, p) => onDisconnect(c, p as IDisconnectPacket),
}

export function onPacket(c: MqttConn, p: Packet): void {
  if (c.done) return
  if (c.holding) return holdPacket(c, p)
  if (p.cmd === 'connect') {
    if (c.connected) return c.protocolError('second CONNECT', RC.protocolError) // [MQTT-3.1.0-2]
  } else if (!c.connected) {
    return c.protocolError(`${p.cmd} before CONNACK`, RC.protocolError)
  }
  const h = HANDLERS[p.cmd]
  // Server-to-client packets, and AUTH (no enhanced authentication offered), end the connection.
  if (!h) return c.protocolError(`unexpected ${p.cmd}`, RC.protocolError)
  h(c, p)
}

/**
 * A PUBACK read by hand (conn.ts): onPacket's checks, without a packet object per QoS 1
 * message unless one must be held or refused.
 */
export function onPubackIn(c: MqttConn, pid: number): void {
  if (c.done) return
  if (!c.connected || c.holding) return onPacket(c, { cmd: 'puback', messageId: pid })
  onPuback(c, pid)
}

/** A packet that arrived while CONNECT's password hash is checked: it waits (src/lifecycle.ts). */
function holdPacket(c: MqttConn, p: Packet): void {
  // A PUBLISH's payload may be a view of the read buffer: keep a copy.
  if (p.cmd === 'publish') p = { ...p, payload: Buffer.from(p.payload) }
  const held = p
  c.hold(() => onPacket(c, held), p.cmd === 'publish' ? p.payload.length : 0)
}

function onDisconnect(c: MqttConn, p: IDisconnectPacket): void {
  const se = p.properties?.sessionExpiryInterval
  let expiry: number | undefined
  if (se !== undefined) {
    // Turning a clean session persistent at DISCONNECT is a Protocol Error (5.0 §3.14.2.2.2).
    if (c.sessionExpiry === 0 && se > 0) return c.protocolError('session expiry set at DISCONNECT', RC.protocolError)
    expiry = Math.min(se === 0xffffffff ? Infinity : se * 1000, mqttOpts(c.srv.opts).session_expiry)
  }
  // MQTT 5 reason 0x04 "Disconnect with Will Message" keeps the will; otherwise it is
  // discarded [MQTT-3.14.4-3].
  c.disconnected(expiry, c.version === 5 && p.reasonCode === 0x04)
}
