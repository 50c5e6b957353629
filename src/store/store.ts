// The optional on-disk store: one directory, a lock against a second process, a format marker,
// the sync policy (group commit), the byte bound shared by everything in it, and its status.
// FIFO spools (the uplink's buffers, spool.ts) live in it; a keyed latest-value log for MQTT
// retained messages and sessions (keyed.ts, KeyedLog below; adapters/mqtt/persist.ts uses it).
// Runtime-agnostic: every file access goes through src/host.ts Files.

import type { Files, Host } from '../host.ts'
import type { Logger } from '../log.ts'
import { checkHeader, FORMAT_VERSION, SEG_HEADER } from './record.ts'

export interface StoreOptions {
  dir: string
  /** ms between fdatasyncs; 0 = "always": before every acknowledgement. */
  sync_interval: number
  /** Bound on everything the store holds on disk (bytes). */
  max_bytes: number
}

export const STORE_DEFAULTS = Object.freeze({ sync_interval: 1000, max_bytes: 1024 * 1024 * 1024 })

/** What the last start-up found (shown in /varz). */
export interface Recovery {
  segments: number
  messages: number
  /** Records whose checksum failed (skipped). */
  corrupt_records: number
  /** Torn tails cut off (power cut mid-write). */
  truncated_bytes: number
  /** Start-up scan time. */
  ms: number
}

export interface StoreStatus {
  dir: string
  sync: string
  max_bytes: number
  bytes: number
  segments: number
  syncs: number
  sync_errors: number
  /** Writes refused: max_bytes reached or the disk full (ENOSPC). */
  full_episodes: number
  corrupt_records: number
  recovery: Recovery
}

/**
 * The keyed latest-value log the MQTT adapter's retained messages and sessions use (keyed.ts
 * KeyedFile): put/delete append a record; start-up replays them, the last value per key wins;
 * compaction writes the live entries to a new segment and deletes the old ones.
 */
export interface KeyedLog {
  get(key: string): Uint8Array | undefined
  put(key: string, value: Uint8Array): boolean
  delete(key: string): void
  entries(): IterableIterator<[string, Uint8Array]>
}

/** Something that holds segment files in the store (a spool): its bytes and open descriptors. */
/** Bytes on disk of a tenant's segments (each `size` counts its header). */
export function segmentBytes(segs: readonly { size: number }[]): number {
  let n = 0
  for (const s of segs) n += s.size
  return n
}

export interface Tenant {
  readonly bytes: number
  readonly segments: number
  close(): void
}

export class StoreError extends Error {}

export class Store {
  readonly recovery: Recovery = { segments: 0, messages: 0, corrupt_records: 0, truncated_bytes: 0, ms: 0 }
  readonly tenants: Tenant[] = []
  /** More sections of status() by name, from the store's users (the MQTT state: mqtt). */
  readonly sections = new Map<string, () => unknown>()
  syncs = 0
  syncErrors = 0
  fullEpisodes = 0
  corrupt = 0
  private full = false
  /** Descriptors written since their last fdatasync. */
  private dirty = new Set<number>()
  /** Callbacks waiting for the writes made before them to reach the disk. */
  private waiting: (() => void)[] = []
  private inFlight: (() => void)[] | null = null
  private syncQueued = false
  private timer: { cancel(): void } | null = null
  private closed = false
  /** Spools with records batched this turn, written by flush() at its end. */
  private batched: { flush(): boolean }[] = []
  /** Acknowledgements waiting for that write (they learn whether it failed). */
  private afterFlush: ((ok: boolean) => void)[] = []
  /** One closure for every turn's deferred flush. */
  private readonly flushLater = (): void => this.flush()

  private constructor(
    readonly opts: StoreOptions,
    readonly files: Files,
    readonly host: Host,
    readonly log: Logger,
  ) {}

  /**
   * Opens (creating) the store directory: takes the lock, checks the format marker. Throws a
   * StoreError with a one-line message naming the directory on any problem.
   */
  static open(opts: StoreOptions, files: Files, host: Host, log: Logger): Store {
    const dir = opts.dir
    const io = (what: string, e: unknown): StoreError => new StoreError(`store directory ${dir}: ${what}: ${(e as { code?: string }).code ?? (e as Error).message}`)
    try {
      files.mkdir(dir)
    } catch (e) {
      throw io('cannot create it', e)
    }
    const lock = `${dir}/LOCK`
    try {
      for (let i = 0; ; i++) {
        if (files.createOnly(lock, `${files.pid}\n`)) break
        const pid = Number((files.readText(lock) ?? '').trim())
        if (Number.isInteger(pid) && pid > 0 && pid !== files.pid && files.alive(pid)) {
          throw new StoreError(`store directory ${dir} is in use by another sprig (pid ${pid}, ${lock}); two processes cannot share a store`)
        }
        if (i > 0) throw new StoreError(`store directory ${dir}: cannot take the lock ${lock}`)
        files.remove(lock) // left by a process that is gone (a crash or power cut)
      }
    } catch (e) {
      if (e instanceof StoreError) throw e
      throw io('cannot write to it', e)
    }
    try {
      const marker = `${dir}/sprig-store.json`
      const text = files.readText(marker)
      if (text === null) files.writeText(marker, JSON.stringify({ format: FORMAT_VERSION }) + '\n')
      else {
        let format: unknown
        try {
          format = (JSON.parse(text) as { format?: unknown }).format
        } catch {
          format = undefined
        }
        if (typeof format !== 'number') throw new StoreError(`store directory ${dir}: ${marker} is not a sprig store marker`)
        if (format > FORMAT_VERSION) {
          throw new StoreError(`store directory ${dir} has format ${format}, written by a newer sprig; this one reads format ${FORMAT_VERSION} (refusing rather than misreading it)`)
        }
      }
    } catch (e) {
      files.remove(lock)
      if (e instanceof StoreError) throw e
      throw io('cannot write to it', e)
    }
    const s = new Store(opts, files, host, log)
    if (opts.sync_interval > 0) s.timer = host.every(opts.sync_interval, () => s.syncNow())
    return s
  }

  get syncMode(): string {
    return this.opts.sync_interval === 0 ? 'always' : `${this.opts.sync_interval}ms`
  }

  get bytes(): number {
    let n = 0
    for (const t of this.tenants) n += t.bytes
    return n
  }

  /** A write landed on `fd` (in the page cache): it needs an fdatasync. */
  wrote(fd: number): void {
    this.dirty.add(fd)
    if (this.opts.sync_interval === 0 && !this.syncQueued) {
      this.syncQueued = true
      this.host.defer(() => {
        this.syncQueued = false
        this.syncNow()
      })
    }
  }

  /** A descriptor is about to be closed: no sync for it any more. */
  forget(fd: number): void {
    this.dirty.delete(fd)
  }

  /**
   * A spool batched records to write at the end of this turn (once per turn per spool): one
   * write for all of them instead of one per message.
   */
  pending(t: { flush(): boolean }): void {
    this.batched.push(t)
    if (this.batched.length === 1) this.host.defer(this.flushLater)
  }

  /** Writes every batch of this turn; then the acknowledgements that waited for it go on. */
  flush(): void {
    let ok = true
    const ts = this.batched
    this.batched = []
    for (const t of ts) if (!t.flush()) ok = false
    const cbs = this.afterFlush
    this.afterFlush = []
    for (const cb of cbs) this.whenSynced(ok ? () => cb(true) : () => cb(false))
  }

  /**
   * Runs `cb` once everything written so far is on disk under the sync policy: with "always"
   * after the next fdatasync (group commit: one per I/O turn for every write in it); with an
   * interval once it is written (in the page cache: a process crash loses nothing, a power
   * cut may lose the last interval). `ok` is false when a write it waited for failed (a full
   * disk: the message was dropped). Callbacks run in the order they were registered.
   */
  afterSync(cb: (ok: boolean) => void): void {
    // Behind a batch of this turn: after its write (flush empties both lists together).
    if (this.batched.length > 0 && !this.closed) this.afterFlush.push(cb)
    else this.whenSynced(() => cb(true))
  }

  private whenSynced(cb: () => void): void {
    if (this.opts.sync_interval > 0 || this.closed) return cb()
    if (this.dirty.size > 0) this.waiting.push(cb)
    else if (this.inFlight !== null) this.inFlight.push(cb)
    else if (this.waiting.length > 0) this.waiting.push(cb)
    else cb()
  }

  /** One group commit: fdatasync every dirty file, then release the callbacks it covers. */
  syncNow(): void {
    if (this.batched.length > 0) this.flush()
    if (this.inFlight !== null || this.closed) return // the running one calls again when done
    if (this.dirty.size === 0) {
      const w = this.waiting
      this.waiting = []
      for (const cb of w) cb()
      return
    }
    const fds = [...this.dirty]
    this.dirty.clear()
    const cbs = this.waiting
    this.waiting = []
    this.inFlight = cbs
    let left = fds.length
    const done = (err: string | null): void => {
      if (err !== null && err !== 'EBADF') {
        this.syncErrors++
        this.log.error(`store: fdatasync failed: ${err}`)
      }
      if (--left > 0) return
      this.syncs++
      const list = this.inFlight ?? []
      this.inFlight = null
      for (const cb of list) cb()
      if (this.opts.sync_interval === 0 && (this.dirty.size > 0 || this.waiting.length > 0)) this.syncNow()
    }
    for (const fd of fds) this.files.sync(fd, done)
  }

  /** A write was refused for space (max_bytes or ENOSPC): logged once per episode. */
  noSpace(why: string): void {
    if (this.full) return
    this.full = true
    this.fullEpisodes++
    this.log.warn(`store ${this.opts.dir}: ${why}; applying the drop policy until there is room`)
  }

  /** A write succeeded: a full-disk episode (if any) is over. */
  hasSpace(): void {
    if (!this.full) return
    this.full = false
    this.log.info(`store ${this.opts.dir}: writing again`)
  }

  /** A damaged record or tail found while reading: counted and logged. */
  /**
   * The segment files in `dir` whose names match `re`, in name order, opened, their headers
   * checked: a store written by a newer format is refused; a file with a bad header (created
   * but never written before a power cut, or not ours) is logged, counted and removed.
   * `id` is the 16 hex digits the name starts with.
   */
  openSegments(dir: string, re: RegExp): { id: number; path: string; fd: number; size: number }[] {
    const f = this.files
    const out: { id: number; path: string; fd: number; size: number }[] = []
    for (const name of f.list(dir).filter((n) => re.test(n)).sort()) {
      const path = `${dir}/${name}`
      const fd = f.open(path)
      const head = new Uint8Array(SEG_HEADER)
      const n = f.read(fd, head, 0)
      const bad = checkHeader(head.subarray(0, n))
      if (bad === 'newer') {
        f.close(fd)
        for (const o of out) f.close(o.fd)
        throw new StoreError(`store: ${path} was written by a newer sprig (format ${head[4]}); refusing rather than misreading it`)
      }
      if (bad !== null) {
        this.damaged(path, 0, `bad segment header (${bad}); skipped`)
        this.recovery.corrupt_records++
        f.close(fd)
        f.remove(path)
        continue
      }
      out.push({ id: parseInt(name.slice(0, 16), 16), path, fd, size: f.size(fd) })
    }
    return out
  }

  /** Cuts a segment file's torn or damaged tail at `at` (of `size` bytes), logged and counted; the new size. */
  cutTail(path: string, fd: number, at: number, size: number): number {
    if (at >= size) return size
    this.damaged(path, at, `torn or damaged tail (${size - at} bytes); truncated`)
    this.recovery.truncated_bytes += size - at
    this.files.truncate(fd, at)
    return at
  }

  damaged(file: string, offset: number, what: string): void {
    this.corrupt++
    this.log.warn(`store: ${file} at offset ${offset}: ${what}`)
  }

  status(): StoreStatus & Record<string, unknown> {
    let segments = 0
    for (const t of this.tenants) segments += t.segments
    return {
      dir: this.opts.dir,
      sync: this.opts.sync_interval === 0 ? 'always' : `${this.opts.sync_interval / 1000}s`,
      max_bytes: this.opts.max_bytes,
      bytes: this.bytes,
      segments,
      syncs: this.syncs,
      sync_errors: this.syncErrors,
      full_episodes: this.fullEpisodes,
      corrupt_records: this.corrupt,
      recovery: this.recovery,
      ...Object.fromEntries([...this.sections].map(([k, f]) => [k, f()])),
    }
  }

  /** Clean stop: a last sync (callbacks released), descriptors closed, the lock given back. */
  close(): void {
    if (this.closed) return
    this.flush()
    this.timer?.cancel()
    for (const t of this.tenants) t.close()
    this.closed = true
    const w = [...(this.inFlight ?? []), ...this.waiting]
    this.waiting = []
    for (const cb of w) cb()
    this.files.remove(`${this.opts.dir}/LOCK`)
  }
}
