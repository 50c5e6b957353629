// Trace logging (log_level trace) of the NATS client protocol, in nats-server's words, so
// operators' greps keep working:
//   [TRC] 127.0.0.1:52966 - cid:4 - "v3.4.0:nats.js:tracer" - <<- [SUB foo q 1]
//   [TRC] 127.0.0.1:52966 - cid:4 - "v3.4.0:nats.js:tracer" - ->> [MSG foo 1 5]
// `<<-` is what the client sent, `->>` what it was sent; after CONNECT the client's version,
// language and name join the prefix. Only a traced connection goes through here: the parser
// gets a wrapping Handler and the client instance its own deliver/send, so with trace off
// nothing is wrapped and nothing is formatted (zero cost).

import { text } from '../../src/bytes.ts'
import { clip } from '../../src/log.ts'
import type { Msg } from '../../src/msg.ts'
import type { Sub } from '../../src/router.ts'
import type { NatsClient, NatsSub } from './client.ts'
import type { Failure, Handler, PubArgs } from './parser.ts'

/** The client's handler, tracing each operation before it runs. */
export function tracedHandler(c: NatsClient): Handler {
  const log = (op: string): void => c.srv.log.trace(() => `${prefix(c)} - <<- ${op}`)
  return {
    connect(json) {
      log(`[CONNECT ${redact(json)}]`)
      c.connect(json)
    },
    pub(p: PubArgs, buf: Uint8Array, at: number) {
      const reply = p.reply === '' ? '' : ` ${p.reply}`
      log(p.hdr >= 0 ? `[HPUB ${p.subject}${reply} ${p.hdr} ${p.size}]` : `[PUB ${p.subject}${reply} ${p.size}]`)
      log(`MSG_PAYLOAD: [${JSON.stringify(clip(text(buf, at, at + p.size)))}]`)
      c.pub(p, buf, at)
    },
    sub(subject, queue, sid) {
      log(`[SUB ${subject}${queue === null ? '' : ` ${queue}`} ${sid}]`)
      c.sub(subject, queue, sid)
    },
    unsub(sid, max) {
      log(`[UNSUB ${sid}${max > 0 ? ` ${max}` : ''}]`)
      c.unsub(sid, max)
    },
    ping() {
      log('[PING]')
      c.ping()
    },
    pong() {
      log('[PONG]')
      c.pong()
    },
    err(t) {
      log(`[-ERR ${t}]`)
      c.err(t)
    },
    fail(why: Failure, detail: string) {
      c.fail(why, detail)
    },
  }
}

/** Gives this client instance tracing deliver() and send() (the class's stay untouched). */
export function traceOutgoing(c: NatsClient): void {
  const deliver = c.deliver
  const send = c.send
  const log = (op: string): void => c.srv.log.trace(() => `${prefix(c)} - ->> ${op}`)
  c.deliver = function (sub: Sub, m: Msg): void {
    const before = c.out_msgs
    deliver.call(c, sub, m)
    if (c.out_msgs === before) return // filtered, or the client is gone
    const s = sub as NatsSub
    const reply = m.reply === '' ? '' : ` ${m.reply}`
    const hdr = c.headers && m.hdr !== null ? m.hdr.length : -1
    const total = (hdr > 0 ? hdr : 0) + m.size
    log(hdr >= 0 ? `[HMSG ${m.subject} ${s.sid}${reply} ${hdr} ${total}]` : `[MSG ${m.subject} ${s.sid}${reply} ${total}]`)
  }
  c.send = function (bytes: Uint8Array): void {
    if (!c.done) {
      let end = bytes.indexOf(13)
      if (end < 0) end = bytes.length
      const line = text(bytes, 0, end)
      // INFO is not traced by nats-server either; +OK is traced as OK.
      if (!line.startsWith('INFO')) log(`[${line === '+OK' ? 'OK' : clip(line)}]`)
    }
    send.call(c, bytes)
  }
}

/** nats-server's prefix: address, cid, and after CONNECT "v<version>:<lang>[:<name>]". */
function prefix(c: NatsClient): string {
  if (!c.connected || (c.version === '' && c.lang === '' && c.name === '')) return c.label()
  const id = `v${c.version}:${c.lang}${c.name === '' ? '' : `:${c.name}`}`
  return `${c.label()} - ${JSON.stringify(clip(id))}`
}

/** CONNECT as traced: passwords, tokens and signatures replaced, as nats-server does. */
function redact(json: string): string {
  try {
    const o = JSON.parse(json) as Record<string, unknown>
    if (o === null || typeof o !== 'object') return clip(json)
    for (const k of ['pass', 'auth_token', 'sig']) if (k in o) o[k] = '[REDACTED]'
    return clip(JSON.stringify(o))
  } catch {
    return `<${json.length} bytes, not JSON>`
  }
}
