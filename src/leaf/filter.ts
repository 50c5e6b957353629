// Which subjects cross one uplink, and under which name. Everything a remote's options say
// about subjects (allow/deny both ways, prefix maps) plus the hub's own import/export
// permissions from its INFO, compiled once per connection into plain functions.
//
// Filters are written in local subject names (what edge clients see); prefix maps say how a
// local subject is spelled at the hub: `{local: "telemetry.>", hub: "site.gw42.telemetry.>"}`
// sends local `telemetry.t1` up as `site.gw42.telemetry.t1` and brings the hub's
// `site.gw42.telemetry.cmd` down as `telemetry.cmd`. Subjects outside every map keep their name.
//
// Whether one subject may cross is decided by src/permissions.ts (canPublish on a compiled
// allow/deny pair), the same check users' publish permissions get, so a rule reads the same
// everywhere. sprig's own service subjects (`$SPRIG.>`) stay local unless a map names them.

import type { RemoteOptions, SubjectMap } from '../options.ts'
import { canPublish, compilePermissions, rulesAllowSubscribe, subscribeDenied, type CompiledPermissions } from '../permissions.ts'
import { subjectIsSubsetOf } from '../subject.ts'

/** sprig's service subjects (`$SPRIG.leafz`, `$SPRIG.mqtt.*`): per gateway, never shared unmapped. */
export const SERVICE_PREFIX = '$SPRIG.'
/**
 * The one exception, upwards only: the heartbeat (src/leaf/status.ts) names its gateway in its
 * subject, so it goes up unmapped too and one cloud subscription sees every gateway.
 */
export const STATUS_PREFIX = '$SPRIG.status.'
const staysLocal = (s: string): boolean => s.startsWith(SERVICE_PREFIX) && !s.startsWith(STATUS_PREFIX)

/** nats-server's SubjectPermission as the hub sends it in INFO `import` / `export`. */
export interface HubPerm {
  allow?: string[]
  deny?: string[]
}

/**
 * The subjects both patterns match, as one pattern, or null when they share none. Tokens
 * line up one by one: `*` takes the other side's token, `>` takes the rest of the other side.
 */
export function intersect(a: string, b: string): string | null {
  const ta = a.split('.')
  const tb = b.split('.')
  const out: string[] = []
  for (let i = 0; ; i++) {
    if (i === ta.length && i === tb.length) return out.join('.')
    if (ta[i] === '>') return i < tb.length ? out.concat(tb.slice(i)).join('.') : null
    if (tb[i] === '>') return i < ta.length ? out.concat(ta.slice(i)).join('.') : null
    if (i >= ta.length || i >= tb.length) return null
    const x = ta[i]!
    const y = tb[i]!
    if (x === '*') out.push(y)
    else if (y === '*' || y === x) out.push(x)
    else return null
  }
}

/** Narrows `p` to what the allow list lets through (all of it when the list is empty). */
function narrow(p: string, allow: readonly string[]): string[] {
  if (allow.length === 0) return [p]
  const out: string[] = []
  for (const a of allow) {
    const x = intersect(p, a)
    if (x !== null && !out.includes(x)) out.push(x)
  }
  return out
}

/** One allow/deny pair as a compiled publish rule; null when it lets everything through. */
export function compileRule(allow: readonly string[] | undefined, deny: readonly string[] | undefined): CompiledPermissions | null {
  const a = allow !== undefined && allow.length > 0 ? [...allow] : undefined
  const d = deny !== undefined && deny.length > 0 ? [...deny] : undefined
  if (a === undefined && d === undefined) return null
  return compilePermissions({ publish: { ...(a ? { allow: a } : {}), ...(d ? { deny: d } : {}) } })
}

function allowed(p: CompiledPermissions | null, subject: string): boolean {
  return p === null || canPublish(p, subject)
}

interface Prefix {
  local: string // "telemetry." (with the dot)
  hub: string
  localPattern: string // "telemetry.>"
}

function prefixes(maps: readonly SubjectMap[]): Prefix[] {
  return maps.map((m) => ({ local: m.local.slice(0, -1), hub: m.hub.slice(0, -1), localPattern: m.local }))
}

export interface Filters {
  /** The hub name of a local subject that may go up, or null. */
  up(local: string): string | null
  /** The local name of a hub subject that may come down, or null. */
  down(hub: string): string | null
  /** A reply subject going up / down: mapped when a map covers it, unchanged otherwise. */
  replyUp(local: string): string
  replyDown(hub: string): string
  /** The hub patterns (LS+) that stand for local interest `p` (in `queue`), possibly none. */
  interestUp(p: string, queue?: string | null): string[]
  /**
   * May the hub publish to the local subject `local` here (import filters, permissions)? Also
   * asked by sprig's services for what they would publish on the hub's behalf (a retained set,
   * a relayed reply), whatever service subject the hub used.
   */
  mayImport(local: string): boolean
  /** May messages on the local subject `local` go to the hub (export filters)? */
  mayExport(local: string): boolean
  /**
   * May a message already sent up as `hub` be sent again as it is (a kept frame after a lost
   * link): its local name still maps to `hub` and passes the filters of this connection.
   */
  mayResend(hub: string): boolean
}

const CACHE_MAX = 1024

export function compileFilters(r: RemoteOptions, hubImport?: HubPerm, hubExport?: HubPerm): Filters {
  const maps = prefixes(r.map)
  // Local subjects that may go up / come down (the remote's options), and what the hub's own
  // export permission lets us publish there.
  const exports = compileRule(r.allow_exports, r.deny_exports)
  const imports = compileRule(r.allow_imports, r.deny_imports)
  const hubExp = compileRule(hubExport?.allow, hubExport?.deny)
  // The hub as a user of this gateway: `publish` is what may come down, `subscribe` what interest goes up.
  const perm = r.permissions !== undefined ? compilePermissions(r.permissions) : null
  const plain = maps.length === 0 && exports === null && imports === null && hubExp === null && perm === null
  const impAllow = hubImport?.allow ?? []
  const impDeny = hubImport?.deny ?? []

  const mapUp = (s: string): string => {
    for (const m of maps) if (s.startsWith(m.local)) return m.hub + s.slice(m.local.length)
    return s
  }
  /** null: the subject is the unmapped spelling of a mapped local subject (not ours to take). */
  const mapDown = (s: string): string | null => {
    for (const m of maps) if (s.startsWith(m.hub)) return m.local + s.slice(m.hub.length)
    for (const m of maps) if (s.startsWith(m.local)) return null
    return s
  }

  // Decisions per subject are cached: a device publishes the same few subjects over and over.
  const upCache = new Map<string, string | null>()
  const up = (local: string): string | null => {
    if (plain) return staysLocal(local) ? null : local
    let v = upCache.get(local)
    if (v !== undefined) return v
    v = null
    if (allowed(exports, local)) {
      const h = mapUp(local)
      if (allowed(hubExp, h) && (h !== local || !staysLocal(local))) v = h
    }
    if (upCache.size >= CACHE_MAX) upCache.clear()
    upCache.set(local, v)
    return v
  }
  // permissions: the hub may publish it here, and no subscribe deny rule covers it.
  const mayImport = (l: string): boolean => allowed(imports, l) && (perm === null || (canPublish(perm, l) && !subscribeDenied(perm, l, null)))
  const down = (hub: string): string | null => {
    if (plain) return hub.startsWith(SERVICE_PREFIX) ? null : hub
    const l = mapDown(hub)
    if (l === null || !mayImport(l)) return null
    // Unmapped, a hub's `$SPRIG.` subject is not for this gateway's services.
    if (l === hub && l.startsWith(SERVICE_PREFIX)) return null
    return l
  }

  const interestUp = (p: string, queue: string | null = null): string[] => {
    const out: string[] = []
    if (perm !== null && !rulesAllowSubscribe(perm, p, queue)) return out
    // Interest is narrowed to what may come down: allow_imports, then the publish permission.
    const wanted = narrow(p, r.allow_imports).flatMap((c) => narrow(c, perm?.pubAllow ?? []))
    if (perm !== null && perm.pubAllow !== null && perm.pubAllow.length === 0) return out
    for (const c of wanted) {
      if (r.deny_imports.some((d) => subjectIsSubsetOf(c, d))) continue
      if (perm !== null && perm.pubDeny.some((d) => subjectIsSubsetOf(c, d))) continue
      let inMap = false
      for (const m of maps) {
        const x = intersect(c, m.localPattern)
        if (x !== null) out.push(m.hub + x.slice(m.local.length))
        if (subjectIsSubsetOf(c, m.localPattern)) inMap = true
      }
      // sprig's services are announced only under a map (`$SPRIG.>` -> `site.gw42.$SPRIG.>`).
      if (!inMap && !subjectIsSubsetOf(c, SERVICE_PREFIX + '>')) out.push(c)
    }
    // The hub refuses (and closes on) an LS+ its import permission does not allow.
    const res: string[] = []
    for (const h of out) {
      for (const x of narrow(h, impAllow)) {
        if (impDeny.some((d) => subjectIsSubsetOf(x, d))) continue
        if (!res.includes(x)) res.push(x)
      }
    }
    return res
  }

  return {
    up,
    down,
    replyUp: (s) => (maps.length === 0 ? s : mapUp(s)),
    replyDown: (s) => (maps.length === 0 ? s : (mapDown(s) ?? s)),
    interestUp,
    mayImport,
    mayExport: (l) => up(l) !== null,
    mayResend: (h) => {
      let l = h
      for (const m of maps) {
        if (h.startsWith(m.hub)) {
          l = m.local + h.slice(m.hub.length)
          break
        }
      }
      return up(l) === h
    },
  }
}
