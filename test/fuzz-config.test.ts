// Property-based tests of the configuration loader (src/config.ts): whatever text is in the
// config file and whatever flags are given, loadOptions returns options or throws a
// ConfigError whose message is one line naming the file (or the flag). Never a stack trace,
// never another exception.

import t from 'tap'
import fc from 'fast-check'
import { ConfigError, loadOptions } from '../src/config.ts'
import { check } from './helpers/fuzz.ts'

const FILE = '/etc/sprig/fuzz.json'

/** The verdict: 'ok', or the problem with how the loader refused. */
function verdict(text: string, argv: string[] = ['-c', FILE]): string {
  try {
    loadOptions({ argv, readFile: () => text, env: { HOME: '/root', PORT: '4223' } })
    return 'ok'
  } catch (e) {
    if (!(e instanceof ConfigError)) return `threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`
    if (/[\r\n]/.test(e.message)) return `error over more than one line: ${JSON.stringify(e.message)}`
    if (e.message.length > 600) return `error of ${e.message.length} characters`
    if (argv.includes(FILE) && !e.message.includes(FILE) && e.flag === undefined) return `error names neither the file nor a flag: ${e.message}`
    return 'ok'
  }
}

// Option names the loader knows, at each level, and some it does not.
const TOP = ['host', 'port', 'server_name', 'max_payload', 'max_pending', 'max_control_line', 'max_connections', 'ping_interval', 'ping_max', 'write_deadline', 'max_subscriptions', 'log_level', 'debug', 'trace', 'logtime', 'http_port', 'http_host', 'https_port', 'authorization', 'no_auth_user', 'mqtt', 'tls', 'leafnodes', 'cluster', 'jetstream', 'listen', 'prot']
const NESTED: Record<string, string[]> = {
  authorization: ['user', 'password', 'token', 'timeout', 'users', 'permissions'],
  users: ['user', 'password', 'permissions', 'username', 'pass'],
  permissions: ['publish', 'subscribe', 'allow_responses', 'allow', 'deny', 'max', 'expires'],
  publish: ['allow', 'deny'],
  subscribe: ['allow', 'deny'],
  mqtt: ['enabled', 'host', 'port', 'max_ack_pending', 'retained_max_msgs', 'retained_max_bytes', 'session_expiry', 'max_offline_msgs', 'max_offline_bytes', 'topic_alias_maximum', 'max_keepalive', 'max_topic_length', 'max_topic_levels', 'max_subscriptions', 'tls_port', 'plain', 'tls'],
  tls: ['cert_file', 'key_file', 'ca_file', 'crl_file', 'verify', 'verify_and_map', 'timeout', 'handshake_first', 'insecure', 'map'],
  leafnodes: ['remotes', 'reconnect', 'reconnect_max', 'listen'],
  remotes: ['urls', 'url', 'no_randomize', 'credentials', 'nkey', 'tls', 'deny_imports', 'deny_exports', 'allow_exports', 'allow_imports', 'map', 'buffer_subjects', 'buffer_max_msgs', 'buffer_max_bytes', 'buffer_policy', 'buffer_hold', 'permissions', 'account'],
  map: ['local', 'hub'],
}

/** Values that sit near what each check accepts or refuses. */
const scalar = fc.oneof(
  fc.constantFrom(0, 1, -1, 65535, 65536, 1.5, 1e300, -0, 2 ** 53, true, false, null, '', ' ', '0', '1KB', '1MiB', '64MB', '1GB', '10s', '1m', '-5s', '1h30m', '2x', 'info', 'debug', 'trace', 'none'),
  fc.constantFrom('nats://hub:7422', 'tls://u:p@h:1', 'http://x', 'nats://[', '//a:b@:99999/', 'a.b.>', '*', '>', 'foo..bar', '${PORT}', '${NOPE}', '$HOME', 'drop_oldest', 'drop-newest', 'dns', 'uri', 'email'),
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.double(),
)

const value: fc.Arbitrary<unknown> = fc.letrec<{ v: unknown; obj: Record<string, unknown> }>((tie) => ({
  v: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalar, fc.array(tie('v'), { maxLength: 3 }), tie('obj')),
  obj: fc
    .array(fc.tuple(fc.constantFrom(...new Set(Object.values(NESTED).flat()), ...TOP.slice(0, 5)), tie('v')), { maxLength: 4 })
    .map((kv) => Object.fromEntries(kv)),
})).v

const topObject = fc.array(fc.tuple(fc.constantFrom(...TOP), value), { maxLength: 6 }).map((kv) => Object.fromEntries(kv))

/** The file's text: JSON of the object, sometimes with comments, trailing commas or damage. */
const configText = fc.oneof(
  topObject.map((o) => JSON.stringify(o, null, 2)),
  fc.tuple(topObject, fc.nat(), fc.constantFrom(',', '//x\n', '/*', '#', '}', '{', '"', '\\', '\u0000', '\ufeff', '\n', ',,')).map(([o, at, junk]) => {
    const s = JSON.stringify(o, null, 1)
    const i = at % (s.length + 1)
    return s.slice(0, i) + junk + s.slice(i)
  }),
  fc.json(),
  fc.string({ maxLength: 60 }),
  fc.string({ maxLength: 40, unit: fc.constantFrom('{', '}', '[', ']', '"', ':', ',', '/', '*', '#', '\n', 'a', '1', ' ', '\\', 'u') }),
)

t.test('any config file text: options or a one-line ConfigError naming the file', async (t) => {
  // Found by this test: a backslash before a raw newline put the newline into the message.
  t.equal(verdict('{"a": "\\\n"}'), 'ok', 'an escaped raw newline: still one line')
  t.equal(verdict('"\\\r'), 'ok', 'an escaped raw CR: still one line')
  check(
    t,
    'config file',
    fc.property(configText, (text) => {
      const v = verdict(text)
      if (v !== 'ok') throw new Error(`${JSON.stringify(text)}: ${v}`)
    }),
    3000,
  )
})

const flag = fc.constantFrom('-c', '--config', '-a', '--addr', '-p', '--port', '--max-payload', '--max-pending', '--mqtt-port', '-m', '--http-port', '--leaf', '-l', '--log-level', '-D', '--nope', '--port=1', '-p=x', '--', '-')
const arg = fc.oneof(scalar.map(String), fc.string({ maxLength: 10 }))

t.test('any command line: options or a one-line ConfigError', async (t) => {
  check(
    t,
    'argv',
    fc.property(fc.array(fc.oneof(flag, arg), { maxLength: 6 }), fc.option(configText, { nil: undefined }), (argv, text) => {
      if (argv.includes('-h') || argv.includes('--help')) return
      const v = verdict(text ?? '{}', argv)
      if (v !== 'ok') throw new Error(`${JSON.stringify(argv)} ${JSON.stringify(text)}: ${v}`)
    }),
    1500,
  )
})
