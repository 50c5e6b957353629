// Certificate identities (src/cert-identity.ts): nats-server's verify_and_map order and DN
// format, the single-field maps, and the same answers from the DER bytes as from node:tls's
// decoded fields on every runtime's shape (Deno: empty subjectaltname, other key order).

import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { certIdentity, crlRevoked, issuerAndSerial, parseSanString, type CertMap, type PeerCertFields } from '../src/cert-identity.ts'
import { makeCerts } from './helpers/certs.ts'

// Decoded-field inputs, as getPeerCertificate() gives them (no DER: the fallback path).
const fields: { name: string; cert: PeerCertFields; map?: CertMap; want: string[]; subject: string }[] = [
  {
    name: 'nats-server order: email, DNS, URI, then the DN (Go order, then the certificate order)',
    cert: {
      subject: { CN: 'device-42', O: 'Acme' },
      subjectaltname: 'DNS:device-42.example, URI:spiffe://acme/device-42, email:dev42@example.com',
    },
    want: ['dev42@example.com', 'device-42.example', 'spiffe://acme/device-42', 'CN=device-42,O=Acme', 'O=Acme,CN=device-42'],
    subject: 'CN=device-42,O=Acme',
  },
  {
    name: 'Deno: no SAN is an empty string, keys in another order',
    cert: { subject: { O: 'Acme', CN: 'plain-device' }, subjectaltname: '' },
    want: ['CN=plain-device,O=Acme', 'O=Acme,CN=plain-device'],
    subject: 'CN=plain-device,O=Acme',
  },
  {
    name: 'no SAN field at all (Node, Bun)',
    cert: { subject: { CN: 'solo' } },
    want: ['CN=solo'],
    subject: 'CN=solo',
  },
  {
    name: 'several of each SAN keep their order; IP SANs are not identities',
    cert: {
      subject: { CN: 'multi' },
      subjectaltname: 'email:a@x.example, email:b@x.example, DNS:one.example, DNS:two.example, URI:urn:a, URI:urn:b, IP Address:10.0.0.7',
    },
    want: ['a@x.example', 'b@x.example', 'one.example', 'two.example', 'urn:a', 'urn:b', 'CN=multi'],
    subject: 'CN=multi',
  },
  {
    name: 'quoted SAN values (Node quotes values with commas)',
    cert: { subject: { CN: 'q' }, subjectaltname: 'DNS:"a,b.example", URI:spiffe://acme/q' },
    want: ['a,b.example', 'spiffe://acme/q', 'CN=q'],
    subject: 'CN=q',
  },
  {
    name: 'DN values are escaped as Go escapes them',
    cert: { subject: { CN: ' lead,plus+"q"#', O: '#hash' } },
    want: ['CN=\\ lead\\,plus\\+\\"q\\"#,O=\\#hash', 'O=\\#hash,CN=\\ lead\\,plus\\+\\"q\\"#'],
    subject: 'CN=\\ lead\\,plus\\+\\"q\\"#,O=\\#hash',
  },
  {
    name: 'repeated attributes share one RDN; DCs are tried appended first; emailAddress is not in the DN',
    cert: { subject: { DC: ['example', 'com'], OU: ['a', 'b'], CN: 'x', emailAddress: 'x@example.com' } },
    want: ['CN=x,OU=a+OU=b,DC=example,DC=com', 'CN=x,OU=a+OU=b'],
    subject: 'CN=x,OU=a+OU=b',
  },
  {
    name: 'Go prints well-known attributes in its fixed order, whatever the certificate order',
    cert: { subject: { C: 'DE', O: 'Acme', CN: 'gw', L: 'Berlin', serialNumber: '7' } },
    want: ['SERIALNUMBER=7,CN=gw,O=Acme,L=Berlin,C=DE', 'C=DE,O=Acme,CN=gw,L=Berlin,SERIALNUMBER=7', 'SERIALNUMBER=7,L=Berlin,CN=gw,O=Acme,C=DE'],
    subject: 'SERIALNUMBER=7,CN=gw,O=Acme,L=Berlin,C=DE',
  },
  {
    name: 'map: uri picks only URI SANs',
    cert: { subject: { CN: 'd' }, subjectaltname: 'DNS:d.example, URI:spiffe://acme/d, email:d@example.com' },
    map: 'uri',
    want: ['spiffe://acme/d'],
    subject: 'CN=d',
  },
  {
    name: 'map: cn picks the common name',
    cert: { subject: { CN: 'device-7', O: 'Acme' }, subjectaltname: 'DNS:d.example' },
    map: 'cn',
    want: ['device-7'],
    subject: 'CN=device-7,O=Acme',
  },
  {
    name: 'map: email',
    cert: { subject: { CN: 'd' }, subjectaltname: 'DNS:d.example, email:d@example.com' },
    map: 'email',
    want: ['d@example.com'],
    subject: 'CN=d',
  },
  {
    name: 'map: dns',
    cert: { subject: { CN: 'd' }, subjectaltname: 'DNS:d.example, DNS:e.example, email:d@example.com' },
    map: 'dns',
    want: ['d.example', 'e.example'],
    subject: 'CN=d',
  },
  {
    name: 'map: dn',
    cert: { subject: { CN: 'd' }, subjectaltname: 'DNS:d.example' },
    map: 'dn',
    want: ['CN=d'],
    subject: 'CN=d',
  },
  {
    name: 'a field that is absent maps to nothing',
    cert: { subject: { CN: 'd' }, subjectaltname: 'DNS:d.example' },
    map: 'uri',
    want: [],
    subject: 'CN=d',
  },
  {
    name: 'no subject and no SAN: no identity',
    cert: { subject: {}, subjectaltname: '' },
    want: [],
    subject: '',
  },
]

for (const c of fields) {
  t.test(c.name, async (t) => {
    const got = certIdentity(c.cert, c.map)
    t.same(got.identities, c.want)
    t.equal(got.subject, c.subject)
  })
}

t.test('SAN string parser', async (t) => {
  t.same(parseSanString(''), { email: [], dns: [], uri: [] })
  t.same(parseSanString('DNS:a, othername:<unsupported>, email:b@c, URI:u:v'), { email: ['b@c'], dns: ['a'], uri: ['u:v'] })
})

t.test('malformed DER falls back to the decoded fields', async (t) => {
  const got = certIdentity({ raw: new Uint8Array([0x30, 0x82, 0xff]), subject: { CN: 'x' }, subjectaltname: 'DNS:x.example' })
  t.same(got.identities, ['x.example', 'CN=x'])
})

// From real certificates (DER). nats-server 2.9.10 calls the no-SAN certificate
// "/CN=plain-device/O=Acme" "CN=plain-device,O=Acme" and maps both orders (tls-nats.test.ts).
t.test('identities from real certificates (DER)', async (t) => {
  const certs = makeCerts(t)
  if (!certs) return
  const of = (file: string, map?: CertMap): ReturnType<typeof certIdentity> => {
    const x = new X509Certificate(readFileSync(file)).toLegacyObject()
    return certIdentity({ raw: x.raw, subject: x.subject as never, subjectaltname: x.subjectaltname }, map)
  }
  const rows: { file: string; map?: CertMap; want: string[]; subject: string }[] = [
    {
      file: certs.client.cert,
      want: ['dev42@example.com', 'device-42.example', 'spiffe://acme/device-42', 'CN=device-42,O=Acme', 'O=Acme,CN=device-42'],
      subject: 'CN=device-42,O=Acme',
    },
    { file: certs.client.cert, map: 'uri', want: ['spiffe://acme/device-42'], subject: 'CN=device-42,O=Acme' },
    { file: certs.client.cert, map: 'cn', want: ['device-42'], subject: 'CN=device-42,O=Acme' },
    { file: certs.noSan.cert, want: ['CN=plain-device,O=Acme', 'O=Acme,CN=plain-device'], subject: 'CN=plain-device,O=Acme' },
    {
      file: certs.manySans.cert,
      want: [
        'multi@example.com', 'second@example.com', 'multi.example', 'alt.example', 'spiffe://acme/multi', 'urn:acme:multi',
        'CN=multi,OU=Sensors,O=Acme', 'O=Acme,OU=Sensors,CN=multi',
      ],
      subject: 'CN=multi,OU=Sensors,O=Acme',
    },
    { file: certs.selfSigned.cert, want: ['CN=rogue'], subject: 'CN=rogue' },
  ]
  for (const r of rows) {
    const got = of(r.file, r.map)
    t.same(got.identities, r.want, `${r.file.split('/').pop()} map=${r.map ?? 'auto'}`)
    t.equal(got.subject, r.subject)
  }
})

t.test('CRL: the revoked certificate is listed under its issuer, the good one is not', async (t) => {
  const certs = makeCerts(t)
  if (!certs) return
  const pem = readFileSync(certs.crl, 'utf8')
  const der = Buffer.from(pem.replace(/-----[A-Z0-9 ]+-----/g, '').replace(/\s+/g, ''), 'base64')
  const crl = crlRevoked(new Uint8Array(der))
  const der509 = (f: string): Uint8Array => new Uint8Array(new X509Certificate(readFileSync(f)).raw)
  const revoked = issuerAndSerial(der509(certs.revoked.cert))
  const good = issuerAndSerial(der509(certs.client.cert))
  const other = issuerAndSerial(der509(certs.otherCa.cert))
  t.equal(revoked.serial, new X509Certificate(readFileSync(certs.revoked.cert)).serialNumber.toUpperCase(), 'serial as node:crypto prints it')
  t.equal(crl.issuer, revoked.issuer, 'same issuer encoding')
  t.ok(crl.serials.has(revoked.serial))
  t.notOk(crl.serials.has(good.serial))
  t.not(other.issuer, crl.issuer)
})
