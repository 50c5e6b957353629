// Shared by the property-based tests (test/fuzz-*.test.ts): a tap wrapper around fast-check,
// and arbitraries for the shapes every byte-stream parser gets fuzzed with.
//
// Runs are reproducible: the seed is fixed unless FUZZ_SEED is set, and FUZZ_RUNS scales the
// number of runs (e.g. FUZZ_RUNS=20 for a longer local hunt). A failure reports fast-check's
// shrunk counterexample and the seed and path to replay it.

import fc from 'fast-check'
import type { Test } from 'tap'

type T = Pick<Test, 'ok'>

export const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : 0x5ba1d
const SCALE = process.env.FUZZ_RUNS ? Math.max(0.01, Number(process.env.FUZZ_RUNS)) : 1

/** Checks a property with a bounded number of runs; one tap assertion. */
export function check<Ts>(t: T, name: string, property: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>, runs: number): Promise<void> | void {
  const params = { numRuns: Math.max(1, Math.round(runs * SCALE)), seed: SEED, endOnFailure: false }
  const report = (d: fc.RunDetails<Ts>): void => {
    if (!d.failed) return void t.ok(true, `${name} (${d.numRuns} runs, ${d.numSkips} skipped)`)
    // One line: tap shows only the first line of a failure's name.
    const why = d.errorInstance instanceof Error ? d.errorInstance.message : String(d.errorInstance)
    t.ok(false, `${name}: ${why.replace(/\s*\n\s*/g, ' | ')} -- counterexample ${fc.stringify(d.counterexample)} (seed ${d.seed}, path "${d.counterexamplePath}")`)
  }
  if (property.isAsync()) return fc.check(property as fc.IAsyncProperty<Ts>, params).then(report)
  report(fc.check(property as fc.IProperty<Ts>, params) as fc.RunDetails<Ts>)
}

/** Cut points (sorted, inside 1..len-1) to split `len` bytes into chunks. */
export function cutsOf(len: number, max = 12): fc.Arbitrary<number[]> {
  if (len < 2) return fc.constant([])
  return fc.uniqueArray(fc.integer({ min: 1, max: len - 1 }), { maxLength: Math.min(max, len - 1) }).map((a) => a.sort((x, y) => x - y))
}

/** `b` cut at `cuts`. */
export function chunks(b: Uint8Array, cuts: number[]): Uint8Array[] {
  const out: Uint8Array[] = []
  let from = 0
  for (const c of [...cuts, b.length]) {
    out.push(b.slice(from, c))
    from = c
  }
  return out
}

/** A byte string together with cut points for it. */
export function withCuts(a: fc.Arbitrary<Uint8Array>, max = 12): fc.Arbitrary<{ bytes: Uint8Array; cuts: number[] }> {
  return a.chain((bytes) => cutsOf(bytes.length, max).map((cuts) => ({ bytes, cuts })))
}

/** One edit of a byte string: what a corrupting network or a careless fuzzer does. */
type Edit =
  | { k: 'flip'; at: number; bit: number }
  | { k: 'set'; at: number; v: number }
  | { k: 'insert'; at: number; v: Uint8Array }
  | { k: 'delete'; at: number; n: number }
  | { k: 'truncate'; at: number }
  | { k: 'dup'; at: number; n: number }

const edit: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ k: fc.constant('set' as const), at: fc.nat(), v: fc.constantFrom(0, 1, 0x7f, 0x80, 0xff, 0x0d, 0x0a, 0x20, 0x09) }),
  fc.record({ k: fc.constant('insert' as const), at: fc.nat(), v: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ k: fc.constant('delete' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ k: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ k: fc.constant('dup' as const), at: fc.nat(), n: fc.integer({ min: 1, max: 16 }) }),
)

function apply(b: Uint8Array, e: Edit): Uint8Array {
  const at = b.length === 0 ? 0 : e.at % (b.length + 1)
  switch (e.k) {
    case 'flip':
      if (b.length === 0) return b
      return withByte(b, at % b.length, b[at % b.length]! ^ (1 << e.bit))
    case 'set':
      if (b.length === 0) return b
      return withByte(b, at % b.length, e.v)
    case 'insert':
      return cat(b.subarray(0, at), e.v, b.subarray(at))
    case 'delete':
      return cat(b.subarray(0, at), b.subarray(at + e.n))
    case 'truncate':
      return b.slice(0, at)
    case 'dup':
      return cat(b.subarray(0, at + e.n), b.subarray(at))
  }
}

function withByte(b: Uint8Array, i: number, v: number): Uint8Array {
  const c = b.slice()
  c[i] = v
  return c
}

export function cat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

/** `valid` with up to `max` random edits applied. */
export function mutated(valid: fc.Arbitrary<Uint8Array>, max = 4): fc.Arbitrary<Uint8Array> {
  return fc.tuple(valid, fc.array(edit, { maxLength: max })).map(([b, es]) => es.reduce(apply, b))
}

export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
