// The client side of `test/bench/conns-vm.ts`, compiled with `bun build --compile` and run inside
// the VM: opens N idle MQTT 3.1.1 connections to HOST:PORT (clean session, keep-alive 0, one
// QoS 0 subscription each), STEP at a time, and after each step, once the broker has been at
// rest for SETTLE_MS, prints the broker's memory from /proc/PID/status as one line:
//   conns <n> {"rssKiB":…,"anonKiB":…,"fileKiB":…} <seconds spent opening so far>
// Then a PINGREQ on every 1,000th connection (all must answer), every connection closed, and the
// memory once more. Exit code 1 on any refused or closed connection.
// Usage: client HOST PORT N BROKER_PID [STEP]

import net from 'node:net'
import { connectPacket, PINGREQ, subscribePacket } from './mqtt-conn.ts'
import { procStatusBytes } from './proc.ts'

const [host = '127.0.0.1', portArg = '1883', nArg = '1000', pidArg = '0', stepArg = '10000'] = process.argv.slice(2)
const port = Number(portArg)
const N = Number(nArg)
const pid = Number(pidArg)
const STEP = Number(stepArg)
const SETTLE_MS = 3000
/** Handshakes in flight at once. */
const CONC = 200
/** CONNACK (4 bytes) and SUBACK (5). */
const REPLY_BYTES = 9
/** First source port: each connection binds its own (see open()). */
const FIRST_PORT = 10000

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function hello(i: number): Buffer {
  return Buffer.concat([connectPacket(`d${i}`, 0), subscribePacket(1, `cmd/d${i}`, 0)])
}

function mem(): string {
  const kib = (field: 'VmRSS' | 'RssAnon' | 'RssFile'): number => procStatusBytes(pid, field) / 1024
  return JSON.stringify({ rssKiB: kib('VmRSS'), anonKiB: kib('RssAnon'), fileKiB: kib('RssFile') })
}

const socks: net.Socket[] = []

function open(i: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let got = 0
    // An explicit source port: the kernel's search for a free ephemeral port grows with every
    // connection held, and under emulation it outlasted the broker's connect deadline past 32k.
    const s = net.connect({ host, port, localAddress: host, localPort: FIRST_PORT + i }, () => s.write(hello(i)))
    s.on('data', (d: Buffer) => {
      got += d.length
      if (got >= REPLY_BYTES) resolve()
    })
    s.on('error', (e) => reject(new Error(`connection ${i}: ${e.message}`)))
    s.on('close', () => {
      if (got < REPLY_BYTES) reject(new Error(`connection ${i} closed after ${got} bytes`))
    })
    socks.push(s)
  })
}

async function main(): Promise<void> {
  if (FIRST_PORT + N > 65536) throw new Error(`at most ${65536 - FIRST_PORT} connections (one source port each)`)
  await sleep(SETTLE_MS)
  console.log(`conns 0 ${mem()} 0`)
  let opening = 0
  let next = 0
  while (next < N) {
    const upto = Math.min(N, next + STEP)
    const t0 = performance.now()
    while (next < upto) {
      const batch: Promise<void>[] = []
      for (let k = 0; k < CONC && next < upto; k++) batch.push(open(next++))
      await Promise.all(batch)
    }
    opening += (performance.now() - t0) / 1000
    await sleep(SETTLE_MS)
    console.log(`conns ${next} ${mem()} ${opening.toFixed(1)}`)
  }
  const sample = socks.filter((_, i) => i % 1000 === 0)
  let answered = 0
  await Promise.all(
    sample.map(
      (s) =>
        new Promise<void>((resolve) => {
          s.once('data', () => {
            answered++
            resolve()
          })
          s.write(PINGREQ)
          setTimeout(resolve, 10_000)
        }),
    ),
  )
  console.log(`pingresp ${answered} of ${sample.length}`)
  for (const s of socks) s.destroy()
  await sleep(SETTLE_MS)
  console.log(`closed ${mem()}`)
  if (answered < sample.length) process.exitCode = 1
}

main().catch((e: Error) => {
  console.log(`client error: ${e.message}`)
  process.exit(1)
})
