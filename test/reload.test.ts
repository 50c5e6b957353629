// Reload on SIGHUP, on a real sprig process (Bun running targets/main.ts) with live NATS and
// MQTT connections: the config file is rewritten and the process gets a real SIGHUP. New
// permissions apply to connections already open (subscriptions now refused are removed, with
// nats-server's -ERR and log line) and nobody is disconnected; a bad file is refused with a
// reason naming the key and the old settings stay; a user taken out of the file is
// disconnected, as nats-server does.

import t from 'tap'
import net from 'node:net'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { connect } from '@nats-io/transport-node'
import { runtimeBin } from './helpers/bins.ts'
import { freePort, skipOrFail, spawnServer, waitOutput, type Proc } from './helpers/peers.ts'
import { mqttClient, sleep } from './helpers/mqtt.ts'

const MAIN = resolve(import.meta.dirname, '..', 'targets', 'main.ts')

/** A raw NATS client, to see -ERR lines as they are. */
class Raw {
  out = ''
  closed = false
  private constructor(readonly s: net.Socket) {
    s.on('data', (d: Buffer) => (this.out += d.toString('latin1')))
    s.on('close', () => (this.closed = true))
    s.on('error', () => {})
  }
  /** Connects and waits for INFO, so `out` holds only what comes after it. */
  static open(port: number, user: string): Promise<Raw> {
    return new Promise((res) => {
      const s = net.connect(port, '127.0.0.1')
      let head = ''
      const onInfo = (d: Buffer): void => {
        head += d.toString('latin1')
        const i = head.indexOf('\r\n')
        if (i < 0) return
        s.off('data', onInfo)
        const r = new Raw(s)
        r.out = head.slice(i + 2)
        s.write(`CONNECT ${JSON.stringify({ user, pass: user, verbose: false })}\r\n`)
        res(r)
      }
      s.on('data', onInfo)
    })
  }
  /** Sends lines plus a PING; resolves once the PONG (or a close) came. */
  async send(...lines: string[]): Promise<string> {
    const from = this.out.length
    this.s.write([...lines, 'PING\r\n'].join('\r\n'))
    const end = Date.now() + 3000
    while (!this.out.slice(from).includes('PONG\r\n') && !this.closed && Date.now() < end) await sleep(5)
    return this.out.slice(from)
  }
}

function config(port: number, mqttPort: number, devPerms: unknown, extraUsers: unknown[] = []): string {
  return JSON.stringify({
    host: '127.0.0.1',
    port,
    mqtt: { port: mqttPort },
    authorization: { users: [{ user: 'dev', password: 'dev', permissions: devPerms }, { user: 'admin', password: 'admin' }, ...extraUsers] },
  })
}


t.test('SIGHUP reloads users and permissions under live connections', async (t) => {
  const bun = runtimeBin('bun')
  if (!bun) return skipOrFail(t, 'bun not found: run npm ci (the bun package)')
  const dir = mkdtempSync(join(tmpdir(), 'sprig-reload-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'sprig.json')
  const port = await freePort()
  const mqttPort = await freePort()
  const v1 = { publish: ['up.>'], subscribe: ['down.>'] }
  writeFileSync(file, config(port, mqttPort, v1))
  const p = await spawnServer(bun, [MAIN, '-c', file], port)
  t.teardown(() => p.stop())

  const dev = await Raw.open(port, 'dev')
  t.equal(await dev.send('SUB down.> 1', 'SUB down.ok.x 2', 'SUB down.a q 3', 'PUB up.a 1', 'x'), 'PONG\r\n', 'v1: all allowed')
  const devMqtt = await mqttClient(t, `mqtt://127.0.0.1:${mqttPort}`, { username: 'dev', password: 'dev' })
  await devMqtt.subscribeAsync('down/#')
  const admin = await connect({ servers: `127.0.0.1:${port}`, reconnect: false, user: 'admin', pass: 'admin' })
  t.teardown(() => admin.close())
  const mqttGot: string[] = []
  devMqtt.on('message', (topic) => mqttGot.push(topic))

  // v2: dev may only subscribe under down.ok and publish under up.new.
  let mark = p.output().length
  writeFileSync(file, config(port, mqttPort, { publish: ['up.new.>'], subscribe: ['down.ok.>'] }))
  p.proc.kill('SIGHUP')
  t.ok(await waitOutput(p, 'Reloaded server configuration', mark), 'reloaded')
  const log = p.output().slice(mark)
  t.match(log, /Reloaded: authorization/, 'says what changed, like nats-server')
  t.match(log, /Removed sub "down\.>" \(sid "1"\) for User "dev" - not authorized/, 'NATS sub removal logged')
  t.match(log, /Removed sub "down\/#" for User "dev" - not authorized/, 'MQTT filter removal logged')
  await sleep(100)
  t.match(dev.out, /-ERR 'Permissions Violation for Subscription to "down\.>" \(sid "1"\)'\r\n/, 'the client is told which sub went')
  t.match(dev.out, /-ERR 'Permissions Violation for Subscription to "down\.a" \(sid "3"\)'\r\n/, 'queue subs too')
  t.equal(dev.closed, false, 'NATS connection survives')
  t.equal(devMqtt.connected, true, 'MQTT connection survives')

  const before = dev.out.length
  admin.publish('down.ok.x', 'a')
  admin.publish('down.b', 'b')
  await admin.flush()
  const now = await dev.send('PUB up.a 1', 'x', 'PUB up.new.a 1', 'y')
  t.equal(now, `-ERR 'Permissions Violation for Publish to "up.a"'\r\nPONG\r\n`, 'new publish rules apply to the open connection')
  t.match(dev.out.slice(before), /MSG down\.ok\.x 2 1\r\na\r\n/, 'the sub still allowed keeps delivering')
  t.notMatch(dev.out.slice(before), /down\.b/, 'the removed sub delivers nothing')
  await sleep(100)
  t.same(mqttGot, [], 'the removed MQTT filter delivers nothing')
  await devMqtt.subscribeAsync('down/ok/#')
  admin.publish('down.ok.y', 'c')
  await admin.flush()
  await sleep(200)
  t.same(mqttGot, ['down/ok/y'], 'a filter the new rules allow works on the same MQTT connection')

  // A bad file: refused with the key named, old rules kept.
  mark = p.output().length
  writeFileSync(file, config(port, mqttPort, { publish: ['up..x'] }))
  p.proc.kill('SIGHUP')
  t.ok(await waitOutput(p, 'Failed to reload server configuration', mark), 'bad config refused')
  t.match(p.output().slice(mark), /authorization\.users\[0\]\.permissions\.publish\[0\]: invalid subject "up\.\.x"/, 'the reason names the key')
  t.equal(await dev.send('PUB up.new.b 1', 'x', 'PUB up.b 1', 'x'), `-ERR 'Permissions Violation for Publish to "up.b"'\r\nPONG\r\n`, 'the old rules still hold')

  // Changing the port cannot be applied live: refused, named.
  mark = p.output().length
  writeFileSync(file, config(port + 1, mqttPort, v1))
  p.proc.kill('SIGHUP')
  t.ok(await waitOutput(p, 'Failed to reload server configuration: port', mark), 'a port change is refused by name')

  // dev taken out: its connections go, as in nats-server; admin stays.
  mark = p.output().length
  writeFileSync(file, JSON.stringify({ host: '127.0.0.1', port, mqtt: { port: mqttPort }, authorization: { users: [{ user: 'admin', password: 'admin' }] } }))
  p.proc.kill('SIGHUP')
  t.ok(await waitOutput(p, 'Reloaded server configuration', mark), 'reloaded')
  await sleep(300)
  t.match(dev.out, /-ERR 'Authorization Violation'\r\n$/, 'removed user: Authorization Violation')
  t.equal(dev.closed, true, 'and closed')
  t.equal(devMqtt.connected, false, 'the removed user\'s MQTT connection is closed too')
  await admin.flush()
  t.equal(admin.isClosed(), false, 'other users stay connected')
})
