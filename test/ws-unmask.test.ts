// targets/ws.ts unmask: client frames are unmasked in place, word-wise eight words a step
// between an unaligned head and tail. Every length around the step boundaries, at every
// alignment, against the byte-wise definition (RFC 6455 5.3: byte i ^= key[i % 4]).

import t from 'tap'
import fc from 'fast-check'
import { unmask } from '../targets/ws.ts'

const byteWise = (b: Uint8Array, key: Uint8Array): Uint8Array => b.map((x, i) => x ^ key[i & 3]!)

t.test('every length 0–100 at every offset 0–7', async (t) => {
  const key = Uint8Array.of(0x91, 0xa2, 0xf3, 0x84)
  let bad = 0
  for (let off = 0; off < 8; off++) {
    for (let n = 0; n <= 100; n++) {
      const buf = new Uint8Array(off + n + 8)
      for (let i = 0; i < buf.length; i++) buf[i] = (i * 37 + 11) & 0xff
      const before = buf.slice()
      const view = buf.subarray(off, off + n)
      const want = byteWise(view, key)
      unmask(view, key)
      if (!Buffer.from(view).equals(Buffer.from(want))) bad++
      // Nothing outside the view is touched.
      if (!Buffer.from(buf.subarray(0, off)).equals(Buffer.from(before.subarray(0, off))) || !Buffer.from(buf.subarray(off + n)).equals(Buffer.from(before.subarray(off + n)))) bad++
    }
  }
  t.equal(bad, 0, '808 cases, all as byte-wise, nothing around them touched')
})

t.test('random payloads, keys and offsets', async (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 4100 }), fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.nat(15), (data, key, off) => {
      const buf = new Uint8Array(off + data.length)
      buf.set(data, off)
      const view = buf.subarray(off)
      unmask(view, key)
      return Buffer.from(view).equals(Buffer.from(byteWise(data, key)))
    }),
    { numRuns: 500 },
  )
  t.pass('500 random cases')
})
