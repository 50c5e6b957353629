// The fixed bytes of the NATS client protocol as sprig sends them: nats-server's exact -ERR
// strings (clients and tests match on them) and the INFO line.

import { utf8 } from '../../src/bytes.ts'
import type { Server } from '../../src/server.ts'
import { NATS_VERSION, VERSION } from '../../src/server.ts'
import { authRequired } from '../../src/auth.ts'

const line = (s: string): Uint8Array => utf8(s + '\r\n')
const err = (s: string): Uint8Array => line(`-ERR '${s}'`)
/** An -ERR line built per use (permission violations name the subject). */
export const errLine = err

export const OK = line('+OK')
export const PING = line('PING')
export const PONG = line('PONG')

export const ERR = {
  unknownOp: err('Unknown Protocol Operation'),
  maxControlLine: err('maximum control line exceeded'),
  maxPayload: err('Maximum Payload Violation'),
  invalidSubject: err('Invalid Subject'),
  invalidPublishSubject: err('Invalid Publish Subject'),
  slowConsumer: err('Slow Consumer'),
  stale: err('Stale Connection'),
  authViolation: err('Authorization Violation'),
  authTimeout: err('Authentication Timeout'),
  badProtocol: err('invalid client protocol'),
  noRespondersNeedHeaders: err('no responders requires headers support'),
  maxSubscriptions: err('maximum subscriptions exceeded'),
  maxConnections: err('maximum connections exceeded'),
  shutdown: err('Server Shutdown'),
} as const

/** The status message for a requester whose request nobody received (rare: built per use). */
export const noResponders = (reply: string, sid: string): Uint8Array => line(`HMSG ${reply} ${sid} 16 16\r\nNATS/1.0 503\r\n\r\n`)

/**
 * INFO as nats-server words it (its key order, and the space before CRLF), without the
 * Go-specific `go` (runtime version) field.
 */
export function infoLine(srv: Server, c: { cid: number; nonce?: string; wire: { remoteAddress: string; websocket?: true } }, ldm = false): string {
  const o = srv.opts
  const info: Record<string, unknown> = {
    server_id: srv.id,
    server_name: srv.name,
    version: NATS_VERSION,
    sprig_version: VERSION,
    proto: 1,
    host: o.host,
    port: o.port,
    headers: true,
  }
  if (authRequired(o)) info.auth_required = true
  // nats-server 2.9's fields and order; a TLS listener upgrades right after this INFO. Over
  // WebSocket, TLS (if any) is the WebSocket layer's: the NATS protocol never upgrades.
  const tls = c.wire.websocket ? undefined : o.tls
  if (tls && o.allow_non_tls) info.tls_available = true // the client chooses (net.ts: mixed)
  else if (tls) info.tls_required = true
  if (tls?.verify) info.tls_verify = true
  info.max_payload = o.max_payload
  info.client_id = c.cid
  info.client_ip = c.wire.remoteAddress
  if (c.nonce) info.nonce = c.nonce
  if (ldm) info.ldm = true // lame duck mode (src/lameduck.ts)
  return `INFO ${JSON.stringify(info)} \r\n`
}
