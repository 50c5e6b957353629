// What the monitoring endpoint reports, as plain objects: nats-server's /varz, /connz,
// /subsz, /healthz and /leafz shapes where they overlap (so existing dashboards and `curl | jq`
// habits carry over), plus a `sprig` section with every bounded queue's drop counters, and
// /metrics (Prometheus text, src/metrics.ts) made from the same /varz object.
// The target serves these over HTTP, the `$SPRIG.` services over NATS (src/leaf/status.ts);
// nothing here touches a socket.

import { authRequired, authTimeout } from './auth.ts'
import { wallClock } from './host.ts'
import { metrics, METRICS_TYPE } from './metrics.ts'
import { mqttOptions } from './options.ts'
import type { Sub } from './router.ts'
import { NATS_VERSION, VERSION, type ProcessStats, type Server, type Session } from './server.ts'
import { isValidLiteralSubject } from './subject.ts'

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
  in_bytes?: number
  out_bytes?: number
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

export type { ProcessStats }

export interface Reply {
  status: number
  /** JSON unless `type` says otherwise (then a string). */
  body: unknown
  /** A content type other than JSON (/metrics). */
  type?: string
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

/** The endpoints, as `/` lists them and http_req_stats counts them. */
export const ENDPOINTS = ['/varz', '/connz', '/subsz', '/leafz', '/healthz', '/metrics'] as const

/** Requests served per endpoint (nats-server's varz `http_req_stats`); bounded by ENDPOINTS. */
const requests = new WeakMap<Server, Record<string, number>>()

function requestStats(srv: Server): Record<string, number> {
  let r = requests.get(srv)
  if (r === undefined) requests.set(srv, (r = Object.fromEntries(['/', ...ENDPOINTS].map((e) => [e, 0]))))
  return r
}

export function varz(srv: Server, proc: ProcessStats = srv.proc()): Record<string, unknown> {
  const o = srv.opts
  const now = srv.host.now()
  const t = srv.router.traffic
  const ns = 1_000_000 // nats-server reports durations in nanoseconds
  const at = wallClock(srv.host)
  const sections: Record<string, unknown> = {}
  for (const [name, fn] of srv.status) sections[name] = fn()
  const leaf = sections.leafz as { leafnodes?: number } | undefined
  const mo = mqttOptions(o)
  const tls = o.tls
  return {
    server_id: srv.id,
    server_name: srv.name,
    version: NATS_VERSION,
    proto: 1,
    host: o.host,
    port: o.port,
    // omitempty in nats-server: present only when true.
    ...(authRequired(o) ? { auth_required: true } : {}),
    ...(tls !== undefined ? { tls_required: true } : {}),
    ...(tls !== undefined && (tls.verify || tls.verify_and_map) ? { tls_verify: true } : {}),
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
    ...(mo.enabled ? { mqtt: { host: mo.host || o.host, port: mo.port, ...(mo.tls ? { tls_port: mo.tls_port } : {}) } } : {}),
    write_deadline: o.write_deadline * ns,
    start: at(srv.started),
    now: at(now),
    uptime: uptime(now - srv.started),
    mem: proc.mem,
    cores: proc.cores,
    cpu: proc.cpu ?? 0,
    connections: srv.sessions.size,
    total_connections: srv.counters.total_connections,
    routes: 0,
    remotes: 0,
    leafnodes: leaf?.leafnodes ?? 0,
    in_msgs: t.in_msgs,
    out_msgs: t.out_msgs,
    in_bytes: t.in_bytes,
    out_bytes: t.out_bytes,
    slow_consumers: srv.counters.slow_consumers,
    subscriptions: srv.router.subs.count,
    http_req_stats: { ...requestStats(srv) },
    config_load_time: at(srv.started),
    // sprig's own: every overflow policy's counter, and each adapter's / the uplink's state.
    // The memory budget: max_memory (0: none), bytes held for messages, what it did (src/budget.ts).
    sprig: {
      version: VERSION,
      phase: srv.phase,
      cpu_seconds: proc.cpu_seconds ?? 0,
      connections_by_type: connectionsByType(srv),
      refused_connections: srv.counters.refused_connections,
      permission_violations: srv.counters.permission_violations,
      closed_connections: { held: srv.closed.size, bytes: srv.closed.bytes, dropped: srv.closed.dropped },
      ...srv.budget.status(),
      // Publishers paused for a client queue past 3/4 of max_pending (src/stall.ts).
      producer_stalls: srv.stall.count,
      // Messages dropped for such a queue instead, with no_fast_producer_stall.
      stall_drops: srv.stall.drops,
      ...sections,
    },
  }
}

/** Open connections by protocol ("nats", "mqtt"): /connz totals, /metrics, the heartbeat. */
export function connectionsByType(srv: Server): Record<string, number> {
  return { ...srv.byKind }
}

// --- /connz ---------------------------------------------------------------------------------

export type ConnState = 'open' | 'closed' | 'any'
export type SubsDetail = false | 'list' | 'detail'

export interface ConnzQuery {
  offset: number
  limit: number
  sort?: SortOpt
  state?: ConnState
  subs?: SubsDetail
  /** Only this connection id. */
  cid?: number
  /** Only this MQTT client id. */
  mqtt_client?: string
}

/** One connection, open or closed, as the sort sees it. */
interface Row {
  info: ConnInfo
  stop?: number
  reason?: string
  /** stop, or now for an open connection: what idle and uptime are measured to. */
  end: number
}

type Cmp = (a: Row, b: Row) => number
const desc = (f: (r: Row) => number): Cmp => (a, b) => f(b) - f(a) || a.info.cid - b.info.cid
const byCid: Cmp = (a, b) => a.info.cid - b.info.cid

/**
 * nats-server's /connz sort options that sprig can honour. Connection ids are handed out in
 * accept order, so `start` is the cid order (also for MQTT connections, which keep no start).
 */
const SORTS = {
  cid: byCid,
  start: byCid,
  subs: desc((r) => r.info.subscriptions),
  pending: desc((r) => r.info.pending_bytes),
  msgs_to: desc((r) => r.info.out_msgs ?? 0),
  msgs_from: desc((r) => r.info.in_msgs ?? 0),
  bytes_to: desc((r) => r.info.out_bytes ?? 0),
  bytes_from: desc((r) => r.info.in_bytes ?? 0),
  last: desc((r) => r.info.last_activity),
  idle: desc((r) => r.end - r.info.last_activity),
  // An MQTT connection keeps no start time: sorted by cid after those that do.
  uptime: desc((r) => (r.info.start === undefined ? -1 : r.end - r.info.start)),
  stop: desc((r) => r.stop ?? 0),
  reason: (a: Row, b: Row) => (a.reason ?? '').localeCompare(b.reason ?? '') || a.info.cid - b.info.cid,
} satisfies Record<string, Cmp>

export type SortOpt = keyof typeof SORTS

export function connz(srv: Server, q: ConnzQuery): Record<string, unknown> {
  const now = srv.host.now()
  const at = wallClock(srv.host)
  const state = q.state ?? 'open'
  const sort = q.sort ?? 'cid'
  const rows: Row[] = []
  // Only the page is described when the order is the cid order: with thousands of
  // connections a request must stay cheap. Another order describes every connection.
  const open: Session[] = []
  if (state !== 'closed') {
    let sorted = true
    for (const s of srv.sessions.values()) {
      if (!s.describe || (q.cid !== undefined && s.cid !== q.cid)) continue
      if (open.length > 0 && open[open.length - 1]!.cid > s.cid) sorted = false
      open.push(s)
    }
    if (!sorted) open.sort((a, b) => a.cid - b.cid)
  }
  const closed = state === 'open' ? [] : srv.closed.all().filter((c) => q.cid === undefined || c.info.cid === q.cid)
  const lazy = sort === 'cid' || sort === 'start'
  let page: Row[]
  let total: number
  if (lazy && closed.length === 0 && q.mqtt_client === undefined) {
    total = open.length
    page = open.slice(q.offset, q.offset + q.limit).map((s) => ({ info: s.describe!(), end: now }))
  } else {
    for (const s of open) rows.push({ info: s.describe!(), end: now })
    for (const c of closed) rows.push({ info: c.info, stop: c.stop, reason: c.reason, end: c.stop })
    const list = q.mqtt_client === undefined ? rows : rows.filter((r) => r.info.mqtt_client === q.mqtt_client)
    list.sort(SORTS[sort])
    total = list.length
    page = list.slice(q.offset, q.offset + q.limit)
  }
  const subs = q.subs ? subsByCid(srv, new Set(page.filter((r) => r.stop === undefined).map((r) => r.info.cid))) : null
  const connections = page.map((r) => {
    const c = r.info
    const end = r.end
    const out: Record<string, unknown> = {
      ...c,
      ...(c.start !== undefined ? { start: at(c.start), uptime: uptime(end - c.start) } : {}),
      last_activity: at(c.last_activity),
      idle: uptime(end - c.last_activity),
    }
    if (r.stop !== undefined) {
      out.stop = at(r.stop)
      out.reason = r.reason
    }
    if (subs !== null) {
      const list = subs.get(c.cid) ?? []
      if (q.subs === 'detail') out.subscriptions_list_detail = list.map(subDetail)
      else out.subscriptions_list = list.map((s) => s.subject)
    }
    return out
  })
  return {
    server_id: srv.id,
    now: at(now),
    num_connections: connections.length,
    total,
    offset: q.offset,
    limit: q.limit,
    connections,
  }
}

/** Router subscriptions of these connections, by cid (one walk of the subscription index). */
function subsByCid(srv: Server, cids: Set<number>): Map<number, Sub[]> {
  const out = new Map<number, Sub[]>()
  if (cids.size === 0) return out
  srv.router.subs.each((s) => {
    const cid = s.owner.cid
    if (!cids.has(cid)) return
    const l = out.get(cid)
    if (l === undefined) out.set(cid, [s])
    else l.push(s)
  })
  return out
}

/** nats-server's SubDetail; `sid`, `msgs` and `max` where the adapter keeps them (NATS). */
function subDetail(s: Sub): Record<string, unknown> {
  const x = s as Sub & { sid?: string; delivered?: number; max?: number }
  return {
    account: '$G',
    subject: s.subject,
    ...(s.queue !== null ? { qgroup: s.queue } : {}),
    ...(x.sid !== undefined ? { sid: x.sid } : {}),
    msgs: x.delivered ?? 0,
    ...(x.max ? { max: x.max } : {}),
    cid: s.owner.cid,
  }
}

// --- /subsz ---------------------------------------------------------------------------------

export interface SubszQuery {
  offset: number
  limit: number
  subs: boolean
  /** Only subscriptions a publish to this literal subject would reach. */
  test?: string
}

export function subsz(srv: Server, q: SubszQuery): Record<string, unknown> {
  const subs = srv.router.subs
  const st = subs.stats()
  const fan = subs.fanout()
  const out: Record<string, unknown> = {
    server_id: srv.id,
    now: wallClock(srv.host)(srv.host.now()),
    num_subscriptions: st.subscriptions,
    num_cache: st.cacheEntries,
    num_inserts: st.inserts,
    num_removes: st.removes,
    num_matches: st.matches,
    cache_hit_rate: st.matches === 0 ? 0 : st.cacheHits / st.matches,
    max_fanout: fan.max,
    avg_fanout: fan.avg,
  }
  if (!q.subs && q.test === undefined) return out
  const list: Sub[] = []
  if (q.test !== undefined) {
    const m = subs.match(q.test)
    list.push(...m.psubs)
    for (const g of m.qsubs) list.push(...g)
  } else subs.each((s) => list.push(s))
  out.total = list.length
  out.offset = q.offset
  out.limit = q.limit
  if (q.subs) out.subscriptions_list = list.slice(q.offset, q.offset + q.limit).map(subDetail)
  return out
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
export function monitorTarget(srv: Server, target: string, proc?: ProcessStats): Reply {
  const t = parseTarget(target)
  if ('error' in t) return { status: 400, body: { error: t.error } }
  return monitorRequest(srv, t.path, t.query, proc)
}

type Query = Map<string, string> | URLSearchParams

/** The endpoint for a parsed path (percent-encoded, as received) and query. */
export function monitorRequest(srv: Server, path: string, query: Query, proc?: ProcessStats): Reply {
  // A trailing slash is tolerated; `//varz`, `/./varz` and other unclean paths are not
  // endpoints (nats-server redirects them; a 404 says the same without a redirect).
  const p = path.replace(/(?<=.)\/$/, '')
  const stats = requestStats(srv)
  if (p in stats) stats[p]!++
  try {
    return endpoint(srv, p, query, proc)
  } catch (e) {
    if (e instanceof BadQuery) return { status: 400, body: { error: e.message } }
    throw e
  }
}

function endpoint(srv: Server, p: string, query: Query, proc?: ProcessStats): Reply {
  switch (p) {
    case '/':
      return { status: 200, body: { endpoints: ENDPOINTS } }
    case '/varz':
      return { status: 200, body: varz(srv, proc) }
    case '/connz': {
      const state = oneOf(query, 'state', { open: 'open', closed: 'closed', any: 'any', all: 'any' } as const, 'Error decoding state for') ?? 'open'
      const sort = oneOf(query, 'sort', Object.fromEntries(Object.keys(SORTS).map((k) => [k, k])) as Record<SortOpt, SortOpt>, 'invalid sorting option:')
      if ((sort === 'stop' || sort === 'reason') && state === 'open') throw new BadQuery(`sort by ${sort} only valid on closed connections`)
      const subs = query.get('subs')
      const cid = intParam(query, 'cid')
      const mqtt = query.get('mqtt_client')
      return {
        status: 200,
        body: connz(srv, {
          ...page(query),
          state,
          sort,
          subs: subs === 'detail' ? 'detail' : boolParam(query, 'subs') ? 'list' : false,
          ...(cid !== null ? { cid } : {}),
          ...(mqtt ? { mqtt_client: mqtt } : {}),
        }),
      }
    }
    case '/subsz': {
      const test = query.get('test')
      if (test !== undefined && test !== null && test !== '' && !isValidLiteralSubject(test)) throw new BadQuery(`invalid test subject, must be valid publish subject: ${test.slice(0, 256)}`)
      const q: SubszQuery = { ...page(query), subs: boolParam(query, 'subs') || boolParam(query, 'subscriptions') }
      if (test) q.test = test
      return { status: 200, body: subsz(srv, q) }
    }
    case '/healthz':
      return healthz(srv)
    case '/leafz': {
      const leaf = srv.status.get('leafz')
      const body = leaf ? leaf() : { leafnodes: 0, leafs: [] }
      return { status: 200, body: { server_id: srv.id, now: wallClock(srv.host)(srv.host.now()), ...(body as object) } }
    }
    case '/metrics':
      return { status: 200, type: METRICS_TYPE, body: metrics(srv, varz(srv, proc)) }
    default:
      return { status: 404, body: { error: `no such endpoint: ${p}` } }
  }
}

/**
 * nats-server's HealthStatus: 200 `{"status":"ok"}` only once every listener is up and until
 * lame duck or shutdown begins; otherwise 503 with `status_code` and `error`.
 */
export function healthz(srv: Server): Reply {
  const why =
    !srv.running && srv.phase === 'ready' ? 'server is stopping'
    : srv.phase === 'starting' ? 'server is starting'
    : srv.phase === 'lame_duck' ? 'server is in lame duck mode'
    : null
  if (why === null) return { status: 200, body: { status: 'ok' } }
  return { status: 503, body: { status: 'unavailable', status_code: 503, error: why } }
}

/** A query nats-server would refuse with 400; the message is its wording where it has one. */
class BadQuery extends Error {}

/** offset and limit, as nats-server reads them (a negative offset is 0, limit <= 0 the default). */
function page(query: Query): { offset: number; limit: number } {
  const offset = intParam(query, 'offset')
  const limit = intParam(query, 'limit')
  // Unlike nats-server a page holds at most the default: building one is synchronous work on
  // the event loop (~10 µs per connection), so bigger lists are read page by page.
  const l = limit === null || limit <= 0 ? DEFAULT_CONNZ_LIMIT : Math.min(limit, DEFAULT_CONNZ_LIMIT)
  return { offset: Math.max(0, offset ?? 0), limit: l }
}

/** nats-server's default /connz page size; sprig's largest. */
export const DEFAULT_CONNZ_LIMIT = 1024

/**
 * An integer query parameter, strictly: an optional sign and decimal digits, within the
 * range a double holds exactly. null when absent or empty; BadQuery (nats-server's wording)
 * otherwise.
 */
function intParam(q: Query, name: string): number | null {
  const v = q.get(name)
  if (v === undefined || v === null || v === '') return null
  if (!/^[+-]?\d+$/.test(v)) throw new BadQuery(`Error decoding int for '${name}': invalid syntax`)
  const n = Number(v)
  if (!Number.isSafeInteger(n)) throw new BadQuery(`Error decoding int for '${name}': value out of range`)
  return n
}

/** Go's strconv.ParseBool, as nats-server reads `subs=1`; absent or empty is false. */
function boolParam(q: Query, name: string): boolean {
  const v = q.get(name)
  if (v === undefined || v === null || v === '') return false
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v)) return true
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(v)) return false
  throw new BadQuery(`Error decoding boolean for '${name}': strconv.ParseBool: parsing ${JSON.stringify(v.slice(0, 64))}: invalid syntax`)
}

/** One of a fixed set of words (case-insensitive); undefined when absent or empty. */
function oneOf<T extends string>(q: Query, name: string, words: Record<string, T>, err = `invalid ${name}:`): T | undefined {
  const v = q.get(name)
  if (v === undefined || v === null || v === '') return undefined
  const w = Object.hasOwn(words, v.toLowerCase()) ? words[v.toLowerCase()] : undefined
  if (w === undefined) throw new BadQuery(`${err} ${v.slice(0, 64)}`)
  return w
}
