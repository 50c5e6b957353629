// /metrics: the Prometheus text exposition format (version 0.0.4), made from the very object
// /varz returns, so every number has one home and the two can never disagree. Naming follows
// Prometheus' conventions: `sprig_` prefix, `_total` on counters, base units (bytes,
// seconds), HELP and TYPE for every family. Labels have bounded values only: the protocol
// ("nats", "mqtt"), the uplink remote's index in the config, a fixed set of states and
// endpoints; never a client, a subject or an address.

import type { Server } from './server.ts'

export const METRICS_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

type Kind = 'counter' | 'gauge'
type Labels = Record<string, string>

/** The uplink states a remote can be in (src/leaf/remote.ts RemoteState): one 0/1 series each. */
const REMOTE_STATES = ['connecting', 'handshake', 'connected', 'disconnected', 'stopped']

/** Collects families in order; a family's samples stay together as the format requires. */
class Text {
  private readonly out: string[] = []
  private readonly seen = new Set<string>()

  /** One family with one sample (no labels), or with one sample per label set. */
  add(name: string, kind: Kind, help: string, v: number | boolean | undefined | [Labels, number][]): void {
    if (v === undefined) return
    const full = `sprig_${name}`
    if (this.seen.has(full)) throw new Error(`metric ${full} twice`)
    this.seen.add(full)
    this.out.push(`# HELP ${full} ${help}`, `# TYPE ${full} ${kind}`)
    if (Array.isArray(v)) for (const [l, x] of v) this.out.push(`${full}${labels(l)} ${num(x)}`)
    else this.out.push(`${full} ${num(v === true ? 1 : v === false ? 0 : v)}`)
  }

  toString(): string {
    return this.out.join('\n') + '\n'
  }
}

function labels(l: Labels): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
  return parts.length === 0 ? '' : `{${parts.join(',')}}`
}

function num(x: number): string {
  if (Number.isNaN(x)) return 'NaN'
  if (x === Infinity) return '+Inf'
  if (x === -Infinity) return '-Inf'
  return String(x)
}

const ms = (x: unknown): number | undefined => (typeof x === 'number' ? x / 1000 : undefined)
const ns = (x: unknown): number | undefined => (typeof x === 'number' ? x / 1e9 : undefined)
const n = (x: unknown): number | undefined => (typeof x === 'number' ? x : undefined)
const obj = (x: unknown): Record<string, unknown> => (x !== null && typeof x === 'object' ? (x as Record<string, unknown>) : {})

/** `v` is the /varz object (monitor.ts passes it: this module does not import the monitor). */
export function metrics(srv: Server, v: Record<string, unknown>): string {
  const s = obj(v.sprig)
  const t = new Text()
  t.add('info', 'gauge', 'Always 1; the labels say which server this is.', [[{ server_id: String(v.server_id), server_name: String(v.server_name), version: String(v.version) }, 1]])
  t.add('start_time_seconds', 'gauge', 'When the server started, seconds since the Unix epoch.', Date.parse(String(v.start)) / 1000)
  t.add('ready', 'gauge', '1 while the server is ready (every listener up, not in lame duck); /healthz says the same.', s.phase === 'ready' && srv.running)

  // Process.
  t.add('process_resident_memory_bytes', 'gauge', 'Resident set size of the process.', n(v.mem))
  t.add('process_cpu_seconds_total', 'counter', 'User and system CPU time of the process.', n(s.cpu_seconds))
  t.add('process_cpu_percent', 'gauge', 'CPU use over the last interval, percent of one core (varz cpu).', n(v.cpu))
  t.add('cores', 'gauge', 'CPU cores the host has.', n(v.cores))

  // Connections.
  const byType = obj(s.connections_by_type)
  t.add('connections', 'gauge', 'Open client connections by protocol.', Object.entries(byType).map(([k, x]) => [{ protocol: k }, Number(x)]))
  t.add('connections_max', 'gauge', 'max_connections.', n(v.max_connections))
  t.add('connections_total', 'counter', 'Client connections accepted since start.', n(v.total_connections))
  t.add('connections_refused_total', 'counter', 'Connections refused at accept because of max_connections.', n(s.refused_connections))
  const closed = obj(s.closed_connections)
  t.add('closed_connections', 'gauge', 'Closed connections remembered for /connz?state=closed.', n(closed.held))
  t.add('closed_connections_dropped_total', 'counter', 'Closed-connection records dropped to keep that list bounded.', n(closed.dropped))
  t.add('slow_consumers_total', 'counter', 'Connections closed as slow consumers (max_pending or write_deadline).', n(v.slow_consumers))
  t.add('permission_violations_total', 'counter', 'Publishes and subscriptions refused by permissions.', n(s.permission_violations))
  t.add('subscriptions', 'gauge', 'Subscriptions in the subject index.', n(v.subscriptions))

  // Traffic.
  t.add('in_messages_total', 'counter', 'Messages published into the server.', n(v.in_msgs))
  t.add('in_bytes_total', 'counter', 'Bytes (headers and payload) published into the server.', n(v.in_bytes))
  t.add('out_messages_total', 'counter', 'Messages delivered to subscribers.', n(v.out_msgs))
  t.add('out_bytes_total', 'counter', 'Bytes (headers and payload) delivered to subscribers.', n(v.out_bytes))

  // Limits as configured (varz shows them; dashboards compare against them).
  t.add('max_payload_bytes', 'gauge', 'max_payload.', n(v.max_payload))
  t.add('max_pending_bytes', 'gauge', 'max_pending.', n(v.max_pending))
  t.add('max_control_line_bytes', 'gauge', 'max_control_line.', n(v.max_control_line))
  t.add('ping_interval_seconds', 'gauge', 'ping_interval.', ns(v.ping_interval))
  t.add('ping_max', 'gauge', 'ping_max.', n(v.ping_max))
  t.add('write_deadline_seconds', 'gauge', 'write_deadline.', ns(v.write_deadline))
  t.add('auth_timeout_seconds', 'gauge', 'The NATS authentication timeout.', n(v.auth_timeout))

  // Monitoring itself.
  const req = obj(v.http_req_stats)
  t.add('http_requests_total', 'counter', 'Monitoring requests by endpoint.', Object.entries(req).map(([k, x]) => [{ endpoint: k }, Number(x)]))

  // Memory budget (src/budget.ts).
  t.add('memory_budget_bytes', 'gauge', 'max_memory (0: no budget).', n(s.max_memory))
  t.add('memory_held_bytes', 'gauge', 'Bytes held for messages, as the budget counts them.', n(s.mem_held))
  t.add('memory_paused_publishers', 'gauge', 'Publishers paused by the budget now.', n(s.mem_paused))
  t.add('memory_pauses_total', 'counter', 'Publisher pauses by the budget.', n(s.mem_pauses))
  t.add('memory_closes_total', 'counter', 'Connections closed by the budget.', n(s.mem_closes))
  t.add('memory_drops_total', 'counter', 'Messages dropped by buffers because of the budget.', n(s.mem_drops))
  t.add('memory_episodes_total', 'counter', 'Times usage went over max_memory.', n(s.mem_episodes))

  t.add('producer_stalls_total', 'counter', 'Publishers paused for a subscriber queue past 3/4 of max_pending.', n(s.producer_stalls))
  t.add('stall_drops_total', 'counter', 'Messages dropped for a subscriber queue past 3/4 of max_pending (no_fast_producer_stall).', n(s.stall_drops))

  t.add('internal_errors_total', 'counter', 'Exceptions caught around a connection (each closed only it).', n(s.internal_errors))
  const bc = s.bcrypt === undefined ? undefined : obj(s.bcrypt)
  if (bc) {
    t.add('bcrypt_checks_total', 'counter', 'bcrypt password checks.', n(bc.checks))
    t.add('bcrypt_waiting', 'gauge', 'bcrypt checks waiting in the queue.', n(bc.waiting))
    t.add('bcrypt_refused_total', 'counter', 'bcrypt checks refused because the queue was full.', n(bc.refused))
  }
  const ev = s.event_loop === undefined ? undefined : obj(s.event_loop)
  if (ev) {
    t.add('event_loop_lag_p50_seconds', 'gauge', 'Event-loop lag, median over the last minute.', ms(ev.lag_p50_ms))
    t.add('event_loop_lag_p99_seconds', 'gauge', 'Event-loop lag, 99th percentile over the last minute.', ms(ev.lag_p99_ms))
    t.add('event_loop_lag_max_seconds', 'gauge', 'Event-loop lag, largest over the last minute.', ms(ev.lag_max_ms))
  }

  // MQTT (adapters/mqtt/index.ts: the sprig.mqtt section).
  const mq = s.mqtt === undefined ? undefined : obj(s.mqtt)
  if (mq) {
    t.add('mqtt_sessions_parked', 'gauge', 'Persistent MQTT sessions whose client is away.', n(mq.sessions_parked))
    t.add('mqtt_sessions_live', 'gauge', 'Connected MQTT clients with a persistent session.', n(mq.sessions_live))
    t.add('mqtt_sessions_bytes', 'gauge', 'Payload bytes held by parked sessions.', n(mq.sessions_bytes))
    t.add('mqtt_retained_messages', 'gauge', 'Retained messages.', n(mq.retained_msgs))
    t.add('mqtt_retained_bytes', 'gauge', 'Bytes of retained messages.', n(mq.retained_bytes))
    t.add('mqtt_retained_refused_total', 'counter', 'Retained messages refused by the store bounds.', n(mq.retained_refused))
    const counters: [string, string, string][] = [
      ['unmappable_subjects', 'unmappable_subjects_total', 'NATS messages skipped for MQTT subscribers: no topic form.'],
      ['oversize_drops', 'oversize_drops_total', "Deliveries dropped over the client's Maximum Packet Size."],
      ['wills', 'wills_total', 'Will messages published.'],
      ['offline_dropped', 'offline_dropped_messages_total', "QoS 1/2 messages dropped: a parked session's queue was full."],
      ['sessions_evicted', 'sessions_evicted_total', 'Parked sessions expired early for room (max_sessions).'],
      ['sessions_refused', 'sessions_refused_total', 'New persistent sessions refused (max_sessions).'],
      ['sessions_foreign', 'sessions_foreign_total', 'Sessions ended: another identity took the client id.'],
      ['sessions_revoked', 'sessions_revoked_total', 'Sessions ended: their user is gone (reload).'],
      ['revoked_msgs', 'revoked_messages_total', 'Held messages dropped: the user may no longer read them.'],
      ['malformed_packets', 'malformed_packets_total', 'Packets refused as malformed or a protocol error.'],
    ]
    for (const [key, name, help] of counters) t.add(`mqtt_${name}`, 'counter', help, n(mq[key]))
  }

  // The uplink, one series per configured remote (label: its index in leafnodes.remotes).
  const lz = s.leafz === undefined ? undefined : obj(s.leafz)
  if (lz) {
    const leafs = Array.isArray(lz.leafs) ? (lz.leafs as Record<string, unknown>[]) : []
    const per = (key: string): [Labels, number][] => leafs.map((l) => [{ remote: String(l.remote) }, Number(l[key] ?? 0)])
    t.add('leafnodes', 'gauge', 'Uplink remotes connected to their hub.', n(lz.leafnodes))
    t.add(
      'leaf_state',
      'gauge',
      "1 for the remote's current uplink state, 0 for the others.",
      leafs.flatMap((l) => REMOTE_STATES.map((st): [Labels, number] => [{ remote: String(l.remote), state: st }, l.state === st ? 1 : 0])),
    )
    const fields: [string, Kind, string, string][] = [
      ['in_msgs', 'counter', 'in_messages_total', 'Messages received from the hub.'],
      ['in_bytes', 'counter', 'in_bytes_total', 'Bytes received from the hub.'],
      ['out_msgs', 'counter', 'out_messages_total', 'Messages sent to the hub.'],
      ['out_bytes', 'counter', 'out_bytes_total', 'Bytes sent to the hub.'],
      ['subscriptions', 'gauge', 'subscriptions', 'Interest (LS+) this link holds at the hub.'],
      ['reconnects', 'counter', 'reconnects_total', 'Reconnects to the hub.'],
      ['local_interest', 'gauge', 'local_interest', 'Local subscriptions the uplink forwards.'],
      ['hub_interest', 'gauge', 'hub_interest', 'Subjects the hub has interest in.'],
      ['buffered_msgs', 'gauge', 'buffered_messages', 'Messages in the store-and-forward buffer.'],
      ['buffered_bytes', 'gauge', 'buffered_bytes', 'Bytes in the store-and-forward buffer.'],
      ['dropped_msgs', 'counter', 'dropped_messages_total', 'Messages the buffer dropped (its bounds).'],
      ['stalls', 'counter', 'stalls_total', "Publishers paused while the link's queue was over its high-water mark."],
      ['stall_timeouts', 'counter', 'stall_timeouts_total', 'Stalls that hit their time limit.'],
      ['expired_msgs', 'counter', 'expired_messages_total', 'Buffered messages dropped: no hub interest within buffer_hold.'],
      ['oversize_msgs', 'counter', 'oversize_messages_total', "Messages over the hub's max_payload, dropped."],
    ]
    for (const [key, kind, name, help] of fields) t.add(`leaf_${name}`, kind, help, per(key))
  }
  return t.toString()
}
