// MQTT's Remaining Length (a variable byte integer, 5.0 §1.5.5) for tests and the benchmark that
// build packets byte by byte: written here once, independently of adapters/mqtt/frame.ts.

export function remainingLength(n: number): number[] {
  const out: number[] = []
  do {
    let c = n % 128
    n = Math.floor(n / 128)
    if (n > 0) c |= 0x80
    out.push(c)
  } while (n > 0)
  return out
}
