// What NATS clients check and see (issue 12, point 7): INFO `version` is the nats-server
// release whose protocol sprig speaks (sprig's own in `sprig_version`, in /varz too); nkey
// users sign INFO's nonce (nats.js nkeyAuthenticator); trace logging reads as nats-server's
// (compared line by line with a real nats-server -V given the same bytes).

import t from 'tap'
import net from 'node:net'
import { connect, nkeyAuthenticator } from '@nats-io/transport-node'
import { createUser, fromSeed } from '@nats-io/nkeys'
import mqtt from 'mqtt'
import { startBroker } from './helpers/broker.ts'
import { errorOf } from './helpers/config.ts'
import { havePeer, startNatsServer } from './helpers/peers.ts'
import { validateOptions } from '../src/config.ts'
import { varz } from '../src/monitor.ts'
import { NATS_VERSION, VERSION } from '../src/server.ts'
import { newNonce, verifyNonce } from '../src/nkey.ts'
import type { NatsClient } from '../adapters/nats/client.ts'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Connects, sends `script`, returns everything the server said until `until` shows up. */
function raw(port: number, script: string, until: RegExp, ms = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let got = ''
    const timer = setTimeout(() => {
      s.destroy()
      reject(new Error(`no ${until} in ${JSON.stringify(got)}`))
    }, ms)
    s.on('data', (d) => {
      got += d
      if (got.startsWith('INFO') && got.includes('\r\n') && script !== '') {
        s.write(script)
        script = ''
      }
      if (until.test(got)) {
        clearTimeout(timer)
        s.destroy()
        resolve(got)
      }
    })
    s.on('error', reject)
  })
}

const infoOf = (s: string): Record<string, unknown> => JSON.parse(/^INFO (.*) \r\n/.exec(s)![1]!) as Record<string, unknown>

t.test('INFO and /varz: version is the nats-server protocol release, sprig_version is ours', async (t) => {
  const b = await startBroker()
  t.teardown(() => b.stop())
  const info = infoOf(await raw(b.port, '', /\r\n/))
  t.equal(info.version, NATS_VERSION)
  t.equal(NATS_VERSION, '2.10.0')
  t.equal(info.sprig_version, VERSION)
  t.notOk('nonce' in info, 'no nonce without nkey users')
  const v = varz(b.srv, { mem: 0, cores: 1 })
  t.equal(v.version, NATS_VERSION)
  t.equal((v.sprig as { version: string }).version, VERSION, 'sprig.version in /varz')
  // nats.js gates features on it: 2.10 is not "an ancient server".
  const nc = await connect({ servers: b.url, reconnect: false })
  t.teardown(() => nc.close())
  const features = (nc as unknown as { features: { require(v: string): boolean } }).features
  t.ok(features.require('2.8.2'), 'nats.js features.require("2.8.2") holds')
  t.equal(nc.info?.version, '2.10.0')
})

t.test('nkey users: nats.js nkeyAuthenticator signs the nonce', async (t) => {
  const alice = createUser()
  const mallory = createUser()
  const pub = alice.getPublicKey()
  const b = await startBroker({
    mqtt: true,
    authorization: {
      users: [
        { user: pub, nkey: pub, permissions: { publish: { allow: ['ok.>'] }, subscribe: { allow: ['ok.>', '_INBOX.>'] } } },
        { user: 'bob', password: 'secret' },
      ],
    },
  })
  t.teardown(() => b.stop())
  const info = infoOf(await raw(b.port, '', /\r\n/))
  t.match(info.nonce, /^[A-Za-z0-9_-]{15}$/, 'INFO carries a 15-character base64url nonce')
  t.equal(info.auth_required, true)
  const other = infoOf(await raw(b.port, '', /\r\n/))
  t.not(other.nonce, info.nonce, 'a fresh nonce per connection')

  const nc = await connect({ servers: b.url, reconnect: false, authenticator: nkeyAuthenticator(alice.getSeed()) })
  t.teardown(() => nc.close())
  const sub = nc.subscribe('ok.x', { max: 1 })
  nc.publish('ok.x', 'hi')
  for await (const m of sub) t.equal(m.string(), 'hi', 'the nkey user publishes and receives')
  const conn = [...b.srv.sessions.values()].find((s) => s.kind === 'nats') as NatsClient
  t.equal(conn.user, pub, 'the user is its public key')
  // Its permissions apply.
  const errs: string[] = []
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'error') errs.push(String(s.error))
  })()
  nc.publish('nope', 'x')
  await nc.flush()
  await sleep(100)
  t.match(errs.join(), /Permissions Violation for Publish to "nope"/)

  // A key that is not configured, or a signature by another key, is refused.
  await t.rejects(connect({ servers: b.url, reconnect: false, authenticator: nkeyAuthenticator(mallory.getSeed()) }), /Authorization Violation|AUTHORIZATION_VIOLATION/i)
  const reply = await new Promise<string>((resolve) => {
    const s = net.connect(b.port, '127.0.0.1')
    let got = ''
    s.on('data', (d) => {
      got += d
      const m = /"nonce":"([^"]+)"/.exec(got)
      if (m && !got.includes('CONNECT_SENT')) {
        got += 'CONNECT_SENT'
        const sig = Buffer.from(mallory.sign(new TextEncoder().encode(m[1]!))).toString('base64url')
        s.write(`CONNECT ${JSON.stringify({ nkey: pub, sig, verbose: false })}\r\nPING\r\n`)
      }
      if (/-ERR|PONG/.test(got)) {
        s.destroy()
        resolve(got)
      }
    })
  })
  t.match(reply, /-ERR 'Authorization Violation'/, "alice's key with mallory's signature: refused")
  t.notMatch(reply, /PONG/)
  // Passwords still work beside nkeys, and an nkey cannot be used as a password login.
  const nb = await connect({ servers: b.url, reconnect: false, user: 'bob', pass: 'secret' })
  await nb.close()
  await t.rejects(connect({ servers: b.url, reconnect: false, user: pub, pass: 'anything' }), /Authorization Violation|AUTHORIZATION_VIOLATION/i)
  // MQTT cannot sign a nonce: an nkey user is not reachable from MQTT.
  const m = mqtt.connect(b.mqttUrl, { username: pub, password: 'x', reconnectPeriod: 0, protocolVersion: 4 })
  const err = await new Promise<Error>((r) => m.once('error', r))
  m.end(true)
  t.match(err.message, /Not authorized|Bad username or password/i, 'MQTT login as an nkey user is refused')
})

t.test('nonce signatures: base64url and standard base64, nothing else', async (t) => {
  const kp = createUser()
  const nonce = newNonce()
  const sig = kp.sign(new TextEncoder().encode(nonce))
  t.ok(verifyNonce(kp.getPublicKey(), nonce, Buffer.from(sig).toString('base64url')))
  t.ok(verifyNonce(kp.getPublicKey(), nonce, Buffer.from(sig).toString('base64')))
  t.notOk(verifyNonce(kp.getPublicKey(), nonce + 'x', Buffer.from(sig).toString('base64url')))
  t.notOk(verifyNonce(kp.getPublicKey(), nonce, '!!!'))
  t.notOk(verifyNonce('UNOTAKEY', nonce, Buffer.from(sig).toString('base64url')))
  t.notOk(verifyNonce(fromSeed(kp.getSeed()).getPublicKey(), nonce, ''))
})

t.test('nkey config errors name the key', async (t) => {
  const pub = createUser().getPublicKey()
  const ok = validateOptions({ authorization: { users: [{ nkey: pub }] } })
  t.same(ok.authorization?.users?.[0], { user: pub, nkey: pub })
  t.match(errorOf(t, () => validateOptions({ authorization: { users: [{ nkey: 'UABC' }] } })), /authorization\.users\[0\]\.nkey: expected a user public nkey/)
  const account = 'A' + pub.slice(1)
  t.match(errorOf(t, () => validateOptions({ authorization: { users: [{ nkey: account }] } })), /users\[0\]\.nkey: expected a user public nkey/)
  t.match(errorOf(t, () => validateOptions({ authorization: { users: [{ nkey: pub, password: 'x' }] } })), /users\[0\]\.nkey: an nkey user has no user or password/)
})

t.test('trace: the same lines as nats-server -V for the same bytes', async (t) => {
  if (!havePeer(t, 'nats-server', 'nats-server')) return
  const script =
    'CONNECT {"verbose":false,"pedantic":false,"name":"raw","lang":"test","version":"1.2.3","protocol":1,"headers":true,"pass":"hunter2","user":"u"}\r\n' +
    'SUB foo q 1\r\nSUB bar 2\r\nPUB foo 5\r\nhello\r\nHPUB bar r.1 12 14\r\nNATS/1.0\r\n\r\nhi\r\nUNSUB 2 5\r\nUNSUB 1\r\nPING\r\n'
  const ns = await startNatsServer(['-V'])
  t.teardown(() => ns.stop())
  await raw(ns.port, script, /PONG\r\n/)
  await sleep(200)
  const b = await startBroker({ log_level: 'trace' })
  t.teardown(() => b.stop())
  await raw(b.port, script, /PONG\r\n/)
  const ops = (lines: string[]): string[] => lines.filter((l) => l.includes('[TRC]')).map((l) => /- cid:\d+ - (.*)$/.exec(l)?.[1] ?? l)
  const theirs = ops(ns.output().split('\n')).filter((l) => !l.includes('DELSUB'))
  const ours = ops(b.logs)
  t.same(ours, theirs, 'sprig traces what nats-server traces')
  t.match(ours.join('\n'), /"pass":"\[REDACTED\]"/, 'the password is redacted')
  t.notMatch(b.logs.join('\n'), /hunter2/)
})

t.test('trace off: nothing wrapped', async (t) => {
  const b = await startBroker({ log_level: 'debug' })
  t.teardown(() => b.stop())
  const nc = await connect({ servers: b.url, reconnect: false })
  t.teardown(() => nc.close())
  const c = [...b.srv.sessions.values()][0] as NatsClient
  t.equal((c.parser as unknown as { h: unknown }).h, c, 'the parser calls the client itself')
  t.notOk(Object.hasOwn(c, 'deliver') || Object.hasOwn(c, 'send'), 'deliver and send are the class methods')
  t.notOk(b.logs.some((l) => l.includes('[TRC]')))
})
