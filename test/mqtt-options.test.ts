// The MQTT listener's options: the `mqtt` config block, the --mqtt-port flag, defaults, and
// that serve() starts (or skips) the listener and logs where it listens.

import net from 'node:net'
import t from 'tap'
import mqtt from 'mqtt'
import { FLAGS, usage } from '../src/config/cli.ts'
import { loadOptions, validateOptions } from '../src/config.ts'
import { createLogger } from '../src/log.ts'
import { MQTT_DEFAULTS, defaults, mqttOptions, type Options } from '../src/options.ts'
import { node } from '../targets/node.ts'
import { errorOf } from './helpers/config.ts'
import { serve } from '../targets/run.ts'

const F = '/etc/sprig/sprig.json'

function load(argv: string[], files: Record<string, string> = {}): Options {
  const r = loadOptions({ argv, readFile: (p) => files[p] ?? '' })
  if (!('options' in r)) throw new Error('expected options')
  return r.options
}


t.test('defaults: MQTT on, port 1883, on the main host', async (t) => {
  t.same(MQTT_DEFAULTS, {
    enabled: true,
    host: '',
    port: 1883,
    max_ack_pending: 1024,
    retained_max_msgs: 10_000,
    retained_max_bytes: 16 * 1024 * 1024,
    session_expiry: 24 * 3_600_000,
    max_offline_msgs: 1000,
    max_offline_bytes: 1024 * 1024,
    max_sessions: 10_000,
    max_sessions_bytes: 64 * 1024 * 1024,
    topic_alias_maximum: 64,
    max_keepalive: 0,
    max_topic_length: 65535,
    max_topic_levels: 0,
    max_subscriptions: 0,
    tls_port: 0, // with mqtt.tls: the port TLS is on (validation sets it)
    plain: true,
  })
  t.ok(Object.isFrozen(MQTT_DEFAULTS))
  t.equal(load([]).mqtt, undefined, 'no block: the defaults apply')
  t.equal(mqttOptions(load([])), MQTT_DEFAULTS)
  t.equal(mqttOptions(defaults).port, 1883)
})

t.test('the mqtt block merges over the defaults, flags over the file', async (t) => {
  const file = { [F]: '{ "mqtt": { "host": "127.0.0.1", "port": 1884, "retained_max_bytes": "1MB" } }' }
  t.same(load(['-c', F], file).mqtt, { ...MQTT_DEFAULTS, host: '127.0.0.1', port: 1884, retained_max_bytes: 1024 * 1024 })
  t.same(load(['-c', F, '--mqtt-port', '1999'], file).mqtt, { ...MQTT_DEFAULTS, host: '127.0.0.1', port: 1999, retained_max_bytes: 1024 * 1024 })
  t.same(load(['--mqtt-port=0']).mqtt, { ...MQTT_DEFAULTS, port: 0 }, 'port 0: the OS picks')
  t.same(validateOptions({ mqtt: { enabled: false } }).mqtt, { ...MQTT_DEFAULTS, enabled: false })
  t.same(validateOptions({ mqtt: { enabled: 'false', retained_max_msgs: 0, retained_max_bytes: 0 } }).mqtt, {
    ...MQTT_DEFAULTS,
    enabled: false,
    retained_max_msgs: 0,
    retained_max_bytes: 0,
  })
})

t.test('bad mqtt values name the key or the flag', async (t) => {
  const cases: [unknown, string][] = [
    [{ mqtt: 5 }, 'mqtt: expected an object, got 5'],
    [{ mqtt: { port: 'x' } }, 'mqtt.port: expected an integer 0-65535, or -1 for a random free port, got "x"'],
    [{ mqtt: { port: 70000 } }, 'mqtt.port: expected an integer 0-65535, or -1 for a random free port, got 70000'],
    [{ mqtt: { enabled: 'yes' } }, 'mqtt.enabled: expected true or false, got "yes"'],
    [{ mqtt: { host: 'a b' } }, 'mqtt.host: expected a host name or IP address, got "a b"'],
    [{ mqtt: { max_ack_pending: 0 } }, 'mqtt.max_ack_pending: expected an integer 1-65535, got 0'],
    [{ mqtt: { retained_max_bytes: 'lots' } }, 'mqtt.retained_max_bytes: expected a size in bytes (number, or a string like "1MB"), got "lots"'],
    [{ mqtt: { session_expiry: 'soon' } }, 'mqtt.session_expiry: expected a duration (seconds as a number, or a string like "10s", "500ms", "2m"), got "soon"'],
    [{ mqtt: { max_offline_msgs: -1 } }, 'mqtt.max_offline_msgs: expected an integer >= 0 (0 queues nothing offline), got -1'],
    [{ mqtt: { max_sessions: 1.5 } }, 'mqtt.max_sessions: expected an integer >= 0 (0: no limit), got 1.5'],
    [{ mqtt: { max_sessions_bytes: 'lots' } }, 'mqtt.max_sessions_bytes: expected a size in bytes (number, or a string like "1MB"), got "lots"'],
    [{ mqtt: { prot: 1 } }, 'unknown option "mqtt.prot" (did you mean "mqtt.port"?)'],
  ]
  for (const [raw, want] of cases) t.equal(errorOf(t, () => validateOptions(raw, defaults, { file: F })), `config error in ${F}: ${want}`, want)
  t.equal(errorOf(t, () => load(['--mqtt-port', 'x'])), '--mqtt-port: expected an integer 0-65535, or -1 for a random free port, got "x"')
})

t.test('--mqtt-port is in the help with its default', async (t) => {
  t.ok(FLAGS.some((f) => f.long === 'mqtt-port'))
  t.match(usage(), /--mqtt-port PORT +Port for MQTT clients \(default: 1883\)/)
})

async function serveWith(opts: Options): Promise<{ b: Awaited<ReturnType<typeof serve>>; logs: string[] }> {
  const logs: string[] = []
  const b = await serve(node(), opts, createLogger({ level: 'info', time: false, sink: (l) => logs.push(l) }))
  return { b, logs }
}

t.test('sprig starts with the default options (ports from the OS)', async (t) => {
  const opts = load(['-a', '127.0.0.1', '-p', '0', '--mqtt-port', '0'])
  t.same({ ...opts, mqtt: undefined }, { ...defaults, host: '127.0.0.1', port: 0, mqtt: undefined }, 'everything else is default')
  const { b, logs } = await serveWith(opts)
  t.teardown(() => b.stop())
  t.ok(b.port > 0 && b.mqttPort > 0 && b.port !== b.mqttPort)
  t.ok(logs.includes(`[INF] Listening for MQTT clients on 127.0.0.1:${b.mqttPort}`), 'logs the MQTT listener')
  t.equal(b.srv.opts.mqtt?.port, b.mqttPort, 'the real port is in the options')
  const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${b.mqttPort}`, { reconnectPeriod: 0 })
  t.ok(c.connected, 'an MQTT client connects')
  await c.endAsync()
})

t.test('enabled: false starts no MQTT listener', async (t) => {
  const { b, logs } = await serveWith({ ...defaults, host: '127.0.0.1', port: 0, mqtt: { ...MQTT_DEFAULTS, enabled: false } })
  t.teardown(() => b.stop())
  t.equal(b.mqttPort, 0)
  t.notOk(logs.some((l) => l.includes('MQTT')))
})

t.test('MQTT port in use: start-up fails naming it, the NATS listener is closed again', async (t) => {
  const blocker = net.createServer()
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => blocker.close(() => r())))
  const port = (blocker.address() as net.AddressInfo).port
  const natsPort = await new Promise<number>((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port
      s.close(() => r(p))
    })
  })
  await t.rejects(serveWith({ ...defaults, host: '127.0.0.1', port: natsPort, mqtt: { ...MQTT_DEFAULTS, port } }), {
    message: `cannot listen on 127.0.0.1:${port}: address already in use`,
  })
  // The NATS port is free again: a second start on it works.
  const { b } = await serveWith({ ...defaults, host: '127.0.0.1', port: natsPort, mqtt: { ...MQTT_DEFAULTS, port: 0 } })
  t.equal(b.port, natsPort)
  await b.stop()
})
