// Uplink credentials (src/leaf/creds.ts) without a hub: nonce signatures against a published
// Ed25519 vector, .creds and seed parsing, URL userinfo, and the error for each bad input.
// test/leaf-auth.test.ts checks the same fields against real nats-server hubs.

import t from 'tap'
import { fromPublic, fromSeed, Prefix } from '@nats-io/nkeys'
import { Codec } from '@nats-io/nkeys/lib/codec.js'
import { base64url, leafAuthFields, parseCreds, signNonce } from '../src/leaf/creds.ts'
import { credsFile, makeOperator } from './helpers/jwt.ts'

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'))
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)
const noFiles = (p: string): string => {
  throw Object.assign(new Error(`ENOENT: no such file or directory, open '${p}'`), { code: 'ENOENT' })
}
const files =
  (m: Record<string, string>) =>
  (p: string): string =>
    m[p] ?? noFiles(p)
const hub = new URL('nats://127.0.0.1:7422')

// RFC 8032 section 7.1, TEST 2: a one-byte message "r" (0x72). Ed25519 is deterministic, so an
// nkey seed built from this secret must sign the nonce "r" to exactly this signature.
const RFC = {
  secret: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
  public: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
  sig: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
}
const rfcSeed = new TextDecoder().decode(Codec.encodeSeed(Prefix.User, hex(RFC.secret)))

t.test('nonce signature matches the RFC 8032 vector, base64url without padding', async (t) => {
  const kp = fromSeed(bytes(rfcSeed))
  t.same(Codec.decode(Prefix.User, bytes(kp.getPublicKey())), hex(RFC.public), 'public key from the seed')
  const sig = signNonce(kp, 'r')
  t.equal(sig, Buffer.from(RFC.sig, 'hex').toString('base64url'))
  t.notMatch(sig, /[=+/]/, 'url-safe, unpadded')
  t.equal(base64url(new Uint8Array([0xfb, 0xff])), '-_8')
})

t.test('nkey seed inline: public key and a signature of the nonce that verifies', async (t) => {
  const a = leafAuthFields({ nkey: rfcSeed }, hub, 'r', noFiles)
  t.same(Object.keys(a).sort(), ['nkey', 'sig'])
  t.equal(a.sig, Buffer.from(RFC.sig, 'hex').toString('base64url'))
  t.ok(fromPublic(a.nkey!).verify(bytes('r'), Buffer.from(a.sig!, 'base64url')))
  t.notOk(fromPublic(a.nkey!).verify(bytes('other nonce'), Buffer.from(a.sig!, 'base64url')), 'bound to this nonce')

  const nonce = 'Pr8XX8Pc9NL4P1I'
  const b = leafAuthFields({ nkey: rfcSeed }, hub, nonce, noFiles)
  t.ok(fromPublic(b.nkey!).verify(bytes(nonce), Buffer.from(b.sig!, 'base64url')))
})

t.test('nkey as a path: the seed is read from the file', async (t) => {
  const a = leafAuthFields({ nkey: '/etc/sprig/leaf.nk' }, hub, 'abc', files({ '/etc/sprig/leaf.nk': `# leaf user\n${rfcSeed}\n` }))
  t.equal(a.nkey, fromSeed(bytes(rfcSeed)).getPublicKey())
  t.ok(fromPublic(a.nkey!).verify(bytes('abc'), Buffer.from(a.sig!, 'base64url')))
})

t.test('.creds: the user JWT and a signature by its seed', async (t) => {
  const user = makeOperator().account('A').user('leaf1')
  const read = files({ '/c/leaf.creds': user.creds })
  const a = leafAuthFields({ credentials: '/c/leaf.creds' }, hub, 'n0nce', read)
  t.same(Object.keys(a).sort(), ['jwt', 'sig'])
  t.equal(a.jwt, user.jwt)
  t.ok(fromPublic(user.publicKey).verify(bytes('n0nce'), Buffer.from(a.sig!, 'base64url')), 'signed by the user key')

  // CRLF line ends and surrounding blanks (files edited on Windows) parse the same.
  const crlf = leafAuthFields({ credentials: 'w' }, hub, 'n0nce', files({ w: user.creds.replace(/\n/g, '\r\n') }))
  t.equal(crlf.jwt, user.jwt)
  t.equal(crlf.sig, a.sig)

  // As in nats-server, a creds file wins over an nkey seed.
  const both = leafAuthFields({ credentials: '/c/leaf.creds', nkey: rfcSeed }, hub, 'n0nce', read)
  t.equal(both.jwt, user.jwt)
  t.equal(both.nkey, undefined)
})

t.test('URL userinfo: user/password decoded, a lone name is a token (and user)', async (t) => {
  t.same(leafAuthFields({}, new URL('nats://leaf:s3cret@h:7422'), 'n', noFiles), { user: 'leaf', pass: 's3cret' })
  t.same(leafAuthFields({}, new URL('nats://us%40er:p%3Ass%20w@h:7422'), 'n', noFiles), { user: 'us@er', pass: 'p:ss w' })
  t.same(leafAuthFields({}, new URL('nats://t0ken@h:7422'), 'n', noFiles), { user: 't0ken', auth_token: 't0ken' })
  t.same(leafAuthFields({}, new URL('nats://h:7422'), 'n', noFiles), {}, 'no credentials at all')

  // Sent alongside a JWT, as nats-server does (auth callout may read both).
  const user = makeOperator().account('A').user('u')
  const a = leafAuthFields({ credentials: 'c' }, new URL('nats://x:y@h'), 'n', files({ c: user.creds }))
  t.same(Object.keys(a).sort(), ['jwt', 'pass', 'sig', 'user'])
})

t.test('no nonce from the hub: the empty string is signed, as nats-server does', async (t) => {
  const a = leafAuthFields({ nkey: rfcSeed }, hub, undefined, noFiles)
  t.ok(fromPublic(a.nkey!).verify(new Uint8Array(0), Buffer.from(a.sig!, 'base64url')))
})

t.test('bad files and seeds: an Error naming the file and what is wrong', async (t) => {
  const user = makeOperator().account('A').user('u')
  const err = (remote: { credentials?: string; nkey?: string }, read: (p: string) => string): string => {
    try {
      leafAuthFields(remote, hub, 'n', read)
    } catch (e) {
      t.type(e, Error)
      return (e as Error).message
    }
    t.fail('expected an error')
    return ''
  }
  t.equal(err({ credentials: '/nope.creds' }, noFiles), 'cannot read credentials file /nope.creds: no such file')
  const denied = (): string => {
    throw Object.assign(new Error('EACCES'), { code: 'EACCES' })
  }
  t.equal(err({ credentials: '/root.creds' }, denied), 'cannot read credentials file /root.creds: permission denied')
  t.equal(err({ nkey: '/nope.nk' }, noFiles), 'cannot read nkey seed file /nope.nk: no such file')

  t.match(err({ credentials: 'e' }, files({ e: '' })), /^credentials file e: expected a user JWT block and an nkey seed block .* found no$/)
  const jwtOnly = user.creds.slice(0, user.creds.indexOf('****'))
  t.match(err({ credentials: 'j' }, files({ j: jwtOnly })), /^credentials file j: .* found only one$/)
  t.equal(
    err({ credentials: 'x' }, files({ x: credsFile('not-a-jwt', user.seed) })),
    'credentials file x: the first block is not a JWT (expected three dot-separated parts)',
  )
  const badSeed = user.seed.slice(0, -3) + (user.seed.endsWith('AAA') ? 'BBB' : 'AAA')
  t.match(err({ credentials: 's' }, files({ s: credsFile(user.jwt, badSeed) })), /^credentials file s: malformed nkey seed \(/)
  const accountSeed = new TextDecoder().decode(Codec.encodeSeed(Prefix.Account, hex(RFC.secret)))
  t.equal(
    err({ credentials: 'a' }, files({ a: credsFile(user.jwt, accountSeed) })),
    'credentials file a: the nkey seed is an account seed; a leaf connection needs a user seed (starting with "SU")',
  )
  t.equal(
    err({ nkey: accountSeed }, noFiles),
    'leafnodes remote nkey: the nkey seed is an account seed; a leaf connection needs a user seed (starting with "SU")',
  )
  t.equal(err({ nkey: 'k.nk' }, files({ k: '', 'k.nk': 'hello\n' })), 'nkey seed file k.nk: no nkey seed in it (expected a line starting with "SU")')
})

t.test('parseCreds keeps only the marked blocks (nsc text around them is ignored)', async (t) => {
  const user = makeOperator().account('A').user('u')
  t.same(parseCreds(`junk before\n\n${user.creds}\ntrailing words`, 'f'), { jwt: user.jwt, seed: user.seed })
})
