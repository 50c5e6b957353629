// nats-server's pid file (`pid_file`, -P) and ports file (`ports_file_dir`): the files an
// operator's scripts and test harnesses read to find a running broker and the ports it got.

import { rmSync, writeFileSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import { join } from 'node:path'
import process from 'node:process'

/** What listens where, once bound (port 0 or -1 resolved). */
export interface Bound {
  host: string
  nats: { port: number; tls: boolean }
  mqtt: { host: string; port: number; tls: boolean }[]
  monitoring: { host: string; port: number; tls: boolean }[]
  websocket: { host: string; port: number; tls: boolean }[]
}

/**
 * The ports file's content, nats-server's shape: `{"nats":["nats://host:port"],
 * "monitoring":["http://host:port"],"websocket":["ws://host:port"]}` (empty lists left out, `tls://` and `https://` for TLS
 * listeners), plus sprig's `mqtt` list (`mqtt://`, `mqtts://`). An address bound to every
 * interface is listed once per interface address, as nats-server does.
 */
export function portsInfo(b: Bound, addrs: (host: string) => string[] = interfaceAddresses): Record<string, string[]> {
  const urls = (scheme: string, host: string, port: number): string[] =>
    addrs(host).map((h) => `${scheme}://${h.includes(':') ? `[${h}]` : h}:${port}`)
  const out: Record<string, string[]> = { nats: urls(b.nats.tls ? 'tls' : 'nats', b.host, b.nats.port) }
  const mon = b.monitoring.flatMap((m) => urls(m.tls ? 'https' : 'http', m.host, m.port))
  if (mon.length > 0) out.monitoring = mon
  const mqtt = b.mqtt.flatMap((m) => urls(m.tls ? 'mqtts' : 'mqtt', m.host, m.port))
  if (mqtt.length > 0) out.mqtt = mqtt
  // nats-server's key and schemes for its websocket listener.
  const ws = b.websocket.flatMap((w) => urls(w.tls ? 'wss' : 'ws', w.host, w.port))
  if (ws.length > 0) out.websocket = ws
  return out
}

/** The addresses a listener on `host` can be reached at: each interface's for 0.0.0.0 and ::. */
function interfaceAddresses(host: string): string[] {
  if (host !== '0.0.0.0' && host !== '::' && host !== '') return [host]
  const all = Object.values(networkInterfaces()).flatMap((l) => l ?? [])
  const wanted = all.filter((a) => host === '::' || a.family === 'IPv4').map((a) => a.address.replace(/%.*$/, ''))
  return wanted.length > 0 ? wanted : [host]
}

/** Writes the process id; a file that cannot be written stops start-up with one line naming it. */
export function writePidFile(file: string): void {
  try {
    writeFileSync(file, String(process.pid))
  } catch (e) {
    throw new Error(`cannot write pid_file ${JSON.stringify(file)}: ${(e as Error).message}`)
  }
}

/** `<dir>/sprig_<pid>.ports`; returns a function that removes it (at stop, as nats-server does). */
export function writePortsFile(dir: string, b: Bound): () => void {
  const file = join(dir, `sprig_${process.pid}.ports`)
  try {
    writeFileSync(file, JSON.stringify(portsInfo(b)))
  } catch (e) {
    throw new Error(`cannot write the ports file in ports_file_dir ${JSON.stringify(dir)}: ${(e as Error).message}`)
  }
  return () => rmSync(file, { force: true })
}
