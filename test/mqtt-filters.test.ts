// A connection's subscriptions by filter (adapters/mqtt/filters.ts) behave like a plain
// Map<filter, subs[]>, whether they sit as one sub or as a Map: random operations against a Map.

import t from 'tap'
import type { MqttSub } from '../adapters/mqtt/conn.ts'
import { filterCount, filterEntries, subsOf, withFilter, withoutFilter, type Filters } from '../adapters/mqtt/filters.ts'

const sub = (filter: string, i: number): MqttSub => ({ filter, subject: `${filter}.${i}` }) as unknown as MqttSub

t.test('one sub is kept without a Map, and the Map goes when one single-subject filter is left', async (t) => {
  const a = sub('a', 0)
  let f: Filters = withFilter(null, 'a', [a])
  t.equal(f, a, 'a lone single-subject filter is the sub itself')
  f = withFilter(f, 'b', [sub('b', 0), sub('b', 1)])
  t.ok(f instanceof Map)
  t.equal(filterCount(f), 2)
  f = withoutFilter(f, 'b')
  t.equal(f, a, 'back to the sub')
  f = withoutFilter(f, 'a')
  t.equal(f, null)
  f = withFilter(null, 'x/#', [sub('x', 0), sub('x', 1)])
  t.ok(f instanceof Map, 'a filter with two subjects (a/# is a and a.>) needs the Map')
})

t.test('random operations agree with a Map', async (t) => {
  let seed = 7
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff
    return seed % n
  }
  const model = new Map<string, readonly MqttSub[]>()
  let f: Filters = null
  let bad = 0
  for (let i = 0; i < 20_000; i++) {
    const name = `f${rnd(4)}`
    if (rnd(3) === 0) {
      model.delete(name)
      f = withoutFilter(f, name)
    } else {
      const list = Array.from({ length: 1 + rnd(2) }, (_, k) => sub(name, k))
      model.set(name, list)
      f = withFilter(f, name, list)
    }
    if (filterCount(f) !== model.size) bad++
    for (const k of ['f0', 'f1', 'f2', 'f3']) if (subsOf(f, k) !== model.get(k) && JSON.stringify(subsOf(f, k)) !== JSON.stringify(model.get(k))) bad++
    const entries = new Map(filterEntries(f))
    if (entries.size !== model.size) bad++
  }
  t.equal(bad, 0, 'count, lookups and entries match the Map after every step')
})
