// What the monitoring endpoint reports, as plain objects: nats-server's /varz, /connz,
// /healthz and /leafz shapes where they overlap (so existing dashboards and `curl | jq`
// habits carry over), plus a `sprig` section with every bounded queue's drop counters.
// The target serves these over HTTP; nothing here touches a socket.

import { DEFAULT_AUTH_TIMEOUT } from './options.ts'
import { VERSION, type Server } from './server.ts'

/** One connection as /connz shows it (nats-server's field names). */
export interface ConnInfo {
  cid: number
  /** "nats" or "mqtt" (nats-server: `type` is "nats" / "mqtt" for client connections). */
  type: string
  ip: string
  port: number
  /** ms since the epoch (host.now()); absent where the adapter does not keep it. */
  start?: number
  last_activity: number
  pending_bytes: number
  in_msgs?: number
  out_msgs?: number
  subscriptions: number
  name?: string
  lang?: string
  version?: string
  /** MQTT client id. */
  mqtt_client?: string
  /** The authenticated user, when there is one. */
  authorized_user?: string
  tls_version?: string
}

/** What the process can tell about itself; the target fills it in. */
export interface ProcessStats {
  /** Resident set size in bytes. */
  mem: number
  cores: number
}

export interface Reply {
  status: number
  body: unknown
}

const iso = (ms: number): string => new Date(ms).toISOString()

/** nats-server's uptime format: "1d2h3m4s", leading zero units left out. */
export function uptime(ms: number): string {
  let s = Math.floor(ms / 1000)
  const d = Math.floor(s / 86400)
  s -= d * 86400
  const h = Math.floor(s / 3600)
  s -= h * 3600
  const m = Math.floor(s / 60)
  s -= m * 60
  if (d > 0) return `${d}d${h}h${m}m${s}s`
  if (h > 0) return `${h}h${m}m${s}s`
  if (m > 0) return `${m}m${s}s`
  return `${s}s`
}

export function varz(srv: Server, proc: ProcessStats): Record<string, unknown> {
  const o = srv.opts
  const now = srv.host.now()
  const t = srv.router.traffic
  const ns = 1_000_000 // nats-server reports durations in nanoseconds
  const sections: Record<string, unknown> = {}
  for (const [name, fn] of srv.status) sections[name] = fn()
  return {
    server_id: srv.id,
    server_name: srv.name,
    version: VERSION,
    proto: 1,
    host: o.host,
    port: o.port,
    max_connections: o.max_connections,
    ping_interval: o.ping_interval * ns,
    ping_max: o.ping_max,
    http_host: o.http_host || o.host,
    http_port: o.http_port,
    https_port: o.https_port,
    auth_timeout: (o.authorization?.timeout ?? DEFAULT_AUTH_TIMEOUT) / 1000,
    max_control_line: o.max_control_line,
    max_payload: o.max_payload,
    max_pending: o.max_pending,
    write_deadline: o.write_deadline * ns,
    start: iso(srv.started),
    now: iso(now),
    uptime: uptime(now - srv.started),
    mem: proc.mem,
    cores: proc.cores,
    connections: srv.sessions.size,
    total_connections: srv.counters.total_connections,
    in_msgs: t.in_msgs,
    out_msgs: t.out_msgs,
    in_bytes: t.in_bytes,
    out_bytes: t.out_bytes,
    slow_consumers: srv.counters.slow_consumers,
    subscriptions: srv.router.subs.count,
    // sprig's own: every overflow policy's counter, and each adapter's / the uplink's state.
    // The memory budget: max_memory (0: none), bytes held for messages, what it did (src/budget.ts).
    sprig: { refused_connections: srv.counters.refused_connections, ...srv.budget.status(), ...sections },
  }
}

export interface ConnzQuery {
  offset: number
  limit: number
}

export function connz(srv: Server, q: ConnzQuery): Record<string, unknown> {
  const now = srv.host.now()
  const all: ConnInfo[] = []
  for (const s of srv.sessions.values()) if (s.describe) all.push(s.describe())
  all.sort((a, b) => a.cid - b.cid)
  const page = all.slice(q.offset, q.offset + q.limit).map((c) => ({
    ...c,
    ...(c.start !== undefined ? { start: iso(c.start), uptime: uptime(now - c.start) } : {}),
    last_activity: iso(c.last_activity),
    idle: uptime(now - c.last_activity),
  }))
  return {
    server_id: srv.id,
    now: iso(now),
    num_connections: page.length,
    total: all.length,
    offset: q.offset,
    limit: q.limit,
    connections: page,
  }
}

/**
 * The endpoint for a request path and query, as nats-server names them. `leafz` comes from
 * the uplink's status section when there is an uplink.
 */
export function monitorRequest(srv: Server, path: string, query: URLSearchParams, proc: ProcessStats): Reply {
  switch (path.replace(/\/+$/, '') || '/') {
    case '/':
      return { status: 200, body: { endpoints: ['/varz', '/connz', '/leafz', '/healthz'] } }
    case '/varz':
      return { status: 200, body: varz(srv, proc) }
    case '/connz': {
      const offset = intParam(query, 'offset', 0)
      const limit = intParam(query, 'limit', 1024)
      if (offset === null || limit === null) return { status: 400, body: { error: 'offset and limit must be integers >= 0' } }
      return { status: 200, body: connz(srv, { offset, limit }) }
    }
    case '/healthz':
      return srv.running ? { status: 200, body: { status: 'ok' } } : { status: 503, body: { status: 'unavailable', error: 'server is stopping' } }
    case '/leafz': {
      const leaf = srv.status.get('leafz')
      const body = leaf ? leaf() : { leafnodes: 0, leafs: [] }
      return { status: 200, body: { server_id: srv.id, now: iso(srv.host.now()), ...(body as object) } }
    }
    default:
      return { status: 404, body: { error: `no such endpoint: ${path}` } }
  }
}

function intParam(q: URLSearchParams, name: string, dflt: number): number | null {
  const v = q.get(name)
  if (v === null || v === '') return dflt
  return /^\d+$/.test(v) ? Number(v) : null
}
