// TLS for the node:net targets. Node, Bun and Deno all go through node:tls: Deno's native TLS
// cannot ask for or read client certificates (docs/runtimes.md). Server side: a
// listener's settings, read and checked once at start-up (serverTls), and the handshake on an
// accepted socket (upgradeSocket). Client side: options for tls.connect on a dialled socket.

import { readFileSync } from 'node:fs'
import net from 'node:net'
import type tls from 'node:tls'
import { nodeCrypto, nodeTls } from './lazy.ts'
import { certIdentity, crlRevoked, issuerAndSerial, type CertMap } from '../src/cert-identity.ts'
import type { PeerTls } from '../src/host.ts'
import { mqttOptions, type Options, type TlsOptions } from '../src/options.ts'

/**
 * Options for `tls.connect({ ...tlsClientOptions(t, host), socket })`: our certificate and key
 * (when the hub asks for one), the CA to verify the hub against (the system store without
 * `ca_file`), and the name the hub's certificate must carry. `insecure` skips verification.
 * Throws an Error naming the key (under `at`, e.g. "leafnodes.remotes[0].tls") and the file
 * when a file cannot be read.
 */
export function tlsClientOptions(t: TlsOptions, servername: string, at = 'tls'): tls.ConnectionOptions {
  const o: tls.ConnectionOptions = {
    // checkServerIdentity compares against `host` when a socket is handed in.
    host: servername,
    rejectUnauthorized: t.insecure !== true,
    minVersion: 'TLSv1.2',
  }
  // SNI may not carry an IP address (RFC 6066); Node warns when asked to.
  if (net.isIP(servername) === 0) o.servername = servername
  if (t.cert_file !== undefined) o.cert = readTlsFile(t.cert_file, `${at}.cert_file`)
  if (t.key_file !== undefined) o.key = readTlsFile(t.key_file, `${at}.key_file`)
  if (t.ca_file !== undefined) o.ca = readTlsFile(t.ca_file, `${at}.ca_file`)
  if (t.crl_file !== undefined) o.crl = readTlsFile(t.crl_file, `${at}.crl_file`)
  return o
}

/** A PEM file's text; the error names the option (`key`, e.g. "mqtt.tls.ca_file") and the file. */
export function readTlsFile(path: string, key: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (e) {
    const code = (e as { code?: string }).code
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (e as Error).message
    throw new Error(`${key}: cannot read ${path}: ${why}`)
  }
}

// --- server side -------------------------------------------------------------------------------

/** A TLS listener's settings, with the files read and checked. A reload replaces the fields (tlsReloader). */
export interface ServerTls {
  /**
   * `first`: TLS from the first byte (the MQTT TLS port, NATS handshake_first).
   * `after-info`: NATS's way: one plaintext frame (INFO) goes out, then the same socket upgrades.
   * `mixed`: NATS with allow_non_tls: the client's first byte decides (a TLS handshake starts with 0x16).
   */
  mode: 'first' | 'after-info' | 'mixed'
  /** ms the handshake may take. */
  timeout: number
  /** Require a client certificate that verifies against the CA. */
  verify: boolean
  map: CertMap
  /** For tls.createServer: certificate, key, CA, CRL as PEM text. */
  serverOptions: tls.TlsOptions
  /** Revoked serial numbers by issuer, from crl_file (checked here too: Deno ignores `crl`). */
  revoked: Map<string, Set<string>> | null
  /** Where refusals are reported: one line each, with the peer's address. */
  refused: (line: string) => void
}

/**
 * Reads and checks a listener's `tls` block (`at` names it in errors: "tls", "mqtt.tls").
 * Throws an Error naming the key and the file for anything unreadable or wrong, and when this
 * runtime cannot do TLS safely.
 */
export function serverTls(t: TlsOptions, at: string, mode: ServerTls['mode'], refused: (line: string) => void): ServerTls {
  checkRuntime()
  const certFile = t.cert_file!
  const keyFile = t.key_file!
  const cert = readTlsFile(certFile, `${at}.cert_file`)
  const key = readTlsFile(keyFile, `${at}.key_file`)
  pemCert(cert, `${at}.cert_file`, certFile)
  try {
    nodeCrypto().createPrivateKey(key)
  } catch (e) {
    throw new Error(`${at}.key_file: ${keyFile} does not hold a usable private key (PEM, not encrypted): ${(e as Error).message}`)
  }
  const o: tls.TlsOptions = { cert, key, minVersion: 'TLSv1.2' }
  try {
    nodeTls().createSecureContext(o)
  } catch (e) {
    throw new Error(`${at}.key_file: ${keyFile} does not match the certificate in ${certFile}: ${(e as Error).message}`)
  }
  if (t.ca_file !== undefined) {
    o.ca = readTlsFile(t.ca_file, `${at}.ca_file`)
    pemCert(o.ca, `${at}.ca_file`, t.ca_file)
  }
  let revoked: Map<string, Set<string>> | null = null
  if (t.crl_file !== undefined) {
    o.crl = readTlsFile(t.crl_file, `${at}.crl_file`)
    const blocks = [...o.crl.matchAll(/-----BEGIN X509 CRL-----([^-]+)-----END X509 CRL-----/g)]
    if (blocks.length === 0) throw new Error(`${at}.crl_file: ${t.crl_file} does not hold a PEM CRL`)
    try {
      nodeTls().createSecureContext({ ...o })
      revoked = new Map()
      for (const b of blocks) {
        const { issuer, serials } = crlRevoked(new Uint8Array(Buffer.from(b[1]!, 'base64')))
        const known = revoked.get(issuer)
        revoked.set(issuer, known ? new Set([...known, ...serials]) : serials)
      }
    } catch (e) {
      throw new Error(`${at}.crl_file: ${t.crl_file} is not a usable CRL: ${(e as Error).message}`)
    }
  }
  const verify = t.verify || t.verify_and_map
  // The certificate is asked for, but the handshake does not refuse it by itself: the check is
  // ours (upgradeSocket), so each refusal can be logged with its reason on every runtime.
  if (verify) {
    o.requestCert = true
    o.rejectUnauthorized = false
  }
  return { mode, timeout: t.timeout, verify, map: t.map ?? 'auto', serverOptions: o, revoked, refused }
}

function pemCert(pem: string, key: string, file: string): void {
  try {
    new (nodeCrypto().X509Certificate)(pem)
  } catch {
    throw new Error(`${key}: ${file} does not hold a PEM certificate`)
  }
}

/**
 * Deno before 2.8.1 lets clients without a certificate through its node:tls server (and before
 * 2.7.14 never asks for one): refuse to start there rather than run open.
 */
function checkRuntime(): void {
  const deno = (globalThis as { Deno?: { version?: { deno?: string } } }).Deno?.version?.deno
  if (deno === undefined) return
  const [a = 0, b = 0, c = 0] = deno.split('.').map((x) => parseInt(x, 10))
  if (a * 1e6 + b * 1e3 + c < 2_008_001) {
    throw new Error(`TLS needs Deno 2.8.1 or newer (this is Deno ${deno}, whose node:tls server does not enforce client certificates)`)
  }
}

/** Reasons OpenSSL-style verify codes stand for; logged with the code, never branched on. */
const VERIFY_TEXT: Record<string, string> = {
  CERT_HAS_EXPIRED: 'certificate has expired',
  CERT_NOT_YET_VALID: 'certificate is not yet valid',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'self-signed certificate',
  SELF_SIGNED_CERT_IN_CHAIN: 'self-signed certificate in the chain',
  UNABLE_TO_GET_ISSUER_CERT: 'not signed by a trusted CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'not signed by a trusted CA',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'not signed by a trusted CA',
  CERT_REVOKED: 'certificate revoked',
  CERT_SIGNATURE_FAILURE: 'bad certificate signature',
  UNABLE_TO_GET_CRL: 'no CRL for its issuer (not a CA the crl_file covers)',
}

/**
 * SIGHUP for the TLS listeners: checks the re-read tls blocks (their files are read again, so
 * a renewed certificate, CA or CRL is picked up) and returns the step that makes new
 * handshakes use them; connections already up keep theirs. Turning TLS on or off, or changing
 * handshake_first or the MQTT TLS port, needs a restart and refuses the reload.
 */
export function tlsReloader(
  srv: { opts: Options },
  listeners: { nats?: ServerTls; mqtt?: ServerTls },
): (next: Options) => () => string[] {
  return (next) => {
    const was = srv.opts
    const restart = (key: string): Error => new Error(`${key}: config reload not supported for this option (restart to change it)`)
    if (!!was.tls !== !!next.tls) throw restart('tls')
    if (was.tls && next.tls && was.tls.handshake_first !== next.tls.handshake_first) throw restart('tls.handshake_first')
    const wm = mqttOptions(was)
    const nm = mqttOptions(next)
    if (!!wm.tls !== !!nm.tls) throw restart('mqtt.tls')
    if (wm.tls && nm.tls && nm.tls_port !== 0 && wm.tls_port !== nm.tls_port) throw restart('mqtt.tls_port')
    if (wm.plain !== nm.plain) throw restart('mqtt.plain')
    const steps: [string, ServerTls, ServerTls][] = []
    if (listeners.nats && next.tls) steps.push(['tls', listeners.nats, serverTls(next.tls, 'tls', listeners.nats.mode, listeners.nats.refused)])
    if (listeners.mqtt && nm.tls) steps.push(['mqtt.tls', listeners.mqtt, serverTls(nm.tls, 'mqtt.tls', 'first', listeners.mqtt.refused)])
    return () => {
      const changed: string[] = []
      for (const [name, live, fresh] of steps) {
        if (sameTls(live, fresh)) continue
        Object.assign(live, fresh)
        handshakes.delete(live) // the next handshake builds a tls.Server with the new settings
        reloadHooks.get(live)?.() // a listener with the settings built in (Bun.listen) listens again
        changed.push(name)
      }
      // INFO (tls_verify) and certificate mapping read the options; ports stay as they are.
      if (changed.length > 0) srv.opts = { ...srv.opts, tls: next.tls, ...(srv.opts.mqtt ? { mqtt: { ...srv.opts.mqtt, tls: nm.tls } } : {}) }
      return changed
    }
  }
}

/** Listeners that take a ServerTls's certificate, key and CA when they listen (targets/bun.ts). */
const reloadHooks = new WeakMap<ServerTls, () => void>()

/** Calls `f` after a reload changed `st`'s settings in place (new handshakes already see its verify, map and CRL). */
export function onTlsReload(st: ServerTls, f: () => void): void {
  reloadHooks.set(st, f)
}

function sameTls(a: ServerTls, b: ServerTls): boolean {
  const o = (s: ServerTls): unknown[] => {
    const x = s.serverOptions
    return [s.timeout, s.verify, s.map, x.cert, x.key, x.ca, x.crl, x.requestCert]
  }
  return JSON.stringify(o(a)) === JSON.stringify(o(b))
}

/** One handshake in progress on a listener. */
interface Handshake {
  readonly st: ServerTls
  readonly key: string
  readonly raw: net.Socket
  readonly peer: string
  readonly done: (ts: tls.TLSSocket, info: PeerTls) => void
  readonly failed: (reason: string) => void
  readonly timer: ReturnType<typeof setTimeout>
  over: boolean
}

/** The listener's shared tls.Server and its handshakes (one tls.Server costs ~2-6 ms to make on Node). */
interface Handshakes {
  readonly server: tls.Server
  readonly pending: Map<string, Handshake>
  /** The last handshake error whose socket could not be told (see onClientError). */
  unattributed: { reason: string; at: number } | null
}

const handshakes = new WeakMap<ServerTls, Handshakes>()

function handshakesOf(st: ServerTls): Handshakes {
  let h = handshakes.get(st)
  if (h) return h
  h = { server: nodeTls().createServer(st.serverOptions), pending: new Map(), unattributed: null }
  const hs = h
  hs.server.on('secureConnection', (ts: tls.TLSSocket) => onSecure(st, hs, ts))
  hs.server.on('tlsClientError', (err: Error & { code?: string }, ts?: tls.TLSSocket) => onClientError(hs, err, ts))
  handshakes.set(st, hs)
  return hs
}

/** A TLS socket over an accepted socket reports the same four addresses: that ties them together. */
function addrKey(s: net.Socket): string {
  return `${s.remoteAddress}|${s.remotePort}|${s.localAddress}|${s.localPort}`
}

/**
 * Runs the server side of a TLS handshake on an accepted plain socket by handing it to the
 * listener's tls.Server, which never listens (the one way client verification is enforced
 * alike on Node, Bun and Deno). `done` gets the TLS socket and what the certificate says; on a
 * failure, timeout or refused certificate the reason is logged, the sockets are destroyed and
 * `failed` is called instead.
 */
export function upgradeSocket(
  sock: net.Socket,
  st: ServerTls,
  peer: string,
  done: (ts: tls.TLSSocket, tls: PeerTls) => void,
  failed: (reason: string) => void,
): void {
  if (sock.destroyed) return failed('closed before the TLS handshake')
  const h = handshakesOf(st)
  const key = addrKey(sock)
  const hs: Handshake = {
    st,
    key,
    raw: sock,
    peer,
    done,
    failed,
    over: false,
    timer: setTimeout(() => refuse(st, h, hs, 'TLS handshake timeout'), st.timeout),
  }
  h.pending.set(key, hs)
  sock.once('close', () => {
    if (hs.over) return
    // The TLS library's error for this socket may come just after the close, without addresses.
    setTimeout(() => {
      if (hs.over) return
      const u = h.unattributed
      const recent = u !== null && performance.now() - u.at < 100
      if (recent) h.unattributed = null
      refuse(st, h, hs, recent ? u.reason : 'connection closed during the TLS handshake')
    }, 20)
  })
  h.server.emit('connection', sock)
}

function refuse(st: ServerTls, h: Handshakes, hs: Handshake, reason: string, ts?: tls.TLSSocket): void {
  if (hs.over) return
  hs.over = true
  clearTimeout(hs.timer)
  h.pending.delete(hs.key)
  st.refused(`${hs.peer} - TLS handshake error: ${reason}`)
  ts?.destroy()
  hs.raw.destroy()
  hs.failed(reason)
}

/** A TLS library's handshake error as one reason: its message, and its code when the message lacks it. */
export function libraryReason(err: Error & { code?: string }): string {
  const msg = err.message.trim()
  return err.code && !msg.includes(err.code) ? `${msg} (${err.code})` : msg
}

function onClientError(h: Handshakes, err: Error & { code?: string }, ts?: tls.TLSSocket): void {
  const reason = libraryReason(err)
  const hs = ts ? h.pending.get(addrKey(ts)) : undefined
  ts?.destroy()
  // Some runtimes report errors on a socket that no longer knows its addresses (Deno always,
  // Node on a reset): the raw socket's close, which follows, picks the reason up.
  if (!hs) h.unattributed = { reason, at: performance.now() }
  else refuse(hs.st, h, hs, reason, ts)
}

function onSecure(st: ServerTls, h: Handshakes, ts: tls.TLSSocket): void {
  // An 'error' without a listener throws. The caller adds its own (net.ts hands the error to
  // the connection's closed(), which logs it; node:http reports it as a clientError), and
  // refusals below are logged; this one only keeps a stray error from throwing.
  ts.on('error', reportedElsewhere)
  const hs = h.pending.get(addrKey(ts))
  if (!hs || hs.over) return void ts.destroy()
  const why = st.verify ? peerRefusal(st, ts.getPeerCertificate(), ts.authorized, ts.authorizationError ?? null) : null
  if (why !== null) return refuse(st, h, hs, why, ts)
  hs.over = true
  clearTimeout(hs.timer)
  h.pending.delete(hs.key)
  hs.done(ts, peerTlsOf(ts, st.map))
}

/**
 * Why a verifying listener refuses the peer of a finished handshake, or null to let it in: no
 * certificate, one the TLS library did not verify (`authError`: its code, e.g.
 * CERT_HAS_EXPIRED), or one the listener's CRL revokes. The same rule for node:tls and for
 * Bun.listen's own TLS (targets/bun.ts).
 */
export function peerRefusal(st: ServerTls, cert: tls.PeerCertificate | null | undefined, authorized: boolean, authError: string | Error | null): string | null {
  if (!hasCert(cert)) return 'client certificate required, none sent'
  if (!authorized) {
    const code = authError === null ? 'not authorized' : typeof authError === 'string' ? authError : ((authError as { code?: string }).code ?? authError.message)
    return `client certificate refused: ${VERIFY_TEXT[code] ?? code} (${code})`
  }
  if (st.revoked && isRevoked(st.revoked, cert.raw)) return `client certificate refused: ${VERIFY_TEXT.CERT_REVOKED} (CERT_REVOKED)`
  return null
}

/** What a finished handshake says about the peer (its certificate, if it sent one). */
export function peerTlsOf(s: tls.TLSSocket, map: CertMap = 'auto'): PeerTls {
  return peerTlsFrom(s.getPeerCertificate(), s.authorized, s.getProtocol() ?? '', map)
}

/** The same from the parts (Bun.listen's TLS sockets have no getProtocol()). */
export function peerTlsFrom(cert: tls.PeerCertificate | null | undefined, authorized: boolean, protocol: string, map: CertMap): PeerTls {
  const sent = hasCert(cert)
  const id = sent ? certIdentity({ subject: cert.subject as never, subjectaltname: cert.subjectaltname, raw: cert.raw }, map) : null
  return {
    protocol,
    authorized: sent && authorized,
    identities: id?.identities ?? [],
    subject: id?.subject ?? '',
  }
}

/** A peer that sent no certificate: node:tls gives an empty object (no raw bytes), Bun undefined. */
function hasCert(cert: tls.PeerCertificate | null | undefined): cert is tls.PeerCertificate {
  return cert != null && cert.raw !== undefined && cert.raw.length > 0
}

function isRevoked(revoked: Map<string, Set<string>>, der: Uint8Array): boolean {
  try {
    const { issuer, serial } = issuerAndSerial(der)
    return revoked.get(issuer)?.has(serial) === true
  } catch {
    return true // a certificate we cannot read is not let through on a CRL-checking listener
  }
}


function reportedElsewhere(): void {}
