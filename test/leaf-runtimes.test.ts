// The uplink's dialler (targets/dial.ts, node:net) on Bun and Deno too: sprig from source as a
// real process under each runtime, `--leaf` to a real hub, messages both ways.

import { resolve } from 'node:path'
import t from 'tap'
import { connect } from '@nats-io/transport-node'
import { runtimeBin } from './helpers/bins.ts'
import { haveHub, startHub } from './helpers/hub.ts'
import { freePort, skipOrFail, spawnServer } from './helpers/peers.ts'
import { sleep } from './helpers/mqtt.ts'

const main = resolve(import.meta.dirname, '..', 'targets', 'main.ts')

if (haveHub(t)) {
  for (const rt of ['bun', 'deno'] as const) {
    t.test(`${rt}: --leaf dials the hub; messages cross both ways`, async (t) => {
      const bin = runtimeBin(rt)
      if (!bin) return skipOrFail(t, `${rt} not found: run npm ci (it installs ${rt === 'bun' ? 'bun' : '@deno/linux-x64-glibc'})`)
      const hub = await startHub()
      t.teardown(() => hub.close())
      const port = await freePort()
      const args = rt === 'bun' ? [main] : ['run', '-A', main]
      const p = await spawnServer(bin, [...args, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0', '--leaf', hub.leafUrl], port)
      t.teardown(() => p.stop())
      const cloud = await connect({ servers: hub.url })
      const edge = await connect({ servers: `nats://127.0.0.1:${port}` })
      t.teardown(async () => {
        await cloud.close()
        await edge.close()
      })
      const up = cloud.subscribe('up.x', { max: 1, timeout: 10_000 })
      edge.subscribe('down.x', { callback: (_e, m) => void m.respond(`${rt}:${m.string()}`) })
      await cloud.flush()
      await edge.flush()
      // The link comes up asynchronously: retry until the edge's interest reached the hub.
      let answer = ''
      for (let i = 0; i < 100 && answer === ''; i++) {
        try {
          answer = (await cloud.request('down.x', 'hi', { timeout: 300 })).string()
        } catch {
          await sleep(50)
        }
      }
      t.equal(answer, `${rt}:hi`, 'a hub request answered at the edge')
      edge.publish('up.x', 'hello')
      for await (const m of up) t.equal(m.string(), 'hello', 'an edge publish reaches the hub')
      t.match(p.output(), /Leafnode remote 1: connected to hub/, 'the connect is logged')
    })
  }
}
