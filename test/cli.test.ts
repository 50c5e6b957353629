import t from 'tap'
import { FLAGS, parseCli, usage } from '../src/config/cli.ts'
import { ConfigError, loadOptions } from '../src/config.ts'
import { errorOf } from './helpers/config.ts'
import { defaults, type Options } from '../src/options.ts'


const noFiles = (path: string): string => {
  throw new Error(`ENOENT: ${path}`)
}

function load(argv: string[], files: Record<string, string> = {}): Options {
  const r = loadOptions({ argv, readFile: (p) => files[p] ?? noFiles(p) })
  if (!('options' in r)) throw new Error('expected options')
  return r.options
}

t.test('parseCli maps flags to option keys, values as typed', async (t) => {
  t.same(parseCli([]), { help: false, version: false, values: {}, flags: {} })
  t.same(parseCli(['-c', 'a.json', '-a', '127.0.0.1', '-p', '4333', '--max-payload', '2MB', '--max-pending', '16MB', '-l', 'debug']), {
    help: false,
    version: false,
    config: 'a.json',
    values: { host: '127.0.0.1', port: '4333', max_payload: '2MB', max_pending: '16MB', log_level: 'debug' },
    flags: { host: '--addr', port: '--port', max_payload: '--max-payload', max_pending: '--max-pending', log_level: '--log-level' },
  })
  t.same(parseCli(['--config=b.json', '--addr=::1', '--port=1', '--log-level=warn']).values, { host: '::1', port: '1', log_level: 'warn' })
  t.equal(parseCli(['--config=b.json']).config, 'b.json')
  t.equal(parseCli(['-p', '1', '--port', '2']).values.port, '2', 'last one wins')
  t.equal(parseCli(['--port=-1']).values.port, '-1', 'a value starting with "-" via =')
  t.match(parseCli(['-h']), { help: true, version: false })
  t.match(parseCli(['--help']), { help: true })
  t.match(parseCli(['-v']), { version: true, help: false })
  t.match(parseCli(['--version']), { version: true })
})

t.test('flag problems name the flag', async (t) => {
  const cases: [string[], string][] = [
    [['--foo'], 'unknown flag "--foo"; see --help'],
    [['-x'], 'unknown flag "-x"; see --help'],
    [['-hx'], 'unknown flag "-x"; see --help'],
    [['--max_payload', '1'], 'unknown flag "--max_payload" (did you mean "--max-payload"?); see --help'],
    [['--prot', '1'], 'unknown flag "--prot" (did you mean "--port"?); see --help'],
    [['-p'], '--port: expected a value'],
    [['--addr'], '--addr: expected a value'],
    [['-p', '-1'], '--port: expected a value; to give one that starts with "-", write --port=-VALUE'],
    [['--help=yes'], '--help: takes no value'],
    [['serve'], 'unexpected argument "serve"; see --help'],
    [['-c', ''], '--config: expected a file name'],
  ]
  for (const [argv, want] of cases) t.equal(errorOf(t, () => parseCli(argv)), want, argv.join(' '))
  try {
    parseCli(['--foo'])
  } catch (e) {
    t.equal((e as ConfigError).flag, '--foo')
  }
  // Unknown flags are reported before anything else happens, even with --help.
  t.equal(errorOf(t, () => loadOptions({ argv: ['--help', '--foo'], readFile: noFiles })), 'unknown flag "--foo"; see --help')
})

t.test('bad flag values go through the config checks and name the flag', async (t) => {
  const cases: [string[], string][] = [
    [['-p', 'x'], '--port: expected an integer 0-65535, or -1 for a random free port, got "x"'],
    [['--port', '70000'], '--port: expected an integer 0-65535, or -1 for a random free port, got "70000"'],
    [['-a', ''], '--addr: expected a host name or IP address, got ""'],
    [['--max-payload', 'abc'], '--max-payload: expected a size in bytes (number, or a string like "1MB"), got "abc"'],
    [['--max-payload', '65MB', '--max-pending', '1GB'], '--max-payload: expected a size up to 64MB (67108864 bytes), got "65MB"'],
    [['--max-pending', '0'], '--max-pending: expected a size greater than 0, got "0"'],
    [['--max-pending', '1K'], '--max-pending: max_payload (1048576) cannot be higher than max_pending (1000)'],
    [['-l', 'loud'], '--log-level: expected one of error, warn, info, debug, trace, got "loud"'],
  ]
  for (const [argv, want] of cases) t.equal(errorOf(t, () => load(argv)), want, argv.join(' '))
  try {
    load(['-p', 'x'])
  } catch (e) {
    t.equal((e as ConfigError).flag, '--port')
    t.equal((e as ConfigError).key, 'port')
  }
})

t.test('flags override the config file', async (t) => {
  const file = JSON.stringify({ host: '10.0.0.1', port: 5000, max_payload: '2MB', max_pending: '4MB', log_level: 'warn', ping_max: 5 })
  const files = { 'sprig.json': file }
  t.match(load(['-c', 'sprig.json'], files), { host: '10.0.0.1', port: 5000, max_payload: 2 * 1024 ** 2, log_level: 'warn', ping_max: 5 })
  t.same(load(['-c', 'sprig.json', '-a', '127.0.0.1', '-p', '6000', '--max-payload', '1KB', '--max-pending', '1MB', '-l', 'error'], files), {
    ...defaults,
    host: '127.0.0.1',
    port: 6000,
    max_payload: 1024,
    max_pending: 1024 ** 2,
    log_level: 'error',
    ping_max: 5,
  })
  t.equal(load(['-p', '0']).port, 0)
  t.equal(load(['-l', 'TRACE']).log_level, 'trace')
  // -l sets the level outright, even over the file's debug: true.
  t.match(load(['-c', 'd.json', '-l', 'error'], { 'd.json': '{"debug": true}' }), { log_level: 'error', debug: false })
  t.match(load(['-c', 'd.json'], { 'd.json': '{"debug": true}' }), { log_level: 'debug', debug: true })
})

t.test('help and version', async (t) => {
  const h = loadOptions({ argv: ['-h'], readFile: noFiles })
  t.same(h, { help: usage() })
  t.same(loadOptions({ argv: ['-v'], readFile: noFiles }), { version: true })
  t.same(loadOptions({ argv: ['-p', 'x', '-v'], readFile: noFiles }), { version: true }, 'values are not checked')

  const text = usage()
  t.ok(text.startsWith('Usage: sprig [options]\n'))
  t.ok(text.endsWith('\n'))
  for (const f of FLAGS) {
    const line = text.split('\n').find((l) => l.includes(`--${f.long}`))
    t.ok(line, `--${f.long} listed`)
    if (f.short) t.match(line, `-${f.short}, --${f.long}`)
  }
  t.match(text, /-a, --addr HOST +.*\(default: 0\.0\.0\.0\)/)
  t.match(text, /-p, --port PORT +.*\(default: 4222\)/)
  t.match(text, /--max-payload SIZE +.*\(default: 1MB\)/)
  t.match(text, /--max-pending SIZE +.*\(default: 8MB\)/)
  t.match(text, /--max-memory SIZE +.*\(default: RAM\/8, at most 1GB\)/)
  t.match(text, /-l, --log-level LEVEL +error, warn, info, debug, trace \(default: info\)/)
  t.match(text, /1K = 1000, 1KB = 1KiB = 1024/)
  for (const line of text.split('\n')) t.ok(line.length <= 100, `short line: ${line}`)
})

t.test('-m / --http-port sets the monitoring port', async (t) => {
  t.equal(load(['-m', '8222']).http_port, 8222)
  t.equal(load(['--http-port', '0']).http_port, 0)
  t.throws(() => load(['-m', 'x']), /--http-port: expected an integer 0-65535/)
})
