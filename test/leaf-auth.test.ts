// The uplink's credentials and TLS against real nats-server hubs, once per nats-server build
// found (natsServerBins(): Debian's 2.9 and the current one .ci/run fetches): user/password,
// token, nkey, .creds in operator mode, TLS with a client certificate (verify and
// verify_and_map), TLS-first (2.10+), and wrong credentials, which must give a clear log line
// and spaced redials. A row passes only when a message published at the edge reaches a
// subscriber on the hub, so an uplink that "connects" but is not accepted cannot pass.

import t, { type Test } from 'tap'
import net from 'node:net'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { credsAuthenticator, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node'
import { createUser } from '@nats-io/nkeys'
import { LEAF_DEFAULTS, REMOTE_DEFAULTS, type RemoteOptions, type TlsOptions } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { compareVersions, freePort, natsServerBins, skipOrFail, spawnServer, type NatsServerBin, type Proc } from './helpers/peers.ts'
import { makeCerts, type Certs } from './helpers/certs.ts'
import { makeOperator } from './helpers/jwt.ts'
import { natsClient } from './helpers/mqtt.ts'

const dir = mkdtempSync(join(tmpdir(), 'sprig-leaf-auth-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
const file = (text: string, ext = 'conf'): string => {
  const p = join(dir, `f${++files}.${ext}`)
  writeFileSync(p, text, { mode: 0o600 })
  return p
}

interface Hub {
  proc: Proc
  /** The leafnode port. */
  leafPort: number
  /** NATS client URL of the hub. */
  url: string
}

/** A nats-server hub with `body` (given the leafnode listen line to place) on free ports. */
async function startHub(t: Test, bin: NatsServerBin, body: (leafListen: string) => string): Promise<Hub> {
  const port = await freePort()
  const leafPort = await freePort()
  const conf = file(`listen: 127.0.0.1:${port}\n${body(`listen: 127.0.0.1:${leafPort}`)}\n`)
  const proc = await spawnServer(bin.bin, ['-c', conf], port)
  t.teardown(() => proc.stop())
  return { proc, leafPort, url: `nats://127.0.0.1:${port}` }
}

type RemoteOver = Partial<Omit<RemoteOptions, 'tls'>> & { tls?: Partial<TlsOptions> }

/** sprig with one remote; short redial waits so the tests do not idle. */
async function startEdge(t: Test, urls: string[], over: RemoteOver = {}): Promise<TestBroker> {
  const { tls, ...rest } = over
  const remote: RemoteOptions = {
    ...REMOTE_DEFAULTS,
    urls,
    ...rest,
    ...(tls ? { tls: { verify: false, verify_and_map: false, timeout: 2000, handshake_first: false, ...tls } } : {}),
  }
  const b = await startBroker({ leafnodes: { ...LEAF_DEFAULTS, reconnect: 200, reconnect_max: 1600, remotes: [remote] } })
  t.teardown(() => b.stop())
  return b
}

const natsTo = (t: Test, url: string, opts: Partial<ConnectionOptions> = {}): Promise<NatsConnection> => natsClient(t, url, opts)

/**
 * True once a message published on the edge arrives at a hub subscriber within `ms`. The
 * edge learns the hub's interest only after the uplink is up, so it publishes every 100 ms.
 */
async function flowsUp(t: Test, edge: TestBroker, hub: NatsConnection, ms = 8000): Promise<boolean> {
  const subject = `up.${Math.random().toString(36).slice(2)}`
  const sub = hub.subscribe(subject, { max: 1 })
  await hub.flush()
  const got = (async () => {
    for await (const m of sub) return m.string()
    return null
  })()
  const nc = await natsTo(t, edge.url)
  let i = 0
  const pub = setInterval(() => nc.publish(subject, `m${i++}`), 100)
  const timer = new Promise<null>((r) => setTimeout(() => r(null), ms))
  const r = await Promise.race([got, timer])
  clearInterval(pub)
  sub.unsubscribe()
  return r !== null
}

/** Resolves when a log line matches, or after `ms` with what was logged. */
async function logged(edge: TestBroker, re: RegExp, ms = 5000): Promise<string | null> {
  const end = Date.now() + ms
  for (;;) {
    const line = edge.logs.find((l) => re.test(l))
    if (line) return line
    if (Date.now() > end) return null
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** A TCP relay to `port` that records when each connection arrives (to see redial spacing). */
async function relay(t: Test, port: number): Promise<{ port: number; accepts: number[] }> {
  const accepts: number[] = []
  const srv = net.createServer((c) => {
    accepts.push(Date.now())
    const up = net.connect(port, '127.0.0.1')
    c.pipe(up).pipe(c)
    c.on('error', () => up.destroy())
    up.on('error', () => c.destroy())
  })
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => srv.close(() => r())))
  return { port: (srv.address() as net.AddressInfo).port, accepts }
}

const bins = natsServerBins()
if (bins.length === 0) {
  skipOrFail(t, 'nats-server not found: install the Debian package nats-server (apt-get install -y nats-server)')
}
if (bins.length > 0) {
  // The TLS-first, token and leaf-nkey rows exist only on 2.10+/2.12+ hubs: in CI one must be here.
  t.test('a current nats-server is here too (2.12+)', async (t) => {
    const newest = bins[bins.length - 1]!
    if (compareVersions(newest.version, '2.12.0') >= 0) t.pass(`nats-server ${newest.version}: ${newest.bin}`)
    else skipOrFail(t, `only nats-server ${bins.map((b) => b.version).join(', ')} here; for a current one: bash .ci/fetch-nats-server node_modules/.cache/nats-server-current`)
  })
}

for (const bin of bins) {
  const v = bin.version
  const atLeast = (min: string): boolean => compareVersions(v, min) >= 0

  t.test(`nats-server ${v}: user and password from the URL (URL-encoded)`, async (t) => {
    const hub = await startHub(t, bin, (l) => `leafnodes { ${l}\n authorization { user: leaf, password: "p@ss:w/rd" } }`)
    const cloud = await natsTo(t, hub.url)
    const edge = await startEdge(t, [`nats://leaf:p%40ss%3Aw%2Frd@127.0.0.1:${hub.leafPort}`])
    t.ok(await flowsUp(t, edge, cloud), 'edge publish reaches the hub')
  })

  t.test(`nats-server ${v}: wrong password is refused, logged clearly, and redialled with backoff`, async (t) => {
    const hub = await startHub(t, bin, (l) => `leafnodes { ${l}\n authorization { user: leaf, password: right } }`)
    const cloud = await natsTo(t, hub.url)
    const r = await relay(t, hub.leafPort)
    const edge = await startEdge(t, [`nats://leaf:wrong@127.0.0.1:${r.port}`])
    t.notOk(await flowsUp(t, edge, cloud, 3500), 'nothing crosses')
    const line = await logged(edge, /Authorization Violation/)
    t.ok(line, 'the hub refusal is logged')
    t.match(line ?? '', /127\.0\.0\.1/, 'naming the hub')
    // 200 ms doubling to 1.6 s: about 5 attempts in 3.5 s; a tight loop would make hundreds.
    const gaps = r.accepts.slice(1).map((x, i) => x - r.accepts[i]!)
    t.ok(r.accepts.length >= 2, `redialled (${r.accepts.length} attempts)`)
    t.ok(r.accepts.length <= 10, `not a tight loop (${r.accepts.length} attempts, gaps ${gaps.join(', ')} ms)`)
    t.ok(gaps.every((g) => g >= 100), `attempts are spaced (gaps ${gaps.join(', ')} ms)`)
    t.ok(gaps.length < 2 || gaps[gaps.length - 1]! > gaps[0]!, 'and the wait grows')
  })

  // Before 2.12 a hub accepts a leaf with any token or none, so no row there could fail.
  const tokenSkip = atLeast('2.12.0') ? false : `nats-server ${v} does not check tokens on the leafnode port (2.12+ does)`
  versionTest(t, tokenSkip, `nats-server ${v}: token (lone URL user name)`, async (t) => {
    const hub = await startHub(t, bin, (l) => `authorization { token: "t0k3n" }\nleafnodes { ${l} }`)
    const cloud = await natsTo(t, hub.url, { token: 't0k3n' })
    const edge = await startEdge(t, [`nats://t0k3n@127.0.0.1:${hub.leafPort}`])
    t.ok(await flowsUp(t, edge, cloud), 'right token: edge publish reaches the hub')

    const bad = await startEdge(t, [`nats://nope@127.0.0.1:${hub.leafPort}`])
    t.notOk(await flowsUp(t, bad, cloud, 2500), 'wrong token: nothing crosses')
    t.ok(await logged(bad, /Authorization Violation/), 'and the refusal is logged')
  })

  t.test(`nats-server ${v}: nkey seed`, async (t) => {
    const user = createUser()
    const seed = new TextDecoder().decode(user.getSeed())
    const other = new TextDecoder().decode(createUser().getSeed())
    const hub = await startHub(
      t,
      bin,
      (l) => `accounts { A { users = [ {nkey: "${user.getPublicKey()}"}, {user: cloud, password: cloud} ] } }\nleafnodes { ${l} }`,
    )
    const cloud = await natsTo(t, hub.url, { user: 'cloud', pass: 'cloud' })
    const inline = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { nkey: seed })
    t.ok(await flowsUp(t, inline, cloud), 'seed inline: edge publish reaches account A on the hub')
    const fromFile = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { nkey: file(`${seed}\n`, 'nk') })
    t.ok(await flowsUp(t, fromFile, cloud), 'seed from a file: the same')
    if (atLeast('2.12.0')) {
      // Older hubs drop an unknown leaf into $G instead of refusing it (fallback, see the doc).
      const stranger = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { nkey: other })
      t.notOk(await flowsUp(t, stranger, cloud, 2500), 'an unknown nkey does not reach account A')
      t.ok(await logged(stranger, /Authorization Violation/), 'and the refusal is logged')
    }
  })

  const leafNkeySkip = atLeast('2.10.0') ? false : `nats-server ${v} has no leafnodes.authorization.nkey (2.10+)`
  versionTest(t, leafNkeySkip, `nats-server ${v}: nkey in leafnodes.authorization`, async (t) => {
    const user = createUser()
    const hub = await startHub(t, bin, (l) => `leafnodes { ${l}\n authorization { nkey: "${user.getPublicKey()}" } }`)
    const cloud = await natsTo(t, hub.url)
    const edge = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { nkey: new TextDecoder().decode(user.getSeed()) })
    t.ok(await flowsUp(t, edge, cloud), 'the leaf nkey is accepted')
    const bad = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { nkey: new TextDecoder().decode(createUser().getSeed()) })
    t.notOk(await flowsUp(t, bad, cloud, 2500), 'another nkey: nothing crosses')
    t.ok(await logged(bad, /Authorization Violation/), 'and the refusal is logged')
  })

  t.test(`nats-server ${v}: .creds file (operator mode, user JWT + nonce signature)`, async (t) => {
    const op = makeOperator()
    const acc = op.account('EDGE')
    const leaf = acc.user('gw42')
    const cloudUser = acc.user('cloud')
    const hub = await startHub(t, bin, (l) => `${op.serverConfig([acc])}leafnodes { ${l} }`)
    const cloud = await natsTo(t, hub.url, { authenticator: credsAuthenticator(new TextEncoder().encode(cloudUser.creds)) })
    const edge = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { credentials: file(leaf.creds, 'creds') })
    t.ok(await flowsUp(t, edge, cloud), 'edge publish reaches the account on the hub')

    // A user of an account the hub does not trust is refused (operator mode never falls back).
    const stranger = makeOperator().account('X').user('evil')
    const bad = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { credentials: file(stranger.creds, 'creds') })
    t.notOk(await flowsUp(t, bad, cloud, 2500), 'an untrusted JWT: nothing crosses')
    t.ok(await logged(bad, /Authorization Violation/), 'and the refusal is logged')
  })

  t.test(`nats-server ${v}: bad creds file is a clear error, not a crash`, async (t) => {
    const hub = await startHub(t, bin, (l) => `leafnodes { ${l} }`)
    const missing = join(dir, 'missing.creds')
    const edge = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { credentials: missing })
    const line = await logged(edge, /missing\.creds/)
    t.match(line ?? '', /cannot read credentials file .*missing\.creds: no such file/)
  })

  t.test(`nats-server ${v}: TLS with a client certificate (verify)`, async (t) => {
    const c = makeCerts(t)
    if (!c) return
    const hub = await startHub(t, bin, (l) => `leafnodes { ${l}\n tls { ${serverTls(c)} verify: true } }`)
    const cloud = await natsTo(t, hub.url)
    const edge = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { tls: { ca_file: c.ca, cert_file: c.client.cert, key_file: c.client.key } })
    t.ok(await flowsUp(t, edge, cloud), 'edge publish reaches the hub over mutual TLS')

    const noCert = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { tls: { ca_file: c.ca } })
    t.notOk(await flowsUp(t, noCert, cloud, 2500), 'without a client certificate nothing crosses')
    // TLS 1.3 reports a missing client certificate as an alert after the client's handshake is
    // done; the dialled socket must keep that alert text as the close reason.
    t.ok(await logged(noCert, /certificate/i, 2500), 'and the missing certificate is named in the log')
  })

  t.test(`nats-server ${v}: TLS verify_and_map binds the certificate to a hub user`, async (t) => {
    const c = makeCerts(t)
    if (!c) return
    // noSan has only a subject, so nats-server maps it by the DN: "CN=plain-device,O=Acme".
    const hub = await startHub(
      t,
      bin,
      (l) =>
        `accounts { A { users = [ {user: cloud, password: cloud} ] } }\n` +
        `leafnodes { ${l}\n tls { ${serverTls(c)} verify_and_map: true }\n` +
        ` authorization { users = [ {user: "CN=plain-device,O=Acme", account: A} ] } }`,
    )
    const cloud = await natsTo(t, hub.url, { user: 'cloud', pass: 'cloud' })
    const edge = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { tls: { ca_file: c.ca, cert_file: c.noSan.cert, key_file: c.noSan.key } })
    t.ok(await flowsUp(t, edge, cloud), 'mapped certificate: edge publish reaches account A')

    // A valid certificate of the same CA that maps to no user is refused.
    const other = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { tls: { ca_file: c.ca, cert_file: c.manySans.cert, key_file: c.manySans.key } })
    t.notOk(await flowsUp(t, other, cloud, 2500), 'an unmapped certificate: nothing crosses')
    t.ok(await logged(other, /Authorization Violation/), 'and the refusal is logged')
  })

  const firstSkip = atLeast('2.10.0') ? false : `nats-server ${v} has no handshake_first (2.10+)`
  versionTest(t, firstSkip, `nats-server ${v}: TLS-first (handshake_first)`, async (t) => {
    const c = makeCerts(t)
    if (!c) return
    const hub = await startHub(t, bin, (l) => `leafnodes { ${l}\n tls { ${serverTls(c)} handshake_first: true } }`)
    const cloud = await natsTo(t, hub.url)
    const edge = await startEdge(t, [`nats://127.0.0.1:${hub.leafPort}`], { tls: { ca_file: c.ca, handshake_first: true } })
    t.ok(await flowsUp(t, edge, cloud), 'edge publish reaches the hub')
  })
}

function serverTls(c: Certs): string {
  return `cert_file: "${c.server.cert}", key_file: "${c.server.key}", ca_file: "${c.ca}", timeout: 2,`
}

/**
 * A row that needs a newer hub: run it, or say in the output why this hub cannot have it (the
 * row still runs against the current nats-server, which CI always has).
 */
function versionTest(t: Test, why: string | false, name: string, fn: (t: Test) => Promise<void>): void {
  if (why) t.comment(`${name}: not applicable, ${why}`)
  else t.test(name, fn)
}
