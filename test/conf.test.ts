// nats-server's config syntax (src/config/conf.ts): the grammar, its errors with file:line:column,
// include and $VARIABLE, the choice between JSON and conf, and a differential run against
// real nats-server (`-t`, test-config mode) over the same files.

import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfSyntaxError, configSyntax, parseConf, positionOf } from '../src/config/conf.ts'
import { ConfigError, loadOptions } from '../src/config.ts'
import { defaults, type Options } from '../src/options.ts'
import { errorOf } from './helpers/config.ts'
import { havePeer, natsServerBins } from './helpers/peers.ts'

const F = '/etc/sprig/sprig.conf'

function files(map: Record<string, string>): (path: string) => string {
  return (path) => {
    const text = map[path]
    if (text === undefined) throw new Error(`ENOENT: no such file or directory, open '${path}'`)
    return text
  }
}

const parse = (text: string, env: Record<string, string> = {}, more: Record<string, string> = {}): Record<string, unknown> =>
  parseConf(text, F, { env, readFile: files(more) }).value

/** The message of the ConfSyntaxError that parsing `text` throws. */
function syntaxError(t: Test, text: string, env: Record<string, string> = {}, more: Record<string, string> = {}): string {
  try {
    parse(text, env, more)
  } catch (e) {
    t.type(e, ConfSyntaxError)
    return (e as Error).message
  }
  t.fail(`expected a syntax error for ${JSON.stringify(text)}`)
  return ''
}

function load(text: string, opts: { file?: string; env?: Record<string, string>; more?: Record<string, string> } = {}): Options {
  const file = opts.file ?? F
  const r = loadOptions({ argv: ['-c', file], readFile: files({ [file]: text, ...opts.more }), env: opts.env ?? {} })
  if (!('options' in r)) throw new Error('expected options')
  return r.options
}

t.test('key and value separators, terminators, comments', async (t) => {
  const text = `# a comment
// another
a: 1
b = 2
c 3
d: 4; e: 5, f: 6
g: 7 # after a value
h: 8 // after a value
"quoted key": 9
'single key' = 10
k
  11
`
  t.same(parse(text), { a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, 'quoted key': 9, 'single key': 10, k: 11 })
  t.same(parse(''), {})
  t.same(parse('  # only comments\n// here\n'), {})
  t.same(parse('\ufeffa: 1\r\nb: 2\r\n'), { a: 1, b: 2 }, 'BOM and CRLF')
  t.same(parse('a: 1\na: 2'), { a: 2 }, 'the later value wins, as in nats-server')
  t.same(parse('{ "a": 1, "b": [1, 2], "c": {"d": "e"}, }'), { a: 1, b: [1, 2], c: { d: 'e' } }, 'JSON-like text')
  t.same(parse('{ a: 1 }\nb: 2'), { a: 1, b: 2 }, 'a top-level { } wrapper')
  t.same(parse('a:'), { a: '' }, 'a separator at the end of the file is an empty value (as in nats-server)')
})

t.test('blocks and arrays', async (t) => {
  const text = `
mqtt { port: 1883 }
auth {
  users = [
    {user: a, password: b}, {user: c
      password: d}
    # comment in an array
    {user: e, password: f} // trailing comment
  ]
  nested { deeper { x: 1; y: 2 } }
}
list: [a, b
  c, "d", 'e', 1, true,]
empty: []
emptymap {}
`
  t.same(parse(text), {
    mqtt: { port: 1883 },
    auth: {
      users: [
        { user: 'a', password: 'b' },
        { user: 'c', password: 'd' },
        { user: 'e', password: 'f' },
      ],
      nested: { deeper: { x: 1, y: 2 } },
    },
    list: ['a', 'b', 'c', 'd', 'e', 1, true],
    empty: [],
    emptymap: {},
  })
  const proto = parse('__proto__ { x: 1 }')
  t.equal(Object.getPrototypeOf(proto), Object.prototype, '__proto__ stays a plain key')
  t.same(Object.keys(proto), ['__proto__'])
})

t.test('strings: double, single, unquoted, parenthesized', async (t) => {
  t.same(parse('a: "x\\ty\\nz\\r\\"q\\"\\\\ \\x41"'), { a: 'x\ty\nz\r"q"\\ A' })
  t.same(parse("a: 'raw \\q \"x\"'"), { a: 'raw \\q "x"' }, 'single quotes: no escapes')
  t.same(parse('a: "two\nlines"'), { a: 'two\nlines' })
  t.same(parse('a: hello\nb: nats-leaf://user:pw@hub.example.com:7422/x?y#z\nc: a.b.>'), {
    a: 'hello',
    b: 'nats-leaf://user:pw@hub.example.com:7422/x?y#z',
    c: 'a.b.>',
  })
  t.same(parse('listen: 0.0.0.0:4222\nhost: 127.0.0.1\nip6: ::1'), { listen: '0.0.0.0:4222', host: '127.0.0.1', ip6: '::1' })
  t.same(parse('a: un\\tquoted'), { a: 'un\tquoted' }, 'escapes work unquoted too')
  t.same(parse('a: (\nline one\n  line two\n)\nb: 1'), { a: '\nline one\n  line two', b: 1 })
  t.same(parse('t: "true"\nd: "10s"'), { t: 'true', d: '10s' }, 'quoted words stay strings')
})

t.test('numbers, sizes, booleans, durations', async (t) => {
  t.same(parse('a: 0\nb: -5\nc: 1.5\nd: -0.25\ne: 4222'), { a: 0, b: -5, c: 1.5, d: -0.25, e: 4222 })
  const sizes: [string, number][] = [
    ['1k', 1000], ['1K', 1000], ['1kb', 1024], ['1KB', 1024], ['1ki', 1024], ['1KiB', 1024],
    ['2m', 2_000_000], ['2MB', 2 * 1024 ** 2], ['2Mi', 2 * 1024 ** 2], ['2mib', 2 * 1024 ** 2],
    ['1g', 1e9], ['1GB', 1024 ** 3], ['1t', 1e12], ['1TB', 1024 ** 4], ['1p', 1e15], ['1pb', 1024 ** 5],
    ['-1k', -1000],
  ]
  for (const [text, want] of sizes) t.same(parse(`v: ${text}`), { v: want }, text)
  t.same(parse('v: 1e'), { v: 1e18 }, 'e is exa')
  for (const [word, want] of [['true', true], ['TRUE', true], ['yes', true], ['Yes', true], ['on', true], ['false', false], ['no', false], ['off', false], ['OFF', false]] as const) {
    t.same(parse(`v: ${word}`), { v: want }, word)
  }
  // Durations stay strings; sprig's checks parse them.
  t.same(parse('a: 10s\nb: 500ms\nc: 2h\nd: "1m30s"\ne: "1.5s"\nf: 4222abc'), { a: '10s', b: '500ms', c: '2h', d: '1m30s', e: '1.5s', f: '4222abc' })
  t.same(parse('d: 2006-01-02T15:04:05Z'), { d: '2006-01-02T15:04:05Z' })
})

t.test('variables: earlier keys in scope, environment, bcrypt', async (t) => {
  const text = `
PORT: 4333
port: $PORT
auth {
  PASS: s3cret
  users [ { user: a, password: $PASS, port: $PORT } ]
}
other { p: $PORT }
hash: $2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG
`
  t.same(parse(text), {
    port: 4333,
    auth: { users: [{ user: 'a', password: 's3cret', port: 4333 }] },
    other: { p: 4333 },
    hash: '$2a$11$W2zko751KUvVy59mUTWmpOdWjpEm5qhcCZRd05GjI/sSOT.xtiHyG',
  }, 'keys only used as variables are dropped, as nats-server ignores them')
  const kept = parseConf('port: 4333\nhttp_port: $port', F, { isOption: (p) => p === 'port' }).value
  t.same(kept, { port: 4333, http_port: 4333 }, 'a real option used as a variable stays')
  const objects = parse('PERMS { publish: "a.>" }\nu1 { permissions: $PERMS }\nu2 { permissions: $PERMS }')
  t.same(objects, { u1: { permissions: { publish: 'a.>' } }, u2: { permissions: { publish: 'a.>' } } })
  t.not((objects.u1 as { permissions: object }).permissions, (objects.u2 as { permissions: object }).permissions, 'a copy each')

  // The environment: values are read as values (a number is a number).
  t.same(parse('a: $N\nb: $S\nc: $Q\nd: $B\ne: $SZ', { N: '4222', S: 'hello', Q: '"a b"', B: 'true', SZ: '1MB' }), {
    a: 4222, b: 'hello', c: 'a b', d: true, e: 1048576,
  })
  t.same(parse('X: 1\na { b: $X }', { X: '2' }), { a: { b: 1 } }, 'a key in scope wins over the environment')
})

t.test('include: relative to the including file, keys merged where it stands', async (t) => {
  const more = {
    '/etc/sprig/auth.conf': 'authorization {\n  include users/list.conf\n}\n',
    '/etc/sprig/users/list.conf': 'users = [ {user: a, password: $P} ]\nP: x',
    '/etc/sprig/abs/x.conf': 'x: 1',
  }
  t.equal(syntaxError(t, 'include ./auth.conf', {}, more), 'config error in /etc/sprig/users/list.conf:1:31: users[0].password: $P is not defined: no earlier key "P" in scope and no environment variable P', 'an included file has its own scope, and P comes too late')
  more['/etc/sprig/users/list.conf'] = 'P: x\nusers = [ {user: a, password: $P} ]'
  t.same(parse('port: 1\ninclude ./auth.conf\ninclude "abs/x.conf"\ninclude /abs/x.conf', {}, more), {
    port: 1,
    authorization: { users: [{ user: 'a', password: 'x' }] },
    x: 1,
  }, 'even "/abs" is joined to the including directory, as nats-server does')
  const r = parseConf('port: 1\ninclude ./auth.conf', F, { readFile: files(more) })
  t.same(r.positions.get('authorization.users[0].password'), { file: '/etc/sprig/users/list.conf', line: 2, column: 21 })
  t.same(positionOf(r.positions, 'authorization.users[0].nope.deeper'), { file: '/etc/sprig/users/list.conf', line: 2, column: 11 })
  t.same(parse('include b.conf\ny: $Y', {}, { '/etc/sprig/b.conf': 'Y: 5' }), { y: 5 }, 'what an include defines is in scope after it')
  t.equal(syntaxError(t, 'X: 5\ninclude b.conf', {}, { '/etc/sprig/b.conf': 'Y: $X' }), 'config error in /etc/sprig/b.conf:1:4: Y: $X is not defined: no earlier key "X" in scope and no environment variable X')
})

t.test('errors: one line naming file, line, column and key', async (t) => {
  const cases: [string, string][] = [
    ['port: $NOPE', `config error in ${F}:1:7: port: $NOPE is not defined: no earlier key "NOPE" in scope and no environment variable NOPE`],
    ['a {\n  b {\n    c: $LATER\n  }\n}\nLATER: 1', `config error in ${F}:3:8: a.b.c: $LATER is not defined: no earlier key "LATER" in scope and no environment variable LATER`],
    ['users [ { password: $P } ]', `config error in ${F}:1:21: users[0].password: $P is not defined: no earlier key "P" in scope and no environment variable P`],
    ['port:\n4222', `config error in ${F}:1:6: port: expected a value, found the end of the line`],
    ['name: "a\\qb"', `config error in ${F}:1:9: name: invalid escape "\\q" (allowed: \\t \\n \\r \\" \\\\ \\xHH)`],
    ['name: "a\\x4"', `config error in ${F}:1:9: name: expected two hexadecimal digits after "\\x", got "4\\""`],
    ['name: "abc', `config error in ${F}:1:7: name: string is not closed (missing '"')`],
    ["name: 'abc", `config error in ${F}:1:7: name: string is not closed (missing "'")`],
    ['max_payload: 1.5MB', `config error in ${F}:1:17: max_payload: unexpected "M" after the number 1.5; write values with units in quotes, like "1.5s"`],
    ['max_payload: 1kbb', `config error in ${F}:1:14: max_payload: unknown size unit "kbb" (use K, KB, KiB, M, MB, MiB, G, ...)`],
    ['n: 99999999999999999999', `config error in ${F}:1:4: n: the number 99999999999999999999 is out of range`],
    ['n: 16E', `config error in ${F}:1:4: n: the number 16E is out of range`],
    ['d: 1m30s', `config error in ${F}:1:6: d: unexpected "3" after the size 1m`],
    ['n: -5s', `config error in ${F}:1:6: n: unexpected "s" after the number -5`],
    ['n: .5', `config error in ${F}:1:4: n: a number must start with a digit`],
    ['n: 1.', `config error in ${F}:1:6: n: expected a digit after ".", got end of file`],
    ['d: 2006-01-02', `config error in ${F}:1:4: d: dates must be in full Zulu form, like 2006-01-02T15:04:05Z`],
    ['a {\n  b: 1\n', `config error in ${F}:1:3: a: "{" is not closed (missing "}")`],
    ['a [1, 2', `config error in ${F}:1:3: a: "[" is not closed (missing "]")`],
    ['a [1 2]', `config error in ${F}:1:6: a: unexpected "2", expected "," or "]"`],
    ['a [, 1]', `config error in ${F}:1:4: a: unexpected ",", expected a value or "]"`],
    ['a { b: 1 c: 2 }', `config error in ${F}:1:10: a: unexpected "c", expected a new line, "," or "}"`],
    ['a { b: , }', `config error in ${F}:1:8: a.b: unexpected ",", expected a value`],
    ['a: 1 b: 2', `config error in ${F}:1:6: unexpected "b" after the value; expected a new line, ";" or ","`],
    ['a: 1\n}', `config error in ${F}:2:1: unexpected "}" (no "{" to close)`],
    ['{ a: 1', `config error in ${F}:1:1: "{" is not closed (missing "}")`],
    [': 1', `config error in ${F}:1:1: unexpected ":", expected a key`],
    ['port', `config error in ${F}:1:1: port: expected a value after the key`],
    ['"port: 1', `config error in ${F}:1:1: key is not closed (missing '"')`],
    ['a: (\nnever closed', `config error in ${F}:1:4: a: "(" is not closed (missing ")" on a line of its own)`],
    ['include\nx.conf', `config error in ${F}:1:8: expected a file name after include, got a new line`],
    ['include [x]', `config error in ${F}:1:9: expected a file name after include, got "["`],
    ['a { b { c { d ' + '{ e '.repeat(70), `config error in ${F}:1:259: a.b.c.d.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e.e: nested too deeply`],
  ]
  for (const [text, want] of cases) t.equal(syntaxError(t, text), want, JSON.stringify(text))

  // Environment values must be values.
  t.equal(syntaxError(t, 'server_name: $X', { X: 'foo bar' }), `config error in ${F}:1:14: server_name: environment variable X is not a valid value: unexpected "b" after the value; expected a new line, ";" or ","`)
  t.equal(syntaxError(t, 'a: $A', { A: '$B', B: '$A' }), `config error in ${F}:1:4: a: environment variables refer to each other in a loop: A -> B -> A`)
  t.equal(syntaxError(t, 'a: $A', { A: '$B', B: '"x' }), `config error in ${F}:1:4: a: environment variable B is not a valid value: string is not closed (missing '"')`)
  t.same(parse('a: $A', { A: '$B', B: '[1, 2]' }), { a: [1, 2] })

  // The error carries its position.
  try {
    parse('a: 1\n  b: $NOPE')
  } catch (e) {
    const err = e as ConfSyntaxError
    t.match(err, { file: F, line: 2, column: 6, key: 'b' })
  }
})

t.test('any input: a ConfSyntaxError of one line, or a value', async (t) => {
  t.equal(syntaxError(t, '"two\nline key": "x'), `config error in ${F}:2:12: two\\nline key: string is not closed (missing '"')`)
  t.equal(syntaxError(t, 'a: "x\\\ny"'), `config error in ${F}:1:6: a: invalid escape "\\\\n" (allowed: \\t \\n \\r \\" \\\\ \\xHH)`)
  // Pieces of the grammar in random order (deterministic): nothing else is thrown, nothing hangs.
  const pieces = ['a', 'b', ':', '=', ' ', '\n', '{', '}', '[', ']', ',', ';', '"', "'", '\\', 'x', '$', '1', '.', '-', 'k', 'B', '#', '/', '(', ')', 'include ', 'true', '\r', '\t']
  let seed = 7
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  let bad = 0
  for (let k = 0; k < 20_000; k++) {
    let text = ''
    for (let j = rnd(40); j > 0; j--) text += pieces[rnd(pieces.length)]
    try {
      parseConf(text, F, { readFile: () => 'include ./x', env: { a: '$a', b: 'x y' } })
    } catch (e) {
      if (!(e instanceof ConfSyntaxError) || /[\r\n]/.test(e.message)) {
        bad++
        t.fail(`${JSON.stringify(text)}: ${String(e)}`)
      }
    }
  }
  t.equal(bad, 0)
})

t.test('include errors: loop, missing file, no reader', async (t) => {
  const loop = { '/etc/sprig/a.conf': 'x: 1\ninclude "b.conf"', '/etc/sprig/b.conf': 'include ./sprig.conf' }
  t.equal(
    syntaxError(t, 'include ./a.conf', {}, loop),
    'config error in /etc/sprig/b.conf:1:9: include loop: /etc/sprig/sprig.conf -> /etc/sprig/a.conf -> /etc/sprig/b.conf -> /etc/sprig/sprig.conf',
  )
  t.equal(syntaxError(t, 'include self.conf', {}, { '/etc/sprig/self.conf': 'a: 1\ninclude self.conf' }), 'config error in /etc/sprig/self.conf:2:9: include loop: /etc/sprig/sprig.conf -> /etc/sprig/self.conf -> /etc/sprig/self.conf')
  t.equal(syntaxError(t, 'a {\n  include nope.conf\n}'), `config error in ${F}:2:11: a: cannot read included file /etc/sprig/nope.conf: ENOENT: no such file or directory, open '/etc/sprig/nope.conf'`)
  t.throws(() => parseConf('include x.conf', F), /include is not available here/)
})

t.test('choosing the syntax: by extension, else by content', async (t) => {
  t.equal(configSyntax('a.conf', '{"port": 1}'), 'conf')
  t.equal(configSyntax('a.CONF', ''), 'conf')
  t.equal(configSyntax('a.json', 'port: 1'), 'json')
  t.equal(configSyntax('sprig.cfg', '{"port": 1}'), 'json')
  t.equal(configSyntax('sprig.cfg', '// c\n# c\n/* c */ {\n  // c\n  "port": 1}'), 'json')
  t.equal(configSyntax('sprig.cfg', '{}'), 'json')
  t.equal(configSyntax('sprig.cfg', ''), 'json')
  t.equal(configSyntax('sprig.cfg', '{ port: 1 }'), 'conf')
  t.equal(configSyntax('sprig.cfg', 'port: 1'), 'conf')
  t.equal(configSyntax('/etc/nats-server', '# nats\nport 4222'), 'conf')

  // Through loadOptions: the same options from either syntax.
  t.match(load('port: 4333\nmax_payload: 2MB', { file: '/etc/x.conf' }), { port: 4333, max_payload: 2 * 1024 ** 2 })
  t.match(load('{"port": 4333, "max_payload": "2MB"}', { file: '/etc/x.json' }), { port: 4333, max_payload: 2 * 1024 ** 2 })
  t.match(load('port: 4333\nmax_payload: 2MB', { file: '/etc/sprig' }), { port: 4333, max_payload: 2 * 1024 ** 2 })
  // JSON-looking text that is only valid as nats-server syntax still loads, when the name does not say JSON.
  t.match(load('{\n  "port": 4333\n  "host": "127.0.0.1"\n}', { file: '/etc/sprig' }), { port: 4333, host: '127.0.0.1' })
  t.equal(
    errorOf(t, () => load('{\n  "port": 4333\n  "host": "127.0.0.1"\n}', { file: '/etc/x.json' })),
    'config error in /etc/x.json:3:3: missing "," before this key',
  )
  // Neither: the JSON error is shown, since the text looked like JSON.
  t.equal(errorOf(t, () => load('{"port": 4333 "x"}', { file: '/etc/sprig' })), 'config error in /etc/sprig:1:15: missing "," before this key')
  // ${NAME} strings are JSON's way; in conf syntax $NAME is.
  t.match(load('{"port": "${P}"}', { file: '/etc/x.json', env: { P: '4334' } }), { port: 4334 })
  t.match(load('port: $P', { env: { P: '4334' } }), { port: 4334 })
})

t.test('loadOptions over conf syntax: errors name the line of the key', async (t) => {
  const e = (text: string, more: Record<string, string> = {}): string => errorOf(t, () => load(text, { more }))
  t.equal(e('port: 1\ncluster {\n  port: 6222\n}'), `config error in ${F}:2:1: unknown option "cluster" (a nats-server option that sprig does not support yet)`)
  t.equal(e('port: 1\n\n  prot: 2'), `config error in ${F}:3:3: unknown option "prot" (did you mean "port"?)`)
  t.equal(e('port: "x"'), `config error in ${F}:1:1: port: expected an integer 0-65535, or -1 for a random free port, got "x"`)
  t.equal(e('authorization {\n  users [\n    {user: a, password: b, permissions: { publish: { allow: "a..b" } }}\n  ]\n}'), `config error in ${F}:3:54: authorization.users[0].permissions.publish.allow: invalid subject "a..b"`)
  t.equal(e('mqtt {\n  port: 1883\n  nope: 1\n}'), `config error in ${F}:3:3: unknown option "mqtt.nope"`)
  t.equal(e('leafnodes { remotes [ { url: "nats://h:7422", hub: true } ] }'), `config error in ${F}:1:47: unknown option "leafnodes.remotes[0].hub" (a nats-server option that sprig does not support yet)`)
  t.equal(e('authorization {\n  users [ {user: a, password: b}, {password: c} ]\n}'), `config error in ${F}:2:35: authorization.users[1].user: required`, 'a missing key: the line of its block')
  t.equal(e('include inc.conf', { '/etc/sprig/inc.conf': '\nmax_payload: "abc"' }), 'config error in /etc/sprig/inc.conf:2:1: max_payload: expected a size in bytes (number, or a string like "1MB"), got "abc"', 'a key from an include names that file')
  t.equal(e('max_payload: 9MB'), `config error in ${F}:1:1: max_payload (9437184) cannot be higher than max_pending (8388608)`)
  t.equal(e('port: $NOPE'), `config error in ${F}:1:7: port: $NOPE is not defined: no earlier key "NOPE" in scope and no environment variable NOPE`)
  try {
    load('\nport: "x"')
  } catch (err) {
    t.type(err, ConfigError)
    t.match(err, { file: F, line: 2, column: 1, key: 'port' })
  }
  // A key defined only to be used as $NAME is not an unknown option.
  t.match(load('SECRET: s3cret\nauthorization { token: $SECRET }'), { authorization: { token: 's3cret' } })
  t.match(load('port: 4333\nhttp_port: $port'), { port: 4333, http_port: 4333 }, 'an option used as a variable still applies')
})

// ---------------------------------------------------------------------------------------
// Differential: nats-server's test-config mode (-t) over the same files.

interface Case {
  name: string
  files: Record<string, string>
  env?: Record<string, string>
  /** What sprig reads; undefined: both must refuse the file. */
  want?: Partial<Options>
}

const GOOD: Case[] = [
  {
    name: 'basic options, every separator and comment style',
    files: {
      'main.conf': '# gateway\nport: 4333\nhost = 127.0.0.1\nmax_payload 2MB // big\nhttp_port: 8333\nserver_name: "edge-1"; max_connections: 100\n',
    },
    want: { port: 4333, host: '127.0.0.1', max_payload: 2 * 1024 ** 2, http_port: 8333, server_name: 'edge-1', max_connections: 100 },
  },
  {
    name: 'sizes, durations, booleans',
    files: {
      'main.conf': 'ping_interval: "2m"\nping_max: 3\nwrite_deadline: "5s"\nmax_pending: 64MB\nmax_control_line: 4KB\nlogtime: false\ndebug: yes\n',
    },
    want: { ping_interval: 120_000, ping_max: 3, write_deadline: 5000, max_pending: 64 * 1024 ** 2, max_control_line: 4096, logtime: false, log_level: 'debug' },
  },
  {
    name: 'users with permissions, variables and an environment variable',
    env: { BOB_PW: 'b0b' },
    files: {
      'main.conf': `PASS: s3cret
authorization {
  timeout: 2
  users = [
    { user: alice, password: $PASS
      permissions: { publish: { allow: ["a.>"], deny: "a.b" }, subscribe: [c.*, "d.>"], allow_responses: true } }
    { user: bob, password: $BOB_PW }
  ]
}
no_auth_user: bob
`,
    },
    want: {
      no_auth_user: 'bob',
      authorization: {
        users: [
          {
            user: 'alice',
            password: 's3cret',
            permissions: { publish: { allow: ['a.>'], deny: ['a.b'] }, subscribe: { allow: ['c.*', 'd.>'] }, allow_responses: { max: 1, expires: 120_000 } },
          },
          { user: 'bob', password: 'b0b' },
        ],
      },
    },
  },
  {
    name: 'token authorization',
    files: { 'main.conf': 'authorization { token: "t0ken", timeout: 1.5 }' },
    want: { authorization: { token: 't0ken', timeout: 1500 } },
  },
  {
    name: 'mqtt block',
    files: { 'main.conf': 'server_name: gw\nmqtt {\n  port: 1884\n  max_ack_pending: 100\n}\n' },
    want: { server_name: 'gw' },
  },
  {
    name: 'leafnode remotes with unquoted URLs',
    files: { 'main.conf': 'leafnodes {\n  remotes [\n    { urls: [nats-leaf://hub:7422, "tls://hub2:7422"], deny_imports: ["secret.>"] }\n  ]\n}\n' },
  },
  {
    name: 'JSON-like text in a .conf file',
    files: { 'main.conf': '{\n  "port": 4334,\n  "authorization": { "token": "abc" }\n}\n' },
    want: { port: 4334, authorization: { token: 'abc' } },
  },
  {
    name: 'nested includes relative to each including file',
    files: {
      'main.conf': 'port: 4335\ninclude sub/auth.conf\n',
      'sub/auth.conf': 'authorization {\n  include users.conf\n}\n',
      'sub/users.conf': "users = [ {user: 'u', password: 'p'} ]\n",
    },
    want: { port: 4335, authorization: { users: [{ user: 'u', password: 'p' }] } },
  },
  {
    name: "nats-server's other spellings: listen, http, net-less mqtt listen, max_conn, max_subs, pidfile",
    files: {
      'main.conf': 'listen: "127.0.0.1:4336"\nhttp: "127.0.0.1:8336"\nmax_conn: 50\nmax_subs: 20\npidfile: "/tmp/sprig-x.pid"\nports_file_dir: "/tmp"\nmqtt { listen: "127.0.0.1:1886" }\n',
    },
    want: { host: '127.0.0.1', port: 4336, http_host: '127.0.0.1', http_port: 8336, max_connections: 50, max_subscriptions: 20, pid_file: '/tmp/sprig-x.pid', ports_file_dir: '/tmp', mqtt: { host: '127.0.0.1', port: 1886 } as Options['mqtt'] },
  },
  {
    name: 'allow_non_tls',
    files: { 'main.conf': 'allow_non_tls: true\n' },
    want: { allow_non_tls: true },
  },
  {
    name: 'net, monitor_port, port -1',
    files: { 'main.conf': 'net: 127.0.0.1\nport: -1\nmonitor_port: -1\npid_file: /tmp/sprig-y.pid\n' },
    want: { host: '127.0.0.1', port: 0, http_port: -1, pid_file: '/tmp/sprig-y.pid' },
  },
  {
    name: 'authorization and users in every spelling',
    files: {
      'main.conf': `authorization {
  default_permissions: { import: "pub.>", export: "sub.>" }
  users = [
    { username: a, pass: x, permission: { pub: "a.>", publish_allow_responses: { max_responses: 2, expiration: "5s" } } }
    { user: b, password: y, authorization: { sub: "b.>", allow_responses: { max_messages: 3 } } }
  ]
}
`,
    },
    want: {
      authorization: {
        permissions: { publish: { allow: ['pub.>'] }, subscribe: { allow: ['sub.>'] } },
        users: [
          { user: 'a', password: 'x', permissions: { publish: { allow: ['a.>'] }, allow_responses: { max: 2, expires: 5000 } } },
          { user: 'b', password: 'y', permissions: { subscribe: { allow: ['b.>'] }, allow_responses: { max: 3, expires: 120_000 } } },
        ],
      },
    },
  },
  {
    name: 'single user with username and pass, leaf for leafnodes',
    files: { 'main.conf': 'authorization { username: u, pass: p }\nleaf { remotes [ { url: "nats://hub:7422" } ] }\n' },
    want: { authorization: { user: 'u', password: 'p' } },
  },
]

const BAD: Case[] = [
  { name: 'undefined variable', files: { 'main.conf': 'port: $NOPE_NOT_SET\n' } },
  { name: 'variable used before its key', files: { 'main.conf': 'authorization { users [ {user: a, password: $P} ] }\nP: x\n' } },
  { name: 'invalid escape', files: { 'main.conf': 'server_name: "a\\qb"\n' } },
  { name: 'value on the next line', files: { 'main.conf': 'port:\n4222\n' } },
  { name: 'a float with a unit', files: { 'main.conf': 'max_payload: 1.5MB\n' } },
  { name: 'unknown option', files: { 'main.conf': 'prot: 4222\n' } },
  { name: 'unclosed block', files: { 'main.conf': 'authorization {\n  token: abc\n' } },
  { name: 'missing include', files: { 'main.conf': 'include ./missing.conf\n' } },
  { name: 'two values on a line', files: { 'main.conf': 'port: 4222 http_port: 8222\n' } },
  { name: 'an environment variable that is not a value', env: { BAD_VALUE: 'foo bar' }, files: { 'main.conf': 'server_name: $BAD_VALUE\n' } },
  { name: 'listen without a port', files: { 'main.conf': 'listen: "127.0.0.1"\n' } },
]

t.test('differential: nats-server -t and sprig agree on each file', async (t) => {
  if (!havePeer(t, 'nats-server', 'nats-server')) return
  const bins = natsServerBins()
  const dir = mkdtempSync(join(tmpdir(), 'sprig-conf-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let n = 0
  for (const c of [...GOOD, ...BAD]) {
    const base = join(dir, String(n++))
    for (const [name, text] of Object.entries(c.files)) {
      mkdirSync(join(base, name, '..'), { recursive: true })
      writeFileSync(join(base, name), text)
    }
    const main = join(base, 'main.conf')
    const good = GOOD.includes(c)
    for (const { bin, version } of bins) {
      const r = spawnSync(bin, ['-c', main, '-t'], { encoding: 'utf8', env: { ...process.env, ...c.env }, timeout: 10_000 })
      const out = `${r.stdout}${r.stderr}`.trim()
      if (good) t.equal(r.status, 0, `nats-server ${version} accepts: ${c.name} (${out})`)
      else t.not(r.status, 0, `nats-server ${version} refuses: ${c.name} (${out})`)
    }
    const read = (p: string): string => readFileSync(p, 'utf8')
    if (good) {
      const r = loadOptions({ argv: ['-c', main], readFile: read, env: c.env ?? {} })
      t.ok('options' in r, `sprig accepts: ${c.name}`)
      if ('options' in r && c.want) t.match(r.options, c.want, `sprig reads: ${c.name}`)
    } else {
      let err: unknown
      try {
        loadOptions({ argv: ['-c', main], readFile: read, env: c.env ?? {} })
      } catch (e) {
        err = e
      }
      t.type(err, ConfigError, `sprig refuses: ${c.name}`)
      t.match((err as Error | undefined)?.message, /^config error in \S+:\d+:\d+: /, `one line with file:line:column: ${(err as Error | undefined)?.message}`)
    }
  }
  // The first case, entirely: nothing else changed from the defaults.
  const r = loadOptions({ argv: ['-c', join(dir, '0', 'main.conf')], readFile: (p) => readFileSync(p, 'utf8') })
  t.same('options' in r && r.options, { ...defaults, ...GOOD[0]!.want })
})
