// The TLS row: idle MQTT connections over mutual TLS, the way a gateway's devices connect, on
// sprig's MQTT TLS port (`mqtt { tls_port, tls { verify: true } }`) and on a mosquitto
// listener with `require_certificate true`. The same scenario as mqtt-idle-conns (mqtt-load.ts),
// each connection with the client certificate; the certificates are the tests' own
// (test/helpers/certs.ts), made with openssl when the row runs. Each server also gets a plain TCP port, where
// readiness is checked (as in ws-load.ts).

import { chmodSync, readFileSync } from 'node:fs'
import { buildCerts, type Certs } from '../helpers/certs.ts'
import os from 'node:os'
import type { Addr, Scenario } from './model.ts'
import { mqttScenarios } from './mqtt-load.ts'
import { closeMqtt, connectMqtt } from './mqtt-conn.ts'
import { confFile, HOST, sleep, which } from './proc.ts'
import { combineRounds, scenarioTable, summaryTable, type Column, type RunResult } from './report.ts'
import { runSidePort, type SideServer } from './ws-load.ts'

export interface TlsBenchOpts {
  quick: boolean
  rounds: number
  conns: number
  /** sprig under each runtime: `<runtime> dist/sprig.js`; the config is added here. */
  sprigs: { name: string; cmd: string[]; version: string }[]
  tmp: string
  root: string
  /** mosquitto's settings for the MQTT rows (bench.ts), the listeners added here. */
  mosquittoSettings: string[]
}

export const TLS_IDS = ['tls-mqtt-idle-conns']

/** `--only tls` (or a substring of the row's id containing it) picks the row. */
export function tlsSelected(only: string[]): boolean {
  return !only.length || only.some((o) => o === 'tls' || (o.includes('tls') && TLS_IDS.some((id) => id.includes(o))))
}

/**
 * The tests' certificates (test/helpers/certs.ts): its CA, its server certificate (localhost,
 * 127.0.0.1) and its device certificate, made readable by all, since mosquitto started as root
 * reads them as the user `mosquitto` (throwaway keys, removed when the bench exits).
 */
function makePems(): Certs {
  if (!which('openssl')) throw new Error('openssl not found (apt-get install openssl): no certificates for the TLS row')
  const c = buildCerts()
  chmodSync(c.dir, 0o755)
  for (const f of [c.ca, c.server.cert, c.server.key, c.client.cert, c.client.key]) chmodSync(f, 0o644)
  return c
}

function servers(o: TlsBenchOpts, pem: Certs): { list: SideServer[]; notes: string[] } {
  const list: SideServer[] = []
  const notes: string[] = []
  const conf = (name: string, text: string): string => confFile(o.tmp, name, text, 'test/bench/tls-load.ts')
  const bin = which('mosquitto')
  const mosq = `cafile ${pem.ca}\ncertfile ${pem.server.cert}\nkeyfile ${pem.server.key}\nrequire_certificate true`
  if (bin) {
    list.push({
      name: 'mosquitto',
      kind: 'mqtt',
      reference: true,
      argv: (side, tcp) => [bin, '-c', conf(`tls-mosq-${side}.conf`, `listener ${side} ${HOST}\n${mosq}\nlistener ${tcp} ${HOST}\n${o.mosquittoSettings.join('\n')}`)],
      describe: `${bin} -c <listener {tls} ${HOST}; cafile, certfile, keyfile; require_certificate true; listener {tcp} ${HOST}; the MQTT rows' settings>`,
    })
  } else notes.push('mosquitto not found (apt-get install mosquitto): no reference for the TLS row')
  const tls = `tls { cert_file: "${pem.server.cert}", key_file: "${pem.server.key}", ca_file: "${pem.ca}", verify: true }`
  for (const s of o.sprigs) {
    list.push({
      name: s.name,
      kind: 'mqtt',
      reference: false,
      argv: (side, tcp) => [...s.cmd, '-c', conf(`tls-sprig-${side}.conf`, `host: ${HOST}\nport: ${tcp}\nmqtt { tls_port: ${side}, ${tls} }`)],
      describe: `${s.cmd.join(' ')} -c <host: ${HOST}; port: {tcp}; mqtt { tls_port: {tls}, tls { cert_file, key_file, ca_file, verify: true } }>`,
    })
  }
  return { list, notes }
}

/** Until an MQTT client with the device certificate gets CONNACK over TLS. */
function tlsReady(pems: Addr['tls']): (addr: Addr) => Promise<void> {
  return async (addr) => {
    const end = Date.now() + 10_000
    for (;;) {
      try {
        closeMqtt(await connectMqtt({ ...addr, tls: pems }, 2000))
        return
      } catch (e) {
        if (Date.now() > end) throw new Error(`no MQTT over TLS: ${(e as Error).message}`)
        await sleep(100)
      }
    }
  }
}

/** Runs the TLS row, prints its table. */
export async function runTlsBench(o: TlsBenchOpts): Promise<{ results: RunResult[]; failed: number }> {
  let pem: Certs
  try {
    pem = makePems()
  } catch (e) {
    console.log(`\ntls row: ${(e as Error).message}`)
    return { results: [], failed: 1 }
  }
  const pems = { ca: readFileSync(pem.ca, 'utf8'), cert: readFileSync(pem.client.cert, 'utf8'), key: readFileSync(pem.client.key, 'utf8') }
  const idle = mqttScenarios({ quick: o.quick, conns: o.conns }).find((s) => s.id.startsWith('mqtt-idle-conns'))!
  const scenario: Scenario = {
    ...idle,
    id: `tls-mqtt-idle-conns ${o.conns}`,
    describe: `${idle.describe}; over mutual TLS (P-256 certificates, the client's verified against the CA)`,
    // The memory targets are for plain connections: this row has none.
    target: undefined,
    run: (a: Addr) => idle.run({ ...a, tls: pems }),
  }
  const { list, notes } = servers(o, pem)
  console.log(['', 'tls row (MQTT over mutual TLS):', ...list.map((s) => `           ${s.name} = ${s.describe}`), ...notes.map((n) => `note:      ${n}`), ''].join('\n'))
  const raw: RunResult[] = []
  for (let round = 1; round <= o.rounds; round++) {
    const order = list.map((_, i) => list[(i + round - 1) % list.length]!)
    for (const srv of order) await runSidePort(srv, [scenario], o.root, round, raw, tlsReady(pems))
  }
  const results = combineRounds(raw, [scenario])
  const cols: Column[] = [...list.filter((s) => !s.reference), ...list.filter((s) => s.reference)].map((s) => ({ name: s.name, reference: s.reference }))
  console.log(scenarioTable(scenario, cols, results) + '\n')
  console.log(`== summary (tls)\n${summaryTable([scenario], cols, results)}\n`)
  console.log(`(${os.cpus().length} cores; server and load generator share them)`)
  return { results: raw, failed: raw.filter((r) => r.error).length }
}
