// Users: plain and bcrypt passwords, tokens, no_auth_user, for NATS (nats.js) and MQTT
// (MQTT.js) against the same `authorization` block; the auth timeout on both listeners; a
// wrong password tried over and over never stalls other clients; config errors name the key.

import t from 'tap'
import bcrypt from 'bcryptjs'
import net from 'node:net'
import mqtt from 'mqtt'
import { connect } from '@nats-io/transport-node'
import { validateOptions } from '../src/config.ts'
import { startBroker } from './helpers/broker.ts'
import { exchange } from './helpers/raw.ts'
import { RawMqtt, sleep } from './helpers/mqtt.ts'
import { errorOf } from './helpers/config.ts'

const HASH = bcrypt.hashSync('hunter2', 8)

async function natsOk(port: number, o: Record<string, unknown>): Promise<boolean> {
  try {
    const nc = await connect({ servers: `127.0.0.1:${port}`, reconnect: false, ...o })
    await nc.flush()
    await nc.close()
    return true
  } catch {
    return false
  }
}

async function mqttOk(url: string, o: Record<string, unknown>, version: 4 | 5 = 4): Promise<boolean> {
  try {
    const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 3000, protocolVersion: version, ...o })
    await c.endAsync(true)
    return true
  } catch {
    return false
  }
}

t.test('users with plain and bcrypt passwords, NATS and MQTT alike', async (t) => {
  const b = await startBroker({
    mqtt: true,
    authorization: { timeout: 2000, users: [{ user: 'plain', password: 'pw' }, { user: 'hashed', password: HASH }] },
  })
  t.teardown(() => b.stop())
  t.equal(await natsOk(b.port, { user: 'plain', pass: 'pw' }), true, 'NATS plain password')
  t.equal(await natsOk(b.port, { user: 'hashed', pass: 'hunter2' }), true, 'NATS bcrypt password')
  t.equal(await natsOk(b.port, { user: 'hashed', pass: 'hunter2' }), true, 'NATS bcrypt password again (cached)')
  t.equal(await natsOk(b.port, { user: 'plain', pass: 'nope' }), false, 'NATS wrong plain password')
  t.equal(await natsOk(b.port, { user: 'hashed', pass: 'nope' }), false, 'NATS wrong bcrypt password')
  t.equal(await natsOk(b.port, { user: 'nobody', pass: 'pw' }), false, 'NATS unknown user')
  t.equal(await natsOk(b.port, {}), false, 'NATS without credentials')
  t.equal(await mqttOk(b.mqttUrl, { username: 'plain', password: 'pw' }), true, 'MQTT plain password')
  t.equal(await mqttOk(b.mqttUrl, { username: 'hashed', password: 'hunter2' }, 5), true, 'MQTT 5 bcrypt password')
  t.equal(await mqttOk(b.mqttUrl, { username: 'hashed', password: 'nope' }), false, 'MQTT wrong bcrypt password')
  t.equal(await mqttOk(b.mqttUrl, {}), false, 'MQTT without credentials')
  t.ok(b.logs.some((l) => l.includes('authentication error - User "hashed"')), 'refusals are logged with the user')
  const info = await exchange(b.port, '', 50)
  t.equal(info.info.auth_required, true, 'INFO says auth_required')
})

t.test('a bcrypt user: operations right behind CONNECT wait for the check, in order', async (t) => {
  // The first check also starts a worker thread (targets/bcrypt.ts): slow on a busy machine.
  const b = await startBroker({ authorization: { timeout: 5000, users: [{ user: 'h', password: bcrypt.hashSync('pw', 8) }] } })
  t.teardown(() => b.stop())
  const CONNECT = 'CONNECT {"user":"h","pass":"pw","verbose":false,"headers":true}\r\n'
  const r = await exchange(b.port, CONNECT + 'SUB a 1\r\nPUB a 2\r\nhi\r\nHPUB a 12 14\r\nNATS/1.0\r\n\r\nyo\r\nPING\r\n', 2500)
  t.equal(r.out, 'MSG a 1 2\r\nhi\r\nHMSG a 1 12 14\r\nNATS/1.0\r\n\r\nyo\r\nPONG\r\n')
  t.equal(r.closed, false)
  const bad = await exchange(b.port, 'CONNECT {"user":"h","pass":"x","verbose":false}\r\nSUB a 1\r\nPING\r\n', 800)
  t.equal(bad.out, "-ERR 'Authorization Violation'\r\n", 'refused: nothing behind CONNECT runs')
  t.equal(bad.closed, true)
})

t.test('token, for NATS and as the MQTT password', async (t) => {
  const b = await startBroker({ mqtt: true, authorization: { timeout: 2000, token: 's3cret' } })
  t.teardown(() => b.stop())
  t.equal(await natsOk(b.port, { token: 's3cret' }), true, 'NATS token')
  t.equal(await natsOk(b.port, { token: 'wrong' }), false, 'NATS wrong token')
  t.equal(await mqttOk(b.mqttUrl, { username: 'any', password: 's3cret' }), true, 'MQTT token as password')
  t.equal(await mqttOk(b.mqttUrl, { username: 'any', password: 'wrong' }), false, 'MQTT wrong token')
})

t.test('no_auth_user: clients without credentials become that user, with its permissions', async (t) => {
  const b = await startBroker({
    mqtt: true,
    authorization: {
      timeout: 2000,
      users: [
        { user: 'guest', permissions: { publish: { allow: ['public.>'] } } },
        { user: 'admin', password: 'pw' },
      ],
    },
    no_auth_user: 'guest',
  })
  t.teardown(() => b.stop())
  const r = await exchange(b.port, 'CONNECT {"verbose":false}\r\nPUB public.x 1\r\na\r\nPUB private.x 1\r\nb\r\nPING\r\n')
  t.equal(r.out, `-ERR 'Permissions Violation for Publish to "private.x"'\r\nPONG\r\n`, 'guest may publish only to public.>')
  t.equal(await natsOk(b.port, {}), true, 'NATS without credentials')
  t.equal(await natsOk(b.port, { user: 'admin', pass: 'pw' }), true, 'named users still work')
  t.equal(await natsOk(b.port, { user: 'admin', pass: 'bad' }), false, 'a wrong password is not turned into the guest')
  t.equal(await natsOk(b.port, { user: 'guest', pass: 'x' }), false, 'the guest has no password to log in with')
  t.equal(await mqttOk(b.mqttUrl, {}), true, 'MQTT without credentials')
  t.ok(b.logs.some((l) => l.includes('Publish Violation - User "guest", Subject "private.x"')), 'violation logged with the user')
})

t.test('a wrong bcrypt password tried over and over never blocks other clients', async (t) => {
  // Cost 10: each check is real work; they must not hold up a connected client's traffic.
  const b = await startBroker({ authorization: { timeout: 5000, users: [{ user: 'u', password: bcrypt.hashSync('right', 10) }] } })
  t.teardown(() => b.stop())
  const nc = await connect({ servers: `127.0.0.1:${b.port}`, reconnect: false, user: 'u', pass: 'right' })
  t.teardown(() => nc.close())
  const N = 16
  let refused = 0
  // Half repeat one wrong password (checked once, then remembered), half are all different.
  const attempts = Array.from({ length: N }, (_, i) =>
    exchange(b.port, `CONNECT {"user":"u","pass":"wrong${i % 2 ? i : ''}","verbose":false}\r\nPING\r\n`, 4000).then((r) => {
      if (r.out === "-ERR 'Authorization Violation'\r\n") refused++
    }),
  )
  // While the attempts are being checked, the good client's round trips keep completing.
  await sleep(150)
  const before = refused
  let trips = 0
  for (let i = 0; i < 5; i++) {
    await nc.flush()
    trips++
  }
  const during = refused
  await Promise.all(attempts)
  t.equal(trips, 5, 'the connected client got its PONGs')
  t.ok(during < N, `its round trips finished before all ${N} wrong attempts were answered (${before}→${during} answered)`)
  t.equal(refused, N, 'every wrong attempt was refused')
  t.equal(b.logs.filter((l) => l.includes('authentication error - User "u"')).length, N, 'each is logged')
})

t.test('auth timeout closes silent connections, NATS and MQTT', async (t) => {
  const b = await startBroker({ mqtt: true, authorization: { timeout: 300, users: [{ user: 'u', password: 'p' }] } })
  t.teardown(() => b.stop())
  const r = await exchange(b.port, '', 800)
  t.equal(r.out, "-ERR 'Authentication Timeout'\r\n")
  t.equal(r.closed, true, 'NATS closed')
  // MQTT: no CONNECT; the deadline is authorization.timeout, checked on the 1 s tick.
  const start = Date.now()
  const m = await RawMqtt.open(b.mqttPort)
  t.equal(await m.waitClosed(4000), true, 'MQTT closed without CONNECT')
  t.ok(Date.now() - start < 4000, 'well before the 10 s default')
  // A plain TCP socket that says nothing at all is closed too.
  const s = net.connect(b.mqttPort, '127.0.0.1')
  const closed = await new Promise<boolean>((res) => {
    s.on('close', () => res(true))
    s.on('error', () => {})
    setTimeout(() => res(false), 4000)
  })
  t.equal(closed, true)
})

t.test('config: users, permissions and no_auth_user errors name the key', async (t) => {
  const err = (raw: unknown): string => errorOf(t, () => validateOptions(raw))
  t.equal(
    err({ authorization: { users: [{ user: 'a', password: 'b' }, { user: 'c' }, { user: 'd', permissions: { publish: { allow: ['a..b'] } } }] } }),
    'config error: authorization.users[2].permissions.publish.allow[0]: invalid subject "a..b"',
  )
  t.equal(err({ authorization: { users: [{ user: 'a', permissions: { subscribe: { deny: ['x', 'a b c'] } } }] } }), 'config error: authorization.users[0].permissions.subscribe.deny[1]: invalid queue group "b c"')
  t.equal(err({ authorization: { users: [{ user: 'a' }, { user: 'a' }] } }), 'config error: authorization.users[1].user: duplicate user "a"')
  t.equal(err({ authorization: { users: [{ password: 'x' }] } }), 'config error: authorization.users[0].user: required')
  t.equal(err({ authorization: { users: [{ user: 'a', password: 5 }] } }), 'config error: authorization.users[0].password: expected a non-empty string, got a number')
  t.equal(err({ authorization: { users: {} } }), 'config error: authorization.users: expected an array of users, got an object')
  t.equal(err({ authorization: { users: [{ user: 'a', permissions: { publsh: [] } }] } }), 'config error: unknown option "authorization.users[0].permissions.publsh" (did you mean "authorization.users[0].permissions.publish"?)')
  t.equal(err({ authorization: { users: [{ user: 'a', permissions: { allow_responses: { max: 'x' } } }] } }), 'config error: authorization.users[0].permissions.allow_responses.max: expected an integer (0: the default 1, -1: no limit), got "x"')
  t.equal(err({ authorization: { users: [{ user: 'a' }], token: 't' } }), 'config error: authorization: cannot have both a token and a users array')
  t.equal(err({ authorization: { users: [{ user: 'a' }] }, no_auth_user: 'b' }), 'config error: no_auth_user: "b" is not one of authorization.users')
  t.equal(err({ no_auth_user: 'b' }), 'config error: no_auth_user: "b" is not one of authorization.users')
  const o = validateOptions({
    no_auth_user: 'a',
    authorization: {
      permissions: { publish: 'x.>' },
      users: [{ user: 'a', permissions: { publish: ['p.>'], subscribe: { allow: ['s.>', 'w.> workers'], deny: ['s.secret'] }, allow_responses: { max: 3, expires: '1m' } } }],
    },
  })
  t.same(o.authorization?.users?.[0]?.permissions, {
    publish: { allow: ['p.>'] },
    subscribe: { allow: ['s.>', 'w.> workers'], deny: ['s.secret'] },
    allow_responses: { max: 3, expires: 60_000 },
  }, 'a plain list means allow; allow_responses takes max and expires')
  t.same(o.authorization?.permissions, { publish: { allow: ['x.>'] } }, 'a single subject is a list of one')
  t.same(validateOptions({ authorization: { users: [{ user: 'a', permissions: { allow_responses: true } }] } }).authorization?.users?.[0]?.permissions, { allow_responses: { max: 1, expires: 120_000 } }, 'true: nats-server defaults')
})
