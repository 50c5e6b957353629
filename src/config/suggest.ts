// Suggestions for a key sprig does not know: a nats-server option sprig lacks, a spelling
// people bring from elsewhere, or the closest known name.

import { blame, type Source, type ConfigError } from './errors.ts'

// nats-server options that sprig does not have (yet): worth a clearer message than "unknown".
export const NOT_SUPPORTED = new Set([
  'client_advertise', 'cluster',
  'gateway', 'jetstream', 'accounts', 'system_account', 'no_system_account', 'operator',
  'resolver', 'http_base_path', 'log_size_limit', 'syslog', 'remote_syslog', 'max_traced_msg_len',
  'connect_error_reports',
  'reconnect_error_reports', 'include',
])

// Names people bring from nats-server's format (it accepts several spellings) or from habit.
// (nats-server's own other spellings are accepted: schema.ts SPELLINGS.)
const ALIASES: Record<string, string> = {
  addr: 'host',
  name: 'server_name',
}

export function unknownKey(src: Source, path: string, known: readonly string[], prefix: string): ConfigError {
  let msg = `unknown option ${JSON.stringify(path)}`
  const near = ALIASES[path] ?? closest(path.slice(prefix.length), known)
  if (NOT_SUPPORTED.has(path)) msg += ' (a nats-server option that sprig does not support yet)'
  else if (near !== undefined) msg += ` (did you mean "${ALIASES[path] ?? prefix + near}"?)`
  return blame(src, path, msg, false)
}

/** The known name that `name` most likely meant, if exactly one is clearly closest. */
export function closest(name: string, known: readonly string[]): string | undefined {
  // Case, "-" and "_" differences are always a match: maxPayload, max-payload -> max_payload.
  const norm = (s: string): string => s.toLowerCase().replace(/[-_]/g, '')
  const same = known.find((k) => norm(k) === norm(name))
  if (same !== undefined) return same
  const limit = Math.min(2, Math.floor(name.length / 3))
  const scored = known.map((k) => ({ k, d: editDistance(norm(name), norm(k)) })).filter((s) => s.d <= limit)
  const best = Math.min(...scored.map((s) => s.d))
  const top = scored.filter((s) => s.d === best)
  return top.length === 1 ? top[0]!.k : undefined
}

// Optimal string alignment distance: Levenshtein plus adjacent transpositions ("prot").
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i])
  for (let j = 1; j <= b.length; j++) d[0]![j] = j
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost)
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1)
      d[i]![j] = v
    }
  }
  return d[a.length]![b.length]!
}
