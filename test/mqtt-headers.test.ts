// src/headers.ts: the NATS header blocks the MQTT adapter reads and writes (Nmqtt-Pub).

import t from 'tap'
import { headers as natsHeaders } from '@nats-io/transport-node'
import { decodeHeaders, encodeHeaders, headerValue } from '../src/headers.ts'
import { QOS_HEADERS } from '../adapters/mqtt/props.ts'

const enc = new TextEncoder()
const td = new TextDecoder()

t.test('encode', async (t) => {
  t.equal(td.decode(encodeHeaders([['Nmqtt-Pub', '1']])), 'NATS/1.0\r\nNmqtt-Pub: 1\r\n\r\n')
  t.equal(td.decode(encodeHeaders([], '503')), 'NATS/1.0 503\r\n\r\n')
  t.equal(td.decode(encodeHeaders([['A', 'x'], ['A', 'y']])), 'NATS/1.0\r\nA: x\r\nA: y\r\n\r\n', 'repeated names')
  t.same(QOS_HEADERS.map((h) => td.decode(h)), [0, 1, 2].map((q) => `NATS/1.0\r\nNmqtt-Pub: ${q}\r\n\r\n`))
})

t.test('decode and lookup', async (t) => {
  const block = enc.encode('NATS/1.0 503 No Responders\r\nNmqtt-Pub: 2\r\nX-Thing:  spaced  \r\nbad line\r\nnmqtt-pub: 0\r\n\r\n')
  t.same(decodeHeaders(block), {
    status: '503 No Responders',
    pairs: [['Nmqtt-Pub', '2'], ['X-Thing', 'spaced'], ['nmqtt-pub', '0']],
  })
  t.equal(headerValue(block, 'Nmqtt-Pub'), '2', 'the first value')
  t.equal(headerValue(block, 'NMQTT-PUB'), '2', 'names match case-insensitively')
  t.equal(headerValue(block, 'Nmqtt'), null, 'a prefix is not a match')
  t.equal(headerValue(block, 'X-Thing'), 'spaced')
  t.equal(headerValue(block, 'Missing'), null)
  t.equal(decodeHeaders(enc.encode('HTTP/1.1 200\r\n\r\n')), null)
  t.equal(headerValue(enc.encode('NATS/1.0\r\n'), 'A'), null, 'a truncated block')
})

t.test('blocks written by nats.js', async (t) => {
  const h = natsHeaders()
  h.set('Nmqtt-Pub', '1')
  h.append('X-Multi', 'a')
  h.append('X-Multi', 'b')
  const block = (h as unknown as { encode(): Uint8Array }).encode() // MsgHdrsImpl; not in the public type
  t.equal(headerValue(block, 'Nmqtt-Pub'), '1')
  t.same(decodeHeaders(block)?.pairs.filter(([k]) => k === 'X-Multi').map(([, v]) => v), ['a', 'b'])
})
