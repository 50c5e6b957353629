// Wills: published when a connection ends without DISCONNECT [MQTT-3.1.2-8], never after one
// [MQTT-3.1.2-10]. An MQTT 5 Will Delay Interval holds it back until the delay or the session
// ends, whichever comes first (5.0 §3.1.3.2.2); a reconnect before then cancels it
// [MQTT-3.1.3-9] (the delayed ones wait in services.ts). With a store a held-back will is kept
// there with its due time (persist.ts), so a restart still sends it: when it falls due, at once
// if that passed while sprig was down, never once the client is back.

import { utf8 } from '../../src/bytes.ts'
import { quote } from '../../src/log.ts'
import { newMsg } from '../../src/msg.ts'
import type { Owner } from '../../src/router.ts'
import type { Server } from '../../src/server.ts'
import type { Will } from './delivery.ts'
import { keepProps, publishHeaders, replyFor } from './props.ts'
import { retain } from './retained.ts'
import { scheduleWill } from './services.ts'
import type { MqttState } from './state.ts'

/**
 * Publishes the will of client `clientId`, whose session outlives it by `sessionExpiry` ms,
 * as `by` (the client that set it, for the services' permission checks), now or after its delay.
 */
export function publishWill(srv: Server, st: MqttState, w: Will, by: Owner, clientId: string, sessionExpiry: number): void {
  const wait = Math.min(w.delay, sessionExpiry)
  if (wait <= 0) return sendWill(srv, st, w, by)
  const due = srv.host.now() + wait
  st.persist?.will(clientId, w, by.user ?? '', due)
  holdWill(srv, st, w, by, clientId, due)
}

/** Sends the will at `due` (host.now() time) unless the client is back first (cancelWill). */
export function holdWill(srv: Server, st: MqttState, w: Will, by: Owner, clientId: string, due: number): void {
  scheduleWill(srv, clientId, due, () => {
    st.persist?.willDone(clientId)
    sendWill(srv, st, w, by)
  })
}

function sendWill(srv: Server, st: MqttState, w: Will, by: Owner): void {
  // Runs from a socket's close or a timer: a failure is logged and ends nothing else.
  try {
    publishWillNow(srv, st, w, by)
  } catch (e) {
    srv.log.error(`mqtt will on ${quote(w.topic)} not published: ${(e as Error).message}`)
  }
}

function publishWillNow(srv: Server, st: MqttState, w: Will, by: Owner): void {
  st.counters.wills++
  const reply = replyFor(w.props)
  const props = keepProps(w.props, srv.host.now())
  if (w.retain) retain(st.retained, w.topic, w.subject, w.payload, w.qos, props)
  const m = newMsg()
  m.subject = w.subject
  m.subjectBytes = utf8(w.subject)
  m.hdr = publishHeaders(w.qos, props, w.retain)
  m.payload = w.payload
  if (reply) {
    m.reply = reply
    m.replyBytes = utf8(reply)
  }
  srv.router.publish(m, by)
}
