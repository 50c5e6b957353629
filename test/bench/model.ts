// Shared shapes. A scenario family (NATS now, MQTT later) is a list of Scenario values; the
// runner only needs a server of the same `kind` to run them against.
import type { ChildProcess } from 'node:child_process'

export type Kind = 'nats' | 'mqtt'

export interface Addr {
  host: string
  port: number
  /** The server's pid, for scenarios that read its /proc entries (memory per connection). */
  pid?: number
  /** Over WebSocket (ws-conn.ts): the request path and subprotocol; plain TCP without. */
  ws?: { path: string; protocol?: string }
  /** Over TLS (tls-load.ts): the CA to trust and the client's certificate and key, PEM. */
  tls?: { ca: string; cert: string; key: string }
  /**
   * Starts another instance of the same server (its own ports; on Bun and Deno its own copy of
   * the executable), for a control reading beside the measured one; stop it when done.
   */
  twin?: () => Promise<{ host: string; port: number; pid: number; stop(): Promise<void> }>
}

/** Numbers for the table; strings for notes such as per-subscriber completion. */
export type Metrics = Record<string, number | string>

export interface MetricSpec {
  key: string
  label: string
  /** Renders a value for the table. */
  fmt: (v: number) => string
  /** Which direction is good; a ratio column is shown only for metrics that have one. */
  better?: 'higher' | 'lower'
  /** How rounds are combined: the median (default), or the worst case for counts like losses. */
  agg?: 'median' | 'max'
}

export interface Scenario {
  /** Unique, matched by `--only`, e.g. "pub-sub 1KiB". */
  id: string
  kind: Kind
  /** One line describing the load, shown above the table. */
  describe: string
  metrics: MetricSpec[]
  /** The metric repeated in the summary table. */
  headline: string
  /**
   * A goal for sprig on the headline metric, shown in the summary: `ratio` is against the
   * reference (higher is better, as in the ratio columns), `max` an absolute upper bound,
   * `perRef` a ratio per reference column name where a row has several references.
   */
  target?: { ratio?: number; max?: number; text: string; perRef?: Record<string, number> }
  /** The load parameters `run` closes over, recorded in dist/bench.json. */
  params: Record<string, number>
  run: (addr: Addr) => Promise<Metrics>
  /**
   * The same load, `factor` × its messages, not measured: the rate rows of a server run
   * this before its first one (bench.ts --warmup), so a JIT's compiling is not in them.
   */
  warm?: (addr: Addr, factor: number) => Promise<unknown>
}

/** A started server: the child plus what the runner needs to report on it. */
export interface ServerProcess {
  child: ChildProcess
  pid: number
  /** Last few KB of the server's stdout+stderr, for failure reports. */
  tail: () => string
  /** '' while running, else how it ended. */
  exited: () => string
}

export interface ServerSpec {
  name: string
  kind: Kind
  /** The reference server that sprig rows are compared with. */
  reference: boolean
  /**
   * Command line for the report; without a port it shows the `{port}` placeholder. `aux` is a
   * second free port the runner hands every server (sprig's NATS port for the MQTT rows).
   */
  describe: (port?: number, aux?: number) => string
  start: (port: number, aux: number) => ServerProcess
  /** The same server from a separate executable (see Addr.twin); `start` when none is needed. */
  startTwin?: (port: number, aux: number) => ServerProcess
  /** Version string from the binary, if it can tell. */
  version: () => string
}

/** Runs `fn` with a tracker for connections it opens, and closes them all afterwards. */
export async function withConns<C, T>(close: (c: C) => void, fn: (track: (c: C) => C) => Promise<T>): Promise<T> {
  const open: C[] = []
  try {
    return await fn((c) => {
      open.push(c)
      return c
    })
  } finally {
    for (const c of open) close(c)
  }
}
