// NATS header blocks ("NATS/1.0\r\nName: value\r\n...\r\n\r\n"), as carried in Msg.hdr.
// Adapters that bridge to other protocols (MQTT) read one or two well-known headers per
// message, so lookup scans the bytes in place and allocates only the value it returns.

import { text, utf8 } from './bytes.ts'

const CR = 13
const LF = 10
const COLON = 58

/** Encodes header pairs (a name may repeat) into a block; status goes after "NATS/1.0". */
export function encodeHeaders(pairs: Iterable<readonly [string, string]>, status = ''): Uint8Array {
  let s = status ? `NATS/1.0 ${status}\r\n` : 'NATS/1.0\r\n'
  for (const [k, v] of pairs) s += `${k}: ${v}\r\n`
  return utf8(s + '\r\n')
}

export interface Headers {
  /** What follows "NATS/1.0" on the first line, trimmed ("503", "503 No Responders", or ""). */
  status: string
  /** In block order; names as written. */
  pairs: [string, string][]
}

/** Decodes a block; null when it does not start with "NATS/1.0". Lines without ":" are skipped. */
export function decodeHeaders(b: Uint8Array): Headers | null {
  const end = b.length
  let eol = lineEnd(b, 0, end)
  const first = text(b, 0, eol)
  if (!first.startsWith('NATS/1.0')) return null
  const out: Headers = { status: first.slice(8).trim(), pairs: [] }
  let p = eol + 2
  while (p < end) {
    eol = lineEnd(b, p, end)
    if (eol === p) break // the blank line that ends the block
    const colon = b.indexOf(COLON, p)
    if (colon > p && colon < eol) out.pairs.push([text(b, p, colon).trim(), text(b, colon + 1, eol).trim()])
    p = eol + 2
  }
  return out
}

/**
 * The first value of header `name` (ASCII, matched case-insensitively as nats.js does), or
 * null. No allocation unless found.
 */
export function headerValue(b: Uint8Array, name: string): string | null {
  const end = b.length
  const n = name.length
  let p = lineEnd(b, 0, end) + 2 // skip "NATS/1.0..."
  while (p < end) {
    const eol = lineEnd(b, p, end)
    if (eol === p) return null
    if (eol - p > n && b[p + n] === COLON && sameName(b, p, name)) return text(b, p + n + 1, eol).trim()
    p = eol + 2
  }
  return null
}

function sameName(b: Uint8Array, at: number, name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    let c = b[at + i]!
    let d = name.charCodeAt(i)
    if (c >= 65 && c <= 90) c += 32
    if (d >= 65 && d <= 90) d += 32
    if (c !== d) return false
  }
  return true
}

/** Index of the CR of the CRLF that ends the line starting at p (end when there is none). */
function lineEnd(b: Uint8Array, p: number, end: number): number {
  for (let i = p; i < end - 1; i++) if (b[i] === CR && b[i + 1] === LF) return i
  return end
}
