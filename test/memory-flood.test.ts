// issue 9: the memory budget under the flood that used to take sprig from 44 MB to 2.6 GB.
// The bundle runs under Node with max_memory 64 MB; 200 NATS subscribers subscribe and then
// stop reading, one publisher sends 1 KiB messages as fast as it can for 10 s, and a separate
// pair of clients keeps doing request/reply round trips on another subject. The broker's
// peak RSS (VmHWM) must stay within its idle footprint + max_memory + 50%, and no round trip
// may take 2 s.

import { readFileSync } from 'node:fs'
import net from 'node:net'
import t from 'tap'
import { freshBundle } from './helpers/bins.ts'
import { freePort, spawnServer, type Proc } from './helpers/peers.ts'
import { subscribedRaw } from './helpers/raw.ts'

const MAX_MEMORY = 64 * 1024 * 1024
const SUBSCRIBERS = 200
const FLOOD_MS = 10_000
const PAYLOAD = 'x'.repeat(1024)

/** VmRSS and VmHWM of a process, in bytes. */
function mem(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? 0) * 1024
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
}

const mb = (n: number): string => `${(n / 1048576).toFixed(1)} MB`

t.test('200 stalled subscribers and a flooding publisher stay within max_memory', { skip: process.platform !== 'linux' ? 'reads /proc' : false }, async (t) => {
  const bundle = freshBundle()
  const port = await freePort()
  const http = await freePort()
  const args = [bundle, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0', '-m', String(http), '--max-memory', String(MAX_MEMORY)]
  const p: Proc = await spawnServer(process.execPath, args, port, { NODE_OPTIONS: '', NODE_V8_COVERAGE: undefined })
  const sockets: net.Socket[] = []
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await p.stop()
  })
  const pid = p.proc.pid!
  await new Promise((r) => setTimeout(r, 500))
  const idle = mem(pid).rss

  // The pair: a responder and a requester on their own subjects.
  const responder = await subscribedRaw(port, 'SUB rt.req 1\r\n')
  const requester = await subscribedRaw(port, 'SUB rt.rep 1\r\n')
  sockets.push(responder, requester)
  let rbuf = ''
  responder.on('data', (d) => {
    rbuf += d.toString('latin1')
    let m: RegExpExecArray | null
    while ((m = /MSG rt\.req 1 rt\.rep (\d+)\r\n(\d+)\r\n/.exec(rbuf))) {
      rbuf = rbuf.slice(m.index + m[0].length)
      responder.write(`PUB rt.rep ${m[2]!.length}\r\n${m[2]}\r\n`)
    }
  })

  // The stalled subscribers: subscribed, then never read again.
  for (let i = 0; i < SUBSCRIBERS; i++) {
    const s = await subscribedRaw(port, 'SUB flood 1\r\n')
    s.pause()
    sockets.push(s)
  }

  // The publisher: as fast as the socket takes it.
  const pub = await subscribedRaw(port, '')
  sockets.push(pub)
  pub.on('data', () => {}) // PINGs and -ERRs, if any
  const batch = `PUB flood ${PAYLOAD.length}\r\n${PAYLOAD}\r\n`.repeat(64)
  let flooding = true
  let published = 0
  const flood = (): void => {
    while (flooding && !pub.destroyed) {
      published += 64
      if (!pub.write(batch)) {
        pub.once('drain', flood)
        return
      }
      if (published % 4096 === 0) return void setImmediate(flood)
    }
  }
  const start = Date.now()
  flood()

  // Round trips while the flood runs.
  let worst = 0
  const slow: string[] = []
  let trips = 0
  let late = 0
  const pending = new Map<string, number>()
  let qbuf = ''
  requester.on('data', (d) => {
    qbuf += d.toString('latin1')
    let m: RegExpExecArray | null
    while ((m = /MSG rt\.rep 1 \d+\r\n(\d+)\r\n/.exec(qbuf))) {
      qbuf = qbuf.slice(m.index + m[0].length)
      const sent = pending.get(m[1]!)
      if (sent === undefined) continue
      pending.delete(m[1]!)
      worst = Math.max(worst, Date.now() - sent)
      if (Date.now() - sent > 500) slow.push(`${sent - start}+${Date.now() - sent}`)
      trips++
    }
  })
  let seq = 0
  const ticker = setInterval(() => {
    const id = String(++seq)
    pending.set(id, Date.now())
    requester.write(`PUB rt.req rt.rep ${id.length}\r\n${id}\r\n`)
    for (const sent of pending.values()) if (Date.now() - sent > 2000) late++
  }, 100)
  let peak = 0
  const sampler = setInterval(() => (peak = Math.max(peak, mem(pid).rss)), 100)

  await new Promise((r) => setTimeout(r, FLOOD_MS))
  flooding = false
  clearInterval(ticker)
  await new Promise((r) => setTimeout(r, 1000)) // the last round trips come back
  clearInterval(sampler)
  const { hwm } = mem(pid)

  const varz = (await (await fetch(`http://127.0.0.1:${http}/varz`)).json()) as { slow_consumers: number; sprig: Record<string, number> }
  const s = varz.sprig
  t.comment(`idle ${mb(idle)}, peak ${mb(Math.max(hwm, peak))}, published ${published}, round trips ${trips}, worst ${worst} ms`)
  t.comment(`varz: mem_held ${s.mem_held}, pauses ${s.mem_pauses}, closes ${s.mem_closes}, slow_consumers ${varz.slow_consumers}`)
  if (slow.length > 0) t.comment(`slow round trips (sent at ms after the flood began + took ms): ${slow.join(' ')}`)
  t.comment(p.output().split('\n').filter((l) => l.includes('Memory budget')).slice(0, 12).join('\n'))
  t.equal(s.max_memory, MAX_MEMORY, '/varz shows max_memory')
  t.ok(s.mem_pauses > 0, 'the publisher was paused')
  t.ok(varz.slow_consumers > 0, 'stalled subscribers were closed as slow consumers')
  t.ok(published > 1000, 'the publisher got to publish')
  const bound = idle + MAX_MEMORY * 1.5
  t.ok(hwm <= bound, `peak RSS ${mb(hwm)} within idle ${mb(idle)} + max_memory + 50% (${mb(bound)})`)
  t.ok(trips >= 50, `round trips kept going (${trips})`)
  t.equal(pending.size, 0, 'every request got its reply')
  t.equal(late, 0, 'no round trip took 2 s')
  t.ok(worst < 2000, `worst round trip ${worst} ms`)
})
