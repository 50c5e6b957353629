// The leaf uplink: one Remote per `leafnodes.remotes[]` entry, a timer that drives them, and
// the status they report (`leafz` for the HTTP monitor; `$SPRIG.leafz` and the other
// services, and the heartbeat, in status.ts).

import type { Dial } from '../host.ts'
import { REMOTE_DEFAULTS, type Options, type RemoteOptions } from '../options.ts'
import type { Server } from '../server.ts'
import { DiskSpool } from '../store/spool.ts'
import type { Store } from '../store/store.ts'
import { Remote, type RemoteStatus } from './remote.ts'
import { startStatus } from './status.ts'

export const LEAFZ_SUBJECT = '$SPRIG.leafz'

/** How often link timers and redials are checked (timeouts are in whole 100s of ms). */
const TICK_MS = 100

export interface Uplink {
  readonly remotes: readonly Remote[]
  status(): LeafStatus
  stop(): void
}

/** Shaped like nats-server's /leafz (`leafnodes`, `leafs`); each leaf has sprig's extra fields. */
export interface LeafStatus {
  leafnodes: number
  leafs: RemoteStatus[]
}

export function leafStatus(remotes: readonly Remote[]): LeafStatus {
  const leafs = remotes.map((r) => r.status())
  return { leafnodes: leafs.filter((l) => l.state === 'connected').length, leafs }
}

/** Starts every configured remote; null when there are none. */
export function startUplink(srv: Server, dial: Dial, readFile: (path: string) => string, store: Store | null = null): Uplink | null {
  const lo = srv.opts.leafnodes
  if (!lo || lo.remotes.length === 0) return null
  const remotes = lo.remotes.map((r, i) => new Remote(srv, r, lo, i, dial, readFile, store ? diskSpool(store, r, i, lo.remotes.length) : undefined))
  const status = (): LeafStatus => leafStatus(remotes)
  srv.status.set('leafz', status)
  // $SPRIG.varz/connz/subsz/healthz/leafz and the heartbeat on $SPRIG.status.<server_name>.
  const services = startStatus(srv, remotes)
  const timer = srv.host.every(TICK_MS, () => {
    const now = srv.host.now()
    for (const r of remotes) r.tick(now)
    services.tick(now)
  })
  for (const r of remotes) r.start()
  return {
    remotes,
    status,
    stop() {
      timer.cancel()
      for (const r of remotes) r.stop()
      services.stop()
    },
  }
}

/**
 * With a store, remote `i + 1` spools in DIR/uplink/remote-N, bounded by its buffer_max_bytes
 * when set, else by an equal share of store.max_bytes.
 */
function diskSpool(store: Store, r: RemoteOptions, i: number, n: number): DiskSpool {
  const share = Math.floor(store.opts.max_bytes / n)
  const max = r.buffer_max_bytes === REMOTE_DEFAULTS.buffer_max_bytes ? share : Math.min(r.buffer_max_bytes, store.opts.max_bytes)
  return new DiskSpool(store, `${store.opts.dir}/uplink/remote-${i + 1}`, { max_bytes: max, drop_newest: r.buffer_policy === 'drop_newest' })
}

/** Remote options a reload may change on a running remote; any other change needs a restart. */
const RELOADABLE = new Set<string>(['permissions', 'deny_imports', 'deny_exports', 'allow_imports', 'allow_exports', 'map', 'buffer_subjects', 'buffer_hold', 'replay_order'])

/**
 * SIGHUP: checks the re-read `leafnodes` block against the running uplink (throws, naming the
 * key, for what cannot change while running: adding or removing remotes, URLs, credentials,
 * TLS, buffer bounds, reconnect timing), then returns the step that applies the rest to the
 * live remotes: their filters and maps, with only the interest that changes re-announced.
 */
export function reloadUplink(srv: Server, up: Uplink | null, next: Options): () => string[] {
  const was = srv.opts.leafnodes
  const now = next.leafnodes
  if (JSON.stringify(was ?? null) === JSON.stringify(now ?? null)) return () => []
  const wr = was?.remotes ?? []
  const nr = now?.remotes ?? []
  if (wr.length !== nr.length) throw new Error(`leafnodes.remotes: adding or removing remotes needs a restart (${wr.length} running, ${nr.length} in the file)`)
  for (const k of ['reconnect', 'reconnect_max'] as const) {
    if (was?.[k] !== now?.[k]) throw new Error(`leafnodes.${k}: config reload not supported for this option (restart to change it)`)
  }
  const changed: number[] = []
  for (let i = 0; i < wr.length; i++) {
    const a = wr[i]!
    const b = nr[i]!
    const keys = new Set([...Object.keys(a), ...Object.keys(b)] as (keyof RemoteOptions)[])
    let differs = false
    for (const k of keys) {
      if (JSON.stringify(a[k]) === JSON.stringify(b[k])) continue
      if (!RELOADABLE.has(k)) throw new Error(`leafnodes.remotes[${i}].${k}: config reload not supported for this option (restart to change it)`)
      differs = true
    }
    if (differs) changed.push(i)
  }
  return () => {
    srv.opts = { ...srv.opts, leafnodes: now }
    for (const i of changed) up?.remotes[i]?.reconfigure(nr[i]!)
    return changed.map((i) => `leafnodes.remotes[${i}]`)
  }
}
