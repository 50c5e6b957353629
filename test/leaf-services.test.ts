// sprig's own service subjects ($SPRIG.leafz, $SPRIG.mqtt.*) stay per gateway: they are not
// announced to the hub unless a map gives them a per-gateway name; and a request that is
// buffered while the link is down is not answered with no-responders.

import t from 'tap'
import type { NatsConnection } from '@nats-io/transport-node'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { haveHub, hubInterest, leafUp, startHub, until } from './helpers/hub.ts'
import { natsClient, sleep } from './helpers/mqtt.ts'

const remote = (url: string, more: object = {}) => ({
  urls: [url], no_randomize: false, deny_imports: [], deny_exports: [], allow_exports: [], allow_imports: [], map: [],
  buffer_subjects: [], buffer_max_msgs: 100_000, buffer_max_bytes: 16 << 20, buffer_policy: 'drop_oldest' as const, buffer_hold: 10_000,
  ...more,
})

const isNoResponders = (e: unknown): boolean => /no responders|503/i.test(`${(e as Error).message} ${(e as { code?: string }).code}`)

/** A cloud request retried while the gateway's interest travels to the hub. */
async function retryRequest(nc: NatsConnection, subject: string): Promise<{ server_id: string }> {
  for (let i = 0; ; i++) {
    try {
      return (await nc.request(subject, '', { timeout: 500 })).json<{ server_id: string }>()
    } catch (e) {
      if (i > 40) throw e
      await sleep(50)
    }
  }
}

if (haveHub(t)) {
  t.test('$SPRIG. subjects are not announced to the hub; a per-gateway map reaches one gateway', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const gws: TestBroker[] = []
    for (const n of [1, 2]) {
      const map = [{ local: '$SPRIG.>', hub: `site.gw${n}.$SPRIG.>` }]
      const b = await startBroker({ server_name: `gw${n}`, leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [remote(hub.leafUrl, { map })] } })
      t.teardown(() => b.stop())
      gws.push(b)
    }
    const plain = await startBroker({ server_name: 'gw3', leafnodes: { reconnect: 200, reconnect_max: 2000, remotes: [remote(hub.leafUrl)] } })
    t.teardown(() => plain.stop())
    for (const b of [...gws, plain]) await leafUp(b)

    const nc = await natsClient(t, hub.url)
    t.equal((await retryRequest(nc, 'site.gw2.$SPRIG.leafz')).server_id, gws[1]!.srv.id, 'gw2 answers site.gw2.$SPRIG.leafz')
    t.equal((await retryRequest(nc, 'site.gw1.$SPRIG.leafz')).server_id, gws[0]!.srv.id, 'gw1 answers site.gw1.$SPRIG.leafz')
    for (let i = 0; i < 5; i++) t.equal((await nc.request('site.gw2.$SPRIG.leafz', '', { timeout: 1000 })).json<{ server_id: string }>().server_id, gws[1]!.srv.id, `always gw2 (${i})`)

    let err: unknown = null
    try {
      await nc.request('$SPRIG.leafz', '', { timeout: 1000 })
    } catch (e) {
      err = e
    }
    t.ok(isNoResponders(err), 'nobody answers the unmapped $SPRIG.leafz at the hub')
    const sent = (b: TestBroker): string[] => [...(b.uplink!.remotes[0]!.link as unknown as { sent: Map<string, number> }).sent.keys()]
    t.notOk(sent(plain).some((k) => k.startsWith('$SPRIG.')), 'no $SPRIG. interest is sent up without a map')
    t.ok(sent(gws[0]!).includes('site.gw1.$SPRIG.leafz'), 'with a map, the mapped name is sent up')

    // Unmapped $SPRIG. messages do not come down either, even to a gateway asking for `>`.
    const en = await natsClient(t, plain.url)
    const got: string[] = []
    en.subscribe('>', { callback: (_e, m) => void got.push(m.subject) })
    await en.flush()
    await hubInterest(plain, '>').catch(() => {})
    await until(() => plain.uplink!.remotes[0]!.link?.sentCount !== undefined, 1000, 'link')
    for (let i = 0; i < 20; i++) {
      nc.publish('$SPRIG.leafz', '')
      nc.publish('probe.x', '')
      await sleep(25)
    }
    await until(() => got.includes('probe.x'), 5000, 'probe.x at the edge')
    t.notOk(got.includes('$SPRIG.leafz'), 'an unmapped $SPRIG. subject from the hub is not taken in')
  })

  t.test('a request buffered while the link is down gets no no-responders; its reply comes after reconnect', async (t) => {
    const hub = await startHub()
    t.teardown(() => hub.close())
    const b = await startBroker({ leafnodes: { reconnect: 200, reconnect_max: 500, remotes: [remote(hub.leafUrl, { buffer_subjects: ['svc.>'] })] } })
    t.teardown(() => b.stop())
    await leafUp(b)
    const en = await natsClient(t, b.url)
    await hub.stop()
    await until(() => b.uplink!.remotes[0]!.state !== 'connected', 5000, 'the link to drop')

    // Not buffered (outside buffer_subjects), nothing local: no-responders at once, as before.
    let err: unknown = null
    try {
      await en.request('other.x', 'q', { timeout: 2000 })
    } catch (e) {
      err = e
    }
    t.ok(isNoResponders(err), 'an unbuffered request with no local responder gets no-responders')

    const started = Date.now()
    const reply = en.request('svc.x', 'q', { timeout: 15_000 })
    let early: unknown = null
    reply.catch((e) => (early = e))
    await sleep(300)
    t.equal(early, null, 'no no-responders for the buffered request')
    t.equal(b.uplink!.status().leafs[0]!.buffered_msgs, 1, 'it waits in the buffer')

    await hub.restart()
    const nc = await natsClient(t, hub.url)
    nc.subscribe('svc.x', { callback: (_e, m) => void m.respond(`cloud:${m.string()}`) })
    await nc.flush()
    const r = await reply
    t.equal(r.string(), 'cloud:q', `the reply arrives after the reconnect (${Date.now() - started} ms)`)
  })
}
