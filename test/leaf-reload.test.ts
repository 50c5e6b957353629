// Config reload (SIGHUP) of leafnodes remotes: filters and maps of running remotes change in
// place (only the interest that changes is re-announced, the link stays up); adding or removing
// remotes, or changing how a remote connects, is refused with the key named.

import t from 'tap'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { haveHub, leafUp, startHub, until } from './helpers/hub.ts'
import { natsClient, sleep } from './helpers/mqtt.ts'
import type { Options, RemoteOptions } from '../src/options.ts'

const remote = (url: string, more: Partial<RemoteOptions> = {}): RemoteOptions => ({
  urls: [url], no_randomize: false, deny_imports: [], deny_exports: [], allow_exports: [], allow_imports: [], map: [],
  buffer_subjects: [], buffer_max_msgs: 100_000, buffer_max_bytes: 16 << 20, buffer_policy: 'drop_oldest', buffer_hold: 10_000,
  ...more,
})

/** What reloadConfig does with a re-read config: every reloader checks, then every step applies. */
function reload(b: TestBroker, next: Options): string[] {
  const steps = b.reloaders.map((f) => f(next))
  return steps.flatMap((apply) => apply())
}

function errorOf(f: () => unknown): string {
  try {
    f()
  } catch (e) {
    return (e as Error).message
  }
  return ''
}

if (haveHub(t)) {
  t.test('reloaded filters apply to the live link; connection changes are refused', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const leafnodes = { reconnect: 200, reconnect_max: 2000, remotes: [remote(hub.leafUrl)] }
    const b = await startBroker({ leafnodes })
    t.teardown(() => b.stop())
    await leafUp(b)
    const en = await natsClient(t, b.url)
    const got: string[] = []
    en.subscribe('cmd.>', { callback: (_e, m) => void got.push(m.subject) })
    en.subscribe('keep.x', { callback: (_e, m) => void got.push(m.subject) })
    await en.flush()
    const nc = await natsClient(t, hub.url)
    const sent = (): string[] => [...(b.uplink!.remotes[0]!.link as unknown as { sent: Map<string, number> }).sent.keys()]
    await until(() => sent().includes('cmd.>') && sent().includes('keep.x'), 5000, 'LS+ for both')
    nc.publish('cmd.a', '')
    await until(() => got.includes('cmd.a'), 5000, 'cmd.a before the reload')

    const next = { ...b.srv.opts, leafnodes: { ...leafnodes, remotes: [remote(hub.leafUrl, { deny_imports: ['cmd.>'] })] } }
    t.same(reload(b, next), ['leafnodes.remotes[0]'], 'the changed remote is reported')
    t.notOk(sent().includes('cmd.>'), 'the denied interest is withdrawn (LS-)')
    t.ok(sent().includes('keep.x'), 'other interest stays announced')
    got.length = 0
    for (let i = 0; i < 10; i++) {
      nc.publish('cmd.b', '')
      nc.publish('keep.x', '')
      await sleep(20)
    }
    await until(() => got.includes('keep.x'), 5000, 'keep.x after the reload')
    t.notOk(got.includes('cmd.b'), 'a denied subject no longer comes down')
    t.equal(b.uplink!.status().leafs[0]!.reconnects, 0, 'the link was not redialled')

    t.match(
      errorOf(() => reload(b, { ...next, leafnodes: { ...leafnodes, remotes: [remote(hub.leafUrl), remote(hub.leafUrl)] } })),
      /leafnodes\.remotes: adding or removing remotes needs a restart/,
      'adding a remote is refused',
    )
    t.match(
      errorOf(() => reload(b, { ...next, leafnodes: { ...leafnodes, remotes: [remote('nats://127.0.0.1:1')] } })),
      /leafnodes\.remotes\[0\]\.urls: config reload not supported/,
      'changing the URLs is refused, naming the key',
    )
    t.same(reload(b, next), [], 'the same config again changes nothing')
  })
}
