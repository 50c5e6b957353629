// Bun: the housekeeping tick's per-session code is never compiled by JavaScriptCore's top tier
// (FTL), whose compiler would otherwise be paged in again after every quiet burst (targets/bun.ts
// keepFromTopTier, called from targets/run.ts). JavaScriptCore reports each compilation when
// asked (BUN_JSC_report*CompileTimes); its tier-up thresholds are lowered here so that a few
// idle sessions make the tick hot within seconds, as thousands do in the field.

import t, { type Test } from 'tap'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { RawMqtt, sleep } from './helpers/mqtt.ts'
import { freePort, skipOrFail, spawnServer, type Proc } from './helpers/peers.ts'
import { subscribedRaw } from './helpers/raw.ts'

const bun = runtimeBin('bun')

const HOT = {
  BUN_JSC_reportDFGCompileTimes: '1',
  BUN_JSC_reportFTLCompileTimes: '1',
  BUN_JSC_thresholdForJITAfterWarmUp: '10',
  BUN_JSC_thresholdForOptimizeAfterWarmUp: '20',
  BUN_JSC_thresholdForFTLOptimizeAfterWarmUp: '200',
}

/** JavaScriptCore's report lines for the functions named (`tick#…`, `writeDeadline#…`). */
const compiles = (out: string, names: string[]): string[] =>
  out.split('\n').filter((l) => names.some((n) => l.startsWith(`Optimized ${n}#`)))

async function idleBroker(t: Test): Promise<Proc & { mqtt: RawMqtt[]; nats: { sock: import('node:net').Socket; pongs: number }[] }> {
  const port = await freePort()
  const mqttPort = await freePort()
  const p = await spawnServer(bun!, [freshBundle(), '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', String(mqttPort)], port, { NODE_OPTIONS: '', SPRIG_PAGEOUT: '0', ...HOT })
  t.teardown(() => p.stop())
  const open: { close(): void }[] = []
  const mqtt: RawMqtt[] = []
  const nats: { sock: import('node:net').Socket; pongs: number }[] = []
  t.teardown(() => open.forEach((c) => c.close()))
  for (let i = 0; i < 20; i++) {
    const m = await RawMqtt.connect(mqttPort)
    open.push(m)
    mqtt.push(m)
    const s = await subscribedRaw(port, `SUB idle.${i} 1\r\n`)
    const n = { sock: s, pongs: 0 }
    s.on('data', (d: Buffer) => void (n.pongs += d.toString('latin1').split('PONG\r\n').length - 1))
    nats.push(n)
    open.push({ close: () => s.destroy() })
  }
  return Object.assign(p, { mqtt, nats })
}

t.test('the tick and what it runs per session reach DFG, never FTL', async (t) => {
  if (!bun) return skipOrFail(t, 'bun is not installed (npm package bun)')
  const p = await idleBroker(t)
  // Ten ticks of 40 sessions: far past the lowered FTL threshold.
  await sleep(10_000)
  const ticks = compiles(p.output(), ['tick', 'writeDeadline'])
  t.ok(ticks.some((l) => /^Optimized tick#.* using DFG/.test(l)), `the tick ran hot and was compiled by DFG:\n${ticks.join('\n')}`)
  t.same(
    ticks.filter((l) => / using FTL/.test(l)),
    [],
    'none by FTL',
  )
  t.ok(
    ticks.every((l) => l.includes('(NeverFTLOptimize)')),
    'each marked never-FTL',
  )
  t.match(p.output(), /Server is ready/)
})

t.test('idle devices keeping alive: what their PINGREQs (and NATS PINGs) run is never compiled by FTL', async (t) => {
  if (!bun) return skipOrFail(t, 'bun is not installed (npm package bun)')
  const p = await idleBroker(t)
  // The connect path's compiles are over: a second with no compile reported (at most 15 s).
  for (let i = 0; i < 15; i++) {
    const at = p.output().length
    await sleep(1000)
    if (!p.output().slice(at).includes('Optimized ')) break
  }
  const from = p.output().length
  // 20 MQTT devices and 20 NATS clients, each 150 pings 20 ms apart: 6,000 pings, each path
  // 15× the lowered FTL threshold.
  const PINGREQ = new Uint8Array([0xc0, 0])
  const ROUNDS = 150
  for (let i = 0; i < ROUNDS; i++) {
    for (const m of p.mqtt) m.send(PINGREQ)
    for (const n of p.nats) n.sock.write('PING\r\n')
    await sleep(20)
  }
  for (const m of p.mqtt) {
    await m.until(() => m.packets.length >= ROUNDS, 5000)
    t.ok(m.packets.length === ROUNDS && m.packets.every((k) => k.cmd === 'pingresp'), 'each device had its PINGRESPs, nothing else')
  }
  for (let i = 0; i < 50 && p.nats.some((n) => n.pongs < ROUNDS); i++) await sleep(100)
  t.same(p.nats.map((n) => n.pongs), p.nats.map(() => ROUNDS), 'each NATS client had its PONGs')
  const after = p.output().slice(from)
  const ftl = after.split('\n').filter((l) => / using FTL/.test(l))
  t.same(ftl, [], 'nothing compiled by FTL while only pings ran')
  for (const f of ['pong', 'quickPong']) t.ok(new RegExp(`^Optimized ${f}#.*\\(NeverFTLOptimize\\).* using DFG`, 'm').test(p.output()), `${f}: ran hot, DFG-compiled and marked never-FTL:\n${compiles(p.output(), ['data', f, 'direct']).join('\n')}`)
  t.notOk(p.mqtt.some((m) => m.closed), 'no device was closed')
})

t.test('the same thresholds do compile other hot code with FTL (the test above can see FTL)', async (t) => {
  if (!bun) return skipOrFail(t, 'bun is not installed (npm package bun)')
  const p = await idleBroker(t)
  await sleep(3000)
  t.ok(/using FTL/.test(p.output()), 'FTL compiled something while the sessions connected')
})
