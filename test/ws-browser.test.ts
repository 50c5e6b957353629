// A real browser: headless Chromium (Debian's `chromium`, driven by playwright-core, no
// browser download) loads a page that speaks NATS (nats.js, bundled for the browser here)
// and MQTT (MQTT.js's browser build) over sprig's WebSocket listener, exchanging messages
// with a NATS TCP client and an MQTT TCP device; a page from a foreign origin is refused.
// Then the status page: its numbers move with traffic, and the uplink's state changes when
// the hub (a real nats-server) stops. Screenshots go to test/artifacts/ (not in git).

import t from 'tap'
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { buildSync } from 'esbuild'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { REMOTE_DEFAULTS, WEBSOCKET_DEFAULTS } from '../src/options.ts'
import { startBroker } from './helpers/broker.ts'
import { haveHub, startHub, until } from './helpers/hub.ts'
import { messages, mqttClient, natsClient } from './helpers/mqtt.ts'
import { freePort, havePeer } from './helpers/peers.ts'

const root = resolve(import.meta.dirname, '..')
const artifacts = join(root, 'test', 'artifacts')
const CHROMIUM = '/usr/bin/chromium'

if (havePeer(t, 'chromium', 'chromium') && haveHub(t)) {
  const dir = mkdtempSync(join(tmpdir(), 'sprig-browser-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  mkdirSync(artifacts, { recursive: true })

  // nats.js for the browser: its ESM build, bundled into one script that sets window.nats.
  const natsJs = buildSync({
    stdin: { contents: "import { wsconnect, headers } from '@nats-io/nats-core'; window.nats = { wsconnect, headers }", resolveDir: root, loader: 'js' },
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'chrome110',
    write: false,
    logLevel: 'silent',
  }).outputFiles[0]!.text
  const mqttJs = readFileSync(join(root, 'node_modules/mqtt/dist/mqtt.min.js'), 'utf8')

  const pageHtml = '<!doctype html><meta charset="utf-8"><title>browser client</title><script src="/nats.js"></script><script src="/mqtt.js"></script><body>test page</body>'
  const site = http.createServer((req, res) => {
    const body = req.url === '/nats.js' ? natsJs : req.url === '/mqtt.js' ? mqttJs : pageHtml
    res.writeHead(200, { 'content-type': req.url?.endsWith('.js') ? 'text/javascript' : 'text/html' })
    res.end(body)
  })
  await new Promise<void>((r) => site.listen(0, '127.0.0.1', r))
  t.teardown(() => site.close())
  const sitePort = (site.address() as { port: number }).port
  const origin = `http://127.0.0.1:${sitePort}`

  const hub = await startHub()
  t.teardown(() => hub.close())
  const b = await startBroker({
    mqtt: true,
    server_name: 'gw-browser',
    http_port: await freePort(),
    websocket: { ...WEBSOCKET_DEFAULTS, port: 0, no_tls: true, allowed_origins: [origin] },
    leafnodes: { reconnect: 200, reconnect_max: 1000, remotes: [{ ...REMOTE_DEFAULTS, urls: [hub.leafUrl] }] },
  })
  t.teardown(() => b.stop())
  await until(() => b.uplink?.remotes[0]?.state === 'connected', 10_000, 'the uplink connected')

  // A fresh profile in the temp dir (playwright passes it as --user-data-dir).
  let browser: BrowserContext
  t.before(async () => {
    browser = await chromium.launchPersistentContext(join(dir, 'profile'), {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    })
  })
  t.teardown(() => browser?.close())

  async function open(url: string, viewport = { width: 1000, height: 900 }): Promise<Page> {
    const p = await browser.newPage()
    await p.setViewportSize(viewport)
    const errors: string[] = []
    p.on('pageerror', (e) => errors.push(e.message))
    await p.goto(url)
    ;(p as Page & { errors: string[] }).errors = errors
    return p
  }

  t.test('nats.js and MQTT.js in the browser, over WebSocket, with TCP clients of both protocols', async (t) => {
    const page = await open(origin + '/')
    const ws = `ws://127.0.0.1:${b.wsPort}`
    // Browser side: NATS subscribes b.in.>, answers b.svc; MQTT subscribes b/in/#.
    await page.evaluate(async (ws) => {
      const w = window as unknown as Record<string, any>
      w.got = { nats: [], mqtt: [] }
      const nc = await w.nats.wsconnect({ servers: ws })
      nc.subscribe('b.in.>', { callback: (_e: unknown, m: any) => w.got.nats.push(m.subject + '=' + m.string()) })
      nc.subscribe('b.svc', { callback: (_e: unknown, m: any) => m.respond('browser:' + m.string()) })
      await nc.flush()
      w.nc = nc
      const mc = w.mqtt.connect(ws + '/mqtt', { clientId: 'browser-1', protocolVersion: 5 })
      await new Promise((resolve, reject) => { mc.once('connect', resolve); mc.once('error', reject) })
      await new Promise((resolve) => mc.subscribe('b/in/#', { qos: 1 }, resolve))
      mc.on('message', (topic: string, p: Uint8Array) => w.got.mqtt.push(topic + '=' + new TextDecoder().decode(p)))
      w.mc = mc
    }, ws)
    const nc = await natsClient(t, b.url)
    const dev = await mqttClient(t, b.mqttUrl, { clientId: 'tcp-device' })
    nc.publish('b.in.nats', 'from-tcp-nats')
    await dev.publishAsync('b/in/dev', 'from-tcp-mqtt', { qos: 1 })
    let got: { nats: string[]; mqtt: string[] } = { nats: [], mqtt: [] }
    for (let i = 0; i < 50 && (got.nats.length < 2 || got.mqtt.length < 2); i++) {
      await new Promise((r) => setTimeout(r, 100))
      got = await page.evaluate(() => (window as unknown as { got: { nats: string[]; mqtt: string[] } }).got)
    }
    t.same(got.nats.sort(), ['b.in.dev=from-tcp-mqtt', 'b.in.nats=from-tcp-nats'], 'the browser NATS client hears the TCP NATS client and the TCP MQTT device')
    t.same(got.mqtt.sort(), ['b/in/dev=from-tcp-mqtt', 'b/in/nats=from-tcp-nats'], 'the browser MQTT client hears both too')

    // Browser → TCP: NATS publish, MQTT publish, and a request the TCP client answers.
    const tcpGot: string[] = []
    nc.subscribe('b.out.>', { callback: (_e, m) => void tcpGot.push(`${m.subject}=${m.string()}`) })
    nc.subscribe('tcp.svc', { callback: (_e, m) => void m.respond(`tcp:${m.string()}`) })
    await nc.flush()
    await dev.subscribeAsync('b/out/#')
    const devGot = messages(dev, 2)
    const reply = await page.evaluate(async () => {
      const w = window as unknown as Record<string, any>
      w.nc.publish('b.out.nats', 'from-browser-nats')
      await new Promise((resolve) => w.mc.publish('b/out/mqtt', 'from-browser-mqtt', { qos: 1 }, resolve))
      const r = await w.nc.request('tcp.svc', 'ping', { timeout: 2000 })
      return r.string()
    })
    t.equal(reply, 'tcp:ping', 'request from the browser, reply from TCP')
    t.same((await devGot).map((m) => `${m.topic}=${m.payload}`).sort(), ['b/out/mqtt=from-browser-mqtt', 'b/out/nats=from-browser-nats'], 'the TCP MQTT device heard both browser clients')
    await until(() => tcpGot.length >= 2, 3000, 'the TCP NATS client heard the browser')
    t.same(tcpGot.sort(), ['b.out.mqtt=from-browser-mqtt', 'b.out.nats=from-browser-nats'], 'the TCP NATS client heard both browser clients')
    t.equal((await nc.request('b.svc', 'hi', { timeout: 2000 })).string(), 'browser:hi', 'request from TCP, reply from the browser')
    t.same((page as Page & { errors: string[] }).errors, [], 'no script errors')
    await page.close()
  })

  t.test('a page from another origin is refused (403, logged)', async (t) => {
    // Same server, but "localhost" is another origin than 127.0.0.1 for the browser.
    const page = await open(`http://localhost:${sitePort}/`)
    const result = await page.evaluate((url) => new Promise<string>((resolve) => {
      const s = new WebSocket(url)
      s.onopen = () => resolve('open')
      s.onerror = () => resolve('error')
    }), `ws://127.0.0.1:${b.wsPort}`)
    t.equal(result, 'error', 'the browser could not open the WebSocket')
    await until(() => b.logs.some((l) => l.includes(`origin not allowed: not in the allowed list`)), 3000, 'the refusal logged')
    await page.close()
  })

  t.test('the status page: numbers move with traffic, the uplink state follows the hub', async (t) => {
    const page = await open(`http://127.0.0.1:${b.httpPort}/`, { width: 1100, height: 1300 })
    await page.waitForFunction(() => document.title === 'gw-browser status', undefined, { timeout: 10_000 })
    t.equal(await page.title(), 'gw-browser status', 'the page names the server once it has polled')
    const card = async (label: string): Promise<string> =>
      page.evaluate((label) => {
        for (const c of Array.from(document.querySelectorAll('.card'))) if (c.querySelector('span')?.textContent === label) return c.querySelector('b')?.textContent ?? ''
        return ''
      }, label)
    const totalIn = async (): Promise<number> =>
      page.evaluate(() => {
        for (const c of Array.from(document.querySelectorAll('.card'))) if (c.querySelector('span')?.textContent === 'Messages in/s') return Number((c.querySelectorAll('span')[1]?.textContent ?? '').replace(/ total$/, '').replace(/k$/, 'e3'))
        return NaN
      })
    await page.waitForFunction(() => document.querySelectorAll('.card').length > 5)
    const before = await totalIn()
    // Traffic: a NATS client over WebSocket from this process, and TCP publishes.
    const nc = await natsClient(t, b.url)
    const m = await mqttClient(t, b.mqttUrl, { clientId: 'status-dev' })
    for (let i = 0; i < 200; i++) nc.publish('load.x', 'y'.repeat(100))
    await nc.flush()
    await page.waitForFunction((before) => {
      for (const c of Array.from(document.querySelectorAll('.card'))) {
        if (c.querySelector('span')?.textContent !== 'Messages in/s') continue
        const text = c.querySelectorAll('span')[1]?.textContent ?? ''
        return Number(text.replace(/ total$/, '').replace(/k$/, 'e3')) >= before + 200
      }
      return false
    }, before, { timeout: 10_000 })
    t.ok((await totalIn()) >= before + 200, 'the message total moved with the traffic')
    await page.waitForFunction(() => {
      for (const c of Array.from(document.querySelectorAll('.card'))) if (c.querySelector('span')?.textContent === 'MQTT') return c.querySelector('b')?.textContent === '1'
      return false
    }, undefined, { timeout: 10_000 })
    t.equal(await card('MQTT'), '1', 'the MQTT device shows under MQTT')
    t.ok(m.connected)
    const leafState = (): Promise<string> => page.evaluate(() => document.querySelector('#leafs .st')?.textContent ?? '')
    await page.waitForFunction(() => document.querySelector('#leafs .st')?.textContent === 'connected', undefined, { timeout: 10_000 })
    t.equal(await leafState(), 'connected', 'the uplink shows connected')
    await page.screenshot({ path: join(artifacts, 'status-page.png'), fullPage: true })
    await hub.stop()
    await page.waitForFunction(() => {
      const s = document.querySelector('#leafs .st')?.textContent
      return s !== undefined && s !== '' && s !== 'connected'
    }, undefined, { timeout: 15_000 })
    t.not(await leafState(), 'connected', `the uplink shows ${await leafState()} once the hub is gone`)
    await page.screenshot({ path: join(artifacts, 'status-page-hub-down.png'), fullPage: true })
    const phone = await open(`http://127.0.0.1:${b.httpPort}/`, { width: 390, height: 844 })
    await phone.waitForFunction(() => document.querySelectorAll('.card').length > 5)
    const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth)
    t.ok(overflow <= 0, `readable on a phone: no sideways scrolling of the page (${overflow}px)`)
    await phone.screenshot({ path: join(artifacts, 'status-page-phone.png'), fullPage: true })
    t.same((page as Page & { errors: string[] }).errors, [], 'no script errors')
    await hub.restart()
  })
}
