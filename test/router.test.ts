// The router's no-interest path: reach() decides, before a publisher builds its message,
// whether anything would see it; publish() with that match delivers as without it.

import t from 'tap'
import { newMsg, type Msg } from '../src/msg.ts'
import { Router, type Owner, type Sub } from '../src/router.ts'

const enc = new TextEncoder()

function owner(got: string[]): Owner {
  return { cid: 1, echo: true, deliver: (s: Sub, m: Msg) => got.push(`${s.subject} ${m.subject}:${new TextDecoder().decode(m.payload)}`) }
}

function msg(subject: string, payload: string, hdr: Uint8Array | null = null): Msg {
  const m = newMsg()
  m.subject = subject
  m.subjectBytes = enc.encode(subject)
  m.payload = enc.encode(payload)
  m.hdr = hdr
  return m
}

t.test('reach: null only when no subscriber, no tap and no header hook would see it', async (t) => {
  const r = new Router()
  t.equal(r.reach('a.b', false), null, 'nobody')
  t.equal(r.reach('a.b', true), null, 'nobody, with headers')
  const before = r.subs.stats().matches
  r.reach('a.b', false)
  t.equal(r.subs.stats().matches, before + 1, 'one match (one cache lookup) per ask')

  const got: string[] = []
  const s: Sub = { subject: 'a.*', queue: null, owner: owner(got) }
  r.subscribe(s)
  const m = r.reach('a.b', false)
  t.not(m, null, 'a wildcard subscriber: the match')
  t.equal(r.publish(msg('a.b', 'x'), null, undefined, m!), 1)
  t.strictSame(got, ['a.* a.b:x'])
  r.unsubscribe(s)
  t.equal(r.reach('a.b', false), null, 'after UNSUB: nobody again (the cached match is dropped)')

  const q: Sub = { subject: 'a.b', queue: 'g', owner: owner(got) }
  r.subscribe(q)
  t.not(r.reach('a.b', false), null, 'a queue subscriber')
  r.unsubscribe(q)

  const untap = r.addTap(() => 0)
  t.not(r.reach('a.b', false), null, 'a tap (the uplink) sees every publish')
  untap()
  t.equal(r.reach('a.b', false), null)

  r.headerHook = () => {}
  t.not(r.reach('a.b', true), null, 'the header hook sees a publish with headers')
  t.equal(r.reach('a.b', false), null, 'but not one without')
})

t.test('unheard counts as publish counts', async (t) => {
  const a = new Router()
  const b = new Router()
  a.publish(msg('x', 'hello'), null)
  a.publish(msg('x', 'hi', enc.encode('NATS/1.0\r\n\r\n')), null)
  b.unheard(5)
  b.unheard(2 + 12)
  t.strictSame(b.traffic, a.traffic)
})
