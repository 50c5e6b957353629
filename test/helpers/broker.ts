// Starts sprig in the test process (node:net listener on loopback, port chosen by the OS),
// with its log lines collected for assertions.

import { defaults, type Options } from '../../src/options.ts'
import { createLogger } from '../../src/log.ts'
import { node } from '../../targets/node.ts'
import { serve, type Broker } from '../../targets/run.ts'

export interface TestBroker extends Broker {
  readonly logs: string[]
  readonly url: string
}

export async function startBroker(over: Partial<Options> = {}): Promise<TestBroker> {
  const opts: Options = { ...defaults, host: '127.0.0.1', port: 0, log_level: 'debug', ...over }
  const logs: string[] = []
  const log = createLogger({ level: opts.log_level, time: false, sink: (l) => logs.push(l) })
  const b = await serve(node(), opts, log)
  return Object.assign(b, { logs, url: `nats://127.0.0.1:${b.port}` })
}
