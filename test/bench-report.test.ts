// The benchmark's report arithmetic (test/bench/report.ts): CPU seconds per million messages
// per broker process, and ratio columns and targets against several reference servers (the
// gateway rows compare sprig with nats-server and with mosquitto at once).

import t from 'tap'
import type { Scenario } from './bench/model.ts'
import { combineRounds, cpuPerMillion, scenarioTable, summaryTable, type RunResult } from './bench/report.ts'

t.test('CPU per million messages: cpuMsgs over msgs, per role, unknown roles left out', async (t) => {
  t.same(cpuPerMillion({ msgs: 2_000_000 }, { server: 1.5 }), { server: 0.75 })
  t.same(cpuPerMillion({ msgs: 10, cpuMsgs: 500_000 }, { gateway: 1, cloud: NaN }), { gateway: 2 })
  t.equal(cpuPerMillion({ kbPerConn: 3 }, { server: 1 }), undefined, 'a row without messages has none')
  t.equal(cpuPerMillion({ msgs: 0 }, { server: 1 }), undefined)
})

const scenario: Scenario = {
  id: 'gw',
  kind: 'mqtt',
  describe: 'test row',
  metrics: [{ key: 'msgsPerSec', label: 'msgs/s', fmt: (v) => v.toFixed(0), better: 'higher' }],
  headline: 'msgsPerSec',
  target: { perRef: { 'nats-server gw': 1.5, 'mosquitto bridge': 5 }, text: '≥ 1.5× nats, ≥ 5× mosquitto' },
  params: {},
  run: async () => ({}),
}
const cols = [
  { name: 'sprig/bun', reference: false },
  { name: 'nats-server gw', reference: true },
  { name: 'mosquitto bridge', reference: true },
]
function row(server: string, rate: number, cpu: number): RunResult {
  return { scenario: 'gw', server, round: 1, wallMs: 1, metrics: { msgs: 1e6, msgsPerSec: rate }, cpuPerM: { gateway: cpu, cloud: cpu / 2 } }
}

t.test('ratios against each reference, CPU rows per role, targets per reference', async (t) => {
  const met = combineRounds([row('sprig/bun', 300, 1), row('nats-server gw', 150, 2), row('mosquitto bridge', 50, 10)], [scenario])
  const table = scenarioTable(scenario, cols, met)
  t.match(table, /bun\/nats-server\s+bun\/mosquitto/, 'a ratio column per reference')
  t.match(table, /msgs\/s\s+300\s+150\s+50\s+2\.00×\s+6\.00×/)
  t.match(table, /CPU s \/ 1M msgs \(gateway\)\s+1\.00\s+2\.00\s+10\.0\s+2\.00×\s+10\.00×/, 'lower CPU is better: reference ÷ sprig')
  t.match(table, /CPU s \/ 1M msgs \(cloud\)/)
  t.match(summaryTable([scenario], cols, met), /: met/)
  const missed = combineRounds([row('sprig/bun', 300, 1), row('nats-server gw', 150, 2), row('mosquitto bridge', 100, 10)], [scenario])
  t.match(summaryTable([scenario], cols, missed), /MISSED/, '3× mosquitto is short of 5×')
})

t.test('rounds: the median of each role', async (t) => {
  const r = combineRounds([row('sprig/bun', 1, 1), { ...row('sprig/bun', 1, 3), round: 2 }, { ...row('sprig/bun', 1, 9), round: 3 }], [scenario])
  t.same(r[0]!.cpuPerM, { gateway: 3, cloud: 1.5 })
})
