// The fixed bytes of the NATS client protocol as sprig sends them: nats-server's exact -ERR
// strings (clients and tests match on them) and the INFO line.

import { utf8 } from '../../src/bytes.ts'
import type { Server } from '../../src/server.ts'
import { VERSION } from '../../src/server.ts'

const line = (s: string): Uint8Array => utf8(s + '\r\n')
const err = (s: string): Uint8Array => line(`-ERR '${s}'`)

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
  maxSubscriptions: err('Maximum Subscriptions Exceeded'),
  maxConnections: err('maximum connections exceeded'),
  shutdown: err('Server Shutdown'),
} as const

/** Header block of the status message sent to a requester when nobody received its request. */
export const NO_RESPONDERS_HDR = utf8('NATS/1.0 503\r\n\r\n')

/** INFO as nats-server words it (including the space before CRLF). */
export function infoLine(srv: Server, c: { cid: number; wire: { remoteAddress: string } }): string {
  const o = srv.opts
  const info: Record<string, unknown> = {
    server_id: srv.id,
    server_name: srv.name,
    version: VERSION,
    proto: 1,
    host: o.host,
    port: o.port,
    headers: true,
    max_payload: o.max_payload,
    client_id: c.cid,
    client_ip: c.wire.remoteAddress,
  }
  const a = o.authorization
  if (a && (a.user !== undefined || a.token !== undefined)) info.auth_required = true
  return `INFO ${JSON.stringify(info)} \r\n`
}
