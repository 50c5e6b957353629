// What the monitoring endpoint reports, as plain objects: nats-server's /varz, /connz,
// /healthz and /leafz shapes where they overlap (so existing dashboards and `curl | jq`
// habits carry over), plus a `sprig` section with every bounded queue's drop counters.
// The target serves these over HTTP; nothing here touches a socket.

import { authTimeout } from './auth.ts'
import { wallClock } from './host.ts'
import { NATS_VERSION, VERSION, type Server, type Session } from './server.ts'

/** One connection as /connz shows it (nats-server's field names). */
export interface ConnInfo {
  cid: number
  /** "nats" or "mqtt" (nats-server: `type` is "nats" / "mqtt" for client connections). */
  type: string
  ip: string
  port: number
  /** host.now() (monotonic ms, shown on the wall clock); absent where the adapter does not keep it. */
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
  const at = wallClock(srv.host)
  const sections: Record<string, unknown> = {}
  for (const [name, fn] of srv.status) sections[name] = fn()
  return {
    server_id: srv.id,
    server_name: srv.name,
    version: NATS_VERSION,
    proto: 1,
    host: o.host,
    port: o.port,
    max_connections: o.max_connections,
    ping_interval: o.ping_interval * ns,
    ping_max: o.ping_max,
    http_host: o.http_host || o.host,
    http_port: o.http_port,
    https_port: o.https_port,
    auth_timeout: authTimeout(o, 'nats') / 1000,
    max_control_line: o.max_control_line,
    max_payload: o.max_payload,
    max_pending: o.max_pending,
    write_deadline: o.write_deadline * ns,
    start: at(srv.started),
    now: at(now),
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
    sprig: { version: VERSION, refused_connections: srv.counters.refused_connections, permission_violations: srv.counters.permission_violations, ...srv.budget.status(), ...sections },
  }
}

export interface ConnzQuery {
  offset: number
  limit: number
}

export function connz(srv: Server, q: ConnzQuery): Record<string, unknown> {
  const now = srv.host.now()
  const at = wallClock(srv.host)
  // Only the page is described: with thousands of connections a request must stay cheap.
  // Sessions are usually registered in cid order; sort only when they are not.
  const all: Session[] = []
  let sorted = true
  for (const s of srv.sessions.values()) {
    if (!s.describe) continue
    if (all.length > 0 && all[all.length - 1]!.cid > s.cid) sorted = false
    all.push(s)
  }
  if (!sorted) all.sort((a, b) => a.cid - b.cid)
  const page = all.slice(q.offset, q.offset + q.limit).map((s) => {
    const c = s.describe!()
    return {
      ...c,
      ...(c.start !== undefined ? { start: at(c.start), uptime: uptime(now - c.start) } : {}),
      last_activity: at(c.last_activity),
      idle: uptime(now - c.last_activity),
    }
  })
  return {
    server_id: srv.id,
    now: at(now),
    num_connections: page.length,
    total: all.length,
    offset: q.offset,
    limit: q.limit,
    connections: page,
  }
}

/** A request target split into its path (still percent-encoded) and its decoded query. */
export interface RequestTarget {
  path: string
  query: Map<string, string>
}

/**
 * Parses an HTTP request target (`/connz?limit=5`, or the absolute form
 * `http://host/connz?limit=5`) as nats-server's Go server does: anything that is not a valid
 * target is an error, which the caller answers with 400 (`//[` is valid: a path, as in Go).
 * Query pairs that do not decode are skipped, as Go's URL.Query() does. Never throws.
 */
export function parseTarget(target: string): RequestTarget | { error: string } {
  let rest = target
  if (!rest.startsWith('/')) {
    // Absolute form: scheme://authority[path]. The authority is checked, then ignored.
    const m = /^https?:\/\/([^/?#]*)(.*)$/i.exec(rest)
    if (m === null || !validAuthority(m[1]!)) return { error: 'malformed request target' }
    rest = m[2] === '' ? '/' : m[2]!
    if (!rest.startsWith('/') && !rest.startsWith('?')) return { error: 'malformed request target' }
    if (rest.startsWith('?')) rest = '/' + rest
  }
  if (rest.includes('#')) return { error: 'malformed request target' }
  const q = rest.indexOf('?')
  const path = q < 0 ? rest : rest.slice(0, q)
  if (!validEscapes(path) || /[\x00-\x20\x7f]/.test(path)) return { error: 'malformed request target' }
  const query = new Map<string, string>()
  if (q >= 0) {
    for (const pair of rest.slice(q + 1).split('&')) {
      if (pair === '') continue
      const eq = pair.indexOf('=')
      const k = decode(eq < 0 ? pair : pair.slice(0, eq))
      const v = decode(eq < 0 ? '' : pair.slice(eq + 1))
      if (k === null || v === null) continue
      if (!query.has(k)) query.set(k, v)
    }
  }
  return { path, query }
}

/** host[:port], the host a reg-name, an IPv4 address or a bracketed IPv6 literal. No user info. */
function validAuthority(a: string): boolean {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::(\d*))?$/.exec(a)
  if (m === null || !validEscapes(m[1]!)) return false
  return m[2] === undefined || m[2] === '' || (m[2].length <= 5 && Number(m[2]) <= 65535)
}

function validEscapes(s: string): boolean {
  for (let i = s.indexOf('%'); i >= 0; i = s.indexOf('%', i + 1)) {
    if (!/^[0-9A-Fa-f]{2}$/.test(s.slice(i + 1, i + 3))) return false
  }
  return true
}

/** Form decoding ('+' is a space); null when the escapes are not valid UTF-8 percent-encoding. */
function decode(s: string): string | null {
  if (!validEscapes(s)) return null
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '))
  } catch {
    return null
  }
}

/**
 * The reply to a GET (or HEAD) for this raw request target, as nats-server names the
 * endpoints. `leafz` comes from the uplink's status section when there is an uplink.
 */
export function monitorTarget(srv: Server, target: string, proc: ProcessStats): Reply {
  const t = parseTarget(target)
  if ('error' in t) return { status: 400, body: { error: t.error } }
  return monitorRequest(srv, t.path, t.query, proc)
}

/** The endpoint for a parsed path (percent-encoded, as received) and query. */
export function monitorRequest(srv: Server, path: string, query: Map<string, string> | URLSearchParams, proc: ProcessStats): Reply {
  // A trailing slash is tolerated; `//varz`, `/./varz` and other unclean paths are not
  // endpoints (nats-server redirects them; a 404 says the same without a redirect).
  switch (path.replace(/(?<=.)\/$/, '')) {
    case '/':
      return { status: 200, body: { endpoints: ['/varz', '/connz', '/leafz', '/healthz'] } }
    case '/varz':
      return { status: 200, body: varz(srv, proc) }
    case '/connz': {
      const offset = intParam(query, 'offset')
      const limit = intParam(query, 'limit')
      if (typeof offset === 'string') return { status: 400, body: { error: offset } }
      if (typeof limit === 'string') return { status: 400, body: { error: limit } }
      // nats-server: a negative offset is 0, a limit of 0 or less is the default. Unlike
      // nats-server a page holds at most the default: building one is synchronous work on
      // the event loop (~10 µs per connection), so bigger lists are read page by page.
      const l = limit === null || limit <= 0 ? DEFAULT_CONNZ_LIMIT : Math.min(limit, DEFAULT_CONNZ_LIMIT)
      return { status: 200, body: connz(srv, { offset: Math.max(0, offset ?? 0), limit: l }) }
    }
    case '/healthz':
      return srv.running ? { status: 200, body: { status: 'ok' } } : { status: 503, body: { status: 'unavailable', error: 'server is stopping' } }
    case '/leafz': {
      const leaf = srv.status.get('leafz')
      const body = leaf ? leaf() : { leafnodes: 0, leafs: [] }
      return { status: 200, body: { server_id: srv.id, now: wallClock(srv.host)(srv.host.now()), ...(body as object) } }
    }
    default:
      return { status: 404, body: { error: `no such endpoint: ${path}` } }
  }
}

/** nats-server's default /connz page size; sprig's largest. */
export const DEFAULT_CONNZ_LIMIT = 1024

/**
 * An integer query parameter, strictly: an optional sign and decimal digits, within the
 * range a double holds exactly. null when absent or empty; an error text (nats-server's
 * wording) otherwise.
 */
function intParam(q: Map<string, string> | URLSearchParams, name: string): number | null | string {
  const v = q.get(name)
  if (v === undefined || v === null || v === '') return null
  if (!/^[+-]?\d+$/.test(v)) return `Error decoding int for '${name}': invalid syntax`
  const n = Number(v)
  if (!Number.isSafeInteger(n)) return `Error decoding int for '${name}': value out of range`
  return n
}
