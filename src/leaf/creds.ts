// Credentials for the uplink's CONNECT, chosen the way a nats-server leaf chooses them: a
// .creds file (user JWT + nonce signature) first, else an nkey seed (public key + nonce
// signature); user/password or token from the URL are sent as well, since a hub may check
// those alongside (auth callout). Pure: files are read through the caller's `readFile`.

import { fromSeed, type KeyPair } from '@nats-io/nkeys'
import type { RemoteOptions } from '../options.ts'

export interface LeafAuth {
  user?: string
  pass?: string
  auth_token?: string
  jwt?: string
  nkey?: string
  sig?: string
}

/** The remote's settings this module reads. */
export type RemoteCredentials = Pick<RemoteOptions, 'credentials' | 'nkey'>

/**
 * CONNECT auth fields for `remote` dialled at `url`; `nonce` from the hub's INFO. Throws an
 * Error with a clear message for an unreadable/bad creds or seed file.
 */
export function leafAuthFields(
  remote: RemoteCredentials,
  url: URL,
  nonce: string | undefined,
  readFile: (path: string) => string,
): LeafAuth {
  const auth: LeafAuth = {}
  if (remote.credentials) {
    const file = remote.credentials
    const { jwt, seed } = parseCreds(read(readFile, file, 'credentials file'), file)
    auth.jwt = jwt
    auth.sig = signNonce(keyPair(seed, `credentials file ${file}`), nonce)
  } else if (remote.nkey) {
    const { seed, where } = nkeySeed(remote.nkey, readFile)
    const kp = keyPair(seed, where)
    auth.nkey = kp.getPublicKey()
    auth.sig = signNonce(kp, nonce)
  }
  // WHATWG URL keeps userinfo percent-encoded. It cannot tell `u:@h` from `u@h`: both are a
  // lone name, which nats-server sends as user and token both (older hubs read `user`).
  if (url.username) {
    auth.user = decode(url.username)
    if (url.password) auth.pass = decode(url.password)
    else auth.auth_token = auth.user
  }
  return auth
}

/** Ed25519 signature of the nonce's bytes, base64url without padding (what hubs verify). */
export function signNonce(kp: KeyPair, nonce: string | undefined): string {
  // A hub always sends a nonce on its leafnode port; signing "" matches nats-server otherwise.
  return base64url(kp.sign(new TextEncoder().encode(nonce ?? '')))
}

export function base64url(b: Uint8Array): string {
  let s = ''
  for (const x of b) s += String.fromCharCode(x)
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/**
 * The user JWT and seed of a .creds file: the text between the first and second pair of
 * dashed marker lines (`-----BEGIN NATS USER JWT-----` ... `------END NATS USER JWT------`,
 * then the seed block). Anything outside the blocks (nsc's warning text) is ignored.
 */
export function parseCreds(text: string, file: string): { jwt: string; seed: string } {
  const blocks = markedBlocks(text)
  if (blocks.length < 2) {
    const found = blocks.length === 0 ? 'no' : 'only one'
    throw new Error(
      `credentials file ${file}: expected a user JWT block and an nkey seed block between "-----BEGIN ...-----" / "------END ...------" lines, found ${found}`,
    )
  }
  const [jwt, seed] = blocks as [string, string]
  if (jwt.split('.').length !== 3) throw new Error(`credentials file ${file}: the first block is not a JWT (expected three dot-separated parts)`)
  return { jwt, seed }
}

/** One-line values enclosed by dashed marker lines, in order. */
function markedBlocks(text: string): string[] {
  const lines = text.split(/\r?\n/).map((l) => l.trim())
  const isMarker = (l: string | undefined): boolean => l !== undefined && /^-{3,}.*-{3,}$/.test(l)
  const out: string[] = []
  for (let i = 0; i + 2 < lines.length; i++) {
    if (isMarker(lines[i]) && !isMarker(lines[i + 1]) && lines[i + 1] !== '' && isMarker(lines[i + 2])) {
      out.push(lines[i + 1]!)
      i += 2
    }
  }
  return out
}

/** The remote's `nkey`: a seed given inline, or read from the file it names. */
function nkeySeed(value: string, readFile: (path: string) => string): { seed: string; where: string } {
  const v = value.trim()
  if (/^S[A-Z2-7]{50,}$/.test(v)) return { seed: v, where: 'leafnodes remote nkey' }
  const text = read(readFile, value, 'nkey seed file')
  const seed = text.split(/\r?\n/).map((l) => l.trim()).find((l) => /^S[A-Z2-7]+$/.test(l))
  if (!seed) throw new Error(`nkey seed file ${value}: no nkey seed in it (expected a line starting with "SU")`)
  return { seed, where: `nkey seed file ${value}` }
}

function keyPair(seed: string, where: string): KeyPair {
  if (!seed.startsWith('SU')) {
    const kind = seed.startsWith('SA') ? 'an account seed' : seed.startsWith('SO') ? 'an operator seed' : 'not a user seed'
    throw new Error(`${where}: the nkey seed is ${kind}; a leaf connection needs a user seed (starting with "SU")`)
  }
  try {
    return fromSeed(new TextEncoder().encode(seed))
  } catch (e) {
    throw new Error(`${where}: malformed nkey seed (${(e as Error).message})`)
  }
}

function read(readFile: (path: string) => string, path: string, what: string): string {
  try {
    return readFile(path)
  } catch (e) {
    const code = (e as { code?: string }).code
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (e as Error).message
    throw new Error(`cannot read ${what} ${path}: ${why}`)
  }
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s)
  } catch {
    return s
  }
}
