// A/B of sprig bundles by the server's CPU per message (not rates, which a shared machine
// makes noisy): each bundle in turn, `--rounds` times, publish-only (or pub-sub) over the
// bench's raw client, CPU seconds from /proc/PID/stat. For profiling work on one row.
//   bun test/bench/ab.ts [--rounds 3] [--row publish-only|pub-sub] [--size 16] [--msgs N] [--runtime bun] a.js b.js ... [nats-server]
import { close, connectNats, msgFrameSize, publish, startCounting, subscribe, waitUntil } from './nats-conn.ts'
import { freePort, HOST, launch, procCpuSeconds, stop, waitReady, which } from './proc.ts'
import { runtimeBin } from '../helpers/bins.ts'

const args = process.argv.slice(2)
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`)
  if (i < 0) return dflt
  const v = args[i + 1]!
  args.splice(i, 2)
  return v
}
const rounds = Number(opt('rounds', '3'))
const row = opt('row', 'publish-only')
const size = Number(opt('size', '16'))
const msgs = Number(opt('msgs', size > 100 ? '800000' : '4000000'))
const rt = opt('runtime', 'bun')
const bin = rt === 'node' ? which('node') : runtimeBin(rt as 'bun' | 'deno')
const bundles = args
if (!bundles.length) throw new Error('usage: bun test/bench/ab.ts [options] a.js b.js ...')

const res = new Map<string, number[]>()
for (let r = 1; r <= rounds; r++) {
  for (const b of bundles) {
    const port = await freePort()
    // `nats-server` as a "bundle": the reference, for scale.
    const argv = b === 'nats-server' ? [which('nats-server'), '-a', HOST, '-p', String(port)] : [...(rt === 'deno' ? [bin, 'run', '-A', b] : [bin, b]), '-a', HOST, '-p', String(port), '--mqtt-port', '0']
    const p = launch(argv, process.cwd())
    await waitReady(p, port, 'nats')
    const addr = { host: HOST, port }
    const sub = row === 'pub-sub' ? await connectNats(addr) : null
    let k: ReturnType<typeof startCounting> | null = null
    if (sub) {
      await subscribe(sub, 'bench.pub', '1')
      const f = msgFrameSize('bench.pub', '1', size)
      k = startCounting(sub, f.header, f.frame)
    }
    const pub = await connectNats(addr)
    const cpu0 = procCpuSeconds(p.pid)
    await publish(pub, { subject: 'bench.pub', payload: size, count: msgs, pingEvery: Math.min(10_000, Math.floor((1 << 20) / (size + 20))), maxAhead: 2, timeoutMs: 15_000 })
    if (sub && k) await waitUntil([sub], () => k!.frames >= msgs, 5000, true)
    const secs = procCpuSeconds(p.pid) - cpu0
    close(pub)
    if (sub) close(sub)
    await stop(p)
    const perM = (secs * 1e6) / msgs
    res.set(b, [...(res.get(b) ?? []), perM])
    process.stderr.write(`  … round ${r} ${b}: ${perM.toFixed(3)} CPU s / 1M msgs\n`)
  }
}
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!
console.log(`${row} ${size} B, ${msgs} msgs, ${rt}, ${rounds} rounds: server CPU s per 1M msgs (median; all rounds)`)
for (const [b, xs] of res) console.log(`  ${b}: ${med(xs).toFixed(3)}  (${xs.map((x) => x.toFixed(3)).join(' ')})`)
