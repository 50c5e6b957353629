// nkey users (nats-server's `authorization.users[].nkey`): the server puts a fresh nonce in
// each client's INFO, the client signs it with its seed and sends `nkey` (its public key) and
// `sig` in CONNECT; the server checks the signature against the configured public key. No
// secret is ever stored on the gateway. MQTT has no nonce to sign (docs/mqtt.md).

import { fromPublic } from '@nats-io/nkeys'

/** nats-server's nonce: 11 random bytes, base64url without padding (15 characters). */
const NONCE_BYTES = 11

/** Is this a user public nkey (56 base32 characters starting with U, valid checksum)? */
export function isUserNkey(s: string): boolean {
  if (!/^U[A-Z2-7]{55}$/.test(s)) return false
  try {
    fromPublic(s)
    return true
  } catch {
    return false
  }
}

export function newNonce(): string {
  const b = new Uint8Array(NONCE_BYTES)
  crypto.getRandomValues(b) // a global on Node, Bun and Deno
  return btoa(String.fromCharCode(...b)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/** Did the holder of `nkey` sign `nonce`? `sig` is base64url (raw) or standard base64, as nats-server takes it. */
export function verifyNonce(nkey: string, nonce: string, sig: string): boolean {
  try {
    const b64 = sig.replace(/-/g, '+').replace(/_/g, '/')
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))
    const bytes = new Uint8Array(bin.length)
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i)
    return fromPublic(nkey).verify(new TextEncoder().encode(nonce), bytes)
  } catch {
    return false
  }
}
