import t from 'tap'
import type { Packet } from 'mqtt-packet'
import { clip, createLogger, LEVELS, PEER_TEXT_MAX, quote, type Level } from '../src/log.ts'
import { startBroker } from './helpers/broker.ts'
import { RawMqtt } from './helpers/mqtt.ts'
import { exchange } from './helpers/raw.ts'

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

t.test('peer strings in log lines: quoted, and cut after PEER_TEXT_MAX characters with their size', async (t) => {
  t.equal(quote('sensors.>'), '"sensors.>"')
  t.equal(quote('a"b'), '"a\\"b"')
  t.equal(quote('x'.repeat(PEER_TEXT_MAX)), JSON.stringify('x'.repeat(PEER_TEXT_MAX)), 'at the limit: whole')
  t.equal(quote('x'.repeat(60_000)), `"${'x'.repeat(PEER_TEXT_MAX)}"…(60000 bytes)`)
  t.equal(quote('é'.repeat(300)), `"${'é'.repeat(PEER_TEXT_MAX)}"…(600 bytes)`, 'the size in UTF-8 bytes')
  t.equal(quote('😀'.repeat(150)), `${JSON.stringify('😀'.repeat(100))}…(600 bytes)`, 'a surrogate pair is 4 bytes')
  t.equal(clip('short'), 'short')
  t.equal(clip('y'.repeat(1000)), `${'y'.repeat(PEER_TEXT_MAX)}…(1000 bytes)`)
})

t.test('a 60 KB MQTT user name, a long client id and a long NATS subject make short log lines', async (t) => {
  const b = await startBroker({
    mqtt: true,
    authorization: { users: [{ user: 'u', password: 'p', permissions: { publish: { allow: ['ok.>'] } } }, { user: 'dev', password: 'p' }] },
  })
  t.teardown(() => b.stop())
  const long = 'n'.repeat(60_000)
  const m = await RawMqtt.open(b.mqttPort)
  m.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'c1', username: long, password: Buffer.from('p') } as Packet)
  t.match(await m.next('connack'), { returnCode: 4 }, 'refused: bad user name or password')
  const authLine = b.logs.find((l) => l.includes('authentication error'))
  t.ok(authLine, 'the refusal is logged')
  t.match(authLine, `User "${'n'.repeat(PEER_TEXT_MAX)}"…(60000 bytes)`, 'with the name cut and its size')
  t.ok(authLine!.length < 400, `in a short line (${authLine!.length} characters)`)
  // A client id is in every line about its connection.
  const id = 'i'.repeat(60_000)
  const d = await RawMqtt.connect(b.mqttPort, 4, { clientId: id, username: 'dev', password: Buffer.from('p') })
  t.teardown(() => d.close())
  d.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/#/b', qos: 0 }] } as Packet)
  await d.next('suback')
  const subLine = b.logs.find((l) => l.includes('invalid filter'))
  t.match(subLine, `("${'i'.repeat(PEER_TEXT_MAX)}"…(60000 bytes))`, 'the client id is cut in the label')
  t.ok(subLine!.length < 400, `short (${subLine!.length} characters)`)
  // NATS: a subject near max_control_line in a Publish Violation.
  const subject = `s.${'x'.repeat(3000)}`
  const r = await exchange(b.port, `CONNECT {"user":"u","pass":"p","verbose":false}\r\nPUB ${subject} 1\r\nx\r\nPING\r\n`)
  t.match(r.out, /Permissions Violation for Publish/, 'refused')
  const pubLine = b.logs.find((l) => l.includes('Publish Violation'))
  t.match(pubLine, `Subject "s.${'x'.repeat(PEER_TEXT_MAX - 2)}"…(3002 bytes)`)
  t.ok(pubLine!.length < 400, `short (${pubLine!.length} characters)`)
})
