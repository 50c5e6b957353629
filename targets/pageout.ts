// Bun and Deno: once the broker has started and gone quiet, the pages of its executable that start-up
// touched are handed back to the kernel (madvise MADV_PAGEOUT on the executable's mappings).
// Start-up runs code an idle broker never needs again: the parser and bytecode compiler for
// the whole bundle, every module body, the config checks. Those pages are clean and
// file-backed, so the kernel could drop them under pressure anyway, but until it does they
// count in the process's RSS, and on a 1 GB gateway they are ~20 MiB of the compiled binary's
// ~42, and ~22 MiB of Deno's ~57 (docs/benchmarks.md). What is still used faults back in from
// the page cache or the disk (a few ms, once); what start-up alone used stays out.
// The kernel reclaims only pages no other process maps, so a Bun executable shared with other
// Bun processes loses nothing they use. Linux ≥ 5.4; elsewhere madvise fails and nothing
// happens. SPRIG_PAGEOUT=0 turns it off; SPRIG_PAGEOUT=<ms> sets the earliest time.
// Node has no foreign-function interface: nothing is done there.

import { readFileSync } from 'node:fs'
import process from 'node:process'
import type { Host } from '../src/host.ts'
import type { Logger } from '../src/log.ts'
import { bunFfi } from './lazy.ts'
import { quietOver } from './proc.ts'

/** What sprig calls in libc, through the runtime's foreign-function interface. */
export interface Libc {
  madvise(addr: bigint, len: bigint, advice: number): number
  /** glibc's malloc_trim(0): free memory in every arena back to the system. */
  mallocTrim(): number
}

type Symbols = Record<string, (...a: (number | bigint)[]) => number>

/** The two symbols as sprig calls them, whichever FFI bound them. */
const libcOf = (f: Symbols): Libc => ({ madvise: (a, n, adv) => f.madvise!(a, n, adv), mallocTrim: () => f.malloc_trim!(0) })

/** Bun: bun:ffi, loaded only now. malloc_trim is bound for the one shape; Bun.shrink() does its work there. */
export function bunLibc(): Libc {
  return libcOf(
    bunFfi().dlopen('libc.so.6', {
      madvise: { args: ['u64', 'u64', 'i32'], returns: 'i32' },
      malloc_trim: { args: ['u64'], returns: 'i32' },
    }).symbols,
  )
}

/** The few members of Deno's FFI used here (Deno's types are not installed). */
declare const Deno: {
  permissions: { querySync(d: { name: 'ffi' }): { state: string } }
  dlopen(lib: string, symbols: Record<string, { parameters: string[]; result: string }>): { symbols: Symbols }
}

/**
 * Deno: Deno.dlopen, only with the ffi permission (`deno run -A` or `--allow-ffi`). Asked
 * first: without it, Deno would prompt on a terminal, stopping the event loop.
 */
export function denoLibc(): Libc {
  if (Deno.permissions.querySync({ name: 'ffi' }).state !== 'granted') throw new Error('Deno runs without --allow-ffi')
  return libcOf(
    Deno.dlopen('libc.so.6', {
      madvise: { parameters: ['usize', 'usize', 'i32'], result: 'i32' },
      malloc_trim: { parameters: ['usize'], result: 'i32' },
    }).symbols,
  )
}

/**
 * `open` once, then its result for every later call; an error is kept too, so a missing
 * permission or library is found out once. libc stays open: it is used after every burst.
 */
export function libcOnce(open: () => Libc): () => Libc {
  let libc: Libc | null = null
  let error: Error | null = null
  return () => {
    if (libc !== null) return libc
    if (error !== null) throw error
    try {
      return (libc = open())
    } catch (e) {
      throw (error = e as Error)
    }
  }
}

/** Earliest moment after start (ms): the first connections and a config's files are done. */
export const PAGEOUT_AFTER_MS = 5000
/** Latest moment (ms): a broker that is never quiet is paged out anyway, once. */
export const PAGEOUT_LATEST_MS = 60_000
const MADV_PAGEOUT = 21

/** [start, end) of every mapping of `file` in a /proc/PID/maps text. */
export function mappingsOf(maps: string, file: string): [bigint, bigint][] {
  const out: [bigint, bigint][] = []
  for (const line of maps.split('\n')) {
    // address perms offset dev inode path (the path may hold spaces: it is the rest)
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s+(.*)$/.exec(line)
    if (m !== null && m[3] === file) out.push([BigInt('0x' + m[1]), BigInt('0x' + m[2])])
  }
  return out
}

/** The process's file-backed RSS before and after (bytes), or why nothing was done. */
export type PageOutResult = { before: number; after: number } | { error: string }

const RSS = { File: /^RssFile:\s+(\d+) kB/m, Anon: /^RssAnon:\s+(\d+) kB/m }

/** RssFile or RssAnon of /proc/self/status, in bytes. */
export function rss(kind: keyof typeof RSS): number {
  const m = RSS[kind].exec(readFileSync('/proc/self/status', 'utf8'))
  return m === null ? 0 : Number(m[1]) * 1024
}

/**
 * Deno after an accept burst: glibc's malloc_trim(0). The burst's garbage outside V8's heap
 * (the optimizing compiler's zones, on worker threads with an arena each) stays in glibc's
 * arenas, free but resident, ~9 MiB for 1,000 devices; trimmed, it goes back to the system.
 * Bun.shrink() does this for Bun's own allocator. The anonymous RSS before and after.
 */
export function trimMalloc(libc: () => Libc): PageOutResult {
  try {
    const { mallocTrim } = libc()
    // Deno reads /proc/self/status only with every permission: trim all the same.
    let before = -1
    let unread = ''
    try {
      before = rss('Anon')
    } catch (e) {
      unread = (e as Error).message
    }
    mallocTrim()
    return unread ? { error: `trimmed, not measured: ${unread}` } : { before, after: rss('Anon') }
  } catch (e) {
    return { error: (e as Error).message }
  }
}

/** SPRIG_PAGEOUT: unset, the default time; 0 (or off, false), never; a number of ms, that time. */
export function pageOutAfter(env: string | undefined): number | null {
  if (env === undefined || env.trim() === '') return PAGEOUT_AFTER_MS
  const v = env.trim().toLowerCase()
  if (v === '0' || v === 'off' || v === 'false' || v === 'no') return null
  const n = Number(v)
  return Number.isFinite(n) && n > 0 ? n : PAGEOUT_AFTER_MS
}

/** madvise(MADV_PAGEOUT) on every mapping of this process's executable. */
export function pageOutExecutable(libc: () => Libc): PageOutResult {
  try {
    // libc first: without Deno's ffi permission, that is the reason to give (reading
    // /proc/self/maps needs all permissions there too).
    const { madvise } = libc()
    const ranges = mappingsOf(readFileSync('/proc/self/maps', 'utf8'), process.execPath)
    if (ranges.length === 0) return { error: `no mapping of ${process.execPath} in /proc/self/maps` }
    const before = rss('File')
    let failed = 0
    for (const [a, b] of ranges) if (madvise(a, b - a, MADV_PAGEOUT) !== 0) failed++
    return failed === ranges.length ? { error: 'madvise(MADV_PAGEOUT) refused (a kernel before 5.4?)' } : { before, after: rss('File') }
  } catch (e) {
    return { error: (e as Error).message }
  }
}

/**
 * Runs `pageOut` once: at the first check from `after` ms on that finds `activity()` (messages
 * and connections so far) unchanged since the check before (a second earlier), or at `latest`
 * ms whatever it finds.
 */
export function schedulePageOut(host: Pick<Host, 'every'>, activity: () => number, pageOut: () => void, after = PAGEOUT_AFTER_MS, latest = PAGEOUT_LATEST_MS): { cancel(): void } {
  const step = Math.max(1, Math.min(1000, after))
  let elapsed = 0
  let last = activity()
  const t = host.every(step, () => {
    elapsed += step
    const a = activity()
    const quiet = a === last
    last = a
    if (elapsed < after || (!quiet && elapsed < latest)) return
    t.cancel()
    pageOut()
  })
  return t
}

const mib = (n: number): string => (n / 1048576).toFixed(1)

/**
 * A fleet connecting at once (after an outage, or a reboot) pages in code an idle broker
 * does not run again: the optimizing compilers, the accept and CONNECT paths. Once such a
 * burst is over and the process quiet (targets/runtime.ts afterAccept), this hook runs
 * `pageOut` and logs it at debug level, at most once a minute. Each page-out sends the
 * pages the broker still uses back to the disk (an SD card on a gateway), so a site whose
 * devices come and go in bursts pays that read once a minute, not once a burst. A burst
 * within the minute is not forgotten (a fleet that drops and reconnects at once is two
 * bursts seconds apart, and the second pages in as much as the first): with `later`, its
 * page-out runs once the minute is over, if the process stayed quiet until then (under a
 * quarter of a core: under load the hot code coming back would stall it).
 */
export const BURST_PAGEOUT_EVERY_MS = 60_000
export function burstPageOut(
  pageOut: () => PageOutResult,
  log: Pick<Logger, 'debug'>,
  now: () => number = () => performance.now(),
  later?: { every: Host['every']; cpuSeconds: () => number },
): { burst(): void; cancel(): void } {
  let last = -Infinity
  let pending: { cancel(): void } | null = null
  const run = (): void => {
    last = now()
    logBurstPageOut(pageOut(), log)
  }
  const burst = (): void => {
    const t = now()
    const wait = last + BURST_PAGEOUT_EVERY_MS - t
    if (wait <= 0) {
      pending?.cancel()
      pending = null
      return run()
    }
    if (pending !== null || later === undefined) return
    const cpuAt = later.cpuSeconds()
    const timer = later.every(wait, () => {
      timer.cancel()
      pending = null
      if (quietOver(cpuAt, later.cpuSeconds(), now() - t)) run()
    })
    pending = timer
  }
  return {
    burst,
    cancel: () => {
      pending?.cancel()
      pending = null
    },
  }
}

/**
 * A page-out leaves the top tier's compiler out only until something runs hot enough for it
 * again. On Bun, 1,000 idle devices pinging every 30 s get their read path compiled by FTL
 * 3–6 minutes after a burst's page-out, and then a straggler every few minutes (a function
 * that left its optimized code, compiled again); each brings FTL's compiler back, 2–5 MiB of
 * the executable that stays resident for good (docs/benchmarks.md, 2026-12-07 19:00). So once
 * a minute the file-backed RSS is read and compared with the lowest reading since the last
 * page-out (from half a minute after it, when what the broker runs has come back from the
 * disk). Grown by `SETTLED_GROWTH` and not moved since the minute before (the compiles are
 * over), and the process quiet over that minute (under a quarter of a core, as after a
 * burst: a page-out under load stalls it while the hot code comes back), the executable is
 * paged out again; what still runs faults back in once, and the compiled code stays. The
 * first of these comes 5 minutes after any other page-out at the earliest, each next one twice
 * as long after the one before, up to an hour: whatever grows back costs at most one reading
 * of a few MiB from the disk an hour. The others (start-up's, a burst's, after which code is
 * compiled again) call `reset`.
 *
 * Given what was left right after such a page-out (`reset(after)`), the first check a minute
 * or more after it also looks once at what came back in that minute: much of it is code that
 * ran once (what start-up's lazy parts or the burst's end ran, the compiles of what runs
 * now), not what the broker keeps running. Grown by `SETTLED_GROWTH` over `after`, with the
 * process quiet over the minute, the executable is paged out once more, and the wait above
 * starts from then. An idle broker keeps ~13 MiB of its executable that way instead of ~21
 * (docs/benchmarks.md, 2026-12-07 21:45).
 */
export const SETTLED_CHECK_MS = 60_000
export const SETTLED_GROWTH = 2 * 1048576
/** Less change than this between two readings: settled. */
export const SETTLED_WITHIN = 256 * 1024
/** Readings this soon after a page-out are not the low: what runs is still coming back. */
export const SETTLED_AFTER_MS = 30_000
export const SETTLED_EVERY_MS = 5 * 60_000
export const SETTLED_EVERY_MAX_MS = 60 * 60_000
/** The follow-up looks at the first check at least this long after the page-out. */
export const FOLLOW_UP_MS = 60_000
export function settledPageOut(host: Pick<Host, 'every'>, fileRss: () => number, cpuSeconds: () => number, pageOut: () => void, log: Pick<Logger, 'debug'>, now: () => number = () => performance.now()): { reset(after?: number): void; cancel(): void } {
  let low = Infinity
  let prev = 0
  let lastOut = now()
  let cpuAt = cpuSeconds()
  let checkedAt = lastOut
  let gap = SETTLED_EVERY_MS
  /** File-backed RSS right after the last start-up or burst page-out, until its follow-up looked. */
  let followFrom: number | null = null
  const reset = (after?: number): void => {
    low = Infinity
    lastOut = now()
    gap = SETTLED_EVERY_MS
    followFrom = after ?? null
  }
  const t = host.every(SETTLED_CHECK_MS, () => {
    let f: number
    try {
      f = fileRss()
    } catch (e) {
      // Deno reads /proc/self/status only with every permission.
      log.debug(`Pages paged in since the last page-out not watched: ${(e as Error).message}`)
      t.cancel()
      return
    }
    const settled = Math.abs(f - prev) < SETTLED_WITHIN
    prev = f
    const at = now()
    const cpu = cpuSeconds()
    const quiet = quietOver(cpuAt, cpu, at - checkedAt)
    cpuAt = cpu
    checkedAt = at
    const since = at - lastOut
    if (followFrom !== null && since >= FOLLOW_UP_MS) {
      const from = followFrom
      followFrom = null
      if (quiet && f - from >= SETTLED_GROWTH) {
        pageOut()
        reset()
        return
      }
    }
    if (since < SETTLED_AFTER_MS) return
    if (f < low) low = f
    if (f - low < SETTLED_GROWTH || !settled || !quiet || since < gap) return
    pageOut()
    const next = Math.min(gap * 2, SETTLED_EVERY_MAX_MS)
    reset()
    gap = next
  })
  return { reset, cancel: () => t.cancel() }
}

export function logSettledPageOut(r: PageOutResult, log: Pick<Logger, 'debug'>): void {
  log.debug('error' in r ? `Code paged in since the last page-out kept: ${r.error}` : `Code paged in since the last page-out: ${handedBack(r, '', '')}`)
}

/** "N MiB of the executable's pages handed back<to>(file-backed RSS a → b MiB<tail>)". */
const handedBack = (r: { before: number; after: number }, to: string, tail: string): string =>
  `${mib(r.before - r.after)} MiB of the executable's pages handed back${to} (file-backed RSS ${mib(r.before)} → ${mib(r.after)} MiB${tail})`

/** `when`: what the trim follows, the line's start. */
export function logTrim(r: PageOutResult, log: Pick<Logger, 'debug'>, when = 'Accept burst over'): void {
  log.debug('error' in r ? `${when}, malloc_trim: ${r.error}` : `${when}: ${mib(r.before - r.after)} MiB of free heap handed back (anonymous RSS ${mib(r.before)} → ${mib(r.after)} MiB)`)
}

export function logBurstPageOut(r: PageOutResult, log: Pick<Logger, 'debug'>): void {
  log.debug('error' in r ? `Accept burst over, pages kept: ${r.error}` : `Accept burst over: ${handedBack(r, '', '')}`)
}

/** One line: how much the page-out gave back, or (debug) why it did nothing. */
export function logPageOut(r: PageOutResult, log: Pick<Logger, 'info' | 'debug'>): void {
  if ('error' in r) log.debug(`Start-up pages kept: ${r.error}`)
  else log.info(`Start-up done: ${handedBack(r, ' to the kernel', '; SPRIG_PAGEOUT=0 keeps them')}`)
}
