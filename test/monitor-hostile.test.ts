// The monitoring port against hostile request targets (issue 9): malformed targets get a
// JSON 400 and never take the process down; unclean paths are not served as `/`; query
// integers are parsed strictly. Pure parsing first, then raw bytes against the in-process
// listener, then against the bundle under Node and Bun.

import t, { type Test } from 'tap'
import net from 'node:net'
import { existsSync } from 'node:fs'
import { startBroker } from './helpers/broker.ts'
import { freshBundle, runtimeBin } from './helpers/bins.ts'
import { freePort, spawnServer, waitForPort, type Proc } from './helpers/peers.ts'
import { parseTarget } from '../src/monitor.ts'

/** The request that used to kill the process, byte for byte as filed. */
const KILLER = Buffer.from('474554202f2f5b20485454502f312e310d0a486f73743a20780d0a0d0a', 'hex')

interface Raw {
  status: number
  body: string
}

/** Sends raw bytes to the port and reads the whole answer (the server closes or we time out). */
function rawRequest(port: number, bytes: Buffer | string): Promise<Raw> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    let buf = ''
    const done = (): void => {
      s.destroy()
      const m = /^HTTP\/1\.1 (\d+)/.exec(buf)
      const i = buf.indexOf('\r\n\r\n')
      resolve({ status: m ? Number(m[1]) : 0, body: i >= 0 ? buf.slice(i + 4) : '' })
    }
    s.on('error', () => {})
    s.on('data', (d) => {
      buf += d.toString('latin1')
      // Enough once a complete JSON body is in (keep-alive sockets stay open).
      const i = buf.indexOf('\r\n\r\n')
      if (i >= 0 && /content-length: (\d+)/i.test(buf) && buf.length - i - 4 >= Number(/content-length: (\d+)/i.exec(buf)![1])) done()
    })
    s.on('close', done)
    setTimeout(done, 3000)
    s.write(bytes)
  })
}

const get = (target: string): string => `GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`

t.test('parseTarget: origin and absolute forms, never throws', async (t) => {
  t.same(parseTarget('/connz?limit=5&offset=2'), { path: '/connz', query: new Map([['limit', '5'], ['offset', '2']]) })
  t.same(parseTarget('http://x:8222/varz'), { path: '/varz', query: new Map() })
  t.same(parseTarget('http://x'), { path: '/', query: new Map() })
  t.same(parseTarget('//varz'), { path: '//varz', query: new Map() }, '//varz is a path, not a host')
  t.same(parseTarget('//['), { path: '//[', query: new Map() })
  for (const bad of ['http://[', '//[ x', 'http://a%zz/', 'http://a:b@x/', 'http://x:99999/', '/%zz', 'varz', '*', '', 'http://x#f', '/a\u0000b']) {
    t.ok('error' in parseTarget(bad), `${JSON.stringify(bad)} is refused`)
  }
  // Query pairs that do not decode are skipped, as Go does; the rest stay.
  t.same(parseTarget('/varz?x=%zz&y=1'), { path: '/varz', query: new Map([['y', '1']]) })
  t.same(parseTarget('/varz?x=%C3%A9+a'), { path: '/varz', query: new Map([['x', 'é a']]) })
  // Fuzz-ish: random printable and control strings never throw.
  let seed = 7
  const rnd = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff)
  for (let i = 0; i < 5000; i++) {
    let s = rnd() % 3 === 0 ? 'http://' : '/'
    const n = rnd() % 20
    for (let j = 0; j < n; j++) s += '/%[]:@?#&=+ az09\u0000\u00e9'[rnd() % 19]
    parseTarget(s)
  }
})

/** What every listener (in-process or a bundle) must do with hostile targets. */
async function hostile(t: Test, port: number): Promise<void> {
  const killer = await rawRequest(port, KILLER)
  t.equal(killer.status, 404, 'GET //[ is a path that is no endpoint: 404')
  t.match(JSON.parse(killer.body), { error: String })
  for (const target of ['http://[', 'http://a%zz/', '/%zz', 'http://a:b@x/varz']) {
    const r = await rawRequest(port, get(target))
    t.equal(r.status, 400, `${target}: 400`)
    t.match(JSON.parse(r.body), { error: String }, `${target}: a JSON error body`)
  }
  for (const target of ['//varz', '//a:b@:99999/', '/./varz', '//varz/']) {
    const r = await rawRequest(port, get(target))
    t.equal(r.status, 404, `${target} is not served as / (404)`)
  }
  const bigOffset = await rawRequest(port, get(`/connz?offset=${'9'.repeat(400)}`))
  t.equal(bigOffset.status, 400, 'a 400-digit offset is a 400')
  t.match(bigOffset.body, /out of range/)
  const neg = await rawRequest(port, get('/connz?offset=-3&limit=0'))
  t.equal(neg.status, 200, 'negative offset and limit 0, as nats-server: clamped')
  t.match(JSON.parse(neg.body), { offset: 0, limit: 1024 })
  const garbage = await rawRequest(port, 'GET\u0000 / HTTP/1.1\r\n\r\n')
  t.equal(garbage.status, 400, 'an unparseable request line: 400')
  t.match(JSON.parse(garbage.body), { error: 'bad request' })
  // The issue 12 endpoints and parameters: a bad value is a JSON 400, never a crash.
  for (const target of [
    '/connz?sort=%00', '/connz?sort=__proto__', '/connz?sort=constructor', '/connz?state=' + 'x'.repeat(5000), '/connz?subs=%FF',
    '/connz?cid=1e3', '/connz?sort=stop', '/subsz?test=a..b', '/subsz?test=%20', '/subsz?subs=2', '/subsz?limit=x',
  ]) {
    const r = await rawRequest(port, get(target))
    t.equal(r.status, target === '/connz?subs=%FF' ? 200 : 400, `${target.slice(0, 60)}: ${target === '/connz?subs=%FF' ? 'an undecodable pair is skipped' : '400'}`)
    t.match(JSON.parse(r.body), target === '/connz?subs=%FF' ? { connections: Array } : { error: String })
    t.ok(r.body.length < 2000, 'the error does not echo an unbounded value')
  }
  for (const target of ['/metrics?x=%zz', '/metrics/', '/subsz?subs=1&test=a.b', '/connz?state=any&sort=reason&subs=detail', '/healthz?x']) {
    t.equal((await rawRequest(port, get(target))).status, 200, `${target}: 200`)
  }
  const abs = await rawRequest(port, get('http://monitor:8222/varz'))
  t.equal(abs.status, 200, 'the absolute form is served')
  t.match(JSON.parse(abs.body), { server_id: String })
  const varz = await rawRequest(port, get('/varz'))
  t.equal(varz.status, 200, 'still serving afterwards')
}

t.test('in-process listener: hostile targets', async (t) => {
  const http = await freePort()
  const b = await startBroker({ http_port: http })
  t.teardown(() => b.stop())
  await hostile(t, http)
  t.ok(b.srv.running, 'the broker is still running')
})

t.test('the bundle under node and bun survives hostile targets', async (t) => {
  const bundle = freshBundle()
  const clean = { NODE_OPTIONS: '', SPRIG_NET: '' }
  for (const [name, cmd] of [['node', process.execPath], ['bun', runtimeBin('bun')]] as const) {
    t.test(name, async (t) => {
      if (!existsSync(cmd)) return t.fail(`${cmd} not found: it is a devDependency, run npm install`)
      const port = await freePort()
      const http = await freePort()
      let p: Proc
      try {
        p = await spawnServer(cmd, [bundle, '-a', '127.0.0.1', '-p', String(port), '-m', String(http), '--mqtt-port', '0'], port, clean)
      } catch (e) {
        return t.fail(`did not start: ${(e as Error).message}`)
      }
      t.teardown(() => p.stop())
      await waitForPort(http) // the monitor listens after the client port
      await hostile(t, http)
      t.equal(p.proc.exitCode, null, 'the process is still running')
      t.notMatch(p.output(), /TypeError|\n\s+at /, 'no exception in the log')
    })
  }
})
