// The compiled permission check on its own (src/permissions.ts): what the adapters and the
// uplink ask for each publish, subscription and delivery.

import t from 'tap'
import {
  canPublish,
  canSubscribe,
  compilePermissions,
  deliveryDenied,
  needsDeliveryCheck,
  noteRequest,
  publishAllowed,
  type Replies,
} from '../src/permissions.ts'

t.test('publish: allow then deny, wildcards, a missing list allows all', async (t) => {
  const p = compilePermissions({ publish: { allow: ['a.>', 'b.*'], deny: ['a.secret', 'a.*.x'] } })
  const cases: [string, boolean][] = [
    ['a.b', true], ['a.b.c', true], ['b.c', true], ['b.c.d', false], ['c', false],
    ['a.secret', false], ['a.q.x', false], ['a.q.y', true],
  ]
  for (const [s, want] of cases) t.equal(canPublish(p, s), want, s)
  t.equal(canPublish(p, 'a.secret'), false, 'cached verdicts stay right')
  const open = compilePermissions({ publish: { deny: ['x.>'] } })
  t.equal(canPublish(open, 'anything'), true, 'no allow list: all but the denied')
  t.equal(canPublish(open, 'x.y'), false)
  t.equal(publishAllowed(null, null, 'x.y', 0), true, 'no permissions at all: everything')
})

t.test('subscribe: inside an allow rule, not matched by a deny rule; queue rules', async (t) => {
  const p = compilePermissions({ subscribe: { allow: ['s.>', 'w.> workers'], deny: ['s.secret', 's.*.private'] } })
  const cases: [string, string | null, boolean][] = [
    ['s.a', null, true], ['s.>', null, true], ['s.*', null, true], ['>', null, false], ['*.a', null, false],
    ['s.secret', null, false], ['s.x.private', null, false], ['w.a', 'workers', true], ['w.a', null, false], ['w.a', 'other', false],
  ]
  for (const [s, q, want] of cases) t.equal(canSubscribe(p, s, q), want, `${s} ${q ?? ''}`)
  t.equal(needsDeliveryCheck(p, 's.>'), true, 'a wildcard over a deny rule is checked at delivery')
  t.equal(needsDeliveryCheck(p, 's.a'), false, 'a literal one is not')
  t.equal(needsDeliveryCheck(p, 's.a.b.*'), false, 'a wildcard that cannot meet a deny rule is not')
  t.equal(deliveryDenied(p, 's.secret', null), true)
  t.equal(deliveryDenied(p, 's.q.private', null), true)
  t.equal(deliveryDenied(p, 's.ok', null), false)
})

t.test('allow_responses: replies to received requests, bounded count and time', async (t) => {
  const p = compilePermissions({ allow_responses: { max: 2, expires: 1000 } })
  const r: Replies = new Map()
  t.equal(publishAllowed(p, r, '_INBOX.1', 0), false, 'no publish allow list: nothing but replies')
  noteRequest(p, r, '_INBOX.1', 0)
  t.equal(publishAllowed(p, r, '_INBOX.1', 10), true, 'first reply')
  t.equal(publishAllowed(p, r, '_INBOX.1', 20), true, 'second reply (max 2)')
  t.equal(publishAllowed(p, r, '_INBOX.1', 30), false, 'third refused')
  noteRequest(p, r, '_INBOX.2', 0)
  t.equal(publishAllowed(p, r, '_INBOX.2', 1000), false, 'expired')
  t.equal(r.size, 0, 'used-up and expired entries are gone')
  for (let i = 0; i < 5000; i++) noteRequest(p, r, `_INBOX.x${i}`, 0)
  t.ok(r.size <= 4096, 'the map is bounded')
  t.equal(publishAllowed(p, r, '_INBOX.x4999', 1), true, 'the newest are kept')
})

t.test('$SPRIG. subjects: hidden from users with permissions unless an allow rule names them', async (t) => {
  const denyOnly = compilePermissions({ subscribe: { deny: ['admin.>'] } })
  const wide = compilePermissions({ subscribe: { allow: ['>'] } })
  const named = compilePermissions({ subscribe: { allow: ['$SPRIG.leafz', '$SPRIG.mqtt.>', '*.>'] } })
  for (const p of [denyOnly, wide]) {
    for (const s of ['$SPRIG.mqtt.reply.>', '$SPRIG.mqtt.retain.>', '$SPRIG.>', '$SPRIG', '$SPRIG.leafz']) t.equal(canSubscribe(p, s, null), false, `${s}: not without naming $SPRIG`)
    t.equal(canSubscribe(p, '>', null), true, '> itself is fine')
    t.equal(needsDeliveryCheck(p, '>'), true, 'and is checked at delivery')
    t.equal(needsDeliveryCheck(p, '*.mqtt.>'), true, 'as is any subscription starting with a wildcard')
    t.equal(deliveryDenied(p, '$SPRIG.mqtt.reply.eA.admin.y', null), true, 'which keeps $SPRIG. messages out')
    t.equal(deliveryDenied(p, '$SPRIGX.a', null), false, 'only the $SPRIG token')
    t.equal(deliveryDenied(p, 'dev.a', null), false)
  }
  t.equal(needsDeliveryCheck(wide, 'dev.>'), false, 'a wildcard after a literal first token is not (no deny rules)')
  t.equal(canSubscribe(named, '$SPRIG.leafz', null), true, 'named exactly')
  t.equal(canSubscribe(named, '$SPRIG.mqtt.retain.>', null), true, 'inside a named rule')
  t.equal(canSubscribe(named, '$SPRIG.>', null), false, 'wider than the named rules')
  t.equal(deliveryDenied(named, '$SPRIG.mqtt.x', null), false, 'a wildcard gets what the named rules cover')
  t.equal(deliveryDenied(named, '$SPRIG.other', null), true, 'and nothing else')
  t.equal(needsDeliveryCheck(null, '>'), false, 'no permissions: no check, everything delivered')
  t.equal(deliveryDenied(null, '$SPRIG.mqtt.x', null), false)
})

t.test('acting for another: publish as the caller, receive what it may subscribe to', async (t) => {
  const { mayPublishAs, mayReceiveAs, answeredAs, mayAnswer } = await import('../src/permissions.ts')
  const perms = compilePermissions({ publish: { deny: ['admin.>'] }, subscribe: { deny: ['admin.>'] } })
  const user = { user: 'u', perms }
  t.equal(mayPublishAs(null, 'admin.x'), true, "sprig's own publishes are trusted")
  t.equal(mayPublishAs({ perms: null }, 'admin.x'), true, 'a client without permissions')
  t.equal(mayPublishAs(user, 'admin.x'), false)
  t.equal(mayPublishAs(user, 'dev.x'), true)
  t.equal(mayReceiveAs(user, 'admin.x'), false)
  t.equal(mayReceiveAs(user, '$SPRIG.mqtt.x'), false)
  t.equal(mayReceiveAs(user, 'dev.x'), true)
  const remote = { mayPublish: (s: string) => !s.startsWith('cmd.'), mayReceive: () => false }
  t.equal(mayPublishAs(remote, 'cmd.x'), false, "the uplink's own check")
  t.equal(mayReceiveAs(remote, 'dev.x'), false)
  t.equal(mayAnswer(user, 'admin.x'), false, 'no answer to a reply subject the requester can neither publish to nor read')
  t.equal(mayAnswer(user, 'dev.x'), true)
  t.equal(mayAnswer({ perms: compilePermissions({ publish: { allow: ['dev.>'] }, subscribe: { allow: ['_INBOX.>'] } }) }, '_INBOX.a'), true, 'an inbox it may only read')
  t.equal(mayAnswer(user, '$SPRIG.mqtt.reply.e.admin.z'), true, 'a $SPRIG. reply is left to the service there')
  t.equal(mayAnswer(null, 'admin.x'), true)
  t.equal(answeredAs(user, '$SPRIG.mqtt.reply.e.admin.z'), false, 'a publish its lists allow was not an answer')
  t.equal(answeredAs({ perms: compilePermissions({ allow_responses: { max: 1, expires: 1000 } }) }, '$SPRIG.mqtt.reply.e.admin.z'), true, 'one only allow_responses let through was')
})
