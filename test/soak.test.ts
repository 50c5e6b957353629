// The two-minute soak (test/soak/soak.ts) with 1000 MQTT devices, NATS services and an uplink
// to a real nats-server restarted once: flat RSS after warm-up, event-loop lag p99 < 50 ms, no
// crash, no QoS 1 loss. It takes about two and a half minutes, so it runs in CI (CI=true) or
// with SOAK=1; `npm run soak -- --minutes N` is the long version.

import t from 'tap'
import { inCI } from './helpers/peers.ts'
import { haveHub } from './helpers/hub.ts'
import { soak, table } from './soak/soak.ts'

const SECONDS = Number(process.env.SOAK_SECONDS ?? 120)
const DEVICES = Number(process.env.SOAK_DEVICES ?? 1000)
// Longer than the suite's per-file timeout (package.json tap.timeout) when asked for a longer run.
t.setTimeout(Math.max(180_000, (SECONDS + 150) * 1000))

t.test(`soak: ${SECONDS} s, ${DEVICES} devices`, { timeout: (SECONDS + 120) * 1000 }, async (t) => {
  if (!inCI && !process.env.SOAK) return t.plan(0, 'a two-minute run: set SOAK=1 to run it here (CI always does)')
  if (!haveHub(t)) return
  const r = await soak({ seconds: SECONDS, devices: DEVICES, log: (l) => t.comment(l) })
  t.comment(table(r))
  t.equal(r.crash, null, 'no crash')
  t.equal(r.qos1.telemetryLost + r.qos1.commandsLost, 0, `no QoS 1 loss (${r.qos1.telemetryAcked} telemetry, ${r.qos1.commandsAcked} commands acked)`)
  t.ok(r.lag.overFiftyPct < 1, `event-loop lag p99 ${r.lag.p99Ms} ms < 50 ms (${r.lag.overFiftyPct}% of samples over 50 ms)`)
  t.ok(r.rss.growthMB <= r.rss.allowedMB, `flat RSS: trend ${r.rss.growthMB} MB after warm-up, allowed ${r.rss.allowedMB} MB`)
  t.ok(r.qos1.telemetryAcked > DEVICES, 'the devices published')
  t.ok(r.uplink.hubRestarts >= 1 && r.uplink.okAfterLastRestart > 0, 'the hub restarted and the uplink carried requests again')
  t.same(r.missed, [], 'every target met')
})
