// What one idle MQTT connection's objects cost on Bun (JSC): each must stay in its size class
// (docs/benchmarks.md, 2026-12-03: 320 + 160 + 112 + 112 + 48 bytes before, 160 + 112 + 64 +
// 48 after). JSC rounds an object up to a size class and sizes a small one by its class's
// prototype accessors too, so a field added (or a getter moved) can cost every idle device 16
// to 64 bytes without any test of behaviour noticing. test/helpers/footprint.ts makes the
// connections under Bun and reads the sizes from Bun.generateHeapSnapshot().

import t from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { runtimeBin } from './helpers/bins.ts'

const bun = runtimeBin('bun')

t.test('an idle MQTT connection on Bun: its objects in their size classes', async (t) => {
  if (!existsSync(bun)) return t.fail(`${bun} not found: it is a devDependency (package bun), run npm install`)
  const script = fileURLToPath(new URL('./helpers/footprint.ts', import.meta.url))
  const out = execFileSync(bun, [script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } })
  const r = JSON.parse(out.trim().split('\n').at(-1)!) as { sizes: Record<string, number>; counts: Record<string, number>; connected: number }
  t.equal(r.connected, 50, 'fifty connections made, connected and subscribed')
  t.equal(r.counts.Subscription, 50, 'one subscription each')
  t.ok(r.sizes.MqttConn! <= 160, `MqttConn ${r.sizes.MqttConn} bytes (≤ 160; 320 before)`)
  t.ok(r.sizes.Outbound! <= 112, `Outbound ${r.sizes.Outbound} bytes (≤ 112; 160 before)`)
  t.ok(r.sizes.Subscription! <= 64, `subscription ${r.sizes.Subscription} bytes (≤ 64; 112 before)`)
  t.ok(r.sizes.BunWire! <= 48, `BunWire ${r.sizes.BunWire} bytes (≤ 48; 112 before)`)
  t.equal(r.counts.GuardedConn ?? 0, 0, 'no GuardedConn on Bun.listen sockets (48 bytes each before)')
})
