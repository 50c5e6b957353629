// What the uplink keeps of the messages it sends straight to a live hub (store off): the frames
// it wrote, one record per run, until the hub's PONG confirms them. Against a raw TCP fake hub
// that answers PINGs only when told: several unconfirmed flushes, a partial confirmation, then a
// lost link; the next connection gets every unconfirmed frame again, byte for byte and in order
// (a reply subject and headers included), and resent_msgs counts exactly those.

import t from 'tap'
import { headers } from '@nats-io/transport-node'
import { REMOTE_DEFAULTS } from '../src/options.ts'
import { startBroker } from './helpers/broker.ts'
import { fakeHub, until } from './helpers/hub.ts'
import { natsClient } from './helpers/mqtt.ts'

const pings = (s: string): number => s.split('PING\r\n').length - 1
/** Every LMSG/HMSG frame in `s`, whole, in order. */
function frames(s: string): string[] {
  const out: string[] = []
  const re = /(LMSG|HMSG) [^\r]* (\d+)\r\n/g
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    const end = m.index + m[0].length + Number(m[2]) + 2
    out.push(s.slice(m.index, end))
    re.lastIndex = end
  }
  return out
}

t.test('unconfirmed flushes are sent again after a lost link, as written; partial confirmation frees only the confirmed', async (t) => {
  const hub = await fakeHub(t, () => {}, { answerPing: false })
  const b = await startBroker({ leafnodes: { reconnect: 100, reconnect_max: 300, remotes: [{ ...REMOTE_DEFAULTS, urls: [`nats://127.0.0.1:${hub.port}`] }] } })
  t.teardown(() => b.stop())
  const r = b.uplink!.remotes[0]!
  await until(() => hub.conns.length === 1 && pings(hub.conns[0]!.text) === 1, 5000, 'the handshake PING')
  const c1 = hub.conns[0]!
  c1.sock.write('PONG\r\n')
  await until(() => r.state === 'connected', 5000, 'connected')
  const nc = await natsClient(t, b.url)
  // Three flushes; the first two are each followed by their confirmation PING, none answered yet.
  const h = headers()
  h.set('k', 'v')
  const bursts: (() => void)[] = [
    () => {
      for (let i = 0; i < 5; i++) nc.publish('up.a', `a${i}`)
    },
    () => {
      for (let i = 0; i < 4; i++) nc.publish('up.b', `b${i}`)
      nc.publish('up.b', 'req', { reply: 'up.reply.1' })
    },
    () => {
      nc.publish('up.c', 'c0', { headers: h })
      for (let i = 1; i < 5; i++) nc.publish('up.c', `c${i}`)
    },
  ]
  for (let k = 0; k < 2; k++) {
    bursts[k]!()
    await nc.flush()
    await until(() => pings(c1.text) === 2 + k, 5000, `the PING after burst ${k + 1}`)
  }
  // The third flush goes out, but its PING waits: two confirmations are already unanswered.
  bursts[2]!()
  await nc.flush()
  await until(() => frames(c1.text).length === 15, 5000, 'the third flush')
  const sent = frames(c1.text)
  t.equal(sent.length, 15, 'fifteen frames went to the hub')
  t.equal(pings(c1.text), 3, 'no third confirmation PING while two are unanswered')
  t.equal(r.status().unconfirmed_msgs, 15, 'all unconfirmed')
  t.equal(r.buffer.unsent, 0)
  // The hub answers the first of the three: that flush is confirmed, the others not, and the
  // third flush's confirmation is asked for at once.
  c1.sock.write('PONG\r\n')
  await until(() => r.status().unconfirmed_msgs === 10, 2000, 'the first flush confirmed')
  await until(() => pings(c1.text) === 4, 2000, 'the PING for the third flush, once one was answered')
  t.equal(r.status().resent_msgs, 0)
  // The link is lost; the next connection answers every PING.
  c1.sock.destroy()
  await until(() => hub.conns.length === 2, 5000, 'redialled')
  const c2 = hub.conns[1]!
  await until(() => pings(c2.text) >= 1, 5000, 'the second handshake PING')
  c2.sock.write('PONG\r\n')
  await until(() => frames(c2.text).length >= 10, 5000, 'the ten unconfirmed frames again')
  t.same(frames(c2.text), sent.slice(5), 'the unconfirmed frames, byte for byte, in order')
  t.match(frames(c2.text)[4], /^LMSG up\.b up\.reply\.1 3\r\nreq\r\n$/, 'the reply subject kept')
  t.match(frames(c2.text)[5], /^HMSG up\.c \d+ \d+\r\nNATS\/1\.0\r\nk: v\r\n\r\nc0\r\n$/, 'the headers kept')
  t.equal(r.status().resent_msgs, 10, 'resent_msgs: exactly the unconfirmed ones')
  t.equal(r.status().unkept_msgs, 0)
  // The resend's PING is answered: nothing held any more.
  await until(() => pings(c2.text) >= 2, 5000, 'the PING after the resend')
  c2.sock.write('PONG\r\n'.repeat(pings(c2.text) - 1))
  await until(() => r.buffer.length === 0, 5000, 'everything confirmed')
  t.equal(r.buffer.bytes, 0)
  // Live traffic goes on as before.
  nc.publish('up.d', 'd0')
  await nc.flush()
  await until(() => frames(c2.text).length === 11, 5000, 'a new message')
})

t.test('a burst bigger than the buffer bound: the newest that fit are kept', async (t) => {
  const hub = await fakeHub(t, () => {}, { answerPing: false })
  const b = await startBroker({ leafnodes: { reconnect: 100, reconnect_max: 300, remotes: [{ ...REMOTE_DEFAULTS, urls: [`nats://127.0.0.1:${hub.port}`], buffer_max_msgs: 10 }] } })
  t.teardown(() => b.stop())
  const r = b.uplink!.remotes[0]!
  await until(() => hub.conns.length === 1 && pings(hub.conns[0]!.text) === 1, 5000, 'the handshake PING')
  const c1 = hub.conns[0]!
  c1.sock.write('PONG\r\n')
  await until(() => r.state === 'connected', 5000, 'connected')
  const nc = await natsClient(t, b.url)
  for (let i = 0; i < 25; i++) nc.publish('up.x', `m${i}`)
  await nc.flush()
  await until(() => frames(c1.text).length === 25 && pings(c1.text) >= 2, 5000, 'all 25 sent, then a PING')
  const st = r.status()
  t.equal(st.unconfirmed_msgs, 10, 'the bound holds')
  t.equal(st.unkept_msgs, 0, 'each fitted on its own, newer ones displaced older sent ones (as before: not counted)')
  c1.sock.destroy()
  await until(() => hub.conns.length === 2, 5000, 'redialled')
  const c2 = hub.conns[1]!
  await until(() => pings(c2.text) >= 1, 5000, 'the second handshake PING')
  c2.sock.write('PONG\r\n')
  await until(() => frames(c2.text).length >= 10, 5000, 'the kept ten again')
  t.same(frames(c2.text), frames(c1.text).slice(15), 'the newest ten (drop_oldest)')
  t.equal(r.status().resent_msgs, 10)
})

t.test('frames around the short-copy boundary (payloads and subjects of 0–40 bytes) reach the hub intact', async (t) => {
  const hub = await fakeHub(t, () => {})
  const b = await startBroker({ leafnodes: { reconnect: 100, reconnect_max: 300, remotes: [{ ...REMOTE_DEFAULTS, urls: [`nats://127.0.0.1:${hub.port}`] }] } })
  t.teardown(() => b.stop())
  const r = b.uplink!.remotes[0]!
  await until(() => r.state === 'connected', 5000, 'connected')
  const nc = await natsClient(t, b.url)
  const want: string[] = []
  const h = headers()
  h.set('k', 'v')
  for (let n = 0; n <= 40; n++) {
    const subject = 'up.x' + 's'.repeat(n)
    const payload = String.fromCharCode(...Array.from({ length: n }, (_, i) => 97 + (i % 26)))
    nc.publish(subject, payload)
    want.push(`LMSG ${subject} ${n}\r\n${payload}\r\n`)
    nc.publish(subject, payload, { headers: h })
    const hl = 'NATS/1.0\r\nk: v\r\n\r\n'.length
    want.push(`HMSG ${subject} ${hl} ${hl + n}\r\nNATS/1.0\r\nk: v\r\n\r\n${payload}\r\n`)
  }
  await nc.flush()
  await until(() => frames(hub.conns[0]!.text).length >= want.length, 5000, 'every frame')
  t.same(frames(hub.conns[0]!.text), want)
  await until(() => r.buffer.length === 0, 5000, 'all confirmed')
})

t.test('reply subjects and hub queue groups framed as bytes: every combination, as nats-server reads them', async (t) => {
  const hub = await fakeHub(t, (c) => c.sock.write('LS+ up.q g1 1\r\nLS+ up.q g2 1\r\n'))
  const b = await startBroker({ leafnodes: { reconnect: 100, reconnect_max: 300, remotes: [{ ...REMOTE_DEFAULTS, urls: [`nats://127.0.0.1:${hub.port}`] }] } })
  t.teardown(() => b.stop())
  const r = b.uplink!.remotes[0]!
  await until(() => r.state === 'connected' && r.status().hub_interest === 3, 5000, 'connected, with the queue groups')
  const nc = await natsClient(t, b.url)
  const h = headers()
  h.set('k', 'v')
  const H = 'NATS/1.0\r\nk: v\r\n\r\n'
  nc.publish('up.q', 'a')
  nc.publish('up.q', 'bb', { reply: 'in.1' })
  nc.publish('up.q', 'c', { headers: h })
  nc.publish('up.q', 'd', { headers: h, reply: 'in.2' })
  nc.publish('up.r', 'e', { reply: 'in.3' })
  nc.publish('up.r', 'f', { headers: h, reply: 'in.4' })
  nc.publish('up.r', '')
  await nc.flush()
  // A local member of g1: that group is served here, only g2 goes with the frame.
  nc.subscribe('up.q', { queue: 'g1', callback: () => {} })
  await nc.flush()
  nc.publish('up.q', 'g', { reply: 'in.5' })
  nc.publish('up.q', 'h')
  await nc.flush()
  const want = [
    'LMSG up.q | g1 g2 1\r\na\r\n',
    'LMSG up.q + in.1 g1 g2 2\r\nbb\r\n',
    `HMSG up.q | g1 g2 ${H.length} ${H.length + 1}\r\n${H}c\r\n`,
    `HMSG up.q + in.2 g1 g2 ${H.length} ${H.length + 1}\r\n${H}d\r\n`,
    'LMSG up.r in.3 1\r\ne\r\n',
    `HMSG up.r in.4 ${H.length} ${H.length + 1}\r\n${H}f\r\n`,
    'LMSG up.r 0\r\n\r\n',
    'LMSG up.q + in.5 g2 1\r\ng\r\n',
    'LMSG up.q | g2 1\r\nh\r\n',
  ]
  await until(() => frames(hub.conns[0]!.text).length >= want.length, 5000, 'every frame')
  t.same(frames(hub.conns[0]!.text), want)
  // The hub's g2 goes: g1 is served here, so the frame carries no queue list any more.
  hub.conns[0]!.sock.write('LS- up.q g2\r\n')
  await until(() => r.status().hub_interest === 2, 5000, 'g2 gone at the hub')
  nc.publish('up.q', 'i')
  await nc.flush()
  await until(() => frames(hub.conns[0]!.text).length > want.length, 5000, 'one more frame')
  t.equal(frames(hub.conns[0]!.text)[want.length], 'LMSG up.q 1\r\ni\r\n')
})

t.test('a resend passes the filters of the new connection: a reload that denies a subject keeps its frames from going again', async (t) => {
  const hub = await fakeHub(t, () => {}, { answerPing: false })
  const b = await startBroker({ leafnodes: { reconnect: 100, reconnect_max: 300, remotes: [{ ...REMOTE_DEFAULTS, urls: [`nats://127.0.0.1:${hub.port}`], buffer_hold: 200 }] } })
  t.teardown(() => b.stop())
  const r = b.uplink!.remotes[0]!
  await until(() => hub.conns.length === 1 && pings(hub.conns[0]!.text) === 1, 5000, 'the handshake PING')
  const c1 = hub.conns[0]!
  c1.sock.write('PONG\r\n')
  await until(() => r.state === 'connected', 5000, 'connected')
  const nc = await natsClient(t, b.url)
  for (let i = 0; i < 3; i++) {
    nc.publish('up.a', `a${i}`)
    nc.publish('up.b', `b${i}`)
  }
  await nc.flush()
  await until(() => frames(c1.text).length === 6 && pings(c1.text) >= 2, 5000, 'six frames, then a PING')
  r.reconfigure({ ...r.opts, deny_exports: ['up.b'] })
  c1.sock.destroy()
  await until(() => hub.conns.length === 2, 5000, 'redialled')
  const c2 = hub.conns[1]!
  await until(() => pings(c2.text) >= 1, 5000, 'the second handshake PING')
  c2.sock.write('PONG\r\n')
  await until(() => r.expired === 3 && frames(c2.text).length === 3, 5000, 'the denied three expire after buffer_hold, the others go')
  t.same(frames(c2.text), frames(c1.text).filter((f) => f.startsWith('LMSG up.a ')), 'only up.a sent again, in order')
  t.equal(r.status().resent_msgs, 6, 'all six were unconfirmed')
  // Answer every PING as it comes: everything is confirmed (or expired), nothing held.
  let answered = 1
  await until(
    () => {
      for (const n = pings(c2.text); answered < n; answered++) c2.sock.write('PONG\r\n')
      return r.buffer.length === 0
    },
    5000,
    'nothing held',
  )
})
