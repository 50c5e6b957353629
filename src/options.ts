// The server's settings as plain data. Names follow nats-server's configuration keys
// (snake_case) wherever nats-server has the same option, so its docs mostly apply.
// Durations are milliseconds and sizes are bytes here; config.ts turns the friendlier
// forms ("2m", "1MB") into these.

import { LEVELS, type Level } from './log.ts'
import type { Permissions } from './permissions.ts'

export type LogLevel = Level
export const LOG_LEVELS: readonly LogLevel[] = LEVELS

/**
 * Client authorization (nats-server's `authorization` block): one user with a password, one
 * token, or a list of `users`; `permissions` are the default for users without their own.
 * Authorization is required when `user`, `token` or `users` is set (src/auth.ts).
 */
export interface Authorization {
  user?: string
  password?: string
  token?: string
  users?: UserConfig[]
  permissions?: Permissions
  /**
   * ms a client that must authenticate has from accept to a completed CONNECT (TLS handshake
   * and password check included). Absent: nats-server's default (src/auth.ts authTimeout).
   */
  timeout?: number
}

/** One entry of `authorization.users`. No password: only a certificate (verify_and_map) or no_auth_user names it. */
export interface UserConfig {
  user: string
  /** Plain text, or a bcrypt hash ($2a$/$2b$). */
  password?: string
  /** A user public nkey (U...): the client proves it by signing INFO's nonce (NATS only; src/nkey.ts). */
  nkey?: string
  permissions?: Permissions
}

export interface Options {
  host: string
  port: number
  /** Empty means: use the server id. */
  server_name: string
  /** Largest message payload a client may publish, in bytes. */
  max_payload: number
  /** Bytes that may wait in one connection's outbound queue before it counts as a slow consumer. */
  max_pending: number
  /**
   * The memory budget: bytes sprig may hold for messages in all its queues and stores
   * together (src/budget.ts); 0 = no budget. Default: 1/8 of the machine's memory, at most
   * 1 GiB (defaultMaxMemory; the target passes the total in), else DEFAULT_MAX_MEMORY.
   */
  max_memory: number
  max_control_line: number
  max_connections: number
  /** ms */
  ping_interval: number
  /** Unanswered PINGs before the connection is closed as stale. */
  ping_max: number
  /** ms a blocked write may take before the connection is closed as a slow consumer. */
  write_deadline: number
  /**
   * nats-server's: never pause a publisher for a subscriber queue past 3/4 of max_pending
   * (src/stall.ts); the messages that queue would get are dropped for it instead, counted.
   */
  no_fast_producer_stall: boolean
  /** Per connection; 0 means unlimited. */
  max_subscriptions: number
  /**
   * ms a connection that need not authenticate has from accept to a completed CONNECT (NATS
   * and MQTT); one that must has `authorization.timeout`. A slow or silent client is closed.
   */
  connect_timeout: number
  /** The effective level; `debug`/`trace` below always agree with it. */
  log_level: LogLevel
  debug: boolean
  trace: boolean
  logtime: boolean
  authorization?: Authorization
  /** Clients that send no credentials become this user (one of authorization.users). */
  no_auth_user?: string
  /** Monitoring HTTP port (nats-server's `http_port`); 0 = no monitoring listener, -1 = a random free port. */
  http_port: number
  /** Monitoring host; empty means the top-level `host`. */
  http_host: string
  /** Monitoring over HTTPS with the top-level `tls` block (nats-server's `https_port`); 0 = none, -1 = a random free port. */
  https_port: number
  /** A file the process id is written to at start (nats-server's `pid_file`); '' = none. */
  pid_file: string
  /**
   * A directory where, once every listener is up, `sprig_<pid>.ports` lists their URLs as
   * nats-server's ports file does (nats-server's `ports_file_dir`); '' = none. Removed at stop.
   */
  ports_file_dir: string
  /** Absent means MQTT_DEFAULTS (read it through mqttOptions()). */
  mqtt?: MqttOptions
  /** Leaf uplinks to NATS hubs (sprig dials out; it does not accept leaf connections). */
  leafnodes?: LeafnodeOptions
  /** TLS for the NATS listener (nats-server's top-level `tls` block); absent: plain TCP. */
  tls?: TlsOptions
  /**
   * With `tls`: clients may also stay in plaintext on the same port (nats-server's
   * `allow_non_tls`). INFO then says tls_available instead of tls_required; a client that
   * answers INFO with a TLS handshake gets TLS.
   */
  allow_non_tls: boolean
  /** ms over which lame duck mode (SIGUSR2) closes the clients, grace period included (src/lameduck.ts). */
  lame_duck_duration: number
  /** ms lame duck mode waits, after telling clients, before it closes the first one. */
  lame_duck_grace_period: number
  /** Log to this file (appended; SIGUSR1 reopens it, for logrotate) instead of stderr; '' = stderr. */
  log_file: string
  /** NATS (any path) and MQTT (path /mqtt) over WebSocket; absent: no WebSocket listener. */
  websocket?: WebsocketOptions
  /** The on-disk store (src/store/); absent: everything in memory. */
  store?: import('./store/store.ts').StoreOptions
}

/** nats-server's `websocket` block (its names and meanings; docs/configuration.md). */
export interface WebsocketOptions {
  /** Empty means: the top-level `host`. */
  host: string
  /** 0: one chosen by the OS. */
  port: number
  /** Plain ws:// without a `tls` block (nats-server refuses to start otherwise). */
  no_tls: boolean
  tls?: TlsOptions
  /** A browser's Origin must be this listener's own scheme, host and port. */
  same_origin: boolean
  /** When not empty, a browser's Origin must be one of these (scheme, host and port). */
  allowed_origins: string[]
  /** Offer permessage-deflate to clients that ask for it. */
  compression: boolean
  /** ms from accept to a completed upgrade (TLS handshake included). */
  handshake_timeout: number
}

/** Defaults of the keys a `websocket` block leaves out (port is required). */
export const WEBSOCKET_DEFAULTS: Omit<WebsocketOptions, 'port'> = Object.freeze({
  host: '',
  no_tls: false,
  same_origin: false,
  allowed_origins: [],
  compression: false,
  handshake_timeout: 2_000,
})

/**
 * A `tls` block (nats-server's names), for a listener (server side) or an uplink remote
 * (client side). Files are paths; the target reads them.
 */
export interface TlsOptions {
  cert_file?: string
  key_file?: string
  ca_file?: string
  /** Server: require and verify client certificates. */
  verify: boolean
  /** Server: verify, then map the certificate's identity to a user. */
  verify_and_map: boolean
  /** ms the TLS handshake may take. */
  timeout: number
  /** TLS before any protocol byte (nats-server 2.10+ `handshake_first`). */
  handshake_first: boolean
  /** A CRL file (PEM); certificates it revokes are refused. */
  crl_file?: string
  /** Client side: skip verification of the peer (for tests only; nats-server's `insecure`). */
  insecure?: boolean
  /**
   * Server side, with verify_and_map: which certificate field names the user. Absent or
   * `auto`: nats-server's order (email SANs, DNS SANs, URI SANs, subject DN).
   */
  map?: import('./cert-identity.ts').CertMap
}

/** A tls block's values for keys it does not set: nats-server's (handshake timeout 2s). */
export const TLS_DEFAULTS: TlsOptions = Object.freeze({ verify: false, verify_and_map: false, timeout: 2_000, handshake_first: false })

/** The MQTT listener (nats-server's `mqtt` block names where it has them). */
export interface MqttOptions {
  /** false: no MQTT listener at all. */
  enabled: boolean
  /** Empty means: the top-level `host`, so `-a 127.0.0.1` keeps MQTT on loopback too. */
  host: string
  port: number
  /**
   * QoS 1 messages sent to one client and not yet acknowledged (nats-server's name). An MQTT 5
   * client's smaller Receive Maximum wins. Further messages wait, counted against max_pending.
   */
  max_ack_pending: number
  /** Retained messages kept (one per topic); a new topic over either bound is not kept. */
  retained_max_msgs: number
  /** Bytes of retained topics and payloads kept. */
  retained_max_bytes: number
  /**
   * ms a persistent session (3.1.1 clean session 0, or MQTT 5 Session Expiry) outlives its
   * connection; also the most an MQTT 5 client may ask for, so abandoned sessions go.
   */
  session_expiry: number
  /** QoS 1/2 messages queued for a disconnected persistent session; newer ones are dropped. */
  max_offline_msgs: number
  /** Payload bytes queued for a disconnected persistent session. */
  max_offline_bytes: number
  /**
   * Persistent sessions kept, parked and live together; 0 = no limit. A new one over it
   * expires the oldest parked session first, or is refused when all are live (docs/mqtt.md, "Sessions, takeover and wills").
   */
  max_sessions: number
  /**
   * Payload bytes held by all parked sessions together (queued and unacknowledged); 0 = no
   * limit. Over it a new offline message is dropped, as over max_offline_bytes.
   */
  max_sessions_bytes: number
  /** MQTT 5 Topic Alias Maximum offered in CONNACK (aliases a client may set); 0 = none. */
  topic_alias_maximum: number
  /**
   * ms; the longest keepalive an MQTT 5 client may use: one asking for more (or for none)
   * is told this value as Server Keep Alive. 0 = whatever the client asks. 3.1.1 clients
   * cannot be told, so they keep theirs.
   */
  max_keepalive: number
  /** Most UTF-8 bytes in a topic name or filter (MQTT's own cap is 65535). */
  max_topic_length: number
  /** Most levels in a topic name or filter; 0 = no limit. */
  max_topic_levels: number
  /** Subscriptions (topic filters) per MQTT client; 0 = the top-level max_subscriptions. */
  max_subscriptions: number
  /** TLS for MQTT clients: on `port`, as in nats-server, or on `tls_port` when that is set. */
  tls?: TlsOptions
  /**
   * The port MQTT over TLS listens on. Validated options always say: the config's
   * `tls_port` (sprig's own key, to serve TLS on a port of its own), else `port` when `tls` is
   * set (nats-server's meaning). Unused without `tls`.
   */
  tls_port: number
  /**
   * Whether `port` serves MQTT without TLS. Validated: false when TLS is on `port`; with
   * `tls_port`, false unless the config says `plain: true` (serve both); true without `tls`.
   */
  plain: boolean
}

/** nats-server refuses payloads above this (MAX_PAYLOAD_MAX_SIZE). */
export const MAX_PAYLOAD_LIMIT = 64 * 1024 * 1024

/** Default for `authorization.timeout` without TLS (nats-server's AUTH_TIMEOUT); src/auth.ts authTimeout. */
export const DEFAULT_AUTH_TIMEOUT = 2_000

/** max_memory when the machine's memory is not known: 1/8 of a 1 GiB gateway. */
export const DEFAULT_MAX_MEMORY = 128 * 1024 * 1024

/**
 * max_memory for a machine with `total` bytes of memory: 1/8 of it (a gateway also runs other
 * services, and a JS runtime needs room beyond the bytes it holds), capped at 1 GiB.
 */
export function defaultMaxMemory(total: number): number {
  if (!(total > 0)) return DEFAULT_MAX_MEMORY
  return Math.min(Math.floor(total / 8), 1024 * 1024 * 1024)
}

export const defaults: Options = Object.freeze({
  host: '0.0.0.0',
  port: 4222,
  server_name: '',
  max_payload: 1024 * 1024,
  // nats-server allows 64 MB per connection. Sprig targets gateways with about 1 GB of RAM
  // that also run other services: a few dozen slow consumers at 64 MB each would exhaust it,
  // while 8 MiB still holds eight maximum-size (1 MB) messages, which is plenty of slack for
  // a healthy reader on a LAN.
  max_pending: 8 * 1024 * 1024,
  max_memory: DEFAULT_MAX_MEMORY,
  max_control_line: 4096,
  max_connections: 64 * 1024,
  ping_interval: 2 * 60_000,
  ping_max: 2,
  write_deadline: 10_000,
  no_fast_producer_stall: false,
  max_subscriptions: 0,
  // nats-server has no such bound without auth; a few seconds is plenty on a LAN or a mobile link.
  connect_timeout: 5_000,
  log_level: 'info',
  debug: false,
  trace: false,
  logtime: true,
  http_port: 0,
  http_host: '',
  https_port: 0,
  allow_non_tls: false,
  pid_file: '',
  ports_file_dir: '',
  // nats-server's defaults.
  lame_duck_duration: 2 * 60_000,
  lame_duck_grace_period: 10_000,
  log_file: '',
})

export const MQTT_DEFAULTS: MqttOptions = Object.freeze({
  enabled: true,
  host: '',
  port: 1883,
  max_ack_pending: 1024,
  // A gateway keeps device state, not an archive: 10k topics or 16 MiB, whichever first.
  retained_max_msgs: 10_000,
  retained_max_bytes: 16 * 1024 * 1024,
  // A device that was off overnight still finds its session; one that never returns is gone
  // a day later. 1000 messages / 1 MiB each keeps a thousand parked sessions within 1 GiB.
  session_expiry: 24 * 3_600_000,
  max_offline_msgs: 1000,
  max_offline_bytes: 1024 * 1024,
  // Without a bound on their number, every device id ever seen keeps a session for a day:
  // 10k sessions, and 64 MiB of offline messages among all of them, fit a 1 GB gateway.
  max_sessions: 10_000,
  max_sessions_bytes: 64 * 1024 * 1024,
  topic_alias_maximum: 64,
  max_keepalive: 0,
  max_topic_length: 65535,
  max_topic_levels: 0,
  max_subscriptions: 0,
  tls_port: 0, // resolved by validation when `tls` is set
  plain: true,
})

/** The MQTT settings in effect: the `mqtt` block, or the defaults when there is none. */
export function mqttOptions(o: Options): MqttOptions {
  return o.mqtt ?? MQTT_DEFAULTS
}

/** Top-level options a reload (SIGHUP) applies, each by its own step; `mqtt.tls` too. */
const RELOADABLE: ReadonlySet<string> = new Set(['authorization', 'no_auth_user', 'tls', 'leafnodes', 'lame_duck_duration', 'lame_duck_grace_period', 'no_fast_producer_stall'])

/**
 * The first option whose change a reload cannot apply (a restart must), as `key` or
 * `mqtt.key`, or null. A port asked for as 0 or -1 (pick one) at start is recorded as the port
 * it got: asking for that again is no change. The reloadable blocks check their own insides.
 */
export function restartNeeded(cur: Options, next: Options): string | null {
  const differs = (key: string, a: unknown, b: unknown): boolean =>
    JSON.stringify(a) !== JSON.stringify(b) && !(key.endsWith('port') && (b === 0 || b === -1))
  const keys = new Set([...Object.keys(cur), ...Object.keys(next)]) as Set<keyof Options>
  for (const key of keys) {
    if (RELOADABLE.has(key)) continue
    if (key === 'mqtt') {
      const a = mqttOptions(cur) as unknown as Record<string, unknown>
      const b = mqttOptions(next) as unknown as Record<string, unknown>
      for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
        if (k !== 'tls' && differs(k, a[k], b[k])) return `mqtt.${k}`
      }
    } else if (differs(key, cur[key], next[key])) return key
  }
  return null
}

/** nats-server's `leafnodes` block, soliciting side only (`remotes`), plus sprig's additions. */
export interface LeafnodeOptions {
  remotes: RemoteOptions[]
  /** ms; first wait before redialling (nats-server's `reconnect`, default 1s); doubles per failure. */
  reconnect: number
  /** ms; the longest wait between attempts (sprig's; default 30s). */
  reconnect_max: number
  /** ms between status heartbeats on `$SPRIG.status.<server_name>` (sprig's; default 30s, 0: none). */
  status_interval?: number
}

/** One `leafnodes.remotes[]` entry. nats-server's names first, sprig's own after. */
export interface RemoteOptions {
  /** nats://[user:pass@]host:port (also `tls://`); user/password or token from the userinfo. */
  urls: string[]
  /** Dial the URLs in the order given (nats-server's `no_randomize`). */
  no_randomize: boolean
  /** Path to a .creds file (user JWT + nkey seed). */
  credentials?: string
  /** An nkey user seed, or the path of a file that holds one. */
  nkey?: string
  /** TLS to the hub; also used when the hub's INFO says tls_required. */
  tls?: TlsOptions
  /** Hub subjects (wildcards allowed) never taken in from this hub (nats-server). */
  deny_imports: string[]
  /** Local subjects never sent to this hub (nats-server). */
  deny_exports: string[]
  // sprig's own below.
  /** Only these local subjects are sent up (empty: all). */
  allow_exports: string[]
  /** Only these subjects are taken in from the hub (empty: all). */
  allow_imports: string[]
  /** Prefix mappings: local `local.>` is `hub.>` at the hub (prefix added going up, stripped coming down). */
  map: SubjectMap[]
  /** Subjects buffered while the link is down (empty: what the hub had interest in when it dropped). */
  buffer_subjects: string[]
  buffer_max_msgs: number
  buffer_max_bytes: number
  /** Which message goes when the buffer is full. */
  buffer_policy: 'drop_oldest' | 'drop_newest'
  /** ms a buffered message waits, once the link is back, for the hub to show interest in it. */
  buffer_hold: number
  /** Backlog replay pace after an outage: messages per second (0: as fast as the hub takes them). */
  replay_rate?: number
  /** ... or bytes per second (0: no byte pace). */
  replay_rate_bytes?: number
  /**
   * How new messages and a backlog share the link after an outage: `interleave` (new ones go
   * ahead of the backlog, each in order), or `strict` (new ones wait behind it: per-publisher
   * order across the outage).
   */
  replay_order?: 'interleave' | 'strict'
  /**
   * The hub seen as a user of this gateway (nats-server's permission shape, local subject
   * names): `publish` is what the hub may publish here (what comes down), `subscribe` is what
   * interest goes up. The same compiled check as users' permissions (src/permissions.ts).
   */
  permissions?: Permissions
}

/** A prefix mapping: both sides are literal tokens followed by `.>`. */
export interface SubjectMap {
  local: string
  hub: string
}

export const LEAF_DEFAULTS = Object.freeze({ reconnect: 1000, reconnect_max: 30_000, status_interval: 30_000 })

export const REMOTE_DEFAULTS: Omit<RemoteOptions, 'urls'> = Object.freeze({
  no_randomize: false,
  deny_imports: [],
  deny_exports: [],
  allow_exports: [],
  allow_imports: [],
  map: [],
  buffer_subjects: [],
  // 16 MiB of messages (or 100k of them) rides out a long outage on a 1 GB gateway.
  buffer_max_msgs: 100_000,
  buffer_max_bytes: 16 * 1024 * 1024,
  buffer_policy: 'drop_oldest' as const,
  buffer_hold: 10_000,
  replay_rate: 0,
  replay_rate_bytes: 0,
  replay_order: 'interleave' as const,
})
