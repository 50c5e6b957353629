// Starts sprig in the test process (node:net listener on loopback, port chosen by the OS),
// with its log lines collected for assertions.

import { MQTT_DEFAULTS, defaults, type MqttOptions, type Options } from '../../src/options.ts'
import { createLogger } from '../../src/log.ts'
import { mqttListeners } from '../../src/config.ts'
import { node } from '../../targets/node.ts'
import { serve, type Broker } from '../../targets/run.ts'

export interface TestBroker extends Broker {
  readonly logs: string[]
  readonly url: string
  /** mqtt://127.0.0.1:PORT, or '' when MQTT is off. */
  readonly mqttUrl: string
}

export type TestOptions = Omit<Partial<Options>, 'mqtt'> & {
  /**
   * MQTT is off unless asked for, so tests never fight over 1883: `true` starts it on an
   * OS-chosen port, an object sets its options (port 0 unless given).
   */
  mqtt?: boolean | Partial<MqttOptions>
}

export async function startBroker(over: TestOptions = {}): Promise<TestBroker> {
  const { mqtt, ...rest } = over
  const given = mqtt === true || !mqtt ? {} : mqtt
  // Which port speaks TLS, as validation would decide it (src/config/schema.ts mqttListeners).
  const m: MqttOptions = mqtt ? mqttListeners({ ...MQTT_DEFAULTS, port: 0, ...given }, (k) => Object.hasOwn(given, k)) : { ...MQTT_DEFAULTS, enabled: false }
  const opts: Options = { ...defaults, host: '127.0.0.1', port: 0, log_level: 'debug', ...rest, mqtt: m }
  const logs: string[] = []
  const log = createLogger({ level: opts.log_level, time: false, sink: (l) => logs.push(l) })
  const b = await serve(node(), opts, log)
  return Object.assign(b, { logs, url: `nats://127.0.0.1:${b.port}`, mqttUrl: b.mqttPort ? `mqtt://127.0.0.1:${b.mqttPort}` : '' })
}
