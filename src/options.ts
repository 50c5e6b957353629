// The server's settings as plain data. Names follow nats-server's configuration keys
// (snake_case) wherever nats-server has the same option, so its docs mostly apply.
// Durations are milliseconds and sizes are bytes here; config.ts turns the friendlier
// forms ("2m", "1MB") into these.

import { LEVELS, type Level } from './log.ts'

export type LogLevel = Level
export const LOG_LEVELS: readonly LogLevel[] = LEVELS

/**
 * Client authorization: one user with a password, or one token (nats-server's simple form).
 * Authorization is required when `user` or `token` is set. More fields (`users`,
 * `permissions`) will join this object later, so code should not assume it holds only these.
 */
export interface Authorization {
  user?: string
  password?: string
  token?: string
  /** How long a client has to send CONNECT, in ms. */
  timeout: number
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
  max_control_line: number
  max_connections: number
  /** ms */
  ping_interval: number
  /** Unanswered PINGs before the connection is closed as stale. */
  ping_max: number
  /** ms a blocked write may take before the connection is closed as a slow consumer. */
  write_deadline: number
  /** Per connection; 0 means unlimited. */
  max_subscriptions: number
  /** The effective level; `debug`/`trace` below always agree with it. */
  log_level: LogLevel
  debug: boolean
  trace: boolean
  logtime: boolean
  authorization?: Authorization
  /** Monitoring HTTP port (nats-server's `http_port`); 0 = no monitoring listener. */
  http_port: number
  /** Monitoring host; empty means the top-level `host`. */
  http_host: string
  /** Absent means MQTT_DEFAULTS (read it through mqttOptions()). */
  mqtt?: MqttOptions
  // Later: leafnodes, tls.
}

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
}

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
}

/** nats-server refuses payloads above this (MAX_PAYLOAD_MAX_SIZE). */
export const MAX_PAYLOAD_LIMIT = 64 * 1024 * 1024

/** Default for `authorization.timeout` (nats-server's AUTH_TIMEOUT). */
export const DEFAULT_AUTH_TIMEOUT = 2_000

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
  max_control_line: 4096,
  max_connections: 64 * 1024,
  ping_interval: 2 * 60_000,
  ping_max: 2,
  write_deadline: 10_000,
  max_subscriptions: 0,
  log_level: 'info',
  debug: false,
  trace: false,
  logtime: true,
  http_port: 0,
  http_host: '',
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
  topic_alias_maximum: 64,
  max_keepalive: 0,
  max_topic_length: 65535,
  max_topic_levels: 0,
  max_subscriptions: 0,
})

/** The MQTT settings in effect: the `mqtt` block, or the defaults when there is none. */
export function mqttOptions(o: Options): MqttOptions {
  return o.mqtt ?? MQTT_DEFAULTS
}
