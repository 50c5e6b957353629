// SIGHUP with options a reload does not apply: the reload is refused naming the option (as
// nats-server refuses what it cannot reload), instead of logging "Reloaded" while the old value
// stays in force. Users, permissions, TLS and leaf filters still reload.

import t from 'tap'
import type { Options } from '../src/options.ts'
import { restartNeeded } from '../src/options.ts'
import { startBroker, type TestBroker } from './helpers/broker.ts'

/** What reloadConfig does with re-read options: every check first, then every step. */
function reload(b: TestBroker, next: Options): string[] | string {
  try {
    const steps = b.reloaders.map((f) => f(next))
    return steps.flatMap((s) => s())
  } catch (e) {
    return (e as Error).message
  }
}

t.test('a change a reload cannot apply is refused by name; the old value stays', async (t) => {
  const b = await startBroker({ mqtt: true })
  t.teardown(() => b.stop())
  const o = b.srv.opts
  t.match(reload(b, { ...o, max_payload: o.max_payload * 2 }), /^max_payload: config reload not supported for this option \(restart to change it\)$/)
  t.equal(b.srv.opts.max_payload, o.max_payload, 'max_payload unchanged')
  t.match(reload(b, { ...o, mqtt: { ...o.mqtt!, max_ack_pending: 7 } }), /^mqtt\.max_ack_pending: config reload not supported/)
  t.match(reload(b, { ...o, log_level: 'trace' }), /^log_level: config reload not supported/)
  t.match(reload(b, { ...o, port: o.port + 1 }), /^port: config reload not supported/)
  t.same(reload(b, { ...o }), [], 'the same options: nothing to do')
  t.same(reload(b, { ...o, port: 0, mqtt: { ...o.mqtt!, port: 0 } }), [], 'port 0 again (pick one) is no change')
  const users = { users: [{ user: 'a', password: 'b' }] }
  t.same(reload(b, { ...o, authorization: users }), ['authorization'], 'users still reload')
  t.same(b.srv.opts.authorization, users)
})

t.test('restartNeeded names the first option that differs, mqtt keys with their block', async (t) => {
  const b = await startBroker({ mqtt: true })
  t.teardown(() => b.stop())
  const o = b.srv.opts
  t.equal(restartNeeded(o, { ...o }), null)
  t.equal(restartNeeded(o, { ...o, tls: { cert_file: 'x', key_file: 'y' } as never }), null, 'tls has its own reload step')
  t.equal(restartNeeded(o, { ...o, mqtt: { ...o.mqtt!, max_sessions: 1 } }), 'mqtt.max_sessions')
  t.equal(restartNeeded(o, { ...o, connect_timeout: 1 }), 'connect_timeout')
})
