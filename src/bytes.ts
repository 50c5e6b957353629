// Small byte helpers shared by the protocol adapters. Subjects and control lines are ASCII in
// practice, so the fast paths avoid TextDecoder/TextEncoder calls for short ASCII strings.

const enc = new TextEncoder()
// ignoreBOM: a leading U+FEFF is part of the string (MQTT-1.5.4-3; nats-server keeps it in subjects).
const dec = new TextDecoder('utf-8', { ignoreBOM: true })

export const CRLF = new Uint8Array([13, 10])

/** UTF-8 bytes of a string; ASCII strings skip the encoder. */
export function utf8(s: string): Uint8Array {
  const n = s.length
  if (n < 64) {
    const out = new Uint8Array(n)
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i)
      if (c > 127) return enc.encode(s)
      out[i] = c
    }
    return out
  }
  return enc.encode(s)
}

/** Below this many bytes a byte loop copies faster than set() (put, putShort). */
export const SHORT = 32

/**
 * Copies src into b at p and returns the offset after it. Short arrays (a subject, a small
 * payload) take a byte loop: a native set() call costs more than copying a few bytes.
 */
export function put(b: Uint8Array, p: number, src: Uint8Array): number {
  const n = src.length
  if (n < SHORT) return putShort(b, p, src, 0, n)
  b.set(src, p)
  return p + n
}

/** Copies src[at, at + n) into b at p and returns p + n. */
export type RangeCopy = (b: Uint8Array, p: number, src: Uint8Array, at: number, n: number) => number

/**
 * The runtime's way to copy a range of one array into another without making a view of it
 * (a view costs ~30-40 ns, more than copying a 64-byte payload), if it has one: the target sets
 * it (targets/bun.ts: Buffer's copy(), ~3x cheaper than subarray() and set() there; on Node
 * and Deno it is not cheaper, and null keeps the view, made once per message and shared).
 */
export let rangeCopy: RangeCopy | null = null

export function useRangeCopy(f: RangeCopy | null): void {
  rangeCopy = f
}

/** Copies src[at, at + n) into b at p byte by byte (for n < SHORT: no view, no set() call). */
export function putShort(b: Uint8Array, p: number, src: Uint8Array, at: number, n: number): number {
  for (let i = 0; i < n; i++) b[p + i] = src[at + i]!
  return p + n
}

/** Decodes buf[start, end) as UTF-8; ASCII takes a char loop (cheaper than a decoder call). */
export function text(buf: Uint8Array, start = 0, end = buf.length): string {
  const n = end - start
  if (n < 48) {
    let s = ''
    for (let i = start; i < end; i++) {
      const c = buf[i]!
      if (c > 127) return dec.decode(buf.subarray(start, end))
      s += String.fromCharCode(c)
    }
    return s
  }
  return dec.decode(buf.subarray(start, end))
}

/** Writes the decimal digits of a non-negative integer at buf[at]; returns the new offset. */
export function writeUint(buf: Uint8Array, at: number, v: number): number {
  if (v < 10) {
    buf[at] = 48 + v
    return at + 1
  }
  let digits = 0
  for (let x = v; x > 0; x = Math.floor(x / 10)) digits++
  let p = at + digits
  for (let x = v; x > 0; x = Math.floor(x / 10)) buf[--p] = 48 + (x % 10)
  return at + digits
}

/** Number of decimal digits of a non-negative integer. */
export function uintLength(v: number): number {
  let n = 1
  while (v >= 10) {
    v = Math.floor(v / 10)
    n++
  }
  return n
}

/** The empty byte array, shared: never written to. */
export const EMPTY: Uint8Array = new Uint8Array(0)

/**
 * A copy of b in an array of its own. Not b.slice(): on a Buffer (what runtimes hand over for
 * reads) that is only a view, which would keep the whole read alive and see it change.
 */
export function copyOf(b: Uint8Array): Uint8Array {
  const out = new Uint8Array(b.length)
  out.set(b)
  return out
}

/** `a` then `b` in a new array: always a copy, so the caller may keep it past the read that lent `b`. */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return copyOf(b)
  const out = new Uint8Array(a.length + b.length)
  out.set(a, 0)
  out.set(b, a.length)
  return out
}

export function equalBytes(a: Uint8Array, b: Uint8Array, bStart: number, bEnd: number): boolean {
  const n = bEnd - bStart
  if (a.length !== n) return false
  for (let i = 0; i < n; i++) if (a[i] !== b[bStart + i]) return false
  return true
}
