// Gateway health for the cloud (issue 12 point 6): with an uplink, a compact JSON heartbeat on
// `$SPRIG.status.<server_name>` every `leafnodes.status_interval`, and request/reply services
// that answer with what the monitoring port shows: `$SPRIG.varz`, `$SPRIG.connz`,
// `$SPRIG.subsz`, `$SPRIG.healthz`, `$SPRIG.leafz`. The services answer what
// src/monitor.ts answers over HTTP (one home for each number); a request's JSON payload
// carries the HTTP query parameters (`{"limit": 10, "subs": "detail"}`).
//
// The heartbeat goes up unmapped (its subject names this gateway; a cloud service
// subscribes to `$SPRIG.status.>` once and sees them all), or under a remote's map
// (`$SPRIG.>` -> `site.gw42.$SPRIG.>`). The services are per gateway, so like every `$SPRIG.`
// subject they are reachable from the hub only under a map (src/leaf/filter.ts).

import { utf8 } from '../bytes.ts'
import { wallClock } from '../host.ts'
import { newMsg } from '../msg.ts'
import { connectionsByType, monitorRequest, uptime } from '../monitor.ts'
import { LEAF_DEFAULTS } from '../options.ts'
import { mayAnswer } from '../permissions.ts'
import { answerFor, type Owner, type Sub } from '../router.ts'
import { VERSION, type Server } from '../server.ts'
import { STATUS_PREFIX } from './filter.ts'
import type { Remote } from './remote.ts'

export { STATUS_PREFIX }

/** Service subject -> the monitoring endpoint it answers like. */
export const SERVICES: Readonly<Record<string, string>> = {
  '$SPRIG.varz': '/varz',
  '$SPRIG.connz': '/connz',
  '$SPRIG.subsz': '/subsz',
  '$SPRIG.healthz': '/healthz',
  '$SPRIG.leafz': '/leafz',
}

/** A request payload larger than this is refused unread (they are a few parameters). */
const MAX_REQUEST = 4096

/** The heartbeat subject for this server: its name with what a subject token cannot hold replaced. */
export function statusSubject(name: string): string {
  const token = name.replace(/[\s.*>]/g, '_').slice(0, 128)
  return STATUS_PREFIX + (token === '' ? '_' : token)
}

/** Totals the heartbeat computes rates from. */
interface Sample {
  at: number
  in_msgs: number
  out_msgs: number
  in_bytes: number
  out_bytes: number
}

/**
 * The heartbeat payload: who, how long up, connections by protocol, message rates since the
 * last heartbeat, each remote's state and buffer, and every drop counter. Compact (one line,
 * a few hundred bytes): thousands of gateways send one each interval.
 */
export function heartbeat(srv: Server, remotes: readonly Remote[], prev: Sample | null, now: number): { body: Record<string, unknown>; sample: Sample } {
  const t = srv.router.traffic
  const sample: Sample = { at: now, in_msgs: t.in_msgs, out_msgs: t.out_msgs, in_bytes: t.in_bytes, out_bytes: t.out_bytes }
  const secs = prev === null ? 0 : (now - prev.at) / 1000
  const rate = (k: keyof Omit<Sample, 'at'>): number => (prev === null || secs <= 0 ? 0 : Math.round(((sample[k] - prev[k]) / secs) * 10) / 10)
  const proc = srv.proc()
  const leafs = remotes.map((r) => r.status())
  const mqtt = srv.status.get('mqtt')?.() as Record<string, number> | undefined
  const budget = srv.budget.status()
  const sum = (k: 'buffered_msgs' | 'buffered_bytes' | 'dropped_msgs' | 'expired_msgs' | 'oversize_msgs'): number => leafs.reduce((a, l) => a + l[k], 0)
  const body: Record<string, unknown> = {
    server_id: srv.id,
    server_name: srv.name,
    version: VERSION,
    now: wallClock(srv.host)(now),
    uptime: uptime(now - srv.started),
    healthy: srv.phase === 'ready' && srv.running,
    phase: srv.phase,
    connections: { ...connectionsByType(srv), total: srv.sessions.size },
    total_connections: srv.counters.total_connections,
    subscriptions: srv.router.subs.count,
    in_msgs: t.in_msgs,
    out_msgs: t.out_msgs,
    in_bytes: t.in_bytes,
    out_bytes: t.out_bytes,
    // per second, since the previous heartbeat (0 in the first)
    rates: { in_msgs: rate('in_msgs'), out_msgs: rate('out_msgs'), in_bytes: rate('in_bytes'), out_bytes: rate('out_bytes') },
    mem: proc.mem,
    cpu: proc.cpu ?? 0,
    uplink: leafs.map((l) => ({ remote: l.remote, state: l.state, url: l.url, since: l.since, reconnects: l.reconnects, buffered_msgs: l.buffered_msgs, last_error: l.last_error })),
    // The store-and-forward buffers, all remotes together.
    store: { buffered_msgs: sum('buffered_msgs'), buffered_bytes: sum('buffered_bytes') },
    drops: {
      slow_consumers: srv.counters.slow_consumers,
      refused_connections: srv.counters.refused_connections,
      permission_violations: srv.counters.permission_violations,
      uplink_dropped_msgs: sum('dropped_msgs'),
      uplink_expired_msgs: sum('expired_msgs'),
      uplink_oversize_msgs: sum('oversize_msgs'),
      mem_drops: budget.mem_drops,
      mem_closes: budget.mem_closes,
      ...(mqtt ? { mqtt_offline_dropped: mqtt.offline_dropped ?? 0, mqtt_oversize_drops: mqtt.oversize_drops ?? 0, mqtt_retained_refused: mqtt.retained_refused ?? 0 } : {}),
    },
  }
  return { body, sample }
}

/**
 * Reads a service request's payload as monitoring query parameters: empty, or a JSON object
 * whose values are strings, numbers or booleans. An error text otherwise.
 */
export function requestParams(payload: Uint8Array): Map<string, string> | string {
  const q = new Map<string, string>()
  if (payload.length === 0) return q
  if (payload.length > MAX_REQUEST) return `request over ${MAX_REQUEST} bytes`
  let v: unknown
  try {
    v = JSON.parse(new TextDecoder().decode(payload))
  } catch {
    return 'request is not JSON'
  }
  if (v === null) return q
  if (typeof v !== 'object' || Array.isArray(v)) return 'request must be a JSON object of parameters'
  for (const [k, x] of Object.entries(v)) {
    if (typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') q.set(k, String(x))
    else if (x !== null) return `parameter ${JSON.stringify(k.slice(0, 64))} must be a string, number or boolean`
  }
  return q
}

export interface StatusService {
  /** The uplink's 100 ms tick: sends a heartbeat when one is due. */
  tick(now: number): void
  stop(): void
}

/** Subscribes the `$SPRIG.` services and starts the heartbeat for these remotes. */
export function startStatus(srv: Server, remotes: readonly Remote[]): StatusService {
  const subs: Sub[] = []
  for (const [subject, path] of Object.entries(SERVICES)) {
    const owner: Owner = {
      cid: 0,
      echo: true,
      deliver: (_sub: Sub, m, from) => {
        // Only to a reply subject the requester could publish to or read (permissions.ts).
        if (m.reply === '' || !mayAnswer(from, m.reply)) return
        const q = requestParams(m.payload)
        const r = typeof q === 'string' ? { status: 400, body: { error: q } } : monitorRequest(srv, path, q)
        const body = r.status === 200 || typeof r.body !== 'object' ? r.body : { ...(r.body as object), code: r.status }
        const out = newMsg()
        out.subject = m.reply
        out.subjectBytes = utf8(m.reply)
        out.payload = utf8(JSON.stringify(body))
        srv.router.publish(out, answerFor(from))
      },
    }
    const sub: Sub = { subject, queue: null, owner }
    srv.router.subscribe(sub)
    subs.push(sub)
  }
  const subject = statusSubject(srv.name)
  const subjectBytes = utf8(subject)
  let prev: Sample | null = null
  let last = srv.host.now()
  let wasUp = false
  const send = (now: number): void => {
    const hb = heartbeat(srv, remotes, prev, now)
    prev = hb.sample
    last = now
    const m = newMsg()
    m.subject = subject
    m.subjectBytes = subjectBytes
    m.payload = utf8(JSON.stringify(hb.body))
    srv.router.publish(m, null)
  }
  return {
    tick(now) {
      const every = srv.opts.leafnodes?.status_interval ?? LEAF_DEFAULTS.status_interval
      if (every <= 0) return
      // One as soon as a hub link is up and its interest known, then one per interval.
      const up = remotes.some((r) => r.state === 'connected' && r.link?.interestKnown === true)
      if ((up && !wasUp) || now - last >= every) send(now)
      wasUp = up
    },
    stop() {
      for (const s of subs) srv.router.unsubscribe(s)
    },
  }
}
