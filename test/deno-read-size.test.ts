// The read buffer of a Deno.listen connection (SPRIG_NET=native): sized by the reads before
// it, so an idle connection holds READ_MIN bytes and a busy one reads up to READ_MAX at once.
// The same listener's memory per idle connection is checked on a real Deno in runtimes.test.ts.

import t from 'tap'
import { nextReadSize, READ_MAX, READ_MIN } from '../targets/deno.ts'

t.test('a full read grows the buffer fourfold, up to READ_MAX', async (t) => {
  t.equal(nextReadSize(READ_MIN, READ_MIN), READ_MIN * 4)
  t.equal(nextReadSize(16 * 1024, 16 * 1024), READ_MAX)
  t.equal(nextReadSize(READ_MAX, READ_MAX), READ_MAX, 'never past READ_MAX')
  let size = READ_MIN
  let reads = 0
  while (size < READ_MAX) {
    size = nextReadSize(size, size)
    reads++
  }
  t.ok(reads <= 4, `a flood reaches READ_MAX after ${reads} full reads`)
})

t.test('a read under an eighth steps down fourfold, not below READ_MIN', async (t) => {
  t.equal(nextReadSize(READ_MAX, 2), READ_MAX / 4)
  t.equal(nextReadSize(READ_MAX, READ_MAX / 8), READ_MAX / 4, 'an eighth exactly steps down')
  t.equal(nextReadSize(READ_MIN, 2), READ_MIN, 'never below READ_MIN')
  let size = READ_MAX
  for (let i = 0; i < 10; i++) size = nextReadSize(size, 2) // PINGREQs
  t.equal(size, READ_MIN, 'a connection gone idle ends at READ_MIN')
})

t.test('a read between an eighth and full keeps the size', async (t) => {
  for (const size of [READ_MIN, 4096, READ_MAX]) {
    t.equal(nextReadSize(size, size - 1), size)
    t.equal(nextReadSize(size, (size >> 3) + 1), size)
  }
})

t.test('bad input cannot leave the bounds', async (t) => {
  for (const [size, n] of [[READ_MIN, 0], [READ_MAX, 10 * READ_MAX], [READ_MIN, -1]] as const) {
    const s = nextReadSize(size, n)
    t.ok(s >= READ_MIN && s <= READ_MAX, `size ${size}, read ${n}: ${s}`)
  }
})
