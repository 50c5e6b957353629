// A remote's `permissions` block, checked with src/permissions.ts against a real hub:
// `publish` is what the hub may publish into the gateway (what comes down), `subscribe` is
// what interest the gateway sends up. Denied subjects never come down, denied interest never
// goes up.

import t from 'tap'
import { startBroker } from './helpers/broker.ts'
import { haveHub, leafUp, startHub, until } from './helpers/hub.ts'
import { natsClient, sleep } from './helpers/mqtt.ts'
import { compileFilters } from '../src/leaf/filter.ts'
import type { RemoteOptions } from '../src/options.ts'

const remote = (url: string, more: object = {}): RemoteOptions => ({
  urls: [url], no_randomize: false, deny_imports: [], deny_exports: [], allow_exports: [], allow_imports: [], map: [],
  buffer_subjects: [], buffer_max_msgs: 100_000, buffer_max_bytes: 16 << 20, buffer_policy: 'drop_oldest', buffer_hold: 10_000,
  ...more,
})

const permissions = {
  publish: { deny: ['cmd.secret.>'] },
  subscribe: { allow: ['cmd.>', 'svc.*', '_INBOX.>'], deny: ['cmd.private'] },
}

t.test('compiled: interest up and messages down', async (t) => {
  const f = compileFilters(remote('nats://x:1', { permissions }))
  t.same(f.interestUp('cmd.>'), ['cmd.>'], 'allowed interest goes up')
  t.same(f.interestUp('other.x'), [], 'interest outside subscribe.allow stays local')
  t.same(f.interestUp('cmd.private'), [], 'interest a subscribe deny rule matches stays local')
  t.same(f.interestUp('cmd.secret.>'), [], 'interest inside a publish deny rule is not asked for')
  t.same(f.interestUp('svc.>'), [], 'svc.* does not allow svc.> (as for users)')
  t.equal(f.down('cmd.a'), 'cmd.a')
  t.equal(f.down('cmd.private'), null, 'subscribe deny: not taken in, even for cmd.>')
  t.equal(f.down('cmd.secret.x'), null, 'publish deny: the hub may not publish it here')
  t.equal(f.up('cmd.private'), 'cmd.private', 'what goes up is not governed by permissions (deny_exports is)')
})

t.test('compiled: what the hub may make sprig\'s services publish here (mayImport) and read (mayExport)', async (t) => {
  const f = compileFilters(remote('nats://x:1', {
    deny_imports: ['cmd.secret.>'], deny_exports: ['edge.secret.>'], permissions: { publish: { deny: ['cmd.private.>'] } },
    map: [{ local: '$SPRIG.>', hub: 'site.gw1.$SPRIG.>' }],
  }))
  t.equal(f.down('site.gw1.$SPRIG.mqtt.retain.cmd.secret.b'), '$SPRIG.mqtt.retain.cmd.secret.b', 'the service subject itself comes down')
  t.equal(f.mayImport('cmd.secret.b'), false, 'but the subject the service would publish to is checked: deny_imports')
  t.equal(f.mayImport('cmd.private.c'), false, 'permissions.publish')
  t.equal(f.mayImport('cmd.ok'), true)
  t.equal(f.mayExport('edge.secret.a'), false, 'deny_exports')
  t.equal(f.mayExport('edge.ok'), true)
})

if (haveHub(t)) {
  t.test('with a real hub: denied subjects never come down, denied interest never goes up', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const b = await startBroker({ leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [remote(hub.leafUrl, { permissions })] } })
    t.teardown(() => b.stop())
    await leafUp(b)
    const en = await natsClient(t, b.url)
    const got: string[] = []
    for (const s of ['cmd.>', 'cmd.private', 'other.x', 'cmd.secret.>']) en.subscribe(s, { callback: (_e, m) => void got.push(`${s}:${m.subject}`) })
    await en.flush()
    const sent = (): string[] => [...(b.uplink!.remotes[0]!.link as unknown as { sent: Map<string, number> }).sent.keys()]
    await until(() => sent().includes('cmd.>'), 5000, 'LS+ cmd.>')
    t.notOk(sent().some((k) => k === 'other.x' || k === 'cmd.private' || k === 'cmd.secret.>'), `denied interest not sent up (${sent().join(', ')})`)

    const nc = await natsClient(t, hub.url)
    for (let i = 0; i < 10; i++) {
      for (const s of ['cmd.a', 'cmd.private', 'cmd.secret.x', 'other.x']) nc.publish(s, '')
      await sleep(20)
    }
    await until(() => got.includes('cmd.>:cmd.a'), 5000, 'cmd.a at the edge')
    await sleep(200)
    t.same([...new Set(got)], ['cmd.>:cmd.a'], 'only the allowed subject came down')
    t.notOk(b.logs.some((l) => /Permissions Violation/.test(l)), 'the hub never complained')
  })
}
