// MQTT 5 PUBLISH properties <-> NATS headers, so metadata survives crossing protocols:
//   user property `k: v`             <-> header `k: v` (a repeated name repeats, order kept)
//   Content Type                     <-> `Nmqtt-Content-Type`
//   Payload Format Indicator (UTF-8) <-> `Nmqtt-Format: 1`
// plus `Nmqtt-Pub: <qos>` on every message from MQTT. Other `Nmqtt-` headers are ours and are
// not turned into user properties. A user property that cannot be a NATS header (a name
// with ':' or whitespace, CR/LF anywhere) is left out rather than mangled.
// Message expiry is not carried yet: sprig does not expire messages, so it would be wrong.

import { decodeHeaders, encodeHeaders } from '../../src/headers.ts'
import type { Msg } from '../../src/msg.ts'
import type { MqttState } from './state.ts'

export type UserProperties = { [name: string]: string | string[] }

export interface PublishProps {
  userProperties?: UserProperties
  contentType?: string
  payloadFormatIndicator?: boolean
}

const QOS = 'Nmqtt-Pub'
const CONTENT_TYPE = 'Nmqtt-Content-Type'
const FORMAT = 'Nmqtt-Format'

/** The header block for an MQTT 5 publish with properties, or null when none map. */
export function propsToHeaders(qos: number, p: PublishProps | undefined): Uint8Array | null {
  if (!p || (!p.userProperties && p.contentType === undefined && !p.payloadFormatIndicator)) return null
  const pairs: [string, string][] = [[QOS, String(qos)]]
  if (p.contentType !== undefined && okValue(p.contentType)) pairs.push([CONTENT_TYPE, p.contentType])
  if (p.payloadFormatIndicator) pairs.push([FORMAT, '1'])
  for (const [k, v] of Object.entries(p.userProperties ?? {})) {
    if (!okName(k)) continue
    for (const x of Array.isArray(v) ? v : [v]) if (okValue(x)) pairs.push([k, x])
  }
  return encodeHeaders(pairs)
}

/**
 * The PUBLISH properties for a routed message's headers, or undefined when it has none
 * to give. Decoded once per message (cached by seq), as fan-out sends the same to each.
 */
export function headersToProps(st: MqttState, m: Msg): PublishProps | undefined {
  if (m.hdr === null) return undefined
  if (st.propsSeq === m.seq) return st.props
  st.propsSeq = m.seq
  st.props = undefined
  const h = decodeHeaders(m.hdr)
  if (!h) return undefined
  const out: PublishProps = {}
  let user: UserProperties | undefined
  for (const [k, v] of h.pairs) {
    if (k === CONTENT_TYPE) out.contentType = v
    else if (k === FORMAT) out.payloadFormatIndicator = v === '1'
    else if (k.startsWith('Nmqtt-')) continue
    else {
      user ??= {}
      const had = user[k]
      user[k] = had === undefined ? v : Array.isArray(had) ? [...had, v] : [had, v]
    }
  }
  if (user) out.userProperties = user
  if (out.userProperties || out.contentType !== undefined || out.payloadFormatIndicator) st.props = out
  return st.props
}

function okName(k: string): boolean {
  if (k.length === 0) return false
  for (let i = 0; i < k.length; i++) {
    const c = k.charCodeAt(i)
    if (c <= 32 || c === 58 || c === 127) return false // controls, space, ':'
  }
  return true
}

function okValue(v: string): boolean {
  return !v.includes('\r') && !v.includes('\n')
}
