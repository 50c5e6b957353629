// The `store` block, --store and a remote's replay_rate and replay_order: defaults, values, one-line errors.

import t from 'tap'
import { loadOptions, validateOptions } from '../src/config.ts'
import { errorOf } from './helpers/config.ts'

const load = (argv: string[], file = ''): ReturnType<typeof loadOptions> => loadOptions({ argv, readFile: () => file, env: {} })

t.test('defaults, "always", sizes; --store over the file', async (t) => {
  t.same(validateOptions({ store: { dir: '/var/lib/sprig/' } }).store, { dir: '/var/lib/sprig', sync_interval: 1000, max_bytes: 1024 ** 3 })
  t.same(validateOptions({ store: { dir: '/s', sync_interval: 'always', max_bytes: '64MB' } }).store, { dir: '/s', sync_interval: 0, max_bytes: 64 * 1024 ** 2 })
  const r = load(['-c', 'x.json', '--store', '/other'], '{"store": {"dir": "/s", "sync_interval": "200ms"}}')
  t.same('options' in r && r.options.store, { dir: '/other', sync_interval: 200, max_bytes: 1024 ** 3 })
  t.equal(validateOptions({}).store, undefined, 'off by default')
})

t.test('errors name the key', async (t) => {
  t.match(errorOf(t, () => validateOptions({ store: { sync_interval: '1s' } })), /store\.dir: required/)
  t.match(errorOf(t, () => validateOptions({ store: { dir: '/s', sync_interval: 'sometimes' } })), /store\.sync_interval: expected "always" or a duration/)
  t.match(errorOf(t, () => validateOptions({ store: { dir: '/s', max_bytes: '10KB' } })), /store\.max_bytes: expected a size of at least 1MB/)
  t.match(errorOf(t, () => validateOptions({ store: { dir: '/s', dri: 'x' } })), /unknown option "store\.dri"/)
  t.match(errorOf(t, () => validateOptions({ store: '/s' })), /store: expected an object/)
  const r = (): unknown => load(['--store', ''])
  t.match(errorOf(t, r), /--store: expected a directory path/)
})

t.test('replay_rate: messages or bytes per second', async (t) => {
  const rate = (v: unknown): [number | undefined, number | undefined] => {
    const o = validateOptions({ leafnodes: { remotes: [{ url: 'nats://hub', replay_rate: v }] } })
    const r = o.leafnodes!.remotes[0]!
    return [r.replay_rate, r.replay_rate_bytes]
  }
  t.same(rate(500), [500, 0])
  t.same(rate('500/s'), [500, 0])
  t.same(rate('1MB/s'), [0, 1024 ** 2])
  t.same(rate(0), [0, 0])
  t.match(errorOf(t, () => rate('fast')), /leafnodes\.remotes\[0\]\.replay_rate: expected messages per second/)
})

t.test('replay_order: interleave (default) or strict', async (t) => {
  const order = (v?: unknown): unknown => validateOptions({ leafnodes: { remotes: [{ url: 'nats://hub', ...(v === undefined ? {} : { replay_order: v }) }] } }).leafnodes!.remotes[0]!.replay_order
  t.equal(order(), 'interleave')
  t.equal(order('strict'), 'strict')
  t.equal(order('interleave'), 'interleave')
  const e = errorOf(t, () => order('fifo'))
  t.match(e, /leafnodes\.remotes\[0\]\.replay_order: expected "interleave" or "strict", got "fifo"/)
  t.notMatch(e, /\n/, 'one line')
})
