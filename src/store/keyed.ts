// A keyed latest-value log in the store (the KeyedLog of store.ts), for state that is looked up
// by name rather than consumed in order: MQTT retained messages (key: topic) and persistent
// sessions (key: client id). Not wired into the MQTT adapter yet.
//
// One append-only file per generation, `<gen>.log`: the segment header of record.ts, then
//   u32 length of body | u32 CRC-32 of body | u8 kind (2 put, 3 delete) | u16 key length | key | value
// Start-up replays the files in order (the last value per key wins; a torn tail is cut off, a
// bad record skipped, both logged). When the file holds more than twice the live data, the live
// entries are written to the next generation, synced, and the old file deleted whole.

import { checkHeader, crc32, FORMAT_VERSION, REC_HEADER, SEG_HEADER, segmentHeader } from './record.ts'
import { StoreError, type KeyedLog, type Store, type Tenant } from './store.ts'

const KIND_PUT = 2
const KIND_DEL = 3
const LOG_RE = /^[0-9a-f]{16}\.log$/
/** Compaction only above this size (small logs are cheap to replay). */
const COMPACT_MIN = 1024 * 1024
const enc = new TextEncoder()
const dec = new TextDecoder()

export class KeyedStore implements KeyedLog, Tenant {
  private readonly map = new Map<string, Uint8Array>()
  private gen = 0
  private fd = -1
  private size = 0
  /** Record bytes of the live entries (what a compaction would write). */
  private live = 0

  constructor(
    private readonly store: Store,
    readonly dir: string,
  ) {
    const f = store.files
    try {
      f.mkdir(dir)
    } catch (e) {
      throw new StoreError(`store directory ${dir}: cannot create it: ${(e as { code?: string }).code ?? (e as Error).message}`)
    }
    const names = f.list(dir).filter((n) => LOG_RE.test(n)).sort()
    // Generations are replayed oldest first, each over the last: a compaction cut short by a
    // crash leaves the older file, which then still supplies what the newer one lacks.
    for (const name of names) this.load(`${dir}/${name}`, parseInt(name.slice(0, 16), 16), name === names[names.length - 1])
    if (this.fd < 0) this.open(this.gen + 1)
    store.tenants.push(this)
    const older = names.map((n) => `${dir}/${n}`).filter((p) => p !== this.path(this.gen))
    if (older.length > 0) this.compact(older)
  }

  get bytes(): number {
    return this.size
  }

  get segments(): number {
    return 1
  }

  get(key: string): Uint8Array | undefined {
    return this.map.get(key)
  }

  entries(): IterableIterator<[string, Uint8Array]> {
    return this.map.entries()
  }

  /** Stores `value` under `key`; false when the store is full (max_bytes or the disk). */
  put(key: string, value: Uint8Array): boolean {
    const rec = record(KIND_PUT, key, value)
    if (!this.append(rec)) return false
    const old = this.map.get(key)
    if (old !== undefined) this.live -= REC_HEADER + 3 + enc.encode(key).length + old.length
    this.map.set(key, value.slice())
    this.live += rec.length
    this.maybeCompact()
    return true
  }

  delete(key: string): void {
    const old = this.map.get(key)
    if (old === undefined) return
    this.append(record(KIND_DEL, key, EMPTY)) // if this fails, the key comes back after a restart
    this.map.delete(key)
    this.live -= REC_HEADER + 3 + enc.encode(key).length + old.length
    this.maybeCompact()
  }

  close(): void {
    if (this.fd < 0) return
    this.store.forget(this.fd)
    this.store.files.close(this.fd)
    this.fd = -1
  }

  private path(gen: number): string {
    return `${this.dir}/${gen.toString(16).padStart(16, '0')}.log`
  }

  private open(gen: number): void {
    const f = this.store.files
    this.gen = gen
    this.fd = f.open(this.path(gen))
    f.truncate(this.fd, 0)
    f.write(this.fd, segmentHeader(), 0)
    this.size = SEG_HEADER
  }

  private append(rec: Uint8Array): boolean {
    const st = this.store
    if (st.bytes + rec.length > st.opts.max_bytes) {
      st.noSpace(`${this.dir}: store max_bytes (${st.opts.max_bytes}) reached`)
      return false
    }
    try {
      st.files.write(this.fd, rec, this.size)
    } catch (e) {
      try {
        st.files.truncate(this.fd, this.size)
      } catch {
        // the next start-up cuts it off
      }
      const code = (e as { code?: string }).code ?? (e as Error).message
      st.noSpace(code === 'ENOSPC' ? 'the disk is full (ENOSPC)' : `cannot write ${this.path(this.gen)}: ${code}`)
      return false
    }
    this.size += rec.length
    st.hasSpace()
    st.wrote(this.fd)
    return true
  }

  /** Rewrites the live entries to the next generation once the file is mostly dead records. */
  private maybeCompact(): void {
    if (this.size < COMPACT_MIN || this.size < 2 * (this.live + SEG_HEADER)) return
    this.compact([])
  }

  /** Writes the live entries as the next generation; once synced, deletes the current file and `older`. */
  private compact(older: string[]): void {
    const f = this.store.files
    const old = { fd: this.fd, path: this.path(this.gen) }
    const parts: Uint8Array[] = [segmentHeader()]
    for (const [k, v] of this.map) parts.push(record(KIND_PUT, k, v))
    let n = 0
    for (const p of parts) n += p.length
    const all = new Uint8Array(n)
    let at = 0
    for (const p of parts) {
      all.set(p, at)
      at += p.length
    }
    const next = this.path(this.gen + 1)
    let fd: number
    try {
      fd = f.open(next)
      f.truncate(fd, 0)
      f.write(fd, all, 0)
    } catch (e) {
      this.store.log.warn(`store: cannot compact ${old.path}: ${(e as { code?: string }).code ?? (e as Error).message}`)
      f.remove(next)
      return
    }
    // The new generation must be on disk before the old one goes.
    this.store.forget(old.fd)
    this.fd = fd
    this.gen++
    this.size = n
    f.sync(fd, (err) => {
      if (err !== null) return this.store.log.error(`store: fdatasync ${next}: ${err}`)
      f.close(old.fd)
      f.remove(old.path)
      for (const p of older) f.remove(p)
    })
  }

  private load(path: string, gen: number, last: boolean): void {
    const f = this.store.files
    const fd = f.open(path)
    const size = f.size(fd)
    const buf = new Uint8Array(size)
    const n = f.read(fd, buf, 0)
    const bad = checkHeader(buf.subarray(0, n))
    if (bad === 'newer') {
      f.close(fd)
      throw new StoreError(`store: ${path} was written by a newer sprig (format ${buf[4]}, this one reads ${FORMAT_VERSION}); refusing rather than misreading it`)
    }
    let at = SEG_HEADER
    if (bad !== null) {
      this.store.damaged(path, 0, `bad header (${bad}); ignored`)
      at = n
    }
    const v = new DataView(buf.buffer)
    while (at < n) {
      if (n - at < REC_HEADER) break
      const len = v.getUint32(at, true)
      if (len < 3 || at + REC_HEADER + len > n) break
      const s = at + REC_HEADER
      const kind = buf[s]
      const kl = v.getUint16(s + 1, true)
      if (crc32(buf, s, s + len) !== v.getUint32(at + 4, true) || 3 + kl > len || (kind !== KIND_PUT && kind !== KIND_DEL)) {
        this.store.damaged(path, at, 'record fails its checksum; skipped')
        at += REC_HEADER + len
        continue
      }
      const key = dec.decode(buf.subarray(s + 3, s + 3 + kl))
      const old = this.map.get(key)
      if (old !== undefined) this.live -= REC_HEADER + 3 + kl + old.length
      if (kind === KIND_PUT) {
        const value = buf.slice(s + 3 + kl, s + len)
        this.map.set(key, value)
        this.live += REC_HEADER + len
      } else this.map.delete(key)
      at += REC_HEADER + len
    }
    if (at < size && bad === null) {
      this.store.damaged(path, at, `torn or damaged tail (${size - at} bytes); truncated`)
      this.store.recovery.truncated_bytes += size - at
      if (last) f.truncate(fd, at)
    }
    if (last) {
      this.fd = fd
      this.gen = gen
      this.size = Math.min(at, size)
      if (bad !== null) this.open(gen + 1)
    } else f.close(fd)
  }
}

function record(kind: number, key: string, value: Uint8Array): Uint8Array {
  const k = enc.encode(key)
  const len = 3 + k.length + value.length
  const b = new Uint8Array(REC_HEADER + len)
  const v = new DataView(b.buffer)
  v.setUint32(0, len, true)
  b[REC_HEADER] = kind
  v.setUint16(REC_HEADER + 1, k.length, true)
  b.set(k, REC_HEADER + 3)
  b.set(value, REC_HEADER + 3 + k.length)
  v.setUint32(4, crc32(b, REC_HEADER), true)
  return b
}

const EMPTY = new Uint8Array(0)
