// Test certificates, made with openssl at test time in a temp dir (never committed), once per
// test process. `openssl ca` signs them, because only it can back-date a certificate (expired)
// on OpenSSL 3.0 and keep the database a CRL is made from.

import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import type { TlsOptions } from '../../src/options.ts'
import { havePeer } from './peers.ts'

export interface CertPair {
  readonly cert: string
  readonly key: string
}

export interface Certs {
  readonly dir: string
  /** "Test CA": signs the server and every client below except `otherCa` and `selfSigned`. */
  readonly ca: string
  /** CN=localhost, SAN DNS:localhost, IP:127.0.0.1. */
  readonly server: CertPair
  /** CN=device-42, O=Acme; SAN DNS:device-42.example, URI:spiffe://acme/device-42, email:dev42@example.com. */
  readonly client: CertPair
  /** CN=expired-device, valid 2020-01-01 .. 2020-01-02. */
  readonly expired: CertPair
  /** CN=future-device, valid from 2099. */
  readonly notYetValid: CertPair
  /** CN=intruder, signed by "Other CA". */
  readonly otherCa: CertPair
  /** The CA that signed `otherCa`. */
  readonly otherCaCert: string
  /** CN=rogue, self-signed. */
  readonly selfSigned: CertPair
  /** CN=plain-device, O=Acme, no SAN extension at all. */
  readonly noSan: CertPair
  /** CN=multi, O=Acme, OU=Sensors; two of each SAN kind (email, DNS, URI) and an IP. */
  readonly manySans: CertPair
  /** CN=revoked-device, revoked in `crl`. */
  readonly revoked: CertPair
  /** PEM CRL from the CA, revoking `revoked`. */
  readonly crl: string
  /** `client`'s certificate followed by 400 copies of the CA: a chain of about 400 KB. */
  readonly hugeChain: CertPair
  /** Deletes the directory (also done at process exit). */
  cleanup(): void
}

const GOOD_SAN = 'DNS:device-42.example,URI:spiffe://acme/device-42,email:dev42@example.com'
const MANY_SAN =
  'email:multi@example.com,email:second@example.com,DNS:multi.example,DNS:alt.example,' +
  'URI:spiffe://acme/multi,URI:urn:acme:multi,IP:10.0.0.7'

let cached: Certs | null = null

/** The test certificates, or null when openssl is missing (the test is then skipped or failed). */
export function makeCerts(t: Parameters<typeof havePeer>[0]): Certs | null {
  if (cached) return cached
  if (!havePeer(t, 'openssl', 'openssl')) return null
  cached = buildCerts()
  return cached
}

/** Makes the certificates in a temp directory of their own (needs openssl; test/bench/tls-load.ts calls it too). */
export function buildCerts(): Certs {
  const dir = mkdtempSync(join(tmpdir(), 'sprig-certs-'))
  const p = (f: string): string => join(dir, f)
  const ssl = (...args: string[]): void => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' })
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.stderr}`)
  }
  const key = (name: string): string => {
    ssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p(`${name}.key`))
    return p(`${name}.key`)
  }
  const selfSigned = (name: string, subj: string, ca: boolean): CertPair => {
    const k = key(name)
    const ext = ca ? ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'] : []
    ssl('req', '-new', '-x509', '-key', k, '-subj', subj, '-days', '3650', '-out', p(`${name}.crt`), ...ext)
    return { cert: p(`${name}.crt`), key: k }
  }

  // A minimal `openssl ca` set-up per CA: its own database, serial and CRL number.
  const caDir = (ca: string): string => {
    const d = p(`${ca}-db`)
    mkdirSync(join(d, 'new'), { recursive: true })
    writeFileSync(join(d, 'index.txt'), '')
    writeFileSync(join(d, 'serial'), '1000\n')
    writeFileSync(join(d, 'crlnumber'), '1000\n')
    writeFileSync(
      join(d, 'ca.cnf'),
      [
        '[ca]',
        'default_ca = ca_default',
        '[ca_default]',
        `dir = ${d}`,
        'database = $dir/index.txt',
        'new_certs_dir = $dir/new',
        'serial = $dir/serial',
        'crlnumber = $dir/crlnumber',
        `certificate = ${p(`${ca}.crt`)}`,
        `private_key = ${p(`${ca}.key`)}`,
        'default_md = sha256',
        'default_days = 3650',
        'default_crl_days = 3650',
        'policy = policy_any',
        'unique_subject = no',
        'copy_extensions = copy',
        'email_in_dn = no',
        '[policy_any]',
        'countryName = optional',
        'organizationName = optional',
        'organizationalUnitName = optional',
        'commonName = supplied',
        '[leaf]',
        'basicConstraints = CA:FALSE',
        'keyUsage = critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage = serverAuth,clientAuth',
        '',
      ].join('\n'),
    )
    return d
  }
  const sign = (ca: string, name: string, subj: string, san: string | null, dates: string[] = []): CertPair => {
    const k = key(name)
    const addext = san ? ['-addext', `subjectAltName=${san}`] : []
    ssl('req', '-new', '-key', k, '-subj', subj, '-out', p(`${name}.csr`), ...addext)
    const d = p(`${ca}-db`)
    ssl('ca', '-batch', '-config', join(d, 'ca.cnf'), '-extensions', 'leaf', '-preserveDN', '-notext', '-in', p(`${name}.csr`), '-out', p(`${name}.crt`), ...dates)
    return { cert: p(`${name}.crt`), key: k }
  }

  const ca = selfSigned('ca', '/CN=Test CA', true)
  caDir('ca')
  const other = selfSigned('other-ca', '/CN=Other CA', true)
  caDir('other-ca')

  const server = sign('ca', 'server', '/CN=localhost', 'DNS:localhost,IP:127.0.0.1')
  const client = sign('ca', 'client', '/CN=device-42/O=Acme', GOOD_SAN)
  const expired = sign('ca', 'expired', '/CN=expired-device', 'DNS:expired.example', ['-startdate', '20200101000000Z', '-enddate', '20200102000000Z'])
  const notYetValid = sign('ca', 'future', '/CN=future-device', 'DNS:future.example', ['-startdate', '20990101000000Z', '-enddate', '21000101000000Z'])
  const otherCa = sign('other-ca', 'intruder', '/CN=intruder', 'DNS:intruder.example')
  const rogue = selfSigned('rogue', '/CN=rogue', false)
  const noSan = sign('ca', 'nosan', '/CN=plain-device/O=Acme', null)
  const manySans = sign('ca', 'multi', '/CN=multi/OU=Sensors/O=Acme', MANY_SAN)
  const revoked = sign('ca', 'revoked', '/CN=revoked-device', 'DNS:revoked.example')
  const cnf = join(p('ca-db'), 'ca.cnf')
  ssl('ca', '-batch', '-config', cnf, '-revoke', revoked.cert)
  ssl('ca', '-batch', '-config', cnf, '-gencrl', '-out', p('ca.crl'))

  const caPem = readFileSync(ca.cert, 'utf8')
  writeFileSync(p('huge.crt'), readFileSync(client.cert, 'utf8') + caPem.repeat(400))

  const cleanup = (): void => rmSync(dir, { recursive: true, force: true })
  process.once('exit', cleanup)
  return {
    dir,
    ca: ca.cert,
    server,
    client,
    expired,
    notYetValid,
    otherCa,
    otherCaCert: other.cert,
    selfSigned: rogue,
    noSan,
    manySans,
    revoked,
    crl: p('ca.crl'),
    hugeChain: { cert: p('huge.crt'), key: client.key },
    cleanup,
  }
}

// --- clients for the TLS tests ------------------------------------------------------------------

/**
 * Client certificates a verifying listener with `crl` must refuse, and the reason its log line
 * gives (tls-bad.test.ts on node:tls, tls-bun.test.ts on Bun.listen's TLS).
 */
export const BAD_CLIENTS: readonly { name: string; pair: (c: Certs) => CertPair | null; reason: RegExp }[] = [
  { name: 'expired', pair: (c) => c.expired, reason: /certificate has expired/ },
  { name: 'not yet valid', pair: (c) => c.notYetValid, reason: /certificate is not yet valid/ },
  { name: 'signed by another CA', pair: (c) => c.otherCa, reason: /not signed by a trusted CA/ },
  // With a CRL configured OpenSSL first finds no CRL for a self-signed certificate's issuer.
  { name: 'self-signed', pair: (c) => c.selfSigned, reason: /self-signed certificate|no CRL for its issuer/ },
  { name: 'revoked (CRL)', pair: (c) => c.revoked, reason: /certificate revoked/ },
  { name: 'no certificate', pair: () => null, reason: /client certificate required, none sent/ },
  { name: 'huge chain (400 certificates)', pair: (c) => c.hugeChain, reason: /TLS handshake error: \S/ },
]

/** A listener's tls block for the tests (the server certificate, this CA, verify on). */
export function serverTlsOptions(c: Certs, over: Partial<TlsOptions> = {}): TlsOptions {
  return {
    cert_file: c.server.cert,
    key_file: c.server.key,
    ca_file: c.ca,
    verify: true,
    verify_and_map: false,
    timeout: 2000,
    handshake_first: false,
    ...over,
  }
}

export interface Attempt {
  /** The protocol answered over TLS (PONG for NATS, CONNACK for MQTT). */
  ok: boolean
  /** Our local port: the server logs it as the peer's port. */
  port: number
  /** The plaintext INFO line, for NATS STARTTLS. */
  info?: string
  /** Why it failed, as the client saw it. */
  error?: string
}

/**
 * One connection attempt with a raw node:tls client and `pair` as the client certificate
 * (none when null): `starttls` reads NATS's plaintext INFO first, `nats-first` handshakes
 * first and speaks NATS, `mqtt` handshakes first and sends an MQTT CONNECT.
 */
export function tlsAttempt(port: number, how: 'starttls' | 'nats-first' | 'mqtt' | 'https', c: Certs, pair: CertPair | null, ms = 3000): Promise<Attempt> {
  return new Promise((resolve) => {
    const raw = net.connect(port, '127.0.0.1')
    const out: Attempt = { ok: false, port: 0 }
    let done = false
    const finish = (error?: string): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      if (error !== undefined && !out.ok) out.error = error
      raw.destroy()
      resolve(out)
    }
    const timer = setTimeout(() => finish('timeout'), ms)
    raw.on('error', (e) => finish(e.message))
    raw.on('close', () => finish('closed'))
    const secure = (): void => {
      const opts: tls.ConnectionOptions = { socket: raw, ca: readFileSync(c.ca), servername: 'localhost' }
      if (pair) {
        opts.cert = readFileSync(pair.cert)
        opts.key = readFileSync(pair.key)
      }
      const s = tls.connect(opts)
      s.on('error', (e) => finish(e.message))
      s.on('close', () => finish('closed'))
      let got = ''
      s.on('data', (d: Buffer) => {
        got += d.toString('latin1')
        const answered = how === 'mqtt' ? got.charCodeAt(0) === 0x20 : how === 'https' ? got.startsWith('HTTP/1.1 200') : got.includes('PONG\r\n')
        if (answered) {
          out.ok = true
          finish()
        }
      })
      s.on('secureConnect', () => {
        s.write(how === 'mqtt' ? MQTT_CONNECT : how === 'https' ? 'GET /healthz HTTP/1.0\r\n\r\n' : 'CONNECT {"verbose":false}\r\nPING\r\n')
      })
    }
    raw.on('connect', () => {
      out.port = raw.localPort ?? 0
      if (how !== 'starttls') return secure()
      let buf = ''
      const onInfo = (d: Buffer): void => {
        buf += d.toString('latin1')
        if (!buf.includes('\r\n')) return
        raw.removeListener('data', onInfo)
        out.info = buf.slice(0, buf.indexOf('\r\n'))
        secure()
      }
      raw.on('data', onInfo)
    })
  })
}

/** MQTT 3.1.1 CONNECT, clean session, keepalive 60, client id "tls-probe". */
const MQTT_CONNECT = Buffer.from([
  0x10, 21, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x02, 0, 60, 0, 9, ...Buffer.from('tls-probe'),
])
