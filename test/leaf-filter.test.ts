// Per-remote subject filters and prefix mapping: the pure rules (intersect, compileFilters)
// and end to end through a real hub, plus the hub's own import/export permissions.

import t from 'tap'
import { REMOTE_DEFAULTS, type RemoteOptions } from '../src/options.ts'
import { compileFilters, intersect } from '../src/leaf/filter.ts'
import { startBroker } from './helpers/broker.ts'
import { haveHub, hubInterest, leafUp, startHub } from './helpers/hub.ts'
import { messages, mqttClient, natsClient, sleep } from './helpers/mqtt.ts'

const remote = (o: Partial<RemoteOptions>): RemoteOptions => ({ ...REMOTE_DEFAULTS, urls: ['nats://h:7422'], ...o })

t.test('intersect: the subjects two patterns share, as one pattern', async (t) => {
  const cases: [string, string, string | null][] = [
    ['a.b', 'a.b', 'a.b'],
    ['a.*', 'a.b', 'a.b'],
    ['a.>', '*.b.c', 'a.b.c'],
    ['>', 'telemetry.>', 'telemetry.>'],
    ['*.x', 'telemetry.>', 'telemetry.x'],
    ['a.b', 'a.c', null],
    ['a', 'a.>', null],
    ['a.*', 'a.b.c', null],
    ['a.>', 'a.b.>', 'a.b.>'],
    ['*.*', 'a.>', 'a.*'],
  ]
  for (const [a, b, want] of cases) {
    t.equal(intersect(a, b), want, `${a} ∩ ${b}`)
    t.equal(intersect(b, a), want, `${b} ∩ ${a}`)
  }
})

t.test('prefix map: up adds the prefix, down strips it, interest is mapped', async (t) => {
  const f = compileFilters(remote({ map: [{ local: 'telemetry.>', hub: 'site.gw42.telemetry.>' }] }))
  t.equal(f.up('telemetry.t1.temp'), 'site.gw42.telemetry.t1.temp')
  t.equal(f.up('cmd.x'), 'cmd.x', 'outside the map: unchanged')
  t.equal(f.down('site.gw42.telemetry.cfg'), 'telemetry.cfg')
  t.equal(f.down('telemetry.cfg'), null, 'the unmapped spelling of a mapped subject is not taken in')
  t.equal(f.down('cmd.x'), 'cmd.x')
  t.same(f.interestUp('telemetry.>'), ['site.gw42.telemetry.>'])
  t.same(f.interestUp('telemetry.*.temp'), ['site.gw42.telemetry.*.temp'])
  t.same(f.interestUp('>').sort(), ['>', 'site.gw42.telemetry.>'].sort(), 'a full wildcard covers both spellings')
  t.same(f.interestUp('*.x').sort(), ['*.x', 'site.gw42.telemetry.x'].sort())
  t.same(f.interestUp('cmd.>'), ['cmd.>'])
  t.equal(f.replyUp('_INBOX.abc'), '_INBOX.abc')
  t.ok(f.mayResend('site.gw42.telemetry.t1.temp'), 'a resent frame: its local name maps back to it')
  t.ok(f.mayResend('cmd.x'))
  t.notOk(f.mayResend('telemetry.t1.temp'), 'the unmapped spelling of a mapped subject never went up')
  t.notOk(f.mayResend('$SPRIG.leafz'), 'service subjects stay local')
})

t.test('allow/deny: exports by local subject, imports narrow the interest sent up', async (t) => {
  const f = compileFilters(remote({ allow_exports: ['telemetry.>', 'events.*'], deny_exports: ['telemetry.secret.>'], allow_imports: ['cmd.>'], deny_imports: ['cmd.admin.>'] }))
  t.equal(f.up('telemetry.a'), 'telemetry.a')
  t.equal(f.up('telemetry.secret.key'), null, 'denied export')
  t.equal(f.up('events.boot'), 'events.boot')
  t.equal(f.up('logs.x'), null, 'not in allow_exports')
  t.equal(f.down('cmd.reboot'), 'cmd.reboot')
  t.equal(f.down('cmd.admin.wipe'), null, 'denied import')
  t.equal(f.down('other'), null, 'not in allow_imports')
  t.same(f.interestUp('>'), ['cmd.>'], 'a local `>` asks the hub for the allowed part only')
  t.same(f.interestUp('cmd.admin.>'), [], 'entirely denied: nothing sent')
  t.same(f.interestUp('logs.>'), [])
  t.ok(f.mayResend('telemetry.a'))
  t.notOk(f.mayResend('telemetry.secret.key'), 'a resend passes the export filters again (a reload may have changed them)')
})

t.test('hub permissions (INFO import/export) are honoured', async (t) => {
  const f = compileFilters(remote({}), { allow: ['down.>'] }, { allow: ['up.>'], deny: ['up.private'] })
  t.equal(f.up('up.x'), 'up.x')
  t.equal(f.up('up.private'), null)
  t.equal(f.up('other'), null, 'the hub would refuse this publish')
  t.notOk(f.mayResend('up.private'), 'nor a resend to a hub that denies it')
  t.same(f.interestUp('>'), ['down.>'], 'LS+ only where the hub allows us to subscribe')
  t.same(f.interestUp('x.>'), [])
})

if (haveHub(t)) {
  t.test('end to end: a gateway prefix, one cloud addressing one gateway', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const b = await startBroker({
      mqtt: true,
      leafnodes: {
        reconnect: 100,
        reconnect_max: 1000,
        remotes: [{ ...remote({ urls: [hub.leafUrl] }), map: [{ local: 'telemetry.>', hub: 'site.gw42.telemetry.>' }, { local: 'cmd.>', hub: 'site.gw42.cmd.>' }], deny_exports: ['telemetry.debug.>'] }],
      },
    })
    t.teardown(() => b.stop())
    await leafUp(b)
    const cloud = await natsClient(t, hub.url)
    const up: string[] = []
    cloud.subscribe('site.*.telemetry.>', { callback: (_e, m) => void up.push(m.subject) })
    cloud.subscribe('telemetry.>', { callback: (_e, m) => void up.push(`unmapped:${m.subject}`) })
    await cloud.flush()
    await hubInterest(b, 'site.*.telemetry.>')
    await hubInterest(b, 'telemetry.>')
    const dev = await mqttClient(t, b.mqttUrl)
    await dev.publishAsync('telemetry/t1/temp', '20', { qos: 0 })
    await dev.publishAsync('telemetry/debug/trace', 'x', { qos: 0 })
    await sleep(300)
    t.same(up, ['site.gw42.telemetry.t1.temp'], 'the prefix is added going up; denied exports stay home')

    await dev.subscribeAsync('cmd/#', { qos: 0 })
    const got = messages(dev, 2, 5000)
    let n = 0
    const timer = setInterval(() => {
      cloud.publish('site.gw42.cmd.reboot', String(n++))
      cloud.publish('cmd.reboot', 'unmapped')
    }, 50)
    const ms = await got
    clearInterval(timer)
    t.same(ms.map((m) => m.topic), ['cmd/reboot', 'cmd/reboot'], 'the prefix is stripped coming down')
    t.notOk(ms.some((m) => m.payload === 'unmapped'), 'the unprefixed subject does not reach the gateway')
  })
}

if (haveHub(t)) {
  t.test('end to end: a hub user with permissions; sprig stays inside them', async (t) => {
    const hub = await startHub({
      extra: 'accounts { A { users = [ {user: ua, password: pa}, {user: lp, password: lp, permissions: { publish: { allow: ["up.>"] }, subscribe: { allow: ["down.>"] } } } ] } }',
    })
    t.teardown(() => hub.close())
    const url = new URL(hub.leafUrl)
    url.username = 'lp'
    url.password = 'lp'
    const b = await startBroker({ leafnodes: { reconnect: 100, reconnect_max: 1000, remotes: [remote({ urls: [url.href] })] } })
    t.teardown(() => b.stop())
    await leafUp(b)
    const r = b.uplink!.remotes[0]!
    t.ok(r.link!.info.import || r.link!.info.export, `the hub sent permissions: ${JSON.stringify({ import: r.link!.info.import, export: r.link!.info.export })}`)
    const en = await natsClient(t, b.url)
    const down: string[] = []
    en.subscribe('>', { callback: (_e, m) => void down.push(m.subject) })
    await en.flush()
    const { connect } = await import('@nats-io/transport-node')
    const cloud = await connect({ servers: hub.url, user: 'ua', pass: 'pa' })
    t.teardown(() => cloud.close())
    const up: string[] = []
    cloud.subscribe('>', { callback: (_e, m) => void up.push(m.subject) })
    await cloud.flush()
    await sleep(500)
    for (let i = 0; i < 5; i++) {
      cloud.publish('down.cmd', 'x')
      en.publish('up.data', 'y')
      en.publish('other.data', 'z')
    }
    await cloud.flush()
    await en.flush()
    await sleep(500)
    t.ok(down.includes('down.cmd'), 'allowed hub subjects come down')
    t.ok(up.includes('up.data'), 'allowed subjects go up')
    t.notOk(up.includes('other.data'), 'subjects outside the export permission are not sent')
    t.equal(r.state, 'connected', 'no permission violation closed the link')
    t.equal(r.reconnects, 0)
    t.notOk(b.logs.some((l) => /Permissions Violation/.test(l)), 'the hub never complained')
  })
}
