// The permission matrix across every path a message can take: NATS publish, MQTT publish,
// MQTT will, a retained message set through the $SPRIG.mqtt.retain. service and through the
// retain flag / `Nmqtt-Retain` header, the retained query, the reply relay, shared
// subscriptions, topic aliases, and the uplink both ways (a real nats-server hub). Each
// path is crossed with an allow-list user and a deny-only user; each case asserts what is
// delivered and what is not (denied traffic goes out before a marker, whose arrival proves
// it had its chance), and the protocol's answer for a refusal.

import t, { type Test } from 'tap'
import type { Packet } from 'mqtt-packet'
import { validateOptions } from '../src/config.ts'
import { mqttState } from '../adapters/mqtt/index.ts'
import type { RemoteOptions } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { haveHub, leafUp, startHub, until } from './helpers/hub.ts'
import { natsClient, natsUntil, RawMqtt, sleep } from './helpers/mqtt.ts'
import { RawConn } from './helpers/rawconn.ts'

const PERMS = {
  // May use sprig's services, and may subscribe to a wildcard-first pattern.
  allow: {
    publish: { allow: ['dev.>', '$SPRIG.mqtt.>', '_INBOX.>'] },
    subscribe: { allow: ['dev.>', '_INBOX.>', '*.mqtt.>'] },
  },
  // The user: everything but admin.>.
  deny: {
    publish: { deny: ['admin.>'] },
    subscribe: { deny: ['admin.>'] },
  },
}
type Kind = keyof typeof PERMS
const KINDS: Kind[] = ['allow', 'deny']

const AUTH = validateOptions({
  authorization: {
    users: [
      { user: 'allow', password: 'allow', permissions: PERMS.allow },
      { user: 'deny', password: 'deny', permissions: PERMS.deny },
      { user: 'admin', password: 'admin' },
      // Publishes only answers to the requests it gets.
      { user: 'svc', password: 'svc', permissions: { subscribe: { allow: ['dev.>'] }, allow_responses: { max: 1, expires: 60_000 } } },
    ],
  },
}).authorization

async function broker(t: Test, more: object = {}): Promise<TestBroker> {
  const b = await startBroker({ mqtt: true, authorization: AUTH, ...more })
  t.teardown(() => b.stop())
  return b
}

/** A raw NATS connection logged in as `user` (headers on, not verbose). */
async function rawNats(t: Test, port: number, user: string): Promise<RawConn> {
  const c = await RawConn.open(port)
  t.teardown(() => c.destroy())
  c.write(`CONNECT ${JSON.stringify({ user, pass: user, verbose: false, pedantic: false, headers: true })}\r\n`)
  await c.ping()
  return c
}

const pub = (c: RawConn, subject: string, payload = 'x', reply = ''): void => c.write(`PUB ${subject}${reply ? ' ' + reply : ''} ${payload.length}\r\n${payload}\r\n`)

const mqtt = async (t: Test, b: TestBroker, user: string, version: 4 | 5 = 5): Promise<RawMqtt> => {
  const c = await RawMqtt.connect(b.mqttPort, version, { username: user, password: Buffer.from(user) })
  t.teardown(() => c.close())
  return c
}

let pid = 0
const publish = (topic: string, qos: 0 | 1 | 2, more: object = {}): Packet =>
  ({ cmd: 'publish', topic, payload: Buffer.from('x'), qos, dup: false, retain: false, ...(qos > 0 ? { messageId: ++pid } : {}), ...more }) as Packet

const rc = (p: Packet | undefined): number => (p as { reasonCode?: number } | undefined)?.reasonCode ?? 0

const retainedTopics = (b: TestBroker): string[] => [...mqttState(b.srv).retained.byTopic.keys()].sort()

const ERR_PUB = (s: string): string => `-ERR 'Permissions Violation for Publish to "${s}"'`
const ERR_SUB = (s: string): string => `-ERR 'Permissions Violation for Subscription to "${s}"'`

for (const kind of KINDS) {
  t.test(`${kind}: NATS publishes to the services act with the publisher's permissions`, async (t) => {
    const b = await broker(t)
    const admin = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
    const seen = natsUntil(admin, ['admin.>', 'dev.>'], 'dev.done')
    await admin.flush()
    const before = b.srv.counters.permission_violations
    const c = await rawNats(t, b.port, kind)
    pub(c, 'admin.x') // refused by the lists, as before
    pub(c, '$SPRIG.mqtt.retain.admin.x', 'r', '_INBOX.ret')
    pub(c, '$SPRIG.mqtt.reply.eA.admin.y')
    const hdr = 'NATS/1.0\r\nNmqtt-Retain: 1\r\n\r\n'
    c.write(`HPUB admin.h ${hdr.length} ${hdr.length + 1}\r\n${hdr}x\r\n`) // the retain header
    // A service's answer goes to the requester's reply subject: not to one it could not use.
    pub(c, '$SPRIG.mqtt.retained.get', '#', 'admin.a')
    pub(c, '$SPRIG.mqtt.retained.get', '#', '$SPRIG.mqtt.retain.admin.b')
    pub(c, '$SPRIG.mqtt.retained.get', '#', '$SPRIG.mqtt.reply.eA.admin.c')
    pub(c, '$SPRIG.mqtt.retain.dev.x', 'r')
    pub(c, '$SPRIG.mqtt.reply.eA.dev.y')
    pub(c, '$SPRIG.mqtt.retained.get', '#', '$SPRIG.mqtt.reply.eA.dev.z')
    pub(c, 'dev.done')
    t.same(await seen, ['dev.x', 'dev.y', 'dev.z', 'dev.done'], 'only what the user may publish to is delivered, whichever way it went')
    for (const s of ['admin.x', '$SPRIG.mqtt.retain.admin.x', '$SPRIG.mqtt.reply.eA.admin.y', 'admin.h', '$SPRIG.mqtt.retained.get']) {
      t.ok(c.after.includes(ERR_PUB(s)), `-ERR for ${s}`)
    }
    t.notOk(c.after.includes(ERR_PUB('$SPRIG.mqtt.retain.dev.x')), 'none for the allowed retain set')
    t.same(retainedTopics(b), ['dev/x'], 'admin/x and admin/h are not retained')
    t.equal(c.closed, false, 'a publish violation does not close the connection (nats-server)')
    t.equal(b.srv.counters.permission_violations - before, 7, 'each refusal is counted')
    t.ok(b.logs.some((l) => l.includes(`Publish Violation - User "${kind}", Subject "admin.x" (via "$SPRIG.mqtt.retain.admin.x")`)), 'logged with user and subject')
  })

  t.test(`${kind}: $SPRIG. service traffic is not readable`, async (t) => {
    const b = await broker(t)
    const admin = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
    const c = await rawNats(t, b.port, kind)
    c.write('SUB $SPRIG.mqtt.reply.> 1\r\nSUB $SPRIG.mqtt.retain.> 2\r\nSUB $SPRIG.> 3\r\n')
    const wide = kind === 'deny' ? '>' : '*.mqtt.>'
    c.write(`SUB ${wide} 4\r\n`)
    await c.ping()
    for (const s of ['$SPRIG.mqtt.reply.>', '$SPRIG.mqtt.retain.>', '$SPRIG.>']) t.ok(c.after.includes(ERR_SUB(s)), `SUB ${s} refused`)
    t.notOk(c.after.includes(ERR_SUB(wide)), `SUB ${wide} allowed`)
    // Service traffic bound for admin.* and for allowed subjects, then what the wildcard may see.
    admin.publish('$SPRIG.mqtt.retain.admin.q', 'secret')
    admin.publish('$SPRIG.mqtt.reply.eA.admin.z', 'secret')
    admin.publish('$SPRIG.mqtt.retain.x.mqtt.r', 'v')
    admin.publish('x.mqtt.ok', 'v')
    admin.publish('x.mqtt.done', 'v')
    await admin.flush()
    await c.waitFor('MSG x.mqtt.done 4')
    const msgs = c.after.split('\r\n').filter((l) => /^H?MSG /.test(l)).map((l) => l.split(' ')[1])
    t.same(msgs, ['x.mqtt.r', 'x.mqtt.ok', 'x.mqtt.done'], `${wide} gets no $SPRIG. message and nothing under admin.`)

    const m = await mqtt(t, b, kind)
    m.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$SPRIG/mqtt/reply/#', qos: 0 }, { topic: '$SPRIG/#', qos: 0 }, { topic: '$share/g/$SPRIG/mqtt/retain/#', qos: 0 }] } as Packet)
    t.same((await m.next('suback') as { granted?: number[] } | undefined)?.granted, [0x87, 0x87, 0x87], 'MQTT: $SPRIG/# filters refused (SUBACK 0x87), shared ones too')
    const v4 = await mqtt(t, b, kind, 4)
    v4.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$SPRIG/mqtt/retain/#', qos: 0 }] } as Packet)
    t.same((await v4.next('suback') as { granted?: number[] } | undefined)?.granted, [0x80], 'MQTT 3.1.1: SUBACK 0x80')
  })

  t.test(`${kind}: MQTT publishes to the services, with and without topic aliases`, async (t) => {
    const b = await broker(t)
    const admin = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
    const seen = natsUntil(admin, ['admin.>', 'dev.>'], 'dev.done')
    await admin.flush()
    const m = await mqtt(t, b, kind)
    const acks: [string, number][] = []
    const send = async (label: string, p: Packet): Promise<void> => {
      m.send(p)
      const qos = (p as { qos: number }).qos
      if (qos > 0) acks.push([label, rc(await m.next(qos === 1 ? 'puback' : 'pubrec'))])
    }
    await send('retain admin/m q1', publish('$SPRIG/mqtt/retain/admin/m', 1))
    await send('retain admin/m q2', publish('$SPRIG/mqtt/retain/admin/m', 2))
    await send('reply admin/y', publish('$SPRIG/mqtt/reply/eA/admin/y', 1))
    await send('retain flag admin/f', publish('admin/f', 1, { retain: true }))
    await send('alias 1 set', publish('$SPRIG/mqtt/retain/admin/t', 1, { properties: { topicAlias: 1 } }))
    await send('alias 1 used', publish('', 1, { properties: { topicAlias: 1 } }))
    await send('alias 2 set', publish('dev/t', 1, { properties: { topicAlias: 2 } }))
    await send('alias 2 used', publish('', 1, { properties: { topicAlias: 2 } }))
    await send('retain dev/m', publish('$SPRIG/mqtt/retain/dev/m', 1))
    await send('q0 retain admin/z', publish('$SPRIG/mqtt/retain/admin/z', 0))
    await send('done', publish('dev/done', 1))
    t.same(acks, [
      ['retain admin/m q1', 0x87], ['retain admin/m q2', 0x87], ['reply admin/y', 0x87], ['retain flag admin/f', 0x87],
      ['alias 1 set', 0x87], ['alias 1 used', 0x87], ['alias 2 set', 0], ['alias 2 used', 0], ['retain dev/m', 0], ['done', 0],
    ], 'MQTT 5: PUBACK/PUBREC 0x87 Not authorized for each refused publish')
    t.same(await seen, ['dev.t', 'dev.t', 'dev.m', 'dev.done'], 'nothing reaches admin.')
    t.same(retainedTopics(b), ['dev/m'], 'only the allowed retained message is kept')
    m.send({ cmd: 'pubrel', messageId: 2 } as Packet)
    t.equal(rc(await m.next('pubcomp')), 0x92, 'a refused QoS 2 publish leaves no packet id behind')
    t.equal(m.closed, false, 'the connection stays')
    // 3.1.1 has no refusal code: acknowledged as usual, and dropped.
    const v4 = await mqtt(t, b, kind, 4)
    const seen4 = natsUntil(admin, ['admin.>', 'dev.>'], 'dev.done4')
    await admin.flush()
    v4.send(publish('$SPRIG/mqtt/retain/admin/v4', 1))
    t.equal(rc(await v4.next('puback')), 0, '3.1.1 PUBACK')
    v4.send(publish('dev/done4', 1))
    await v4.next('puback')
    t.same(await seen4, ['dev.done4'], 'and nothing delivered')
    t.notOk(retainedTopics(b).includes('admin/v4'))
  })

  t.test(`${kind}: a will is published only where its user may publish`, async (t) => {
    const b = await broker(t)
    const admin = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
    const connect = async (topic: string): Promise<[RawMqtt, number]> => {
      const c = await RawMqtt.open(b.mqttPort, 5)
      t.teardown(() => c.close())
      c.send({
        cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: `w-${topic}`,
        username: kind, password: Buffer.from(kind), will: { topic, payload: Buffer.from('gone'), qos: 1, retain: false },
      } as Packet)
      return [c, rc(await c.next('connack'))]
    }
    for (const topic of ['$SPRIG/mqtt/retain/admin/w', '$SPRIG/mqtt/reply/eA/admin/w', 'admin/w']) {
      const [c, code] = await connect(topic)
      t.equal(code, 0x87, `will on ${topic}: CONNACK 0x87`)
      t.equal(await c.waitClosed(), true)
    }
    const seen = natsUntil(admin, ['admin.>', 'dev.>'], 'dev.w')
    await admin.flush()
    const [ok, code] = await connect('$SPRIG/mqtt/retain/dev/w')
    t.equal(code, 0, 'a will through the retain service to an allowed subject is accepted')
    ok.close() // abrupt: the will goes
    t.same(await seen, ['dev.w'], 'and delivered')
    await until(() => retainedTopics(b).includes('dev/w'), 2000, 'dev/w retained')
    t.same(retainedTopics(b), ['dev/w'], 'and retained; no admin/w')
  })

  t.test(`${kind}: the retained query returns only what the requester may subscribe to`, async (t) => {
    const b = await broker(t)
    const admin = await mqtt(t, b, 'admin')
    for (const topic of ['admin/s', 'dev/s', 'x/mqtt/s', 'other/s', '$SPRIG/s']) {
      admin.send(publish(topic, 1, { retain: true }))
      await admin.next('puback')
    }
    t.same(retainedTopics(b), ['$SPRIG/s', 'admin/s', 'dev/s', 'other/s', 'x/mqtt/s'])
    const want = kind === 'allow' ? ['dev/s', 'x/mqtt/s'] : ['dev/s', 'other/s', 'x/mqtt/s']
    const nc = await natsClient(t, b.url, { user: kind, pass: kind })
    for (const filter of ['#', 'admin/#', '+/s', '$SPRIG/#']) {
      const r = (await nc.request('$SPRIG.mqtt.retained.get', filter, { timeout: 2000 })).json<{ messages: { topic: string }[] }>()
      const exp = filter === '#' ? want : filter === '+/s' ? want.filter((x) => x.split('/').length === 2) : []
      t.same(r.messages.map((x) => x.topic), exp, `NATS, filter ${filter}`)
    }
    const m = await mqtt(t, b, kind)
    m.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'dev/resp', qos: 0 }] } as Packet)
    await m.next('suback')
    m.send(publish('$SPRIG/mqtt/retained/get', 1, { payload: Buffer.from('#'), properties: { responseTopic: 'dev/resp' } }))
    t.equal(rc(await m.next('puback')), 0)
    const p = (await m.next('publish')) as { payload: Buffer } | undefined
    t.same((JSON.parse(p?.payload.toString() ?? '{}') as { messages: { topic: string }[] }).messages?.map((x) => x.topic), want, 'MQTT, filter #, answer on the Response Topic')
  })

  t.test(`${kind}: a relayed reply needs the responder's permission on the final subject`, async (t) => {
    const b = await broker(t)
    const requester = await mqtt(t, b, 'admin')
    requester.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'admin/z', qos: 0 }, { topic: 'dev/z', qos: 0 }] } as Packet)
    await requester.next('suback')
    const responder = await rawNats(t, b.port, kind)
    responder.write('SUB dev.req 1\r\n')
    await responder.ping()
    const ask = async (responseTopic: string, corr: string): Promise<string> => {
      requester.send(publish('dev/req', 0, { payload: Buffer.from(corr), properties: { responseTopic, correlationData: Buffer.from(corr) } }))
      await responder.waitFor(`\r\n\r\n${corr}\r\n`)
      const line = responder.after.split('\r\n').filter((l) => l.startsWith('HMSG dev.req')).pop()!
      return line.split(' ')[3]!
    }
    const denied = await ask('admin/z', 'c1')
    t.match(denied, /^\$SPRIG\.mqtt\.reply\.[A-Za-z0-9_-]+\.admin\.z$/, 'the request carries the relay reply subject')
    pub(responder, denied, 'answer1')
    const allowed = await ask('dev/z', 'c2')
    pub(responder, allowed, 'answer2')
    const p = (await requester.next('publish')) as { topic: string; payload: Buffer; properties?: { correlationData?: Buffer } } | undefined
    t.equal(p?.topic, 'dev/z', 'the allowed answer arrives')
    t.equal(p?.properties?.correlationData?.toString(), 'c2', 'with its Correlation Data')
    await sleep(100)
    t.notOk(requester.packets.some((x) => x.cmd === 'publish'), 'the answer to admin/z was not relayed')
    await responder.ping()
    t.ok(responder.after.includes(ERR_PUB(denied)), 'the responder gets -ERR for its publish')
  })

  t.test(`${kind}: shared subscriptions follow the same rules`, async (t) => {
    const b = await broker(t)
    const admin = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
    // NATS queue groups: the same as plain subscriptions.
    const q = await rawNats(t, b.port, kind)
    const wide = kind === 'deny' ? '>' : '*.mqtt.>'
    q.write(`SUB $SPRIG.mqtt.reply.> grp 1\r\nSUB ${wide} grp 2\r\nSUB admin.s grp 3\r\n`)
    await q.ping()
    t.ok(q.after.includes(`-ERR 'Permissions Violation for Subscription to "$SPRIG.mqtt.reply.>" using queue "grp"'`), 'NATS queue subscription to $SPRIG. refused')
    t.ok(q.after.includes(`-ERR 'Permissions Violation for Subscription to "admin.s" using queue "grp"'`), 'and to admin.s')
    const m = await mqtt(t, b, kind)
    const filters = ['$share/g1/admin/#', '$share/g2/dev/#', '$share/g3/+/mqtt/#', ...(kind === 'deny' ? ['$share/g4/#'] : [])]
    m.send({ cmd: 'subscribe', messageId: 1, subscriptions: filters.map((topic) => ({ topic, qos: 0 })) } as Packet)
    const g = (await m.next('suback') as { granted?: number[] } | undefined)?.granted
    t.same(g, [0x87, 0, 0, ...(kind === 'deny' ? [0] : [])], 'the admin/# share is refused')
    for (const s of ['admin.s', '$SPRIG.mqtt.retain.admin.s2', '$SPRIG.mqtt.reply.eA.x.mqtt.r', 'x.mqtt.s', 'dev.s', 'dev.done']) admin.publish(s, 'v')
    await admin.flush()
    await m.until(() => m.packets.some((p) => (p as { topic?: string }).topic === 'dev/done'))
    await sleep(50)
    const topics = [...new Set(m.packets.filter((p) => p.cmd === 'publish').map((p) => (p as { topic: string }).topic))].sort()
    t.same(topics, ['dev/done', 'dev/s', 'x/mqtt/r', 'x/mqtt/s'], 'allowed subjects (the relayed x.mqtt.r too), never admin/ nor $SPRIG/')
    admin.publish('x.mqtt.done', 'v')
    await admin.flush()
    await q.waitFor('MSG x.mqtt.done 2')
    const msgs = q.after.split('\r\n').filter((l) => /^H?MSG /.test(l)).map((l) => l.split(' ')[1])
    t.same(msgs, kind === 'deny' ? ['x.mqtt.r', 'x.mqtt.s', 'dev.s', 'dev.done', 'x.mqtt.done'] : ['x.mqtt.r', 'x.mqtt.s', 'x.mqtt.done'], `NATS queue ${wide}: no $SPRIG. message, nothing under admin.`)
  })
}

t.test('allow_responses: a relayed answer goes where the request said, as a direct one would', async (t) => {
  const b = await broker(t)
  const requester = await mqtt(t, b, 'admin')
  requester.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'admin/z', qos: 0 }] } as Packet)
  await requester.next('suback')
  const svc = await rawNats(t, b.port, 'svc')
  svc.write('SUB dev.req 1\r\n')
  await svc.ping()
  requester.send(publish('dev/req', 0, { properties: { responseTopic: 'admin/z', correlationData: Buffer.from('c1') } }))
  await svc.waitFor('HMSG dev.req 1 ')
  const reply = svc.after.split('\r\n').find((l) => l.startsWith('HMSG dev.req'))!.split(' ')[3]!
  pub(svc, reply, 'a1')
  pub(svc, reply, 'a2') // max 1
  const p = (await requester.next('publish')) as { topic: string; payload: Buffer } | undefined
  t.equal(p?.topic, 'admin/z')
  t.equal(p?.payload.toString(), 'a1')
  await svc.ping()
  t.ok(svc.after.includes(ERR_PUB(reply)), 'a second answer is refused by allow_responses itself')
  await sleep(50)
  t.notOk(requester.packets.some((x) => x.cmd === 'publish'), 'and not relayed')
})

t.test('/varz counts permission violations', async (t) => {
  const b = await broker(t)
  const c = await rawNats(t, b.port, 'deny')
  pub(c, '$SPRIG.mqtt.retain.admin.x')
  c.write('SUB $SPRIG.> 1\r\n')
  await c.ping()
  const { varz } = await import('../src/monitor.ts')
  const v = varz(b.srv, { mem: 0, cores: 1 }) as { sprig: { permission_violations: number } }
  t.equal(v.sprig.permission_violations, 2)
})

const remote = (url: string, more: object = {}): RemoteOptions => ({
  urls: [url], no_randomize: false, deny_imports: [], deny_exports: [], allow_exports: [], allow_imports: [], map: [],
  buffer_subjects: [], buffer_max_msgs: 100_000, buffer_max_bytes: 16 << 20, buffer_policy: 'drop_oldest', buffer_hold: 10_000,
  ...more,
})

if (haveHub(t)) {
  t.test('uplink: what the hub asks of the services passes the remote\'s filters; restricted edge users stay restricted', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const r = remote(hub.leafUrl, {
      deny_imports: ['cmd.secret.>'],
      deny_exports: ['edge.secret.>'],
      permissions: { publish: { deny: ['cmd.private.>'] } },
      map: [{ local: '$SPRIG.>', hub: 'site.gw1.$SPRIG.>' }],
    })
    const b = await broker(t, { leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [r] } })
    await leafUp(b)
    const sent = (): string[] => [...(b.uplink!.remotes[0]!.link as unknown as { sent: Map<string, number> }).sent.keys()]
    const admin = await natsClient(t, b.url, { user: 'admin', pass: 'admin' })
    const seen = natsUntil(admin, ['cmd.>', 'admin.>'], 'cmd.done')
    await admin.flush()
    await until(() => ['cmd.>', 'site.gw1.$SPRIG.mqtt.retain.>', 'site.gw1.$SPRIG.mqtt.reply.>'].every((s) => sent().includes(s)), 5000, 'edge interest at the hub')
    const nc = await natsClient(t, hub.url)
    await sleep(200) // the hub applies LS+ asynchronously
    for (const s of ['site.gw1.$SPRIG.mqtt.retain.cmd.secret.b', 'site.gw1.$SPRIG.mqtt.reply.eA.cmd.private.c', 'cmd.secret.d', 'cmd.private.e', 'site.gw1.$SPRIG.mqtt.retain.cmd.ok', 'cmd.done']) nc.publish(s, 'h')
    await nc.flush()
    t.same(await seen, ['cmd.ok', 'cmd.done'], 'down: only what the remote may import, directly or through a service')
    t.same(retainedTopics(b), ['cmd/ok'], 'cmd/secret/b is not retained')
    t.ok(b.logs.some((l) => l.includes('Leafnode remote 1 Publish Violation') && l.includes('"cmd.secret.b"')), 'the refusal is logged for the remote')
    t.ok(b.logs.some((l) => l.includes('Leafnode remote 1 Publish Violation') && l.includes('"cmd.private.c"')))

    // The retained query from the hub returns what may go up.
    const am = await mqtt(t, b, 'admin')
    for (const topic of ['edge/ok', 'edge/secret/a']) {
      am.send(publish(topic, 1, { retain: true }))
      await am.next('puback')
    }
    await until(() => sent().includes('site.gw1.$SPRIG.mqtt.retained.get'), 5000, 'retained.get interest')
    const got = (await nc.request('site.gw1.$SPRIG.mqtt.retained.get', 'edge/#', { timeout: 3000 })).json<{ messages: { topic: string }[] }>()
    t.same(got.messages.map((x) => x.topic), ['edge/ok'], 'deny_exports holds for the retained query too')

    // Up: restricted edge users reach the hub only where they may publish.
    for (const kind of KINDS) {
      const hubSeen = natsUntil(nc, ['admin.>', 'dev.>'], `dev.${kind}.done`)
      await nc.flush()
      await until(() => b.uplink!.remotes[0]!.link?.hubKeys.has('dev.>') === true && b.uplink!.remotes[0]!.link?.hubKeys.has('admin.>') === true, 5000, 'hub interest')
      const c = await rawNats(t, b.port, kind)
      pub(c, 'admin.up')
      pub(c, '$SPRIG.mqtt.retain.admin.up')
      pub(c, '$SPRIG.mqtt.reply.eA.admin.up2')
      pub(c, '$SPRIG.leafz', '', 'admin.l') // a service's answer only where the requester may publish or read
      pub(c, '$SPRIG.leafz', '', '$SPRIG.mqtt.retain.admin.l')
      pub(c, '$SPRIG.leafz', '', '$SPRIG.mqtt.reply.eA.admin.l')
      pub(c, `dev.${kind}.done`)
      t.same(await hubSeen, [`dev.${kind}.done`], `${kind}: up, nothing under admin.`)
      t.ok(c.after.includes(ERR_PUB('$SPRIG.mqtt.retain.admin.up')))
    }
    t.notOk(retainedTopics(b).some((x) => x.startsWith('admin/')), 'no admin/ retained message')
  })
}
