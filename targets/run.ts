// Starting and stopping the broker, the same on every runtime: options from argv and the
// config file, logging to stderr, listeners, the housekeeping tick, and signals
// (SIGINT/SIGTERM: stop accepting, flush, close, exit).

import { readFileSync } from 'node:fs'
import { totalmem } from 'node:os'
import process from 'node:process'
import { acceptMqtt, startMqtt } from '../adapters/mqtt/index.ts'
import { acceptNats } from '../adapters/nats/index.ts'
import { bcryptPool } from './bcrypt.ts'
import { listenMonitor } from './http.ts'
import { watchEventLoop } from './lag.ts'
import { dialNet } from './dial.ts'
import { reloadUplink, startUplink, type Uplink } from '../src/leaf/index.ts'
import { ConfigError, loadOptions } from '../src/config.ts'
import { reloadAuth } from '../src/auth.ts'
import { createLogger, type Logger } from '../src/log.ts'
import { mqttOptions, type Options } from '../src/options.ts'
import { Server, VERSION } from '../src/server.ts'
import { guardAccept, guardDial, guardHost, internalErrors, logInternal, type Accept, type Listener, type Runtime } from './runtime.ts'
import { listenNet } from './net.ts'
import { nodeFiles } from './files.ts'
import { Store } from '../src/store/store.ts'
import { openMqttStore } from '../adapters/mqtt/persist.ts'
import { serverTls, tlsReloader, type ServerTls } from './tls.ts'

/** How long a stopping broker waits for sockets to flush before it exits anyway. */
const STOP_GRACE_MS = 2000

export async function main(rt: Runtime, argv: string[]): Promise<void> {
  let loaded
  try {
    loaded = loadOptions({ argv, readFile: (p) => readFileSync(p, 'utf8'), env: process.env, totalMemory: totalmem() })
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
  // Last resort. Adapter and core code runs behind guards (runtime.ts) that log an exception
  // and close only the connection concerned; anything that still gets here (a runtime's
  // internals, a bug in target code) is logged with its stack and the broker keeps serving:
  // exiting would drop every client over one bug, and no client's bytes may stop the broker.
  const uncaught = (what: string) => (e: unknown) => {
    logInternal(log, 'process', what, e)
    if (!log.enabled('debug')) log.error(`process - ${e instanceof Error && e.stack ? e.stack : String(e)}`)
  }
  process.on('uncaughtException', uncaught('uncaught exception'))
  process.on('unhandledRejection', uncaught('unhandled rejection'))
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
  process.on('SIGHUP', () => {
    log.info('Trapped "SIGHUP" signal')
    if (loaded.configFile === undefined) return log.error('Failed to reload server configuration: can only reload config when a file is provided using -c or --config')
    reloadConfig(b, argv, log)
  })
}

/**
 * SIGHUP: reads the config file (and flags) again and hands the result to each of the
 * broker's reloaders; a config that fails validation, or that any reloader refuses, changes
 * nothing and is logged with its reason. Returns whether it was applied.
 */
export function reloadConfig(b: Broker, argv: string[], log: Logger): boolean {
  const changed: string[] = []
  try {
    const r = loadOptions({ argv, readFile: (p) => readFileSync(p, 'utf8'), env: process.env, totalMemory: totalmem() })
    if (!('options' in r)) return false
    // Every reloader checks before any applies: a refusal leaves everything as it was.
    const steps = b.reloaders.map((f) => f(r.options))
    for (const apply of steps) changed.push(...apply())
  } catch (e) {
    log.error(`Failed to reload server configuration: ${(e as Error).message}`)
    return false
  }
  for (const c of changed) log.info(`Reloaded: ${c}`)
  log.info('Reloaded server configuration')
  return true
}

export interface Broker {
  readonly srv: Server
  /** The NATS listener's port (the real one when options asked for port 0). */
  readonly port: number
  /** The MQTT listener's port, or 0 when MQTT (or its plain listener) is disabled. */
  readonly mqttPort: number
  /** The MQTT TLS listener's port, or 0 without mqtt.tls. */
  readonly mqttTlsPort: number
  /** The monitoring listener's port, or 0 when there is none. */
  readonly httpPort: number
  /** The HTTPS monitoring listener's port, or 0 when there is none. */
  readonly httpsPort: number
  /** The leaf uplink (one Remote per leafnodes.remotes entry), or null without remotes. */
  readonly uplink: Uplink | null
  /** Stop accepting, flush and close every connection, wait (bounded) for sockets to close. */
  stop(): Promise<void>
  /**
   * What a reload (SIGHUP) does, part by part: each takes the re-read options and checks them
   * (reading any files it needs), throwing an Error that names the key to refuse the reload;
   * otherwise it returns the step that applies its part and names what changed. All checks
   * run before any step. Users and permissions are here (src/auth.ts reloadAuth, which also
   * refuses changes to listener addresses); TLS certificates can join the same way.
   */
  readonly reloaders: ((next: Options) => () => string[])[]
}

/** Starts the listeners and the housekeeping tick for these options. Tests use it too. */
export async function serve(rt: Runtime, opts: Options, log: Logger): Promise<Broker> {
  // Exceptions from adapter and core code are logged and close only their connection (runtime.ts).
  const srv = new Server(opts, guardHost(rt.host, log), log)
  srv.status.set('internal_errors', () => internalErrors.count)
  // The store first: a second process on its directory stops here, before any port is taken.
  const store = opts.store ? Store.open(opts.store, nodeFiles, srv.host, log) : null
  if (store) {
    srv.durable = store
    srv.status.set('store', () => store.status())
    log.info(`Store in ${opts.store!.dir}, sync ${store.status().sync}, max ${opts.store!.max_bytes} bytes`)
    // Retained messages and persistent sessions come back before any client can connect.
    if (mqttOptions(opts).enabled) {
      const ps = openMqttStore(srv, store)
      store.sections.set('mqtt', () => ps.status())
    }
  }
  const guard = (a: Accept): Accept => guardAccept(a, log)
  // Password hashes are checked on worker threads, started on the first check.
  const pool = bcryptPool(log)
  srv.bcrypt = pool
  // TLS settings are read and checked before anything listens. TLS listeners are node:net +
  // node:tls on every runtime (the native socket APIs cannot verify client certificates).
  const refused = (line: string): void => log.error(line)
  const mo = mqttOptions(opts)
  const natsTls = opts.tls && serverTls(opts.tls, 'tls', opts.tls.handshake_first ? 'first' : 'after-info', refused)
  const mqttTls = mo.enabled && mo.tls ? serverTls(mo.tls, 'mqtt.tls', 'first', refused) : undefined
  if ((natsTls || mqttTls) && process.env.SPRIG_NET === 'native') log.info('SPRIG_NET=native: TLS listeners use node:net and node:tls')
  const nats = natsTls
    ? await listenNet(opts.host, opts.port, guard((wire) => acceptNats(srv, wire)), natsTls)
    : await rt.listen(opts.host, opts.port, guard((wire) => acceptNats(srv, wire)))
  // Port 0 asks the OS for a free port; INFO must then carry the real one.
  srv.opts = { ...opts, port: nats.port }
  const listeners: Listener[] = [nats]
  let mqttPort = 0
  let mqttTlsPort = 0
  if (mo.enabled) {
    const host = mo.host || opts.host
    // A configured mqtt.tls closes the plain port unless mqtt.plain says to keep it.
    const plain = mo.plain ?? !mqttTls
    try {
      if (plain) {
        const mqtt = await (rt.listenMqtt ?? rt.listen)(host, mo.port, guard((wire) => acceptMqtt(srv, wire)))
        listeners.push(mqtt)
        mqttPort = mqtt.port
      }
      if (mqttTls) {
        const mqtts = await listenNet(host, mo.tls_port, guard((wire) => acceptMqtt(srv, wire)), mqttTls)
        listeners.push(mqtts)
        mqttTlsPort = mqtts.port
      }
    } catch (e) {
      for (const l of listeners) l.close()
      throw e
    }
    startMqtt(srv) // the $SPRIG.mqtt.* services answer NATS before any device connects
    // A port that is not open keeps its configured value (a reload compares against it).
    srv.opts = { ...srv.opts, mqtt: { ...mo, port: mqttPort || mo.port, tls_port: mqttTlsPort || mo.tls_port } }
  }
  // Monitoring: http_port, and https_port behind the NATS listener's TLS settings (nats-server's
  // https_port uses the top-level tls block), handshake first; sharing them means a reload
  // renews this certificate too.
  const monitor = async (scheme: string, port: number, tls?: ServerTls): Promise<number> => {
    const host = opts.http_host || opts.host
    try {
      const mon = await listenMonitor(srv, host, port, tls)
      listeners.push(mon)
      log.info(`Starting ${scheme} monitor on ${host}:${mon.port}`)
      return mon.port
    } catch (e) {
      for (const l of listeners) l.close()
      throw e
    }
  }
  const httpPort = opts.http_port !== 0 ? await monitor('http', opts.http_port) : 0
  const httpsPort = opts.https_port !== 0 && natsTls ? await monitor('https', opts.https_port, natsTls) : 0
  srv.opts = { ...srv.opts, http_port: httpPort, https_port: httpsPort }
  srv.start()
  const lag = watchEventLoop(srv)
  log.info(`Listening for client connections on ${opts.host}:${nats.port}`)
  if (natsTls) log.info(`TLS required for client connections${natsTls.mode === 'first' ? ' (TLS handshake first)' : ''}`)
  if (mqttPort !== 0) log.info(`Listening for MQTT clients on ${mo.host || opts.host}:${mqttPort}`)
  if (mqttTlsPort !== 0) log.info(`Listening for MQTT clients on TLS ${mo.host || opts.host}:${mqttTlsPort}`)
  // Uplinks start once local clients can connect: hub traffic has somewhere to go.
  const uplink = startUplink(srv, guardDial(dialNet, log), (p) => readFileSync(p, 'utf8'), store)
  return {
    srv,
    port: nats.port,
    mqttPort,
    mqttTlsPort,
    httpPort,
    httpsPort,
    uplink,
    reloaders: [(next) => reloadAuth(srv, next), tlsReloader(srv, { nats: natsTls || undefined, mqtt: mqttTls }), (next) => reloadUplink(srv, uplink, next)],
    async stop() {
      lag.stop()
      uplink?.stop()
      store?.close()
      for (const l of listeners) l.close()
      srv.shutdown()
      pool.close()
      const deadline = performance.now() + STOP_GRACE_MS
      while (listeners.some((l) => l.open() > 0) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    },
  }
}

function die(msg: string): void {
  process.stderr.write(msg + '\n')
  process.exit(1)
}
