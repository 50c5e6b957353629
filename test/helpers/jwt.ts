// NATS JWT v2 issuing for tests: an operator, its accounts and their users, made with fresh
// nkeys, so a nats-server hub in operator mode (operator + MEMORY resolver preloaded with
// the account JWTs) accepts a .creds file written here. Only what such a hub checks is set:
// issuer chain, subject, type, version 2 and unlimited limits (a zero limit would forbid).

import { createHash, randomBytes } from 'node:crypto'
import { createAccount, createOperator, createUser, type KeyPair } from '@nats-io/nkeys'

const HEADER = { typ: 'JWT', alg: 'ed25519-nkey' }
const NO_LIMIT = -1

function b64url(data: Uint8Array | string): string {
  return Buffer.from(data).toString('base64url')
}

/** RFC 4648 base32 without padding, as NATS JWT ids are written. */
function base32(b: Uint8Array): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
  let out = ''
  let bits = 0
  let value = 0
  for (const x of b) {
    value = (value << 8) | x
    bits += 8
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31]
  return out
}

/** Signs `claims` (iss from `signer`) as a NATS JWT; jti is the hash of the claims, as nsc makes it. */
export function encodeJwt(claims: Record<string, unknown>, signer: KeyPair): string {
  const body: Record<string, unknown> = { jti: '', iat: Math.floor(Date.now() / 1000), iss: signer.getPublicKey(), ...claims }
  body.jti = base32(createHash('sha512-256').update(JSON.stringify(body)).update(randomBytes(8)).digest())
  const signing = `${b64url(JSON.stringify(HEADER))}.${b64url(JSON.stringify(body))}`
  return `${signing}.${b64url(signer.sign(new TextEncoder().encode(signing)))}`
}

/** The claims of a JWT (no verification: for assertions in tests). */
export function decodeJwt(jwt: string): Record<string, unknown> {
  const part = jwt.split('.')[1] ?? ''
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>
}

export interface IssuedUser {
  readonly name: string
  readonly jwt: string
  readonly seed: string
  readonly publicKey: string
  /** The .creds file text (nsc's layout). */
  readonly creds: string
}

export interface IssuedAccount {
  readonly name: string
  readonly publicKey: string
  readonly jwt: string
  readonly keys: KeyPair
  user(name: string): IssuedUser
}

export interface Operator {
  readonly jwt: string
  readonly publicKey: string
  account(name: string): IssuedAccount
  /**
   * nats-server config lines for operator mode with these accounts preloaded
   * (`operator`, `resolver: MEMORY`, `resolver_preload`).
   */
  serverConfig(accounts: readonly IssuedAccount[]): string
}

export function credsFile(jwt: string, seed: string): string {
  return [
    '-----BEGIN NATS USER JWT-----',
    jwt,
    '------END NATS USER JWT------',
    '',
    '************************* IMPORTANT *************************',
    'NKEY Seed printed below can be used to sign and prove identity.',
    'NKEYs are sensitive and should be treated as secrets.',
    '',
    '-----BEGIN USER NKEY SEED-----',
    seed,
    '------END USER NKEY SEED------',
    '',
    '*************************************************************',
    '',
  ].join('\n')
}

export function makeOperator(name = 'sprig-test-op'): Operator {
  const op = createOperator()
  const opPub = op.getPublicKey()
  const jwt = encodeJwt({ name, sub: opPub, nats: { type: 'operator', version: 2 } }, op)
  return {
    jwt,
    publicKey: opPub,
    account(accName) {
      const acc = createAccount()
      const accPub = acc.getPublicKey()
      const limits = { subs: NO_LIMIT, data: NO_LIMIT, payload: NO_LIMIT, imports: NO_LIMIT, exports: NO_LIMIT, wildcards: true, conn: NO_LIMIT, leaf: NO_LIMIT }
      const accJwt = encodeJwt(
        { name: accName, sub: accPub, nats: { limits, default_permissions: { pub: {}, sub: {} }, type: 'account', version: 2 } },
        op,
      )
      return {
        name: accName,
        publicKey: accPub,
        jwt: accJwt,
        keys: acc,
        user(userName) {
          const u = createUser()
          const seed = new TextDecoder().decode(u.getSeed())
          const userJwt = encodeJwt(
            {
              name: userName,
              sub: u.getPublicKey(),
              nats: { pub: {}, sub: {}, subs: NO_LIMIT, data: NO_LIMIT, payload: NO_LIMIT, type: 'user', version: 2 },
            },
            acc,
          )
          return { name: userName, jwt: userJwt, seed, publicKey: u.getPublicKey(), creds: credsFile(userJwt, seed) }
        },
      }
    },
    serverConfig(accounts) {
      const preload = accounts.map((a) => `  ${a.publicKey}: "${a.jwt}"`).join('\n')
      return `operator: "${jwt}"\nresolver: MEMORY\nresolver_preload: {\n${preload}\n}\n`
    },
  }
}
