// Starting and stopping the broker, the same on every runtime: options from argv and the
// config file, logging to stderr, listeners, the housekeeping tick, and signals
// (SIGINT/SIGTERM: stop accepting, flush, close, exit; SIGUSR2: lame duck; SIGUSR1: reopen
// the log file; SIGHUP: reload).

import { readFileSync } from 'node:fs'
import { totalmem } from 'node:os'
import process from 'node:process'
import { acceptMqtt, MqttConn, startMqtt } from '../adapters/mqtt/index.ts'
import { acceptNats, NatsClient } from '../adapters/nats/index.ts'
import { Parser } from '../adapters/nats/parser.ts'
import { Client } from '../src/lifecycle.ts'
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
import { guardAccept, guardDial, guardHost, internalErrors, logInternal, onQuietBurstEnd, type Accept, type GuardedAccept, type Listener, type Runtime } from './runtime.ts'
import { listenNet } from './net.ts'
import { writePidFile, writePortsFile, type Bound } from './pidports.ts'
import { startSystemd } from './notify.ts'
import { logFile, sendSignal, signalArg, stderrLine } from './signals.ts'
import { enterLameDuck, reloadLameDuck, uplinkFlushed } from '../src/lameduck.ts'
import { reloadStall } from '../src/stall.ts'
import { cpuSeconds, processStats } from './proc.ts'
import { nodeFiles } from './files.ts'
import { Store } from '../src/store/store.ts'
import { Outbound } from '../src/outbound.ts'
import { openMqttStore } from '../adapters/mqtt/persist.ts'
import { serverTls, tlsReloader, type ServerTls } from './tls.ts'
import { listenWebsocket } from './ws.ts'
import { burstPageOut, logPageOut, logSettledPageOut, logTrim, rss, schedulePageOut, settledPageOut, type PageOutResult } from './pageout.ts'
import { pageStatus } from '../src/status-page.ts'

/** How long a stopping broker waits for sockets to flush before it exits anyway. */
const STOP_GRACE_MS = 2000

export async function main(rt: Runtime, argv: string[]): Promise<void> {
  // --signal CMD[=PID] talks to a running sprig instead of starting one (nats-server's flag).
  const signal = signalArg(argv)
  if (signal !== undefined) {
    const err = sendSignal(signal)
    return err === '' ? undefined : die(err)
  }
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
  let file: ReturnType<typeof logFile> | null = null
  if (opts.log_file !== '') {
    try {
      file = logFile(opts.log_file)
    } catch (e) {
      return die(`config error: log_file: cannot open ${opts.log_file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`)
    }
  }
  const log = createLogger({ level: opts.log_level, time: opts.logtime, sink: file?.sink ?? stderrLine })
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
  // Type=notify: READY=1 now that every listener accepts (the uplink is not waited for).
  const sd = await startSystemd(b.srv, b.uplink, process.env, log)
  let stopping = false
  const stop = async (sig: string): Promise<void> => {
    if (stopping) return
    stopping = true
    log.info(`Trapped "${sig}" signal`)
    sd?.stopping()
    await b.stop()
    log.info('Server Exiting..')
    process.exit(0)
  }
  process.on('SIGINT', () => void stop('SIGINT'))
  process.on('SIGTERM', () => void stop('SIGTERM'))
  process.on('SIGHUP', () => {
    log.info('Trapped "SIGHUP" signal')
    if (loaded.configFile === undefined) return log.error('Failed to reload server configuration: can only reload config when a file is provided using -c or --config')
    sd?.reloading()
    reloadConfig(b, argv, log)
    sd?.ready()
  })
  // Deno 2.9 opens its inspector (127.0.0.1:9229, no authentication) on SIGUSR1 once the
  // process listens for that signal, so there sprig leaves SIGUSR1 alone (docs/runtimes.md).
  // On Node, the listener also keeps SIGUSR1 from starting Node's inspector.
  if (rt.name.startsWith('deno')) {
    if (file !== null) log.warn('On Deno, SIGUSR1 (log reopen) is not handled: rotate log_file with copytruncate')
  } else {
    process.on('SIGUSR1', () => {
      log.info('Trapped "SIGUSR1" signal')
      if (file === null) return log.info('Not logging to a file (log_file): nothing to reopen')
      const err = file.reopen()
      if (err !== null) log.error(`Failed to reopen the log file: ${err}`)
      else log.info(`Reopened log file ${opts.log_file}`)
    })
  }
  process.on('SIGUSR2', () => {
    log.info('Trapped "SIGUSR2" signal')
    if (stopping) return
    const started = enterLameDuck(b.srv, {
      stopAccepting: () => b.stopAccepting(),
      finish: () => {
        if (stopping) return
        stopping = true
        sd?.stopping('Lame duck: stopping')
        void uplinkFlushed(b.srv, b.uplink).then(async () => {
          await b.stop()
          log.info('Server Exiting..')
          process.exit(0)
        })
      },
    })
    if (started) sd?.status('Lame duck')
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
  /** The WebSocket listener's port, or 0 without a websocket block. */
  readonly wsPort: number
  /** The leaf uplink (one Remote per leafnodes.remotes entry), or null without remotes. */
  readonly uplink: Uplink | null
  /** Stop accepting, flush and close every connection, wait (bounded) for sockets to close. */
  stop(): Promise<void>
  /** Close the client listeners (NATS, MQTT); monitoring stays (lame duck). */
  stopAccepting(): void
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
  if (opts.pid_file !== '') writePidFile(opts.pid_file)
  // Exceptions from adapter and core code are logged and close only their connection (runtime.ts).
  const srv = new Server(opts, guardHost(rt.host, log), log)
  srv.status.set('internal_errors', () => internalErrors.count)
  srv.proc = processStats()
  srv.status.set('page', () => pageStatus(srv)) // what the status page needs beyond nats-server's fields
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
  const guard = (a: Accept): GuardedAccept => guardAccept(a, log)
  // Password hashes are checked on worker threads, started on the first check.
  const pool = bcryptPool(log)
  srv.bcrypt = pool
  // TLS settings are read and checked before anything listens. TLS listeners are node:net +
  // node:tls (Deno's native TLS cannot verify client certificates), except where TLS comes
  // first on Bun: Bun.listen's own TLS, at about half the memory per idle connection.
  const refused = (line: string): void => log.error(line)
  const listenSecure = (host: string, port: number, accept: Accept, st: ServerTls): Promise<Listener> =>
    st.mode === 'first' && rt.listenTls ? rt.listenTls(host, port, accept, st) : listenNet(host, port, accept, st)
  const mo = mqttOptions(opts)
  const natsTls = opts.tls && serverTls(opts.tls, 'tls', opts.tls.handshake_first ? 'first' : opts.allow_non_tls ? 'mixed' : 'after-info', refused)
  const mqttTls = mo.enabled && mo.tls ? serverTls(mo.tls, 'mqtt.tls', 'first', refused) : undefined
  if ((natsTls || mqttTls) && process.env.SPRIG_NET === 'native') log.info('SPRIG_NET=native: TLS listeners use node:net and node:tls')
  if (rt.listenTls && (natsTls?.mode === 'first' || mqttTls)) log.info(`${rt.name}: TLS-first listeners on the runtime's own TLS (SPRIG_NET=node: node:tls)`)
  const nats = natsTls
    ? await listenSecure(opts.host, opts.port, guard((wire) => acceptNats(srv, wire)), natsTls)
    : await rt.listen(opts.host, opts.port, guard((wire) => acceptNats(srv, wire)))
  // Port 0 asks the OS for a free port; INFO must then carry the real one.
  srv.opts = { ...opts, port: nats.port }
  const listeners: Listener[] = [nats]
  let mqttPort = 0
  let mqttTlsPort = 0
  if (mo.enabled) {
    const host = mo.host || opts.host
    // Validation decided which port speaks what (schema.ts mqttListeners).
    try {
      if (mo.plain) {
        const mqtt = await rt.listen(host, mo.port, guard((wire) => acceptMqtt(srv, wire)))
        listeners.push(mqtt)
        mqttPort = mqtt.port
      }
      if (mqttTls) {
        const mqtts = await listenSecure(host, mo.tls_port, guard((wire) => acceptMqtt(srv, wire)), mqttTls)
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
  const clientListeners = listeners.slice() // every listener so far is a client one
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
  const wsPort = opts.websocket ? await websocket(srv, opts, guard, listeners, refused) : 0
  // -1 is nats-server's random port; 0 there means no monitoring listener.
  const httpPort = opts.http_port !== 0 ? await monitor('http', Math.max(0, opts.http_port)) : 0
  const httpsPort = opts.https_port !== 0 && natsTls ? await monitor('https', Math.max(0, opts.https_port), natsTls) : 0
  srv.opts = { ...srv.opts, http_port: httpPort, https_port: httpsPort }
  // What the housekeeping tick runs for every session each second, and what an idle device's
  // PINGREQ (a NATS client's PING) runs: cheap, but with thousands of idle devices hot enough
  // for Bun's top tier, whose compiler is then paged in again after every quiet burst
  // (targets/bun.ts keepFromTopTier). The rest of a read stays apart, for the top tier under
  // load. (writeDeadline, pong and quickPong are not public: reached by name.)
  rt.keepFromTopTier?.(
    [
      ...[Server.prototype.tick, Client.prototype['writeDeadline'], MqttConn.prototype.tick, NatsClient.prototype.tick],
      ...[MqttConn.prototype.data, MqttConn.prototype['pong'], NatsClient.prototype.data, NatsClient.prototype['quickPong'], Parser.prototype.atLineStart],
      ...[Client.prototype.answerKeepalive, Outbound.prototype.direct],
    ],
    [MqttConn.prototype.read, NatsClient.prototype.read],
  )
  srv.start()
  const lag = watchEventLoop(srv)
  const trim = rt.trim
  const po = rt.pageOut
  const settled = po
    ? settledPageOut(srv.host, () => rss('File'), cpuSeconds, () => {
        if (trim) logTrim(trim(), log, 'Code paged in since the last page-out')
        logSettledPageOut(po.run(), log)
      }, log)
    : null
  /** Start-up's and a burst's page-out: each starts the settled one's wait again, with a follow-up. */
  const pageOutNow = (): PageOutResult => {
    const r = po!.run()
    settled?.reset('error' in r ? undefined : r.after)
    return r
  }
  const pageOut = po ? schedulePageOut(srv.host, () => srv.router.traffic.in_msgs + srv.counters.total_connections, () => logPageOut(pageOutNow(), log), po.after) : null
  const burstOut = po ? burstPageOut(pageOutNow, log, undefined, { every: (ms, fn) => srv.host.every(ms, fn), cpuSeconds }) : null
  if (trim || burstOut) {
    onQuietBurstEnd(() => {
      if (trim) logTrim(trim(), log)
      burstOut?.burst()
    })
  }
  log.info(`Listening for client connections on ${opts.host}:${nats.port}`)
  if (natsTls) log.info(natsTls.mode === 'mixed' ? 'TLS available for client connections (plaintext allowed: allow_non_tls)' : `TLS required for client connections${natsTls.mode === 'first' ? ' (TLS handshake first)' : ''}`)
  if (mqttPort !== 0) log.info(`Listening for MQTT clients on ${mo.host || opts.host}:${mqttPort}`)
  if (mqttTlsPort !== 0) log.info(`Listening for MQTT clients on TLS ${mo.host || opts.host}:${mqttTlsPort}`)
  let removePortsFile = (): void => {}
  if (opts.ports_file_dir !== '') {
    const monHost = opts.http_host || opts.host
    const mqttHost = mo.host || opts.host
    const bound: Bound = {
      host: opts.host,
      nats: { port: nats.port, tls: !!natsTls },
      mqtt: [...(mqttPort ? [{ host: mqttHost, port: mqttPort, tls: false }] : []), ...(mqttTlsPort ? [{ host: mqttHost, port: mqttTlsPort, tls: true }] : [])],
      monitoring: [...(httpPort ? [{ host: monHost, port: httpPort, tls: false }] : []), ...(httpsPort ? [{ host: monHost, port: httpsPort, tls: true }] : [])],
      websocket: wsPort && opts.websocket ? [{ host: opts.websocket.host || opts.host, port: wsPort, tls: !!opts.websocket.tls }] : [],
    }
    try {
      removePortsFile = writePortsFile(opts.ports_file_dir, bound)
    } catch (e) {
      lag.stop()
      pageOut?.cancel()
      settled?.cancel()
      burstOut?.cancel()
      onQuietBurstEnd(null)
      for (const l of listeners) l.close()
      srv.shutdown()
      pool.close()
      throw e
    }
  }
  // Every listener is bound: /healthz says ready (never waiting for the uplink).
  srv.phase = 'ready'
  // Uplinks start once local clients can connect: hub traffic has somewhere to go.
  const uplink = startUplink(srv, guardDial(dialNet, log), (p) => readFileSync(p, 'utf8'), store)
  return {
    srv,
    port: nats.port,
    mqttPort,
    mqttTlsPort,
    httpPort,
    httpsPort,
    wsPort,
    uplink,
    reloaders: [(next) => reloadAuth(srv, next), tlsReloader(srv, { nats: natsTls || undefined, mqtt: mqttTls }), (next) => reloadUplink(srv, uplink, next), (next) => reloadLameDuck(srv, next), (next) => reloadStall(srv, next)],
    stopAccepting() {
      for (const l of clientListeners) closeOnce(l)
    },
    async stop() {
      removePortsFile()
      lag.stop()
      pageOut?.cancel()
      settled?.cancel()
      burstOut?.cancel()
      onQuietBurstEnd(null)
      uplink?.stop()
      store?.close()
      for (const l of listeners) closeOnce(l)
      srv.shutdown()
      pool.close()
      const deadline = performance.now() + STOP_GRACE_MS
      while (listeners.some((l) => l.open() > 0) && performance.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    },
  }
}

const closedListeners = new WeakSet<Listener>()

/** Listener.close() once: lame duck closes the client listeners before stop() closes all. */
function closeOnce(l: Listener): void {
  if (closedListeners.has(l)) return
  closedListeners.add(l)
  l.close()
}

/** The WebSocket listener: NATS on any path, MQTT on /mqtt unless MQTT is off. Its port. */
async function websocket(srv: Server, opts: Options, guard: (a: Accept) => Accept, listeners: Listener[], refused: (line: string) => void): Promise<number> {
  const wo = opts.websocket!
  const host = wo.host || opts.host
  try {
    const st = wo.tls ? serverTls(wo.tls, 'websocket.tls', 'first', refused) : undefined
    const mqtt = mqttOptions(opts).enabled ? guard((wire) => acceptMqtt(srv, wire)) : null
    const l = await listenWebsocket(srv, wo, host, { nats: guard((wire) => acceptNats(srv, wire)), mqtt }, st)
    listeners.push(l)
    srv.log.info(`Listening for websocket clients on ${st ? 'wss' : 'ws'}://${host}:${l.port}`)
    if (!st) srv.log.warn('Websocket not configured with TLS. DO NOT USE IN PRODUCTION!')
    return l.port
  } catch (e) {
    for (const l of listeners) l.close()
    throw e
  }
}

function die(msg: string): void {
  process.stderr.write(msg + '\n')
  process.exit(1)
}
