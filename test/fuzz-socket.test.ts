// The socket-level fuzzer (test/fuzz/socket.ts) for a bounded 30 s with a fixed seed: every
// listener of the bundled broker gets mutated and garbage frames, split writes and slowloris
// connections while canary clients keep exchanging messages. No crash, no canary stall.
// `npm run fuzz -- --minutes N` runs it longer (and with a fresh seed each time).

import t from 'tap'
import { fuzz, report } from './fuzz/socket.ts'

const SECONDS = Number(process.env.FUZZ_SOCKET_SECONDS ?? 30)
// Longer than the suite's per-file timeout (package.json tap.timeout) when asked for a longer run.
t.setTimeout(Math.max(180_000, (SECONDS + 150) * 1000))

t.test(`socket fuzzer, ${SECONDS} s`, { timeout: (SECONDS + 120) * 1000 }, async (t) => {
  const r = await fuzz({ seconds: SECONDS, seed: Number(process.env.FUZZ_SEED ?? 20261202), workers: 4, slow: 12, stallMs: 5000 })
  const text = report(r)
  t.comment(text)
  t.equal(r.crash, null, r.crash ? `no crash (${r.crash.listener}: ${r.crash.culprit?.hex ?? 'see the report'})` : 'no crash')
  t.same(r.stalls, [], 'no canary stall')
  t.ok(r.connections.nats > 0 && r.connections.mqtt > 0 && r.connections.http > 0, 'every listener was hit')
  t.ok(r.canary.nats.received > 0 && r.canary.mqtt.received > 0, 'the canaries ran')
})
