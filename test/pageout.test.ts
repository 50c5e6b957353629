// Start-up's code pages handed back on Bun (targets/pageout.ts): which mappings, when, and the
// SPRIG_PAGEOUT switch. The compiled binary doing it for real is in test/packaging.test.ts.

import t from 'tap'
import { BURST_PAGEOUT_EVERY_MS, burstPageOut, libcOnce, logBurstPageOut, logPageOut, logSettledPageOut, logTrim, mappingsOf, PAGEOUT_AFTER_MS, pageOutAfter, pageOutExecutable, schedulePageOut, SETTLED_CHECK_MS, SETTLED_EVERY_MAX_MS, settledPageOut, trimMalloc, type Libc } from '../targets/pageout.ts'

const MAPS = [
  '00400000-00401000 r--p 00000000 08:01 1234                               /opt/sprig/sprig-linux-x64',
  '00401000-02a00000 r-xp 00001000 08:01 1234                               /opt/sprig/sprig-linux-x64',
  '02a00000-06000000 r--p 02600000 08:01 1234                               /opt/sprig/sprig-linux-x64',
  '06000000-06100000 rw-p 00000000 00:00 0                                  [heap]',
  '7f0000000000-7f0000200000 r-xp 00000000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6',
  '7f1000000000-7f1000001000 r--p 00000000 08:01 77                         /opt/my apps/sprig',
  '7f2000000000-7f2000001000 r--p 00000000 08:01 1234                       /opt/sprig/sprig-linux-x64 (deleted)',
  '7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]',
  '',
].join('\n')

t.test('the mappings of the executable, and only those', async (t) => {
  t.same(mappingsOf(MAPS, '/opt/sprig/sprig-linux-x64'), [
    [0x400000n, 0x401000n],
    [0x401000n, 0x2a00000n],
    [0x2a00000n, 0x6000000n],
  ])
  t.same(mappingsOf(MAPS, '/opt/my apps/sprig'), [[0x7f1000000000n, 0x7f1000001000n]], 'a path with a space')
  t.same(mappingsOf(MAPS, '/usr/bin/bun'), [], 'not mapped: nothing')
  t.same(mappingsOf('garbage\n\n-', '/x'), [])
})

t.test('SPRIG_PAGEOUT', async (t) => {
  t.equal(pageOutAfter(undefined), PAGEOUT_AFTER_MS, 'unset: the default')
  t.equal(pageOutAfter(''), PAGEOUT_AFTER_MS)
  for (const off of ['0', 'off', 'false', 'NO', ' 0 ']) t.equal(pageOutAfter(off), null, `${JSON.stringify(off)}: never`)
  t.equal(pageOutAfter('250'), 250, 'ms')
  t.equal(pageOutAfter('soon'), PAGEOUT_AFTER_MS, 'not a number: the default')
  t.equal(pageOutAfter('-5'), PAGEOUT_AFTER_MS)
})

/** A timer the test steps by hand. */
function clock() {
  const live: { ms: number; fn: () => void; on: boolean }[] = []
  return {
    live,
    every(ms: number, fn: () => void) {
      const e = { ms, fn, on: true }
      live.push(e)
      return { cancel: () => void (e.on = false) }
    },
    /** Fires the live timers `n` times. */
    step(n = 1) {
      for (let i = 0; i < n; i++) for (const e of live) if (e.on) e.fn()
    },
  }
}

t.test('paged out once, at the first quiet second from `after` on', async (t) => {
  const c = clock()
  let activity = 0
  let runs = 0
  schedulePageOut(c, () => activity, () => runs++, 5000, 60_000)
  t.equal(c.live[0]!.ms, 1000, 'checked every second')
  c.step(4)
  t.equal(runs, 0, 'not before 5 s')
  activity++ // a message in the fifth second
  c.step()
  t.equal(runs, 0, 'not while messages or connections arrive')
  activity++
  c.step()
  t.equal(runs, 0)
  c.step()
  t.equal(runs, 1, 'the first quiet second after 5 s')
  c.step(10)
  t.equal(runs, 1, 'once')
})

t.test('a broker that is never quiet is paged out at `latest`; cancel stops it', async (t) => {
  const c = clock()
  let activity = 0
  let runs = 0
  schedulePageOut(c, () => ++activity, () => runs++, 5000, 10_000)
  c.step(9)
  t.equal(runs, 0)
  c.step()
  t.equal(runs, 1, 'at 10 s, busy or not')
  const c2 = clock()
  const s = schedulePageOut(c2, () => 0, () => runs++, 5000, 10_000)
  c2.step(2)
  s.cancel()
  c2.step(20)
  t.equal(runs, 1, 'cancelled (the broker stopped): never')
  const c3 = clock()
  schedulePageOut(c3, () => 0, () => runs++, 300, 60_000)
  t.equal(c3.live[0]!.ms, 300, 'a short `after` (SPRIG_PAGEOUT=300) checks that often')
  c3.step(1)
  t.equal(runs, 2)
})

t.test('the log line', async (t) => {
  const lines: string[] = []
  const log = { info: (m: string) => void lines.push('I ' + m), debug: (m: string) => void lines.push('D ' + m) }
  logPageOut({ before: 34 * 1048576, after: 6 * 1048576 }, log)
  logPageOut({ error: 'madvise(MADV_PAGEOUT) refused' }, log)
  t.match(lines[0], /^I Start-up done: 28\.0 MiB of the executable's pages handed back to the kernel \(file-backed RSS 34\.0 → 6\.0 MiB; SPRIG_PAGEOUT=0 keeps them\)/)
  t.match(lines[1], /^D Start-up pages kept: madvise/, 'a refusal is only a debug line')
  logBurstPageOut({ before: 30 * 1048576, after: 8 * 1048576 }, log)
  logBurstPageOut({ error: 'no mapping' }, log)
  t.match(lines[2], /^D Accept burst over: 22\.0 MiB of the executable's pages handed back \(file-backed RSS 30\.0 → 8\.0 MiB\)/, 'after a burst, at debug: bursts can come often')
  t.match(lines[3], /^D Accept burst over, pages kept: no mapping/)
})

t.test('after bursts: at most one page-out a minute', async (t) => {
  let clock = 0
  let runs = 0
  const lines: string[] = []
  const hook = burstPageOut(() => (runs++, { before: 20 * 1048576, after: 5 * 1048576 }), { debug: (m: string) => void lines.push(m) }, () => clock)
  hook.burst()
  t.equal(runs, 1, 'the first burst')
  t.match(lines[0], /^Accept burst over: 15\.0 MiB/)
  clock += BURST_PAGEOUT_EVERY_MS - 1
  hook.burst()
  t.equal(runs, 1, 'a burst within the minute: nothing (no timer to wait with)')
  clock += 1
  hook.burst()
  t.equal(runs, 2, 'a minute on: again')
  t.equal(lines.length, 2)
})

t.test('a burst within the minute pages out once the minute is over, if the process stayed quiet', async (t) => {
  const c = clock()
  let ms = 0
  let cpu = 0
  let runs = 0
  const lines: string[] = []
  const hook = burstPageOut(() => (runs++, { before: 30 * 1048576, after: 6 * 1048576 }), { debug: (m: string) => void lines.push(m) }, () => ms, { every: (m, fn) => c.every(m, fn), cpuSeconds: () => cpu })
  hook.burst() // the fleet drops: its close burst
  t.equal(runs, 1)
  ms = 8000
  hook.burst() // and reconnects 8 s later
  t.equal(runs, 1, 'not within the minute')
  t.equal(c.live.filter((e) => e.on).length, 1, 'one timer')
  t.equal(c.live[0]!.ms, BURST_PAGEOUT_EVERY_MS - 8000, 'for the rest of the minute')
  ms = 20_000
  hook.burst() // more bursts meanwhile: still one timer
  t.equal(c.live.filter((e) => e.on).length, 1, 'still one timer')
  ms = 60_000
  cpu = 5 // 5 s of CPU over 52 s: quiet
  c.step()
  t.equal(runs, 2, 'paged out a minute after the last')
  t.match(lines[1], /^Accept burst over: 24\.0 MiB/)
  t.equal(c.live.filter((e) => e.on).length, 0, 'the timer is gone')
  c.step()
  t.equal(runs, 2, 'once')

  // Busy by then: nothing; the next burst a minute on pages out as usual.
  ms = 70_000
  hook.burst()
  ms = 120_000
  cpu = 40 // 35 s of CPU over 50 s: busy
  c.step()
  t.equal(runs, 2, 'busy when the minute was over: not paged out')
  ms = 121_000
  hook.burst()
  t.equal(runs, 3, 'a burst past the minute: at once')

  // A burst past the minute cancels a wait still pending; cancel() drops one.
  ms = 130_000
  hook.burst()
  const waiting = c.live.filter((e) => e.on).length
  t.equal(waiting, 1)
  hook.cancel()
  t.equal(c.live.filter((e) => e.on).length, 0, 'cancel: no timer left (shutdown)')
  ms = 190_000
  c.step()
  t.equal(runs, 3, 'and nothing runs')
  ms = 200_000
  hook.burst()
  t.equal(runs, 4)
  ms = 210_000
  hook.burst()
  ms = 261_000
  hook.burst()
  t.equal(runs, 5, 'a burst past the minute runs at once')
  t.equal(c.live.filter((e) => e.on).length, 0, 'and the pending wait is cancelled')
})

t.test('paged out again once what was paged in since has settled', async (t) => {
  const c = clock()
  const MiB = 1048576
  let ms = 0
  let file = 20 * MiB
  let runs = 0
  let busy = false
  const lines: string[] = []
  // Each step is a minute: the clock moves with the timer.
  let cpu = 0 // seconds of CPU so far: 1 s a minute is quiet, 30 busy
  const s = settledPageOut({ every: (m, fn) => c.every(m, () => ((ms += m), (cpu += busy ? 30 : 1), fn())) }, () => file, () => cpu, () => runs++, { debug: (m: string) => void lines.push(m) }, () => ms)
  t.equal(c.live[0]!.ms, SETTLED_CHECK_MS, 'looked at once a minute')
  s.reset() // start-up's page-out
  ms -= 50_000 // the next check 10 s after it
  file = 5 * MiB // the moment after a page-out
  c.step()
  file = 23 * MiB // what runs back from the disk: the low
  c.step()
  file = 24.9 * MiB // pings: compiled by the top tier, its compiler paged in
  c.step(5)
  t.equal(runs, 0, 'low 23 MiB (not the 5 of 10 s after the page-out): 1.9 MiB more is not enough')
  file = 25.5 * MiB
  c.step()
  t.equal(runs, 0, 'grown by 2.5 MiB, but still moving (compiles going on)')
  busy = true
  c.step(3)
  t.equal(runs, 0, 'grown and settled, but busy (half a core): the hot code is not stalled')
  busy = false
  c.step()
  t.equal(runs, 1, 'grown by 2 MiB, settled and quiet, 5 minutes on: paged out')
  file = 21 * MiB // what runs back: the new low
  c.step()
  file = 23 * MiB // a straggler compiled: its compiler back
  c.step(8)
  t.equal(runs, 1, 'grown and settled, but the next one waits 10 minutes')
  c.step()
  t.equal(runs, 2, 'at 10 minutes: again')
  file = 21 * MiB
  c.step()
  file = 24 * MiB
  c.step(18)
  t.equal(runs, 2, 'grown again: the third waits 20 minutes after the second')
  c.step()
  t.equal(runs, 3)
  file = 21 * MiB
  c.step(200)
  t.equal(runs, 3, 'nothing grows: nothing more is done')
  file = 24 * MiB
  c.step(2)
  t.equal(runs, 4, 'grown much later: at once, the 40 minutes long past')
  for (let i = 0; i < 3; i++) {
    file = 21 * MiB
    c.step()
    file = 24 * MiB
    c.step(SETTLED_EVERY_MAX_MS / SETTLED_CHECK_MS - 2)
    t.equal(runs, 4 + i, `growing back at once: not within the hour (${i + 1})`)
    c.step()
    t.equal(runs, 5 + i, 'one an hour: the longest wait')
  }
  s.reset() // a burst's page-out: code compiled again follows, the 5 minutes again
  file = 10 * MiB
  c.step()
  file = 30 * MiB
  c.step(3) // grown and settled at 4 minutes
  t.equal(runs, 7, 'the 5 minutes counted from the burst')
  c.step()
  t.equal(runs, 8)
  s.cancel()
  file = 90 * MiB
  c.step(200)
  t.equal(runs, 8, 'cancelled (the broker stopped): never')
  t.same(lines, [])
})

t.test('a minute after start-up\'s or a burst\'s page-out, what came back once is paged out once more', async (t) => {
  const c = clock()
  const MiB = 1048576
  let ms = 0
  let file = 30 * MiB
  let runs = 0
  let busy = false
  let cpu = 0
  const s = settledPageOut({ every: (m, fn) => c.every(m, () => ((ms += m), (cpu += busy ? 30 : 1), fn())) }, () => file, () => cpu, () => (runs++, (file = 4 * MiB)), { debug: () => {} }, () => ms)
  s.reset(5 * MiB) // start-up's page-out left 5 MiB
  ms -= 50_000 // the next check 10 s after it
  file = 21 * MiB // lazy start-up code and the first compiles came back at once
  c.step()
  t.equal(runs, 0, '10 s after: too soon to look')
  c.step()
  t.equal(runs, 1, '70 s after, quiet, 16 MiB above what the page-out left: paged out once more')
  file = 13 * MiB // what the idle broker really runs
  c.step(10)
  t.equal(runs, 1, 'once: then the settled rule and its 5 minutes')

  s.reset(5 * MiB) // a burst's page-out
  ms -= 50_000
  file = 22 * MiB
  busy = true
  c.step(2)
  t.equal(runs, 1, 'busy in that minute: no follow-up')
  busy = false
  c.step(10)
  t.equal(runs, 1, 'and none later from it: the settled rule looks at growth over its low (22 MiB)')

  s.reset(5 * MiB)
  ms -= 50_000
  file = 6.5 * MiB // little came back
  c.step(2)
  t.equal(runs, 1, 'under 2 MiB more than the page-out left: nothing')

  s.reset() // a page-out whose result is unknown (no `after`): no follow-up
  ms -= 50_000
  file = 25 * MiB
  c.step(2)
  t.equal(runs, 1, 'no follow-up without what the page-out left')
  s.cancel()
})

t.test('the settled check stops when the RSS cannot be read', async (t) => {
  const c = clock()
  const lines: string[] = []
  let reads = 0
  settledPageOut(c, () => (reads++, (() => { throw new Error('EACCES: /proc/self/status') })()), () => 0, () => t.fail('no page-out'), { debug: (m: string) => void lines.push(m) })
  c.step(10)
  t.equal(reads, 1, 'tried once')
  t.match(lines, [/not watched: EACCES/])
  t.same(c.live.map((e) => e.on), [false], 'its timer cancelled')
})

t.test('the settled page-out\'s log line', async (t) => {
  const lines: string[] = []
  logTrim({ before: 30 * 1048576, after: 21 * 1048576 }, { debug: (m: string) => void lines.push(m) }, 'Code paged in since the last page-out')
  t.match(lines.shift(), /^Code paged in since the last page-out: 9\.0 MiB of free heap handed back/, 'Deno\'s trim with it says so')
  logSettledPageOut({ before: 26 * 1048576, after: 21 * 1048576 }, { debug: (m: string) => void lines.push(m) })
  logSettledPageOut({ error: 'no mapping' }, { debug: (m: string) => void lines.push(m) })
  t.match(lines[0], /^Code paged in since the last page-out: 5\.0 MiB of the executable's pages handed back \(file-backed RSS 26\.0 → 21\.0 MiB\)/)
  t.match(lines[1], /^Code paged in since the last page-out kept: no mapping/)
})

t.test('libc is opened once, and a failure to open it is kept', async (t) => {
  let opens = 0
  const fake: Libc = { madvise: () => 0, mallocTrim: () => 1 }
  const ok = libcOnce(() => (opens++, fake))
  t.equal(ok(), fake)
  t.equal(ok(), fake)
  t.equal(opens, 1, 'opened once')
  let tries = 0
  const no = libcOnce(() => {
    tries++
    throw new Error('Deno runs without --allow-ffi')
  })
  t.throws(no, /without --allow-ffi/)
  t.throws(no, /without --allow-ffi/)
  t.equal(tries, 1, 'not asked again')
})

t.test('malloc_trim after a burst (Deno)', async (t) => {
  let trims = 0
  const r = trimMalloc(() => ({ madvise: () => 0, mallocTrim: () => (trims++, 1) }))
  t.equal(trims, 1, 'called once')
  t.ok('before' in r && r.before > 0 && r.after > 0, 'anonymous RSS read before and after')
  const no = trimMalloc(() => {
    throw new Error('Deno runs without --allow-ffi')
  })
  t.same(no, { error: 'Deno runs without --allow-ffi' })
  const lines: string[] = []
  const log = { debug: (m: string) => void lines.push(m) }
  logTrim({ before: 30 * 1048576, after: 21 * 1048576 }, log)
  logTrim(no, log)
  t.match(lines[0], /^Accept burst over: 9\.0 MiB of free heap handed back \(anonymous RSS 30\.0 → 21\.0 MiB\)/)
  t.match(lines[1], /^Accept burst over, malloc_trim: Deno runs without --allow-ffi/)
})

t.test('the page-out asks for libc before reading the maps: its error is the reason given', async (t) => {
  let advised = 0
  t.same(pageOutExecutable(() => {
    throw new Error('Deno runs without --allow-ffi')
  }), { error: 'Deno runs without --allow-ffi' })
  // This process (tap's Node) maps its executable: every mapping is advised; a libc that
  // refuses them all is reported.
  const r = pageOutExecutable(() => ({ madvise: () => (advised++, -1), mallocTrim: () => 0 }))
  t.ok(advised > 0, `madvise called for ${advised} mappings`)
  t.match(r, { error: /refused/ })
})
