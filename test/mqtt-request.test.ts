// Request/response across protocols (MQTT 5 §4.10): a nats.js request() answered by an MQTT 5
// device, an MQTT 5 request answered by a NATS service, and MQTT to MQTT. How Response Topic
// and Correlation Data map to the NATS reply subject and headers is described in props.ts.

import { spawn } from 'node:child_process'
import t, { type Test } from 'tap'
import { headers, type NatsConnection } from '@nats-io/transport-node'
import type { IDisconnectPacket, IPublishPacket } from 'mqtt-packet'
import { startBroker, type TestBroker } from './helpers/broker.ts'
import { RawMqtt, mqttClient, natsClient } from './helpers/mqtt.ts'
import { havePeer } from './helpers/peers.ts'

let b: TestBroker

t.before(async () => {
  b = await startBroker({ mqtt: true })
})
t.teardown(() => b?.stop())

const nats = (t: Test): Promise<NatsConnection> => natsClient(t, b.url)

const td = new TextDecoder()

t.test('a nats.js request() answered by an MQTT 5 device', async (t) => {
  const dev = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  const seen: { responseTopic?: string; correlationData?: Buffer }[] = []
  dev.on('message', (_topic, payload, pk) => {
    const p = pk.properties ?? {}
    seen.push({ responseTopic: p.responseTopic, correlationData: p.correlationData })
    if (p.responseTopic) {
      dev.publish(p.responseTopic, `pong:${payload}`, { qos: 1, properties: p.correlationData ? { correlationData: p.correlationData } : {} })
    }
  })
  await dev.subscribeAsync('svc/echo', { qos: 1 })
  const nc = await nats(t)

  const r = await nc.request('svc.echo', 'ping', { timeout: 2000 })
  t.equal(r.string(), 'pong:ping', 'the device reply reaches the NATS requester')
  t.match(seen[0]!.responseTopic, /^_INBOX\/[^/]+\/[^/]+$/, 'Response Topic is the reply subject in topic form (_INBOX.x.y -> _INBOX/x/y)')
  t.equal(seen[0]!.correlationData, undefined, 'no Correlation Data when the request had none')

  const h = headers()
  h.set('Nmqtt-Correlation-Data', Buffer.from([0, 1, 2, 255]).toString('base64'))
  const r2 = await nc.request('svc.echo', 'ping2', { timeout: 2000, headers: h })
  t.equal(r2.string(), 'pong:ping2')
  t.same([...seen[1]!.correlationData!], [0, 1, 2, 255], 'Correlation Data from the Nmqtt-Correlation-Data header (base64)')
  t.equal(r2.headers?.get('Nmqtt-Correlation-Data'), Buffer.from([0, 1, 2, 255]).toString('base64'), 'and back on the reply')
})

t.test('an MQTT 5 request answered by a NATS service (msg.respond)', async (t) => {
  const nc = await nats(t)
  const got: { reply: string; corr: string | undefined }[] = []
  nc.subscribe('svc.time', {
    callback: (_e, m) => {
      got.push({ reply: m.reply ?? '', corr: m.headers?.get('Nmqtt-Correlation-Data') })
      m.respond(`now:${m.string()}`)
    },
  })
  await nc.flush()
  const req = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  await req.subscribeAsync('resp/dev1', { qos: 1 })
  const replies: IPublishPacket[] = []
  req.on('message', (_t, _p, pk) => replies.push(pk))

  const corr = Buffer.from([1, 2, 3, 250, 0])
  await req.publishAsync('svc/time', 'q1', { qos: 1, properties: { responseTopic: 'resp/dev1', correlationData: corr } })
  for (let i = 0; i < 100 && replies.length < 1; i++) await new Promise((r) => setTimeout(r, 20))
  t.equal(replies.length, 1)
  t.equal(replies[0]!.topic, 'resp/dev1', 'the reply arrives on the Response Topic')
  t.equal(replies[0]!.payload.toString(), 'now:q1')
  t.same(replies[0]!.properties?.correlationData, corr, 'with the request\'s Correlation Data')
  t.match(got[0]!.reply, /^\$SPRIG\.mqtt\.reply\.[A-Za-z0-9_-]+\.resp\.dev1$/, 'the NATS reply subject carries the correlation data')
  t.equal(got[0]!.corr, corr.toString('base64'), 'the service also sees it as a header')

  // Without Correlation Data the reply subject is the Response Topic's subject itself.
  await req.publishAsync('svc/time', 'q2', { qos: 1, properties: { responseTopic: 'resp/dev1' } })
  for (let i = 0; i < 100 && replies.length < 2; i++) await new Promise((r) => setTimeout(r, 20))
  t.equal(got[1]!.reply, 'resp.dev1')
  t.equal(replies[1]!.payload.toString(), 'now:q2')
  t.equal(replies[1]!.properties?.correlationData, undefined)
})

t.test('MQTT to MQTT: Response Topic and Correlation Data unaltered [MQTT-3.3.2-15] [MQTT-3.3.2-16]', async (t) => {
  const sub = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  await sub.subscribeAsync('mm/req', { qos: 1 })
  const got = new Promise<IPublishPacket>((r) => sub.once('message', (_t, _p, pk) => r(pk)))
  const pub = await mqttClient(t, b.mqttUrl, { protocolVersion: 5 })
  const corr = Buffer.from('id-42/x.y')
  await pub.publishAsync('mm/req', 'x', { qos: 1, properties: { responseTopic: 'mm/resp/a.b', correlationData: corr } })
  const pk = await got
  t.equal(pk.properties?.responseTopic, 'mm/resp/a.b')
  t.same(pk.properties?.correlationData, corr)
})

t.test('a Response Topic with wildcards is a protocol error [MQTT-3.3.2-14]', async (t) => {
  const c = await RawMqtt.connect(b.mqttPort, 5)
  t.teardown(() => c.close())
  c.send({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('x'), qos: 0, dup: false, retain: false, properties: { responseTopic: 'r/+' } })
  const d = (await c.next('disconnect')) as IDisconnectPacket | undefined
  t.equal(d?.reasonCode, 0x82)
  t.ok(await c.waitClosed())
})

t.test('an MQTT 3.1.1 subscriber gets the request without properties', async (t) => {
  const dev = await mqttClient(t, b.mqttUrl, { protocolVersion: 4 })
  await dev.subscribeAsync('svc/v4', { qos: 0 })
  const got = new Promise<string>((r) => dev.once('message', (_t, p) => r(p.toString())))
  const nc = await nats(t)
  nc.publish('svc.v4', 'hello', { reply: '_INBOX.abc' })
  t.equal(await got, 'hello')
  void td
})

t.test('mosquitto_rr (an MQTT 5 request/response client) gets the answer of a NATS service', async (t) => {
  if (!havePeer(t, 'mosquitto_rr', 'mosquitto-clients')) return
  const nc = await nats(t)
  nc.subscribe('rr.svc', { callback: (_e, m) => void m.respond(`answer:${m.string()}`) })
  await nc.flush()
  const p = spawn('mosquitto_rr', ['-h', '127.0.0.1', '-p', String(b.mqttPort), '-t', 'rr/svc', '-e', 'rr/resp/1', '-m', 'q', '-W', '5', '-D', 'publish', 'correlation-data', 'c-17'])
  let out = ''
  p.stdout.on('data', (d) => (out += d))
  const exited = new Promise<number | null>((r) => p.once('exit', r))
  t.teardown(() => p.kill())
  t.equal(await exited, 0)
  t.equal(out.trim(), 'answer:q')
})
