import t from 'tap'
import {
  ConfigError,
  loadOptions,
  parseConfigText,
  parseDuration,
  parseSize,
  substituteEnv,
  validateOptions,
} from '../src/config.ts'
import { errorOf } from './helpers/config.ts'
import { defaults, MAX_PAYLOAD_LIMIT, type Options } from '../src/options.ts'

const F = '/etc/sprig.json'


function files(map: Record<string, string>): (path: string) => string {
  return (path) => {
    const text = map[path]
    if (text === undefined) throw new Error(`ENOENT: no such file or directory, open '${path}'`)
    return text
  }
}

function load(argv: string[], map: Record<string, string> = {}, env: Record<string, string> = {}): Options {
  const r = loadOptions({ argv, readFile: files(map), env })
  if (!('options' in r)) throw new Error('expected options')
  return r.options
}

t.test('defaults', async (t) => {
  t.same(defaults, {
    host: '0.0.0.0',
    port: 4222,
    server_name: '',
    max_payload: 1048576,
    max_pending: 8 * 1024 * 1024,
    max_memory: 128 * 1024 * 1024,
    max_control_line: 4096,
    max_connections: 65536,
    ping_interval: 120_000,
    ping_max: 2,
    write_deadline: 10_000,
    no_fast_producer_stall: false,
    max_subscriptions: 0,
    connect_timeout: 5_000,
    log_level: 'info',
    debug: false,
    trace: false,
    logtime: true,
    http_port: 0,
    http_host: '',
    https_port: 0,
    allow_non_tls: false,
    pid_file: '',
    ports_file_dir: '',
    lame_duck_duration: 120_000,
    lame_duck_grace_period: 10_000,
    log_file: '',
  })
  t.ok(Object.isFrozen(defaults))
  t.equal(MAX_PAYLOAD_LIMIT, 64 * 1024 * 1024)
  t.same(validateOptions({}), defaults)
  t.not(validateOptions({}), defaults, 'a fresh object')
})

t.test('max_memory: a size or 0, default from the machine\'s memory', async (t) => {
  const GiB = 1024 ** 3
  const withTotal = (total: number, argv: string[] = [], map: Record<string, string> = {}): number => {
    const r = loadOptions({ argv, readFile: files(map), totalMemory: total })
    if (!('options' in r)) throw new Error('expected options')
    return r.options.max_memory
  }
  t.equal(withTotal(GiB), 128 * 1024 ** 2, '1 GiB gateway: 1/8')
  t.equal(withTotal(512 * 1024 ** 2), 64 * 1024 ** 2, '512 MiB: 1/8')
  t.equal(withTotal(64 * GiB), GiB, 'capped at 1 GiB')
  t.equal(load([]).max_memory, 128 * 1024 ** 2, 'total unknown: 128 MiB')
  t.equal(withTotal(GiB, ['--max-memory', '64MB']), 64 * 1024 ** 2, 'the flag wins')
  t.equal(withTotal(GiB, ['-c', 'f.json'], { 'f.json': '{ "max_memory": "300MB" }' }), 300 * 1024 ** 2, 'the file wins')
  t.equal(withTotal(GiB, ['-c', 'f.json'], { 'f.json': '{ "max_memory": 0 }' }), 0, '0: no budget')
  t.equal(
    errorOf(t, () => validateOptions({ max_memory: 'lots' }, defaults, { file: F })),
    `config error in ${F}: max_memory: expected a size in bytes (number, or a string like "1MB"), got "lots"`,
  )
})

t.test('sizes: numbers, and both unit families', async (t) => {
  const cases: [unknown, number | undefined][] = [
    [0, 0],
    [1048576, 1048576],
    ['512', 512],
    ['100B', 100],
    ['1K', 1000],
    ['1k', 1000],
    ['1KB', 1024],
    ['1kb', 1024],
    ['1Ki', 1024],
    ['1KiB', 1024],
    ['1kib', 1024],
    ['2M', 2_000_000],
    ['2MB', 2 * 1024 ** 2],
    ['2MiB', 2 * 1024 ** 2],
    ['1G', 1e9],
    ['1GB', 1024 ** 3],
    ['1gib', 1024 ** 3],
    ['1T', 1e12],
    ['1TB', 1024 ** 4],
    [' 64 MB ', 64 * 1024 ** 2],
    ['abc', undefined],
    ['1.5MB', undefined],
    ['-1', undefined],
    ['1XB', undefined],
    ['MB', undefined],
    ['', undefined],
    [-1, undefined],
    [1.5, undefined],
    [Infinity, undefined],
    [true, undefined],
    [null, undefined],
    ['99999999999TB', undefined],
  ]
  for (const [input, want] of cases) t.equal(parseSize(input), want, JSON.stringify(input))
})

t.test('durations: seconds as numbers, Go-style strings', async (t) => {
  const cases: [unknown, number | undefined][] = [
    [0, 0],
    [5, 5000],
    [0.5, 500],
    ['30', 30_000],
    ['500ms', 500],
    ['10s', 10_000],
    ['2m', 120_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['.5s', 500],
    ['1h30m', 5_400_000],
    ['1m30s500ms', 90_500],
    [' 10s ', 10_000],
    ['abc', undefined],
    ['10', 10_000],
    ['10x', undefined],
    ['1H', undefined],
    ['-1s', undefined],
    ['s', undefined],
    ['', undefined],
    [-1, undefined],
    [NaN, undefined],
    [{}, undefined],
  ]
  for (const [input, want] of cases) t.equal(parseDuration(input), want, JSON.stringify(input))
})

t.test('config text: comments, trailing commas, empty', async (t) => {
  const text = `\ufeff// sprig config
{
  # hash comment
  "port": 4223, // line comment
  /* block
     comment */ "host": "127.0.0.1",
  "url": "nats://x//y#z/*w*/",
  "list": [1, 2, 3,],
  "nested": { "a": true, "b": null, },
}
# trailing comment`
  t.same(parseConfigText(text, F), {
    port: 4223,
    host: '127.0.0.1',
    url: 'nats://x//y#z/*w*/',
    list: [1, 2, 3],
    nested: { a: true, b: null },
  })
  t.same(parseConfigText('', F), {})
  t.same(parseConfigText('  // nothing\n# here\n', F), {})
  t.same(parseConfigText('{"s": "a\\"b\\\\c\\n\\u00e9\\/"}', F), { s: 'a"b\\c\né/' })
  t.same(parseConfigText('{"n": -1.5e2}', F), { n: -150 })
  t.equal(parseConfigText('true', F), true, 'any JSON value; validateOptions wants an object')
  const proto = parseConfigText('{"__proto__": {"x": 1}}', F) as Record<string, unknown>
  t.equal(Object.getPrototypeOf(proto), Object.prototype, '__proto__ stays a plain key')
  t.same(Object.keys(proto), ['__proto__'])
})

t.test('config text: syntax errors name file, line and column', async (t) => {
  const cases: [string, string][] = [
    ['{\n  "port": 4222\n  "host": "x"\n}', `config error in ${F}:3:3: missing "," before this key`],
    ['{\n  "max_payload": 1MB\n}', `config error in ${F}:2:19: unexpected "M" after a number; values with units must be quoted, like "1MB" or "10s"`],
    ['{"a": tru}', `config error in ${F}:1:7: unexpected "tru"; strings must be in double quotes`],
    ['{"a": 1}}', `config error in ${F}:1:9: unexpected "}" after the end of the configuration`],
    ['{"a": 1', `config error in ${F}:1:8: unexpected end of file, expected "," or "}"`],
    ['{\n/* open', `config error in ${F}:2:1: comment is not closed (missing "*/")`],
    ['{"a": "b\n"}', `config error in ${F}:1:7: string is not closed before the end of the line`],
    ['{"a": "b', `config error in ${F}:1:7: string is not closed (missing '"')`],
    ['{"a": "\\q"}', `config error in ${F}:1:8: invalid escape "\\q" in string`],
    ['{"a": "x\ty"}', `config error in ${F}:1:9: control character in string; write it as an escape like "\\t"`],
    ['{"a": 1,\n "a": 2}', `config error in ${F}:2:2: duplicate key "a"`],
    ['{a: 1}', `config error in ${F}:1:2: unexpected "a", expected a key in double quotes or "}"`],
    ['{"a" 1}', `config error in ${F}:1:6: unexpected "1", expected ":" after key "a"`],
    ['{,}', `config error in ${F}:1:2: unexpected ",", expected a key in double quotes or "}"`],
    ['[1 2]', `config error in ${F}:1:4: unexpected "2", expected "," or "]"`],
    ['{"a": }', `config error in ${F}:1:7: unexpected "}", expected a value`],
    ['{"a" "b"}', `config error in ${F}:1:6: unexpected a string, expected ":" after key "a"`],
    ['{"a": "\\', `config error in ${F}:1:8: invalid escape "\\" in string`],
    ['{"a": -}', `config error in ${F}:1:7: unexpected "-", expected a value`],
    ['{"a":' + '['.repeat(100), `config error in ${F}:1:70: nested too deeply`],
  ]
  for (const [text, want] of cases) {
    const msg = errorOf(t, () => parseConfigText(text, F))
    t.equal(msg, want, JSON.stringify(text))
  }
  try {
    parseConfigText('{\n\n   x', F)
  } catch (e) {
    const err = e as ConfigError
    t.equal(err.file, F)
    t.equal(err.line, 3)
    t.equal(err.column, 4)
    t.equal(err.name, 'ConfigError')
  }
})

t.test('values in their accepted forms', async (t) => {
  const o = validateOptions({
    host: '127.0.0.1',
    port: 0,
    server_name: 'edge-1',
    max_payload: '2MB',
    max_pending: '16MiB',
    max_control_line: '8KB',
    max_connections: 100,
    ping_interval: '30s',
    ping_max: 3,
    write_deadline: 2.5,
    max_subscriptions: 1000,
    log_level: 'WARN',
    logtime: false,
    authorization: { user: 'u', password: 'p', timeout: '500ms' },
  })
  t.same(o, {
    ...defaults,
    host: '127.0.0.1',
    port: 0,
    server_name: 'edge-1',
    max_payload: 2 * 1024 ** 2,
    max_pending: 16 * 1024 ** 2,
    max_control_line: 8192,
    max_connections: 100,
    ping_interval: 30_000,
    ping_max: 3,
    write_deadline: 2500,
    max_subscriptions: 1000,
    log_level: 'warn',
    logtime: false,
    authorization: { user: 'u', password: 'p', timeout: 500 },
  })
  // Numeric strings (as ${VAR} values arrive) are fine for integers and booleans.
  t.match(validateOptions({ port: '4333', logtime: 'false', ping_max: ' 5 ' }), { port: 4333, logtime: false, ping_max: 5 })
  // No timeout given: its default depends on the listener's TLS (src/auth.ts authTimeout).
  t.same(validateOptions({ authorization: { token: 's3cret' } }).authorization, { token: 's3cret' })
  t.equal(validateOptions({ no_fast_producer_stall: true }).no_fast_producer_stall, true)
  t.equal(validateOptions({ connect_timeout: '3s' }).connect_timeout, 3000)
  t.equal(validateOptions({}).connect_timeout, 5000, 'connect_timeout: 5 s by default')
  t.same(validateOptions({ authorization: { timeout: 1 } }).authorization, { timeout: 1000 }, 'no credentials: no auth')
})

t.test('every key: a bad value names the key and what was expected', async (t) => {
  const SIZE = 'expected a size in bytes (number, or a string like "1MB")'
  const DUR = 'expected a duration (seconds as a number, or a string like "10s", "500ms", "2m")'
  const cases: [Record<string, unknown>, string][] = [
    [{ host: 5 }, 'host: expected a host name or IP address, got 5'],
    [{ host: '' }, 'host: expected a host name or IP address, got ""'],
    [{ host: 'a b' }, 'host: expected a host name or IP address, got "a b"'],
    [{ port: 'x' }, 'port: expected an integer 0-65535, or -1 for a random free port, got "x"'],
    [{ port: 70000 }, 'port: expected an integer 0-65535, or -1 for a random free port, got 70000'],
    [{ port: -2 }, 'port: expected an integer 0-65535, or -1 for a random free port, got -2'],
    [{ port: 4222.5 }, 'port: expected an integer 0-65535, or -1 for a random free port, got 4222.5'],
    [{ server_name: 1 }, 'server_name: expected a string, got 1'],
    [{ max_payload: 'abc' }, `max_payload: ${SIZE}, got "abc"`],
    [{ max_payload: 0 }, 'max_payload: expected a size greater than 0, got 0'],
    [{ max_payload: '65MB', max_pending: '1GB' }, 'max_payload: expected a size up to 64MB (67108864 bytes), got "65MB"'],
    [{ max_pending: true }, `max_pending: ${SIZE}, got true`],
    [{ max_control_line: [] }, `max_control_line: ${SIZE}, got an array`],
    [{ max_connections: 0 }, 'max_connections: expected a positive integer, got 0'],
    [{ max_connections: '1K' }, 'max_connections: expected a positive integer, got "1K"'],
    [{ ping_interval: 'abc' }, `ping_interval: ${DUR}, got "abc"`],
    [{ ping_interval: 0 }, 'ping_interval: expected a duration of at least 1ms, got 0'],
    [{ ping_interval: '1000h' }, 'ping_interval: expected a duration up to 596h (about 24 days), got "1000h"'],
    [{ ping_max: 0 }, 'ping_max: expected a positive integer, got 0'],
    [{ write_deadline: null }, `write_deadline: ${DUR}, got null`],
    [{ max_subscriptions: -1 }, 'max_subscriptions: expected an integer >= 0 (0 means unlimited), got -1'],
    [{ log_level: 3 }, 'log_level: expected one of error, warn, info, debug, trace, got 3'],
    [{ log_level: 'loud' }, 'log_level: expected one of error, warn, info, debug, trace, got "loud"'],
    [{ debug: 'yes' }, 'debug: expected true or false, got "yes"'],
    [{ trace: 1 }, 'trace: expected true or false, got 1'],
    [{ logtime: {} }, 'logtime: expected true or false, got an object'],
    [{ no_fast_producer_stall: 'maybe' }, 'no_fast_producer_stall: expected true or false, got "maybe"'],
    [{ authorization: 'x' }, 'authorization: expected an object, got "x"'],
    [{ authorization: { user: 1, password: 'p' } }, 'authorization.user: expected a non-empty string, got 1'],
    [{ authorization: { user: 'u', password: 12345 } }, 'authorization.password: expected a non-empty string, got a number'],
    [{ authorization: { token: null } }, 'authorization.token: expected a non-empty string, got null'],
    [{ authorization: { token: '' } }, 'authorization.token: expected a non-empty string, got an empty string'],
    [{ authorization: { token: 't', timeout: 'soon' } }, `authorization.timeout: ${DUR}, got "soon"`],
    [{ http_port: 70000 }, 'http_port: expected an integer 0-65535 (0: no monitoring; -1: a random free port), got 70000'],
    [{ http_host: 'a b' }, 'http_host: expected a host name or IP address, got "a b"'],
  ]
  for (const [raw, want] of cases) {
    t.equal(errorOf(t, () => validateOptions(raw, defaults, { file: F })), `config error in ${F}: ${want}`, want)
  }
  t.equal(
    errorOf(t, () => validateOptions({ port: 'x' })),
    'config error: port: expected an integer 0-65535, or -1 for a random free port, got "x"',
    'without a file name',
  )
  try {
    validateOptions({ authorization: { token: 't', timeout: 'soon' } }, defaults, { file: F })
  } catch (e) {
    t.equal((e as ConfigError).key, 'authorization.timeout')
    t.equal((e as ConfigError).file, F)
  }
  const long = 'x'.repeat(100)
  t.equal(errorOf(t, () => validateOptions({ log_level: long })), `config error: log_level: expected one of error, warn, info, debug, trace, got "${'x'.repeat(57)}..."`)
})

t.test('top level must be an object', async (t) => {
  t.equal(errorOf(t, () => validateOptions([1], defaults, { file: F })), `config error in ${F}: expected an object of options at the top level, got an array`)
  t.equal(errorOf(t, () => validateOptions(null)), 'config error: expected an object of options at the top level, got null')
})

t.test('unknown keys', async (t) => {
  const cases: [Record<string, unknown>, string][] = [
    [{ maxpayload: 1 }, 'unknown option "maxpayload" (did you mean "max_payload"?)'],
    [{ maxPending: 1 }, 'unknown option "maxPending" (did you mean "max_pending"?)'],
    [{ 'ping-interval': 1 }, 'unknown option "ping-interval" (did you mean "ping_interval"?)'],
    [{ prot: 1 }, 'unknown option "prot" (did you mean "port"?)'],
    [{ max_paylod: 1 }, 'unknown option "max_paylod" (did you mean "max_payload"?)'],
    [{ addr: '0.0.0.0' }, 'unknown option "addr" (did you mean "host"?)'],
    [{ completely_different: 1 }, 'unknown option "completely_different"'],
    [{ max: 1 }, 'unknown option "max"'],
    [{ jetstream: {} }, 'unknown option "jetstream" (a nats-server option that sprig does not support yet)'],
    [{ cluster: {} }, 'unknown option "cluster" (a nats-server option that sprig does not support yet)'],
    [{ websocket: { port: 1, no_tls: true, advertise: 'x:1' } }, 'unknown option "websocket.advertise"'],
    [{ authorization: { usr: 'a' } }, 'unknown option "authorization.usr" (did you mean "authorization.user"?)'],
    [{ authorization: { passwd: 'a' } }, 'unknown option "authorization.passwd" (did you mean "authorization.password"?)'],
    [{ authorization: { accounts: [] } }, 'unknown option "authorization.accounts"'],
  ]
  for (const [raw, want] of cases) {
    t.equal(errorOf(t, () => validateOptions(raw, defaults, { file: F })), `config error in ${F}: ${want}`, want)
  }
  try {
    validateOptions({ maxpayload: 1 })
  } catch (e) {
    t.equal((e as ConfigError).key, 'maxpayload')
  }
})

t.test('cross-checks', async (t) => {
  t.equal(
    errorOf(t, () => validateOptions({ max_payload: 2000, max_pending: 1000 }, defaults, { file: F })),
    `config error in ${F}: max_payload (2000) cannot be higher than max_pending (1000)`,
  )
  t.equal(
    errorOf(t, () => validateOptions({ max_payload: '16MB' }, defaults, { file: F })),
    `config error in ${F}: max_payload (16777216) cannot be higher than max_pending (8388608)`,
  )
  t.equal(
    errorOf(t, () => validateOptions({ max_pending: 1000 }, defaults, { file: F })),
    `config error in ${F}: max_payload (1048576) cannot be higher than max_pending (1000)`,
  )
  t.equal(
    errorOf(t, () => validateOptions({}, { ...defaults, max_payload: 2000, max_pending: 1000 })),
    'config error: max_payload (2000) cannot be higher than max_pending (1000)',
    'a bad base is caught too',
  )
  t.match(validateOptions({ max_payload: '1K', max_pending: '1K' }), { max_payload: 1000, max_pending: 1000 }, 'equal is fine')
  t.match(validateOptions({ max_payload: '64MB', max_pending: '64MB' }), { max_payload: MAX_PAYLOAD_LIMIT })
  t.equal(
    errorOf(t, () => validateOptions({ max_payload: MAX_PAYLOAD_LIMIT + 1, max_pending: '1GB' })),
    `config error: max_payload: expected a size up to 64MB (67108864 bytes), got ${MAX_PAYLOAD_LIMIT + 1}`,
  )
  t.equal(
    errorOf(t, () => validateOptions({ authorization: { user: 'a', password: 'b', token: 'c' } }, defaults, { file: F })),
    `config error in ${F}: authorization: cannot have both a token and a user/password`,
  )
  t.equal(
    errorOf(t, () => validateOptions({ authorization: { user: 'a' } }, defaults, { file: F })),
    `config error in ${F}: authorization.password: required when authorization.user is set`,
  )
  t.equal(
    errorOf(t, () => validateOptions({ authorization: { password: 'b' } }, defaults, { file: F })),
    `config error in ${F}: authorization.user: required when authorization.password is set`,
  )
})

t.test('merging over a base', async (t) => {
  const base = validateOptions({ port: 5000, authorization: { user: 'a', password: 'b', timeout: 5 } })
  const snapshot = structuredClone(base)
  const o = validateOptions({ host: '10.0.0.1' }, base)
  t.same(o, { ...base, host: '10.0.0.1' })
  t.same(base, snapshot, 'base untouched')
  t.not(o.authorization, base.authorization, 'authorization copied')
  // A layer's authorization replaces the base's as a whole.
  t.same(validateOptions({ authorization: { token: 't' } }, base).authorization, { token: 't' })
})

t.test('debug and trace raise the log level', async (t) => {
  t.match(validateOptions({ debug: true }), { log_level: 'debug', debug: true, trace: false })
  t.match(validateOptions({ trace: true }), { log_level: 'trace', debug: true, trace: true })
  t.match(validateOptions({ log_level: 'error', debug: true }), { log_level: 'debug' })
  t.match(validateOptions({ log_level: 'trace', debug: true }), { log_level: 'trace', trace: true })
  t.match(validateOptions({ debug: false }), { log_level: 'info', debug: false })
  t.match(validateOptions({ log_level: 'debug' }), { log_level: 'debug', debug: true, trace: false })
  // A later layer's log_level replaces the level an earlier layer's debug: true set.
  t.match(validateOptions({ log_level: 'warn' }, validateOptions({ debug: true })), { log_level: 'warn', debug: false })
})

t.test('${VAR} references in the config file', async (t) => {
  const env = { TOKEN: 's3cret', PORT: '4333' }
  t.same(substituteEnv({ a: '${TOKEN}', b: ['${PORT}', 'x${TOKEN}'], c: '$2a$11$hash', d: 5 }, env), {
    a: 's3cret',
    b: ['4333', 'x${TOKEN}'],
    c: '$2a$11$hash',
    d: 5,
  })
  t.equal(errorOf(t, () => substituteEnv('${X}', {})), 'config error: (top level): environment variable X is not set')
  const file = '{ "port": "${PORT}", "authorization": { "token": "${TOKEN}" } }'
  const o = load(['-c', F], { [F]: file }, env)
  t.equal(o.port, 4333)
  t.same(o.authorization, { token: 's3cret' })
  t.equal(
    errorOf(t, () => load(['-c', F], { [F]: file }, {})),
    `config error in ${F}: port: environment variable PORT is not set`,
  )
  t.equal(
    errorOf(t, () => loadOptions({ argv: ['-c', F], readFile: files({ [F]: '{"authorization": {"token": "${T}"}}' }) })),
    `config error in ${F}: authorization.token: environment variable T is not set`,
    'env is optional',
  )
})

t.test('loadOptions: defaults <- file <- flags', async (t) => {
  t.same(load([]), defaults)
  const r = loadOptions({ argv: ['-c', F], readFile: files({ [F]: '{"port": 5000, "host": "127.0.0.1"}' }) })
  t.same(r, { options: { ...defaults, port: 5000, host: '127.0.0.1' }, configFile: F })

  const file = '{"port": 5000, "host": "127.0.0.1", "max_payload": "2MB", "log_level": "debug"}'
  t.same(load(['-c', F, '-p', '6000', '--max-payload', '512KB', '-l', 'warn'], { [F]: file }), {
    ...defaults,
    host: '127.0.0.1',
    port: 6000,
    max_payload: 512 * 1024,
    log_level: 'warn',
  })
  // Flag order does not matter: -c is always read first.
  t.equal(load(['-p', '6000', '-c', F], { [F]: file }).port, 6000)

  // Cross-checks run on the final result, not on each layer.
  t.match(load(['-c', F, '--max-pending', '32MB'], { [F]: '{"max_payload": "16MB"}' }), {
    max_payload: 16 * 1024 ** 2,
    max_pending: 32 * 1024 ** 2,
  })
})

t.test('loadOptions: errors point at where the value came from', async (t) => {
  t.equal(
    errorOf(t, () => load(['-c', F, '--max-pending', '1MB'], { [F]: '{"max_payload": "2MB"}' })),
    '--max-pending: max_payload (2097152) cannot be higher than max_pending (1048576)',
  )
  t.equal(
    errorOf(t, () => load(['-c', F, '--max-payload', '2MB'], { [F]: '{"max_pending": "1MB"}' })),
    '--max-payload: max_payload (2097152) cannot be higher than max_pending (1048576)',
  )
  t.equal(
    errorOf(t, () => load(['-c', F, '-p', '1'], { [F]: '{"max_payload": "9MB"}' })),
    `config error in ${F}: max_payload (9437184) cannot be higher than max_pending (8388608)`,
  )
  t.equal(
    errorOf(t, () => load(['-c', '/nope.json'])),
    "config error: cannot read /nope.json: ENOENT: no such file or directory, open '/nope.json'",
  )
  t.equal(
    errorOf(t, () => loadOptions({ argv: ['-c', F], readFile: () => { throw 'boom' } })),
    `config error: cannot read ${F}: boom`,
  )
  t.equal(errorOf(t, () => load(['-c', F], { [F]: '{"port": "x"}' })), `config error in ${F}: port: expected an integer 0-65535, or -1 for a random free port, got "x"`)
  t.equal(errorOf(t, () => load(['-c', F], { [F]: '{\n"port" 1}' })), `config error in ${F}:2:8: unexpected "1", expected ":" after key "port"`)
  // A bad file is reported even when flags would override the bad key.
  t.equal(errorOf(t, () => load(['-c', F, '-p', '1'], { [F]: '{"port": "x"}' })), `config error in ${F}: port: expected an integer 0-65535, or -1 for a random free port, got "x"`)
})

t.test('loadOptions: help and version', async (t) => {
  const h = loadOptions({ argv: ['-h'], readFile: files({}) })
  t.ok('help' in h && h.help.startsWith('Usage: sprig'))
  t.same(loadOptions({ argv: ['--version'], readFile: files({}) }), { version: true })
  // Help wins over a missing config file and bad values: nothing else is read.
  t.ok('help' in loadOptions({ argv: ['-c', '/nope', '-p', 'x', '--help'], readFile: files({}) }))
})

t.test("nats-server's other spellings mean the same option", async (t) => {
  const v = (raw: Record<string, unknown>): Options => validateOptions(raw)
  t.equal(v({ net: '127.0.0.2' }).host, '127.0.0.2', 'net')
  t.match(v({ listen: '127.0.0.2:4333' }), { host: '127.0.0.2', port: 4333 }, 'listen host:port')
  t.match(v({ listen: '[::1]:4333' }), { host: '::1', port: 4333 }, 'listen [v6]:port')
  t.match(v({ listen: 4333 }), { host: '0.0.0.0', port: 4333 }, 'listen: a port only keeps the host')
  t.match(v({ http: '127.0.0.3:8222' }), { http_host: '127.0.0.3', http_port: 8222 }, 'http host:port')
  t.match(v({ http: 8222 }), { http_host: '', http_port: 8222 }, 'http port')
  t.equal(v({ monitor_port: 8223 }).http_port, 8223, 'monitor_port')
  t.equal(v({ max_conn: 7 }).max_connections, 7, 'max_conn')
  t.equal(v({ max_subs: 9 }).max_subscriptions, 9, 'max_subs')
  t.equal(v({ pidfile: '/run/x.pid' }).pid_file, '/run/x.pid', 'pidfile')
  t.equal(v({ leaf: { remotes: [{ url: 'nats://h:7422' }] } }).leafnodes?.remotes.length, 1, 'leaf')
  const a = v({ authorization: { username: 'u', pass: 'p', default_permissions: { pub: 'a' } } }).authorization
  t.match(a, { user: 'u', password: 'p', permissions: { publish: { allow: ['a'] } } }, 'authorization: username, pass, default_permissions')
  const users = v({
    authorization: {
      users: [
        { username: 'a', pass: 'x', permission: { import: 'i.>', export: 'e.>' } },
        { user: 'b', password: 'y', authorization: { publish_allow_responses: { max_responses: 3, expiration: '5s' } } },
        { user: 'c', password: 'z', permissions: { allow_responses: { max_messages: 2 } } },
      ],
    },
  }).authorization?.users
  t.match(users?.[0], { user: 'a', password: 'x', permissions: { publish: { allow: ['i.>'] }, subscribe: { allow: ['e.>'] } } })
  t.match(users?.[1]?.permissions?.allow_responses, { max: 3, expires: 5000 })
  t.match(users?.[2]?.permissions?.allow_responses, { max: 2 })
  t.match(v({ mqtt: { listen: '127.0.0.4:1884' } }).mqtt, { host: '127.0.0.4', port: 1884 }, 'mqtt.listen')
  t.equal(v({ mqtt: { net: '127.0.0.5' } }).mqtt?.host, '127.0.0.5', 'mqtt.net')
  // Errors name the key as written.
  t.equal(errorOf(t, () => v({ listen: 'nohost' })), 'config error: listen: expected a port or "host:port", got "nohost"')
  t.equal(errorOf(t, () => v({ listen: 'h:70000' })), 'config error: listen: expected an integer 0-65535, or -1 for a random free port, got "70000"')
  t.equal(errorOf(t, () => v({ max_conn: 0 })), 'config error: max_conn: expected a positive integer, got 0')
  t.equal(errorOf(t, () => v({ https: 8443 })), 'config error: https: needs the top-level tls block (its certificate serves HTTPS)')
  t.equal(
    errorOf(t, () => v({ allow_non_tls: true, tls: { cert_file: 'c', key_file: 'k', handshake_first: true } })),
    'config error: allow_non_tls: cannot be combined with tls.handshake_first (every client starts with TLS there)',
  )
})

t.test('port -1 is a random free port on every listener', async (t) => {
  const o = validateOptions({ port: -1, http_port: -1, mqtt: { port: -1 } })
  t.equal(o.port, 0, 'the NATS port: 0 asks the OS')
  t.equal(o.mqtt?.port, 0)
  t.equal(o.http_port, -1, 'monitoring keeps -1 (0 means none there)')
  t.equal(validateOptions({ listen: '127.0.0.1:-1' }).port, 0)
  t.equal(errorOf(t, () => validateOptions({ http_port: -2 })), 'config error: http_port: expected an integer 0-65535 (0: no monitoring; -1: a random free port), got -2')
})

t.test('pid_file and ports_file_dir, and their flags', async (t) => {
  t.match(load(['-P', '/run/s.pid', '--ports_file_dir', '/run']), { pid_file: '/run/s.pid', ports_file_dir: '/run' })
  t.match(load(['--pid', '/run/t.pid']), { pid_file: '/run/t.pid' })
  t.match(load(['-c', F], { [F]: '{"pid_file": "/a.pid", "ports_file_dir": "/d"}' }), { pid_file: '/a.pid', ports_file_dir: '/d' })
  t.equal(errorOf(t, () => load(['-c', F], { [F]: '{"pid_file": 3}' })), `config error in ${F}: pid_file: expected a string, got 3`)
})
