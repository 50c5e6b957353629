// A raw TCP conversation with a NATS-protocol server: read INFO, send bytes (optionally in
// several pieces), collect everything that comes back for a while, and note whether the
// server closed the connection.

import net from 'node:net'

export interface Exchange {
  info: Record<string, unknown>
  /** Everything after the INFO line. */
  out: string
  closed: boolean
}

export function exchange(port: number, parts: string | (string | Uint8Array)[], waitMs = 300, gapMs = 20): Promise<Exchange> {
  const list = typeof parts === 'string' ? [parts] : parts
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1')
    let buf = ''
    let info: Record<string, unknown> | null = null
    let closed = false
    s.on('error', () => {})
    s.on('close', () => (closed = true))
    s.on('data', (d) => {
      buf += d.toString('latin1')
      if (info === null) {
        const i = buf.indexOf('\r\n')
        if (i < 0) return
        const line = buf.slice(0, i)
        buf = buf.slice(i + 2)
        if (!line.startsWith('INFO ')) return reject(new Error(`expected INFO, got ${line}`))
        info = JSON.parse(line.slice(5))
        void send()
      }
    })
    async function send(): Promise<void> {
      for (const p of list) {
        if (closed) break
        s.write(p)
        if (list.length > 1) await new Promise((r) => setTimeout(r, gapMs))
      }
      setTimeout(() => {
        s.destroy()
        resolve({ info: info!, out: buf, closed })
      }, waitMs)
    }
  })
}

/** A NATS connection that has read INFO (the server accepted it), for tests that only need it open. */
export const connectRaw = (port: number): Promise<net.Socket> =>
  new Promise((ok, fail) => {
    const s = net.createConnection({ host: '127.0.0.1', port })
    s.once('data', () => ok(s))
    s.once('error', fail)
  })

/** A NATS connection that has sent CONNECT, then `lines`, and seen the PONG after them (it stays open). */
export async function subscribedRaw(port: number, lines: string): Promise<net.Socket> {
  const s = net.connect(port, '127.0.0.1')
  s.on('error', () => {})
  let seen = ''
  await new Promise<void>((resolve, reject) => {
    s.on('data', function onData(d) {
      seen += d.toString('latin1')
      if (seen.includes('PONG\r\n')) {
        s.off('data', onData)
        resolve()
      }
    })
    s.once('error', reject)
    s.write(`CONNECT {"verbose":false,"pedantic":false}\r\n${lines}PING\r\n`)
  })
  return s
}
