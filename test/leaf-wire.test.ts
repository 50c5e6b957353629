// What sprig puts on the wire to a hub and does with what comes back, seen from a raw TCP
// fake hub: local interest reference-counted into LS+/LS-, queue weights, and the queue
// rules for messages in both directions.

import t, { type Test } from 'tap'
import { headers } from '@nats-io/transport-node'
import { REMOTE_DEFAULTS } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { fakeHub, until, type FakeConn } from './helpers/hub.ts'
import { natsClient, sleep } from './helpers/mqtt.ts'

async function linked(t: Test): Promise<{ b: TestBroker; c: () => FakeConn }> {
  const hub = await fakeHub(t, () => {})
  const b = await startBroker({ leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [{ ...REMOTE_DEFAULTS, urls: [`nats://127.0.0.1:${hub.port}`] }] } })
  t.teardown(() => b.stop())
  await until(() => b.uplink!.remotes[0]!.state === 'connected', 5000, 'connected')
  return { b, c: () => hub.conns[0]! }
}

/** The LS+/LS- lines sprig sent, without its $LDS and its own $SPRIG. services. */
const interest = (c: FakeConn): string[] => c.text.split('\r\n').filter((l) => /^LS[+-] /.test(l) && !l.includes('$LDS.') && !l.includes('$SPRIG.'))

t.test('local interest is counted: one LS+ per subject, LS- when the last one goes', async (t) => {
  const { b, c } = await linked(t)
  const a = await natsClient(t, b.url)
  const z = await natsClient(t, b.url)
  const s1 = a.subscribe('foo.bar')
  const s2 = z.subscribe('foo.bar')
  const s3 = a.subscribe('foo.*')
  await a.flush()
  await z.flush()
  await until(() => interest(c()).length >= 2, 2000, 'LS+')
  s1.unsubscribe()
  await a.flush()
  await sleep(100)
  t.same(interest(c()), ['LS+ foo.bar', 'LS+ foo.*'], 'a second subscriber on foo.bar adds nothing; one leaving removes nothing')
  s2.unsubscribe()
  s3.unsubscribe()
  await z.flush()
  await a.flush()
  await until(() => interest(c()).length >= 4, 2000, 'LS-')
  t.same(interest(c()), ['LS+ foo.bar', 'LS+ foo.*', 'LS- foo.bar', 'LS- foo.*'])
})

t.test('queue groups: LS+ with the member count as weight, LS- without one', async (t) => {
  const { b, c } = await linked(t)
  const a = await natsClient(t, b.url)
  const q1 = a.subscribe('jobs', { queue: 'w' })
  await a.flush()
  const q2 = a.subscribe('jobs', { queue: 'w' })
  await a.flush()
  q1.unsubscribe()
  await a.flush()
  q2.unsubscribe()
  await a.flush()
  await until(() => interest(c()).length >= 4, 2000, 'four lines')
  t.same(interest(c()), ['LS+ jobs w 1', 'LS+ jobs w 2', 'LS+ jobs w 1', 'LS- jobs w'])
})

t.test('from the hub: a queue list reaches one member of those groups; no list, plain subscribers only', async (t) => {
  const { b, c } = await linked(t)
  const a = await natsClient(t, b.url)
  const plain: string[] = []
  const group: string[] = []
  const other: string[] = []
  a.subscribe('leaf.q', { callback: (_e, m) => void plain.push(m.string()) })
  for (let i = 0; i < 3; i++) a.subscribe('leaf.q', { queue: 'grp', callback: (_e, m) => void group.push(m.string()) })
  a.subscribe('leaf.q', { queue: 'other', callback: (_e, m) => void other.push(m.string()) })
  await a.flush()
  c().sock.write('LMSG leaf.q | grp 3\r\none\r\nLMSG leaf.q 3\r\ntwo\r\nHMSG leaf.q + _INBOX.r grp other 12 17\r\nNATS/1.0\r\n\r\nthree\r\n')
  await until(() => plain.length >= 3, 2000, 'three messages')
  await sleep(100)
  t.same(plain, ['one', 'two', 'three'], 'plain subscribers get everything')
  t.same(group, ['one', 'three'], 'group grp: exactly one member, only when named')
  t.same(other, ['three'], 'group other: only when named')
})

t.test('to the hub: its queue groups are named only when no local member exists', async (t) => {
  const { b, c } = await linked(t)
  c().sock.write('LS+ up.q hq 2\r\nLS+ up.both lq 1\r\n')
  const a = await natsClient(t, b.url)
  a.subscribe('up.both', { queue: 'lq' })
  await a.flush()
  await until(() => b.uplink!.remotes[0]!.link!.hubKeys.size >= 3, 2000, 'hub interest')
  a.publish('up.q', 'x')
  a.publish('up.plain', 'y') // the fake hub's LS+ up.>
  a.publish('up.both', 'z')
  a.publish('nobody', 'w')
  await a.flush()
  await until(() => /LMSG up\.both/.test(c().text), 2000, 'LMSG up.both')
  const lines = c().text.split('\r\n').filter((l) => /^LMSG|^HMSG/.test(l))
  t.same(lines, ['LMSG up.q | hq 1', 'LMSG up.plain 1', 'LMSG up.both 1'], 'hq named; lq served locally; nothing without interest')
})

t.test('to the hub: frames byte for byte, plain and mapped subjects in turn, headers, replies, UTF-8', async (t) => {
  const hub = await fakeHub(t, (c) => c.sock.write('LS+ site.gw.>\r\n'))
  const remote = { ...REMOTE_DEFAULTS, urls: [`nats://127.0.0.1:${hub.port}`], map: [{ local: 'tele.>', hub: 'site.gw.tele.>' }] }
  const b = await startBroker({ leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [remote] } })
  t.teardown(() => b.stop())
  await until(() => b.uplink!.remotes[0]!.state === 'connected', 5000, 'connected')
  await until(() => b.uplink!.remotes[0]!.link!.hubKeys.size >= 2, 2000, 'hub interest')
  const c = hub.conns[0]!
  const a = await natsClient(t, b.url)
  const h = headers()
  h.set('k', 'v')
  for (let i = 0; i < 2; i++) {
    a.publish('tele.a', 'x1')
    a.publish('up.b', 'x22')
    a.publish('tele.c', '')
    a.publish('up.b', 'x4', { headers: h })
    a.publish('up.ü', 'x5')
  }
  a.publish('up.b', 'r', { reply: 'rep' })
  a.publish('tele.a', 'hr', { reply: 'tele.r', headers: h })
  await a.flush()
  await until(() => /HMSG site\.gw\.tele\.a site\.gw\.tele\.r/.test(c.text), 2000, 'last frame')
  const hl = 'NATS/1.0\r\nk: v\r\n\r\n'.length
  const one = `LMSG site.gw.tele.a 2\r\nx1\r\nLMSG up.b 3\r\nx22\r\nLMSG site.gw.tele.c 0\r\n\r\nHMSG up.b ${hl} ${hl + 2}\r\nNATS/1.0\r\nk: v\r\n\r\nx4\r\nLMSG up.ü 2\r\nx5\r\n`
  const want = `${one}${one}LMSG up.b rep 1\r\nr\r\nHMSG site.gw.tele.a site.gw.tele.r ${hl} ${hl + 2}\r\nNATS/1.0\r\nk: v\r\n\r\nhr\r\n`
  const got = c.text.slice(c.text.indexOf('LMSG '))
  t.equal(got.replace(/PING\r\n/g, ''), want)
})
