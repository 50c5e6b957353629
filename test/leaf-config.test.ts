// The `leafnodes` block and the --leaf flag: nats-server's names, sprig's additions, defaults,
// and errors that name the key.

import t from 'tap'
import { loadOptions, validateOptions } from '../src/config.ts'
import { LEAF_DEFAULTS, REMOTE_DEFAULTS } from '../src/options.ts'
import { errorOf } from './helpers/config.ts'

const load = (argv: string[], file = ''): ReturnType<typeof loadOptions> => loadOptions({ argv, readFile: () => file, env: {} })

t.test('a remote with defaults filled in', async (t) => {
  const o = validateOptions({ leafnodes: { remotes: [{ urls: ['nats://u:p@hub:7422', 'tls://hub2'] }] } })
  t.same(o.leafnodes, { ...LEAF_DEFAULTS, remotes: [{ ...REMOTE_DEFAULTS, urls: ['nats://u:p@hub:7422', 'tls://hub2'] }] })
})

t.test('every remote option', async (t) => {
  const o = validateOptions({
    leafnodes: {
      reconnect: '500ms',
      reconnect_max: '1m',
      remotes: [
        {
          url: 'nats://hub:7422',
          no_randomize: true,
          credentials: '/etc/sprig/leaf.creds',
          tls: { ca_file: '/ca.pem', handshake_first: true },
          deny_imports: ['secret.>'],
          deny_exports: ['local.>'],
          allow_exports: ['telemetry.>'],
          allow_imports: ['cmd.>'],
          map: [{ local: 'telemetry.>', hub: 'site.gw42.telemetry.>' }],
          buffer_subjects: ['telemetry.>'],
          buffer_max_msgs: 500,
          buffer_max_bytes: '1MB',
          buffer_policy: 'drop_newest',
          buffer_hold: '30s',
        },
      ],
    },
  })
  const l = o.leafnodes!
  t.equal(l.reconnect, 500)
  t.equal(l.reconnect_max, 60_000)
  const r = l.remotes[0]!
  t.same(r.urls, ['nats://hub:7422'])
  t.equal(r.no_randomize, true)
  t.equal(r.tls?.handshake_first, true)
  t.equal(r.buffer_max_bytes, 1024 * 1024)
  t.equal(r.buffer_policy, 'drop_newest')
  t.equal(r.buffer_hold, 30_000)
  t.same(r.map, [{ local: 'telemetry.>', hub: 'site.gw42.telemetry.>' }])
})

t.test('errors name the key', async (t) => {
  const bad: [unknown, RegExp][] = [
    [{ remotes: 'x' }, /leafnodes\.remotes: expected an array/],
    [{ remotes: [{}] }, /leafnodes\.remotes\[0\]\.urls: required/],
    [{ remotes: [{ urls: ['http://hub'] }] }, /leafnodes\.remotes\[0\]\.urls\[0\]: unsupported scheme "http"/],
    [{ remotes: [{ urls: ['nats://hub'], deny_imports: ['a..b'] }] }, /deny_imports\[0\]: invalid subject/],
    [{ remotes: [{ urls: ['nats://hub'], map: [{ local: 'a.*', hub: 'b.>' }] }] }, /map\[0\]\.local: expected literal tokens/],
    [{ remotes: [{ urls: ['nats://hub'], buffer_policy: 'lifo' }] }, /buffer_policy: expected "drop_oldest" or "drop_newest"/],
    [{ remotes: [{ urls: ['nats://hub'], account: 'A' }] }, /remotes\[0\]\.account.*does not support yet/],
    [{ remotes: [{ urls: ['nats://hub'], deny_import: [] }] }, /did you mean "leafnodes\.remotes\[0\]\.deny_imports"/],
    [{ listen: '0.0.0.0:7422' }, /does not accept leaf connections/],
    [{ reconnect: '10s', reconnect_max: '1s', remotes: [] }, /reconnect_max: cannot be lower/],
  ]
  for (const [leafnodes, re] of bad) t.match(errorOf(t, () => validateOptions({ leafnodes })), re)
})

t.test('--leaf: one remote from the command line', async (t) => {
  const r = load(['--leaf', 'nats://user:pass@hub:7422'])
  t.ok('options' in r)
  if (!('options' in r)) return
  t.same(r.options.leafnodes?.remotes.map((x) => x.urls), [['nats://user:pass@hub:7422']])
  t.match(errorOf(t, () => load(['--leaf', 'ftp://hub'])), /^--leaf: unsupported scheme/)
  const file = JSON.stringify({ leafnodes: { reconnect: '3s', remotes: [{ urls: ['nats://a'] }, { urls: ['nats://b'] }] } })
  const r2 = load(['-c', 'x.json', '--leaf', 'nats://c'], file)
  if (!('options' in r2)) return t.fail('no options')
  t.same(r2.options.leafnodes?.remotes.map((x) => x.urls[0]), ['nats://c'], '--leaf replaces the file\'s remotes')
  t.equal(r2.options.leafnodes?.reconnect, 3000, 'and keeps its reconnect setting')
})
