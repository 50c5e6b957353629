// Reading back the LMSG/HMSG frames the link itself wrote (src/leaf/link.ts send): the buffer
// keeps what went straight to the hub as those bytes, one record per run of frames, and on a
// lost link splits a run back into single frames to send again (src/leaf/buffer.ts). The bytes
// are ours, never the network's: well formed by construction; a malformed one ends the walk.

import { text } from '../bytes.ts'

/**
 * The frame at b[p]: `LMSG subject [...] size\r\n` or `HMSG subject [...] hdrlen size\r\n`,
 * then `size` bytes and CRLF. Returns its total size (headers and payload), or -1.
 */
export function frameSize(b: Uint8Array, p: number): number {
  const cr = b.indexOf(13, p)
  if (cr < 0) return -1
  let s = cr
  while (s > p && b[s - 1] !== 32) s--
  if (s === cr) return -1
  let n = 0
  for (let i = s; i < cr; i++) {
    const d = b[i]! - 48
    if (d < 0 || d > 9) return -1
    n = n * 10 + d
  }
  return n
}

/** Where the frame at b[p] ends (the offset after its CRLF), or -1 (malformed, or past the end). */
export function frameEnd(b: Uint8Array, p: number): number {
  const size = frameSize(b, p)
  if (size < 0) return -1
  const end = b.indexOf(10, p) + 1 + size + 2
  return end <= b.length ? end : -1
}

/** The hub subject of the frame at b[p]. */
export function frameSubject(b: Uint8Array, p: number): string {
  let e = p + 5
  while (e < b.length && b[e] !== 32 && b[e] !== 13) e++
  return text(b, p + 5, e)
}

/** Offsets where each whole frame in b ends, in order (a malformed tail is left out). */
export function frameEnds(b: Uint8Array): number[] {
  const out: number[] = []
  for (let p = 0; p < b.length; ) {
    const e = frameEnd(b, p)
    if (e < 0) break
    out.push(e)
    p = e
  }
  return out
}
