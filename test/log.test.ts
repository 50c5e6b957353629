import t from 'tap'
import { createLogger, LEVELS, type Level } from '../src/log.ts'

const fixed = (): Date => new Date('2026-11-22T19:00:00.123Z')

function capture(level: Level, time = true) {
  const lines: string[] = []
  const log = createLogger({ level, time, sink: (l) => lines.push(l), now: fixed })
  return { log, lines }
}

t.test('line format with and without time', async (t) => {
  const a = capture('trace')
  a.log.error('e')
  a.log.warn('w')
  a.log.info('i')
  a.log.debug('d')
  a.log.trace('t')
  t.same(a.lines, [
    '2026-11-22T19:00:00.123Z [ERR] e',
    '2026-11-22T19:00:00.123Z [WRN] w',
    '2026-11-22T19:00:00.123Z [INF] i',
    '2026-11-22T19:00:00.123Z [DBG] d',
    '2026-11-22T19:00:00.123Z [TRC] t',
  ])
  const b = capture('info', false)
  b.log.info('hello')
  t.same(b.lines, ['[INF] hello'])
})

t.test('time defaults to on, now defaults to the clock', async (t) => {
  const lines: string[] = []
  createLogger({ level: 'info', sink: (l) => lines.push(l) }).info('x')
  t.match(lines[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[INF\] x$/)
})

t.test('levels filter', async (t) => {
  for (const level of LEVELS) {
    const { log, lines } = capture(level, false)
    for (const l of LEVELS) log[l](l)
    const want = LEVELS.slice(0, LEVELS.indexOf(level) + 1)
    t.same(lines.map((s) => s.slice(6)), want, `level ${level}`)
    t.equal(log.level, level)
    for (const l of LEVELS) t.equal(log.enabled(l), want.includes(l), `${level} enables ${l}`)
  }
})

t.test('lazy messages run only when enabled', async (t) => {
  const { log, lines } = capture('info', false)
  let calls = 0
  log.debug(() => {
    calls++
    return 'expensive'
  })
  t.equal(calls, 0)
  log.info(() => {
    calls++
    return 'built'
  })
  t.equal(calls, 1)
  t.same(lines, ['[INF] built'])
})

t.test('each call is exactly one line', async (t) => {
  const { log, lines } = capture('trace', false)
  log.info('a\nb\r\nc')
  log.warn('bell\x07 nul\x00 del\x7f tab\tok')
  log.error('sep\u2028x\u2029y\u0085z')
  t.equal(lines.length, 3)
  t.equal(lines[0], '[INF] a\\nb\\r\\nc')
  t.equal(lines[1], '[WRN] bell\\x07 nul\\x00 del\\x7f tab\tok')
  t.equal(lines[2], '[ERR] sep\\u2028x\\u2029y\\x85z')
  for (const l of lines) t.notMatch(l, /[\n\r\u2028\u2029\u0085]/)
})

t.test('unknown level is rejected', async (t) => {
  t.throws(() => createLogger({ level: 'loud' as Level, sink: () => {} }), /unknown log level "loud"/)
})
