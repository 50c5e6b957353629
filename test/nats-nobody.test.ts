// Publishes that no plain NATS subscription receives, end to end (adapters/nats/client.ts pub,
// Router.reach/unheard): the client builds no message when reach() says nobody would see it,
// so everything that is not a plain NATS subscription (MQTT subscribers, queue groups,
// sprig's services, the retain header hook) must still be found, and what a publisher sees
// (+OK, -ERR, no-responders, counters, trace lines) must not change. Most cases send
// repeated-subject PUBs in one write, so the parser's fast path is the one exercised.

import t, { type Test } from 'tap'
import { validateOptions } from '../src/config.ts'
import { monitorRequest } from '../src/monitor.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { messages, mqttClient, sleep } from './helpers/mqtt.ts'
import { RawConn, count } from './helpers/rawconn.ts'

const AUTH = validateOptions({
  authorization: {
    users: [
      { user: 'u', password: 'u', permissions: { publish: { allow: ['ok.>', '_INBOX.>'] } } },
      { user: 'dev', password: 'dev' },
    ],
  },
}).authorization

let b: TestBroker
t.before(async () => {
  b = await startBroker({ mqtt: true, authorization: AUTH, max_payload: 1024 })
})
t.teardown(() => b?.stop())

/** A raw NATS connection, logged in (default: dev, headers on, no-responders on). */
async function nats(t: Test, connect: object = {}, port = b.port): Promise<RawConn> {
  const c = await RawConn.open(port)
  t.teardown(() => c.destroy())
  c.write(`CONNECT ${JSON.stringify({ user: 'dev', pass: 'dev', verbose: false, headers: true, no_responders: true, ...connect })}\r\n`)
  await c.ping()
  c.text = c.text.slice(0, c.text.indexOf('\r\n') + 2) // after: only what follows
  return c
}

const pubs = (subject: string, payloads: string[], reply = ''): string =>
  payloads.map((p) => `PUB ${subject} ${reply === '' ? '' : `${reply} `}${Buffer.byteLength(p)}\r\n${p}\r\n`).join('')

t.test('publish permission denied: -ERR for each, nothing delivered, the same for a subject with and without a subscriber', async (t) => {
  const u = await nats(t, { user: 'u', pass: 'u', verbose: true })
  const watcher = await nats(t)
  watcher.write('SUB no.watched 1\r\n')
  await watcher.ping()
  u.write(pubs('no.x', ['a', 'b', 'c']) + pubs('no.watched', ['d', 'e']) + pubs('ok.x', ['f', 'g']))
  await u.ping()
  const deny = (s: string): string => `-ERR 'Permissions Violation for Publish to "${s}"'\r\n`
  t.equal(u.after, deny('no.x').repeat(3) + deny('no.watched').repeat(2) + '+OK\r\n'.repeat(2) + 'PONG\r\n')
  t.notOk(u.closed, 'stays connected')
  await watcher.ping()
  t.notMatch(watcher.after, /MSG/, 'the subscriber got none of the refused ones')
  t.equal(b.logs.filter((l) => l.includes('Publish Violation') && l.includes('"no.x"')).length, 3, 'each logged')
})

t.test('MQTT publish permission denied still refused (MQTT 5: PUBACK 0x87)', async (t) => {
  const { RawMqtt } = await import('./helpers/mqtt.ts')
  const m = await RawMqtt.connect(b.mqttPort, 5, { clientId: 'deny5', username: 'u', password: Buffer.from('u') })
  t.teardown(() => m.close())
  m.send({ cmd: 'publish', topic: 'no/x', payload: Buffer.from('x'), qos: 1, messageId: 3, retain: false, dup: false } as never)
  t.match(await m.next('puback'), { messageId: 3, reasonCode: 0x87 })
})

t.test('an MQTT subscriber of the converted topic is the only receiver', async (t) => {
  const mq = await mqttClient(t, b.mqttUrl, { username: 'dev', password: 'dev' })
  await mq.subscribeAsync('dev/only/mqtt')
  const got = messages(mq, 5)
  const p = await nats(t)
  p.write(pubs('dev.only.mqtt', ['1', '2', '3', '4', '5']))
  t.same((await got).map((m) => `${m.topic}:${m.payload}`), ['1', '2', '3', '4', '5'].map((x) => `dev/only/mqtt:${x}`))
})

t.test('a queue subscriber is the only receiver', async (t) => {
  const q = await nats(t)
  q.write('SUB q.only grp 7\r\n')
  await q.ping()
  const p = await nats(t)
  p.write(pubs('q.only', ['a', 'b', 'c']) + 'PUB q.only _INBOX.q1 1\r\nd\r\n')
  await q.until(() => count(q.after, 'MSG ') >= 4, 2000, 'four MSGs')
  t.equal(q.after, 'PONG\r\nMSG q.only 7 1\r\na\r\nMSG q.only 7 1\r\nb\r\nMSG q.only 7 1\r\nc\r\nMSG q.only 7 _INBOX.q1 1\r\nd\r\n')
  await p.ping()
  t.notMatch(p.after, /503/, 'a request a queue member received gets no no-responders')
})

t.test("sprig's services: $SPRIG.mqtt.retain.<subject>, the Nmqtt-Retain header, and a request to $SPRIG.mqtt.retained.get", async (t) => {
  const p = await nats(t)
  // Nobody subscribes to any of these subjects: the service subscription and the header hook see them.
  p.write(pubs('$SPRIG.mqtt.retain.dev.kept.a', ['one', 'two']))
  const h = 'NATS/1.0\r\nNmqtt-Retain: 1\r\n\r\n'
  p.write(`HPUB dev.kept.b ${h.length} ${h.length + 3}\r\n${h}hdr\r\nHPUB dev.kept.b ${h.length} ${h.length + 4}\r\n${h}hdr2\r\n`)
  await p.ping()
  p.write('SUB _INBOX.r 1\r\n' + pubs('$SPRIG.mqtt.retained.get', ['dev/kept/#'], '_INBOX.r'))
  await p.until(() => p.after.includes('"truncated"'), 2000, 'the answer')
  t.notMatch(p.after, /503/, 'answered by the service, not no-responders')
  const json = JSON.parse(/\{"messages".*\}/.exec(p.after)![0]) as { messages: { topic: string; payload: string }[] }
  t.same(json.messages.map((x) => `${x.topic}=${Buffer.from(x.payload, 'base64').toString()}`), ['dev/kept/a=two', 'dev/kept/b=hdr2'])
  const mq = await mqttClient(t, b.mqttUrl, { username: 'dev', password: 'dev' })
  const got = messages(mq, 2)
  await mq.subscribeAsync('dev/kept/#')
  t.same((await got).map((m) => `${m.topic}=${m.payload}:${m.retain}`).sort(), ['dev/kept/a=two:true', 'dev/kept/b=hdr2:true'])
})

t.test('a subscriber added by another connection between two publishes of one subject receives the second', async (t) => {
  const p = await nats(t)
  const s = await nats(t)
  p.write(pubs('late.x', ['a', 'b']))
  await p.ping()
  s.write('SUB late.x 1\r\nSUB late.* 2\r\nSUB late.> grp 3\r\n')
  await s.ping()
  p.write(pubs('late.x', ['c', 'd']))
  await s.until(() => count(s.after, 'MSG ') >= 6, 2000, 'six MSGs')
  await p.ping()
  await s.ping()
  const msgs = s.after.match(/MSG late\.x \d 1\r\n./g)!
  t.same(msgs.map((m) => `${m.split(' ')[2]}${m.slice(-1)}`).sort(), ['1c', '1d', '2c', '2d', '3c', '3d'])
  // Removed again: nobody, and no-responders answers a request.
  s.write('UNSUB 1\r\nUNSUB 2\r\nUNSUB 3\r\n')
  await s.ping()
  p.write('SUB _INBOX.late 9\r\n' + pubs('late.x', ['e'], '_INBOX.late'))
  await p.until(() => p.after.includes('503'), 2000, 'no responders')
  await s.ping()
  t.equal(count(s.after, 'MSG '), 6, 'nothing after UNSUB')
})

t.test('SUB and UNSUB with a max on the publishing connection, in the same read as the publishes', async (t) => {
  const p = await nats(t)
  p.write(pubs('same.x', ['a']) + 'SUB same.x 1\r\nUNSUB 1 2\r\n' + pubs('same.x', ['b', 'c', 'd']) + 'SUB _INBOX.s 2\r\n' + pubs('same.x', ['e'], '_INBOX.s') + 'PING\r\n')
  await p.until(() => p.after.endsWith('PONG\r\n') && count(p.after, 'PONG') >= 1, 2000, 'PONG')
  t.equal(p.after, 'MSG same.x 1 1\r\nb\r\nMSG same.x 1 1\r\nc\r\nHMSG _INBOX.s 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\nPONG\r\n')
})

t.test('a subject equal to the previous one with a reply or a header block', async (t) => {
  const s = await nats(t)
  s.write('SUB rep.x 1\r\n')
  await s.ping()
  const p = await nats(t)
  const h1 = 'NATS/1.0\r\n\r\n'
  const h2 = 'NATS/1.0\r\nA: b\r\n\r\n'
  p.write(
    pubs('rep.x', ['a']) + pubs('rep.x', ['b'], 'r.1') + pubs('rep.x', ['c']) +
      `HPUB rep.x ${h1.length} ${h1.length + 1}\r\n${h1}d\r\nHPUB rep.x ${h2.length} ${h2.length + 1}\r\n${h2}e\r\nHPUB rep.x r.2 ${h2.length} ${h2.length + 1}\r\n${h2}f\r\n` +
      pubs('rep.x', ['g']),
  )
  await s.until(() => count(s.after, 'MSG ') >= 7, 2000, 'seven MSGs')
  t.equal(
    s.after,
    'PONG\r\nMSG rep.x 1 1\r\na\r\nMSG rep.x 1 r.1 1\r\nb\r\nMSG rep.x 1 1\r\nc\r\n' +
      `HMSG rep.x 1 ${h1.length} ${h1.length + 1}\r\n${h1}d\r\n` +
      `HMSG rep.x 1 ${h2.length} ${h2.length + 1}\r\n${h2}e\r\nHMSG rep.x 1 r.2 ${h2.length} ${h2.length + 1}\r\n${h2}f\r\n` +
      'MSG rep.x 1 1\r\ng\r\n',
  )
})

t.test('the match cache churning (over 1,024 subjects) never serves a stale nobody', async (t) => {
  const s = await nats(t)
  s.write('SUB churn.7 1\r\n')
  await s.ping()
  const p = await nats(t)
  const all = Array.from({ length: 3000 }, (_, i) => `PUB churn.${i} 1\r\nx\r\n`).join('')
  p.write(all + 'PUB churn.7 1\r\ny\r\n')
  await p.ping()
  await s.until(() => count(s.after, 'MSG ') >= 2, 2000, 'two MSGs')
  // A wildcard subscriber added while the cache holds many "nobody" entries.
  s.write('SUB churn.* 2\r\n')
  await s.ping()
  p.write(all)
  await p.ping()
  await s.until(() => count(s.after, 'MSG churn.') >= 2 + 3001, 5000, 'every MSG')
  await s.ping()
  t.equal(count(s.after, ' 1 1\r\n'), 3, 'the literal subscriber: its subject each time')
  t.equal(count(s.after, ' 2 1\r\n'), 3000, 'the wildcard subscriber: every publish after it subscribed')
  s.write('UNSUB 2\r\n')
  await s.ping()
  const before = s.after.length
  p.write(all)
  await p.ping()
  await s.ping()
  t.equal(count(s.after.slice(before), 'MSG '), 1, 'after UNSUB: only churn.7 again')
})

t.test('verbose and pedantic with nobody subscribed: the same answers', async (t) => {
  const p = await nats(t, { verbose: true, pedantic: true })
  p.write('PUB ped.*.x 1\r\na\r\nPUB ped..x 1\r\nb\r\nPUB ped.x 1\r\nc\r\nPUB ped.x 1\r\nd\r\n')
  await p.ping()
  const inv = "-ERR 'Invalid Publish Subject'\r\n"
  // +OK for CONNECT, then per PUB (the invalid ones warned and routed, as nats-server does).
  t.equal(p.after, inv + '+OK\r\n' + inv + '+OK\r\n' + '+OK\r\n+OK\r\n' + 'PONG\r\n')
})

t.test('max_payload exactly, then one over, on a repeated subject', async (t) => {
  const s = await nats(t)
  s.write('SUB mp.x 1\r\n')
  await s.ping()
  const p = await nats(t)
  const full = 'y'.repeat(1024)
  p.write(pubs('mp.x', [full, full]) + pubs('mp.nobody', [full, full]) + `PUB mp.nobody 1025\r\n${full}z\r\n`)
  await p.waitClosed()
  t.equal(p.after, "-ERR 'Maximum Payload Violation'\r\n")
  await s.ping()
  t.equal(s.after, 'PONG\r\n' + `MSG mp.x 1 1024\r\n${full}\r\n`.repeat(2) + 'PONG\r\n')
})

t.test('counters: /varz in_msgs and in_bytes and /connz per-connection in_msgs count publishes nobody receives', async (t) => {
  const varz = () => monitorRequest(b.srv, '/varz', new Map()).body as { in_msgs: number; in_bytes: number }
  const v0 = varz()
  const p = await nats(t, { name: 'counted-nobody' })
  p.write(pubs('cnt.nobody', ['ab', 'cd', 'ef']) + pubs('cnt.other', ['g']))
  await p.ping()
  const v1 = varz()
  t.equal(v1.in_msgs - v0.in_msgs, 4)
  t.equal(v1.in_bytes - v0.in_bytes, 7)
  const connz = monitorRequest(b.srv, '/connz', new Map()).body as { connections: { name?: string; in_msgs: number; in_bytes: number }[] }
  const mine = connz.connections.find((c) => c.name === 'counted-nobody')
  t.match(mine, { in_msgs: 4, in_bytes: 7 })
})

t.test('trace: a publish nobody receives is traced as before, fast path and split', async (t) => {
  const tb = await startBroker({ log_level: 'trace' })
  t.teardown(() => tb.stop())
  const p = await nats(t, { user: undefined, pass: undefined }, tb.port)
  p.write(pubs('tr.x', ['hi', 'yo']))
  await p.ping()
  p.write('PUB tr.x 3\r\nab')
  await sleep(30)
  p.write('c\r\n')
  await p.ping()
  const lines = tb.logs.filter((l) => l.includes('<<- [PUB tr.x') || l.includes('MSG_PAYLOAD'))
  t.equal(lines.length, 6, lines.join('\n'))
  t.match(lines[0], /<<- \[PUB tr\.x 2\]$/)
  t.match(lines[1], /<<- MSG_PAYLOAD: \["hi"\]$/)
  t.match(lines[3], /<<- MSG_PAYLOAD: \["yo"\]$/)
  t.match(lines[4], /<<- \[PUB tr\.x 3\]$/)
  t.match(lines[5], /<<- MSG_PAYLOAD: \["abc"\]$/)
})
