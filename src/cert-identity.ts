// Who a client certificate says its holder is: the identities a user can be mapped from
// (`tls.verify_and_map`). Pure: the target passes in what node:tls reports about the peer's
// certificate (the same on Node, Bun and Deno when read from the DER bytes; the `subject`
// object's key order and an empty `subjectaltname` differ on Deno, so those are only a
// fallback when the DER is missing).
//
// nats-server's order (server/auth.go, checkClientTLSCertSubject): every email SAN, then every
// DNS SAN, then every URI SAN, then the subject DN as Go prints it: Subject.ToRDNSequence()
// .String(), which rebuilds the DN from the well-known fields in a fixed order and prints it
// last-first, so it always reads SERIALNUMBER,CN,OU,O,POSTALCODE,STREET,L,ST,C whatever the
// certificate's order ("CN=device-42,O=Acme"), drops other attributes (emailAddress, DC) and
// joins repeated ones with "+" ("OU=a+OU=b"). With domain components that DN followed by
// ",DC=..." is tried first. nats-server also matches a user DN naming the certificate's RDNs
// in either order (go-ldap); the certificate's own order, forwards and backwards, is added
// last for that. Checked against nats-server 2.9.10 (test/tls-nats.test.ts).

/** Which certificate field names the user (`tls.map`). `auto` is nats-server's order. */
export type CertMap = 'auto' | 'email' | 'dns' | 'uri' | 'cn' | 'dn'
export const CERT_MAPS: readonly CertMap[] = ['auto', 'email', 'dns', 'uri', 'cn', 'dn']

/** What node:tls's getPeerCertificate() gives (only the fields used here). */
export interface PeerCertFields {
  subject?: Record<string, string | string[]> | null
  subjectaltname?: string
  /** The certificate in DER. */
  raw?: Uint8Array
}

export interface CertIdentity {
  /** Candidate user names, in the order they are tried (first one naming a user wins). */
  identities: string[]
  /** The subject DN in nats-server's format, '' when the certificate has no subject. */
  subject: string
}

interface Sans {
  email: string[]
  dns: string[]
  uri: string[]
}

/** One attribute of the subject: its short name (or dotted OID) and value. */
interface Attr {
  type: string
  value: string
}

export function certIdentity(cert: PeerCertFields, map: CertMap = 'auto'): CertIdentity {
  let rdns: Attr[][] | null = null
  let sans: Sans | null = null
  if (cert.raw && cert.raw.length > 0) {
    try {
      ;({ rdns, sans } = parseCert(cert.raw))
    } catch {
      rdns = sans = null // malformed DER: fall back to what the runtime decoded
    }
  }
  rdns ??= rdnsFromObject(cert.subject ?? {})
  sans ??= parseSanString(cert.subjectaltname ?? '')
  const subject = goDn(rdns)
  const dns: string[] = []
  if (subject !== '') {
    const dcs = rdns.flat().filter((a) => a.type === DC)
    if (dcs.length > 0) dns.push(subject + ',' + dcs.map((a) => 'DC=' + escapeValue(a.value)).join(','))
    dns.push(subject)
  }
  // The certificate's own RDN order both ways, when every attribute has a printable name.
  if (rdns.length > 0 && rdns.flat().every((a) => GO_NAMES.has(a.type) || a.type === DC)) {
    const forward = rdns.map((r) => r.map((a) => `${a.type}=${escapeValue(a.value)}`).join('+'))
    dns.push(forward.join(','), [...forward].reverse().join(','))
  }
  let identities: string[]
  switch (map) {
    case 'email':
      identities = sans.email
      break
    case 'dns':
      identities = sans.dns
      break
    case 'uri':
      identities = sans.uri
      break
    case 'cn':
      identities = rdns.flat().filter((a) => a.type === 'CN').map((a) => a.value)
      break
    case 'dn':
      identities = dns
      break
    default:
      identities = [...sans.email, ...sans.dns, ...sans.uri, ...dns]
  }
  return { identities: [...new Set(identities)], subject }
}

// --- DN formatting (Go's pkix.RDNSequence.String) -------------------------------------------

const DC = 'DC'
/** The attribute types pkix.Name keeps, in the order Go prints them (the reverse of ToRDNSequence's). */
const GO_ORDER = ['SERIALNUMBER', 'CN', 'OU', 'O', 'POSTALCODE', 'STREET', 'L', 'ST', 'C']
const GO_NAMES = new Set(GO_ORDER)
/** pkix.Name holds one CN and one serial number (the last one seen); the rest are lists. */
const SINGLE = new Set(['CN', 'SERIALNUMBER'])

function goDn(rdns: Attr[][]): string {
  const all = rdns.flat()
  const parts: string[] = []
  for (const type of GO_ORDER) {
    let values = all.filter((a) => a.type === type).map((a) => a.value)
    if (SINGLE.has(type)) values = values.slice(-1).filter((v) => v !== '')
    if (values.length > 0) parts.push(values.map((v) => `${type}=${escapeValue(v)}`).join('+'))
  }
  return parts.join(',')
}

function escapeValue(v: string): string {
  let out = ''
  const last = v.length - 1
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!
    const esc = ',+"\\<>;'.includes(c) || (c === ' ' && (i === 0 || i === last)) || (c === '#' && i === 0)
    out += esc ? '\\' + c : c
  }
  return out
}

// --- from node:tls's decoded fields (fallback) ---------------------------------------------

/** Object keys as OpenSSL names them → the names used here. */
const OBJ_NAMES: Record<string, string> = {
  C: 'C', O: 'O', OU: 'OU', CN: 'CN', L: 'L', ST: 'ST', street: 'STREET', postalCode: 'POSTALCODE',
  serialNumber: 'SERIALNUMBER', DC: DC, emailAddress: 'emailAddress', UID: 'UID',
}

function rdnsFromObject(subject: Record<string, string | string[]>): Attr[][] {
  const attrs: Attr[] = []
  for (const [k, v] of Object.entries(subject)) {
    const type = OBJ_NAMES[k] ?? k
    for (const value of Array.isArray(v) ? v : [v]) attrs.push({ type, value: String(value) })
  }
  return attrs.map((a) => [a])
}

/**
 * node:tls's `subjectaltname`: "DNS:a, URI:b, email:c, IP Address:1.2.3.4". Values with
 * special characters come JSON-quoted (Node ≥ 17.3): `DNS:"a, b"`.
 */
export function parseSanString(s: string): Sans {
  const out: Sans = { email: [], dns: [], uri: [] }
  let i = 0
  while (i < s.length) {
    while (s[i] === ' ' || s[i] === ',') i++
    const colon = s.indexOf(':', i)
    if (colon < 0) break
    const kind = s.slice(i, colon)
    let value: string
    let j = colon + 1
    if (s[j] === '"') {
      let k = j + 1
      while (k < s.length && s[k] !== '"') k += s[k] === '\\' ? 2 : 1
      try {
        value = JSON.parse(s.slice(j, k + 1)) as string
      } catch {
        value = s.slice(j + 1, k)
      }
      j = k + 1
    } else {
      const end = s.indexOf(', ', j)
      const stop = end < 0 ? s.length : end
      value = s.slice(j, stop)
      j = stop
    }
    if (kind === 'email') out.email.push(value)
    else if (kind === 'DNS') out.dns.push(value)
    else if (kind === 'URI') out.uri.push(value)
    i = j
  }
  return out
}

// --- from the DER certificate ----------------------------------------------------------------

interface Tlv {
  tag: number
  start: number
  end: number
  /** Where the whole TLV (tag and length included) starts. */
  from: number
}

function readTlv(b: Uint8Array, at: number, limit: number): Tlv {
  if (at + 2 > limit) throw new Error('short')
  const tag = b[at]!
  let len = b[at + 1]!
  let p = at + 2
  if (len & 0x80) {
    const n = len & 0x7f
    if (n === 0 || n > 4 || p + n > limit) throw new Error('bad length')
    len = 0
    for (let i = 0; i < n; i++) len = len * 256 + b[p + i]!
    p += n
  }
  if (p + len > limit) throw new Error('overrun')
  return { tag, start: p, end: p + len, from: at }
}

function children(b: Uint8Array, t: Tlv): Tlv[] {
  const out: Tlv[] = []
  for (let p = t.start; p < t.end; ) {
    const c = readTlv(b, p, t.end)
    out.push(c)
    p = c.end
  }
  return out
}

const OIDS: Record<string, string> = {
  '2.5.4.3': 'CN', '2.5.4.6': 'C', '2.5.4.7': 'L', '2.5.4.8': 'ST', '2.5.4.9': 'STREET', '2.5.4.10': 'O',
  '2.5.4.11': 'OU', '2.5.4.5': 'SERIALNUMBER', '2.5.4.17': 'POSTALCODE',
  '0.9.2342.19200300.100.1.25': DC,
}

function oid(b: Uint8Array, t: Tlv): string {
  const parts: number[] = []
  let v = 0
  for (let p = t.start; p < t.end; p++) {
    v = v * 128 + (b[p]! & 0x7f)
    if ((b[p]! & 0x80) === 0) {
      if (parts.length === 0) parts.push(v < 80 ? Math.floor(v / 40) : 2, v < 80 ? v % 40 : v - 80)
      else parts.push(v)
      v = 0
    }
  }
  return parts.join('.')
}

function text(b: Uint8Array, t: Tlv): string {
  const v = b.subarray(t.start, t.end)
  if (t.tag === 0x1e) {
    let s = ''
    for (let i = 0; i + 1 < v.length; i += 2) s += String.fromCharCode((v[i]! << 8) | v[i + 1]!)
    return s
  }
  if (t.tag === 0x14) return String.fromCharCode(...v) // T61String: Latin-1 in practice
  return new TextDecoder().decode(v)
}

const STRING_TAGS = new Set([0x0c, 0x12, 0x13, 0x14, 0x16, 0x1a, 0x1e])

function parseCert(der: Uint8Array): { rdns: Attr[][]; sans: Sans } {
  const cert = readTlv(der, 0, der.length)
  const tbs = children(der, cert)[0]!
  const f = children(der, tbs)
  let i = f[0]!.tag === 0xa0 ? 1 : 0 // explicit version
  i += 3 // serial, signature algorithm, issuer
  i += 1 // validity
  const subject = f[i]!
  const rdns: Attr[][] = []
  for (const set of children(der, subject)) {
    const rdn: Attr[] = []
    for (const atv of children(der, set)) {
      const [t, v] = children(der, atv)
      const o = oid(der, t!)
      const type = OIDS[o] ?? o
      const str = STRING_TAGS.has(v!.tag)
      const value = str ? text(der, v!) : ''
      rdn.push({ type, value })
    }
    rdns.push(rdn)
  }
  const sans: Sans = { email: [], dns: [], uri: [] }
  const ext = f.slice(i + 2).find((x) => x.tag === 0xa3)
  if (ext) {
    for (const e of children(der, children(der, ext)[0]!)) {
      const parts = children(der, e)
      if (oid(der, parts[0]!) !== '2.5.29.17') continue
      const octets = parts[parts.length - 1]!
      const seq = readTlv(der, octets.start, octets.end)
      for (const g of children(der, seq)) {
        const v = new TextDecoder().decode(der.subarray(g.start, g.end))
        if (g.tag === 0x81) sans.email.push(v)
        else if (g.tag === 0x82) sans.dns.push(v)
        else if (g.tag === 0x86) sans.uri.push(v)
      }
    }
  }
  return { rdns, sans }
}

// --- revocation (CRL) ------------------------------------------------------------------------------
// Deno's node:tls ignores the `crl` option, so the listener also checks the leaf certificate
// against the CRL itself: same answer on every runtime. The CRL file is the administrator's, like
// ca_file, so its signature is not checked here.

/** A certificate's issuer (its Name's DER, as hex) and serial number (hex, upper case). */
export function issuerAndSerial(der: Uint8Array): { issuer: string; serial: string } {
  const cert = readTlv(der, 0, der.length)
  const f = children(der, children(der, cert)[0]!)
  const i = f[0]!.tag === 0xa0 ? 1 : 0
  return { serial: serialHex(der, f[i]!), issuer: hex(der.subarray(f[i + 2]!.from, f[i + 2]!.end)) }
}

/** The serial numbers a DER CRL revokes, and its issuer (as issuerAndSerial names them). */
export function crlRevoked(der: Uint8Array): { issuer: string; serials: Set<string> } {
  const list = readTlv(der, 0, der.length)
  const f = children(der, children(der, list)[0]!)
  let i = f[0]!.tag === 0x02 ? 1 : 0 // version
  i += 1 // signature algorithm
  const issuer = f[i++]!
  while (i < f.length && (f[i]!.tag === 0x17 || f[i]!.tag === 0x18)) i++ // thisUpdate, nextUpdate
  const serials = new Set<string>()
  if (i < f.length && f[i]!.tag === 0x30) {
    for (const entry of children(der, f[i]!)) serials.add(serialHex(der, children(der, entry)[0]!))
  }
  return { issuer: hex(der.subarray(issuer.from, issuer.end)), serials }
}

function serialHex(b: Uint8Array, t: Tlv): string {
  let p = t.start
  while (p < t.end - 1 && b[p] === 0) p++
  return hex(b.subarray(p, t.end)).toUpperCase()
}

function hex(b: Uint8Array): string {
  let s = ''
  for (const x of b) s += x.toString(16).padStart(2, '0')
  return s
}
