// Starting and stopping the broker, the same on every runtime: options from argv and the
// config file, logging to stderr, listeners, the housekeeping tick, and signals
// (SIGINT/SIGTERM: stop accepting, flush, close, exit).

import { readFileSync } from 'node:fs'
import process from 'node:process'
import { acceptMqtt, startMqtt } from '../adapters/mqtt/index.ts'
import { acceptNats } from '../adapters/nats/index.ts'
import { listenMonitor } from './http.ts'
import { ConfigError, loadOptions } from '../src/config.ts'
import { createLogger, type Logger } from '../src/log.ts'
import { mqttOptions, type Options } from '../src/options.ts'
import { Server, VERSION } from '../src/server.ts'
import type { Listener, Runtime } from './runtime.ts'

/** How long a stopping broker waits for sockets to flush before it exits anyway. */
const STOP_GRACE_MS = 2000

export async function main(rt: Runtime, argv: string[]): Promise<void> {
  let loaded
  try {
    loaded = loadOptions({ argv, readFile: (p) => readFileSync(p, 'utf8'), env: process.env })
  } catch (e) {
    return die(e instanceof ConfigError ? e.message : `sprig: ${(e as Error).message}`)
  }
  if ('help' in loaded) {
    process.stdout.write(loaded.help + '\n')
    return
  }
  if ('version' in loaded) {
    process.stdout.write(`sprig ${VERSION}\n`)
    return
  }
  const opts = loaded.options
  const log = createLogger({ level: opts.log_level, time: opts.logtime, sink: (l) => process.stderr.write(l + '\n') })
  log.info(`Starting sprig version ${VERSION} on ${rt.name}`)
  if (loaded.configFile) log.info(`Using configuration file: ${loaded.configFile}`)
  let b: Broker
  try {
    b = await serve(rt, opts, log)
  } catch (e) {
    return die(`sprig: ${(e as Error).message}`)
  }
  log.info(`Server id is ${b.srv.id}`)
  log.info('Server is ready')
  let stopping = false
  const stop = async (sig: string): Promise<void> => {
    if (stopping) return
    stopping = true
    log.info(`Trapped "${sig}" signal`)
    await b.stop()
    log.info('Server Exiting..')
    process.exit(0)
  }
  process.on('SIGINT', () => void stop('SIGINT'))
  process.on('SIGTERM', () => void stop('SIGTERM'))
}

export interface Broker {
  readonly srv: Server
  /** The NATS listener's port (the real one when options asked for port 0). */
  readonly port: number
  /** The MQTT listener's port, or 0 when MQTT is disabled. */
  readonly mqttPort: number
  /** The monitoring listener's port, or 0 when there is none. */
  readonly httpPort: number
  /** Stop accepting, flush and close every connection, wait (bounded) for sockets to close. */
  stop(): Promise<void>
}

/** Starts the listeners and the housekeeping tick for these options. Tests use it too. */
export async function serve(rt: Runtime, opts: Options, log: Logger): Promise<Broker> {
  const srv = new Server(opts, rt.host, log)
  const nats = await rt.listen(opts.host, opts.port, (wire) => acceptNats(srv, wire))
  // Port 0 asks the OS for a free port; INFO must then carry the real one.
  srv.opts = { ...opts, port: nats.port }
  const listeners: Listener[] = [nats]
  let mqttPort = 0
  const mo = mqttOptions(opts)
  if (mo.enabled) {
    const host = mo.host || opts.host
    let mqtt: Listener
    try {
      mqtt = await rt.listen(host, mo.port, (wire) => acceptMqtt(srv, wire))
    } catch (e) {
      nats.close()
      throw e
    }
    listeners.push(mqtt)
    mqttPort = mqtt.port
    startMqtt(srv) // the $SPRIG.mqtt.* services answer NATS before any device connects
    srv.opts = { ...srv.opts, mqtt: { ...mo, port: mqttPort } }
  }
  let httpPort = 0
  if (opts.http_port !== 0) {
    const host = opts.http_host || opts.host
    try {
      const mon = await listenMonitor(srv, host, opts.http_port)
      listeners.push(mon)
      httpPort = mon.port
      srv.opts = { ...srv.opts, http_port: httpPort }
      log.info(`Starting http monitor on ${host}:${httpPort}`)
    } catch (e) {
      for (const l of listeners) l.close()
      throw e
    }
  }
  srv.start()
  log.info(`Listening for client connections on ${opts.host}:${nats.port}`)
  if (mqttPort !== 0) log.info(`Listening for MQTT clients on ${mo.host || opts.host}:${mqttPort}`)
  return {
    srv,
    port: nats.port,
    mqttPort,
    httpPort,
    async stop() {
      for (const l of listeners) l.close()
      srv.shutdown()
      const deadline = Date.now() + STOP_GRACE_MS
      while (listeners.some((l) => l.open() > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    },
  }
}

function die(msg: string): void {
  process.stderr.write(msg + '\n')
  process.exit(1)
}
