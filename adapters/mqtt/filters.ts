// A connection's (or parked session's) subscriptions, by topic filter. An idle device usually
// has one filter that maps to one subject: that sub is kept as it is, and a Map (~250 bytes
// per connection) is only made for more. A sub carries its own filter, so it needs no key.

import type { MqttSub } from './delivery.ts'

/** null: no filters; one sub: one filter with one router subscription; else filter -> subs. */
export type Filters = MqttSub | Map<string, readonly MqttSub[]> | null

/** How many filters, as the client counts them. */
export function filterCount(f: Filters): number {
  if (f === null) return 0
  return f instanceof Map ? f.size : 1
}

/** The router subscriptions of one filter, or undefined when it has none. */
export function subsOf(f: Filters, filter: string): readonly MqttSub[] | undefined {
  if (f === null) return undefined
  if (f instanceof Map) return f.get(filter)
  return f.filter === filter ? [f] : undefined
}

/** `f` with `filter` set to `list` (replacing what it had); use the result in place of f. */
export function withFilter(f: Filters, filter: string, list: readonly MqttSub[]): Filters {
  if (f instanceof Map) return f.set(filter, list)
  if (f === null || f.filter === filter) return list.length === 1 ? list[0]! : new Map([[filter, list]])
  return new Map([[f.filter, [f]], [filter, list]])
}

/** `f` without `filter`; use the result in place of f. */
export function withoutFilter(f: Filters, filter: string): Filters {
  if (f === null) return null
  if (!(f instanceof Map)) return f.filter === filter ? null : f
  f.delete(filter)
  if (f.size === 0) return null
  if (f.size === 1) {
    const only = f.values().next().value!
    if (only.length === 1) return only[0]! // back to one sub: drop the Map
  }
  return f
}

/** Every filter with its subscriptions (a copy: the caller may change `f` meanwhile). */
export function filterEntries(f: Filters): [string, readonly MqttSub[]][] {
  if (f === null) return []
  if (f instanceof Map) return [...f]
  return [[f.filter, [f]]]
}

/**
 * The part of a filter's router subscriptions (or subjects) that `allowed` lets through, under
 * the one rule for partly refused filters: `a/#` is `a.>` plus `a`, and only that parent level
 * (listed first) may be left out. null: the filter as a whole is refused.
 */
export function allowedPart<T>(list: readonly T[], allowed: (x: T) => boolean): T[] | null {
  const ok = list.filter(allowed)
  return ok.length === 0 || ok[0] !== list[0] ? null : ok
}
