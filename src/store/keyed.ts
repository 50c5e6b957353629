// The store's keyed latest-value log (store.ts KeyedLog): MQTT retained messages and persistent
// sessions live in one. Append-only segment files named by a 16-hex-digit number, the same
// 8-byte header as the spool's; records follow:
//
//   u32 length of body | u32 CRC-32 of body | body
//   body: u8 kind (2 put, 3 delete) | u16 key length | key (UTF-8) | value (put only)
//
// Start-up replays every segment in order: the last record per key wins, a delete (tombstone)
// removes it. Only the index (key -> segment, offset, length) stays in memory; values are read
// back from the page cache when asked for. Space comes back two ways, neither rewriting a file:
// leading segments with nothing live left are deleted whole (a queue that drains frees its
// segments like the spool does); when dead bytes pass half of the log (and COMPACT_MIN), the
// live records are copied into a new segment, synced, and every older segment is deleted.
// Damage is handled as the spool does: a record that fails its checksum is skipped and counted,
// a torn tail is cut off, both logged with file and offset.

import type { KeyedLog, Store, Tenant } from './store.ts'
import { segmentBytes, StoreError } from './store.ts'
import { crc32, REC_HEADER, SEG_HEADER, segmentHeader } from './record.ts'

const KIND_PUT = 2
const KIND_DEL = 3
const SEG_RE = /^[0-9a-f]{16}\.kv$/
/** Largest segment; smaller under a small max_bytes (an eighth of it), so space comes back in steps. */
const SEG_MAX = 4 * 1024 * 1024
const SEG_MIN = 64 * 1024
/** Largest record body we accept when reading (a damaged length beyond it is a torn tail). */
const MAX_BODY = 128 * 1024 * 1024
/** Compaction when dead bytes exceed this share of the log. */
const DEAD_SHARE = 0.5

interface Seg {
  id: number
  path: string
  fd: number
  size: number
  /** Bytes of records in it that are still the latest for their key. */
  live: number
}

interface Where {
  seg: Seg
  /** Offset of the record (its header). */
  off: number
  /** Whole record length. */
  len: number
  /** Offset and length of the value inside the file. */
  voff: number
  vlen: number
}

export interface KeyedOptions {
  /** Overrides for tests: segment size and compaction threshold (bytes). */
  segMax?: number
  compactMin?: number
}

const enc = new TextEncoder()
const dec = new TextDecoder()

export class KeyedFile implements KeyedLog, Tenant {
  /** Writes refused: the store's max_bytes or a full disk. */
  refused = 0
  /** A write was refused since the last one that went through (ends the store's full episode). */
  private full = false
  compactions = 0
  /** Bytes appended since start (records, tombstones, compaction copies): write amplification. */
  written = 0
  /** Records found at start-up (latest per key). */
  readonly recovered: number
  private index = new Map<string, Where>()
  private segs: Seg[] = []
  /** A compaction's copy is being synced; the segments before it go when it is done. */
  private compacting = false
  /** Closed with the store: later changes (connections parking at shutdown) are not written. */
  private closed = false
  private readonly segMax: number
  private readonly compactMin: number

  constructor(
    private readonly store: Store,
    readonly dir: string,
    o: KeyedOptions = {},
  ) {
    this.segMax = o.segMax ?? Math.max(SEG_MIN, Math.min(SEG_MAX, Math.floor(store.opts.max_bytes / 8)))
    // No compaction below two segments: a queue that drains frees whole segments without one.
    this.compactMin = o.compactMin ?? 2 * this.segMax
    try {
      store.files.mkdir(dir)
    } catch (e) {
      throw new StoreError(`store directory ${dir}: cannot create it: ${(e as { code?: string }).code ?? (e as Error).message}`)
    }
    const t0 = store.host.now()
    this.recover()
    this.recovered = this.index.size
    store.recovery.segments += this.segs.length
    store.recovery.ms += store.host.now() - t0
    store.tenants.push(this)
    this.release()
  }

  // --- start-up

  private recover(): void {
    for (const { id, path, fd, size } of this.store.openSegments(this.dir, SEG_RE)) {
      const seg: Seg = { id, path, fd, size, live: 0 }
      this.segs.push(seg)
      this.scan(seg)
    }
  }

  /** Replays one segment into the index; cuts off a torn or unreadable tail. */
  private scan(seg: Seg): void {
    const f = this.store.files
    const buf = new Uint8Array(seg.size)
    const n = f.read(seg.fd, buf, 0) // segments are bounded by segMax (or one large record)
    const v = new DataView(buf.buffer)
    let at = SEG_HEADER
    while (at < n) {
      if (n - at < REC_HEADER) break
      const bodyLen = v.getUint32(at, true)
      if (bodyLen < 3 || bodyLen > MAX_BODY || at + REC_HEADER + bodyLen > n) break
      const s = at + REC_HEADER
      const len = REC_HEADER + bodyLen
      const kind = buf[s]!
      const klen = v.getUint16(s + 1, true)
      if (crc32(buf, s, s + bodyLen) !== v.getUint32(at + 4, true) || (kind !== KIND_PUT && kind !== KIND_DEL) || 3 + klen > bodyLen) {
        this.store.damaged(seg.path, at, 'record fails its checksum; skipped')
        this.store.recovery.corrupt_records++
        at += len
        continue
      }
      const key = dec.decode(buf.subarray(s + 3, s + 3 + klen))
      if (kind === KIND_PUT) this.setIndex(key, { seg, off: at, len, voff: s + 3 + klen, vlen: bodyLen - 3 - klen })
      else this.unindex(key)
      at += len
    }
    seg.size = this.store.cutTail(seg.path, seg.fd, at, seg.size)
  }

  // --- KeyedLog

  get size(): number {
    return this.index.size
  }

  get(key: string): Uint8Array | undefined {
    const w = this.index.get(key)
    if (w === undefined) return undefined
    const b = new Uint8Array(w.vlen)
    this.store.files.read(w.seg.fd, b, w.voff)
    return b
  }

  has(key: string): boolean {
    return this.index.has(key)
  }

  keys(): IterableIterator<string> {
    return this.index.keys()
  }

  *entries(): IterableIterator<[string, Uint8Array]> {
    for (const k of [...this.index.keys()]) {
      const v = this.get(k)
      if (v !== undefined) yield [k, v]
    }
  }

  /** Appends the new value of `key`; false when the store refused it (full), the old value stays. */
  put(key: string, value: Uint8Array): boolean {
    if (this.closed) return false
    const k = enc.encode(key)
    const rec = record(KIND_PUT, k, value)
    const st = this.store
    if (st.bytes + rec.length > st.opts.max_bytes) {
      this.refused++
      this.full = true
      st.noSpace(`${this.dir}: max_bytes (${st.opts.max_bytes}) reached; MQTT state not stored`)
      return false
    }
    const at = this.append(rec)
    if (at === null) return false
    const [seg, off] = at
    this.setIndex(key, { seg, off, len: rec.length, voff: off + REC_HEADER + 3 + k.length, vlen: value.length })
    if (this.full) {
      this.full = false
      st.hasSpace()
    }
    this.afterWrite()
    return true
  }

  /** Appends a tombstone (always: they are small and let space be freed). */
  delete(key: string): void {
    if (this.closed || !this.index.has(key)) return
    this.unindex(key)
    if (this.append(record(KIND_DEL, enc.encode(key), EMPTY)) === null) {
      // Not on disk: after a restart the old value comes back (an acknowledged message resent).
    }
    this.afterWrite()
  }

  // --- Tenant

  get bytes(): number {
    return segmentBytes(this.segs)
  }

  get segments(): number {
    return this.segs.length
  }

  /** Bytes of records no longer the latest for their key. */
  get dead(): number {
    let n = 0
    for (const s of this.segs) n += s.size - SEG_HEADER - s.live
    return n
  }

  close(): void {
    this.closed = true
    const f = this.store.files
    for (const s of this.segs) {
      this.store.forget(s.fd)
      f.close(s.fd)
    }
    this.segs = []
  }

  // --- internals

  private setIndex(key: string, w: Where): void {
    const old = this.index.get(key)
    if (old !== undefined) old.seg.live -= old.len
    this.index.set(key, w)
    w.seg.live += w.len
  }

  private unindex(key: string): void {
    const old = this.index.get(key)
    if (old === undefined) return
    old.seg.live -= old.len
    this.index.delete(key)
  }

  /** Writes a record at the end of the last segment (a new one when full); null when refused. */
  private append(rec: Uint8Array): [Seg, number] | null {
    const st = this.store
    let seg = this.segs[this.segs.length - 1]
    try {
      if (seg === undefined || (seg.size + rec.length > this.segMax && seg.size > SEG_HEADER)) seg = this.newSegment()
      st.files.write(seg.fd, rec, seg.size)
    } catch (e) {
      const code = (e as { code?: string }).code ?? (e as Error).message
      if (seg !== undefined) {
        try {
          st.files.truncate(seg.fd, seg.size) // no half record left behind
        } catch {
          // the next start-up cuts it off
        }
      }
      this.refused++
      this.full = true
      st.noSpace(code === 'ENOSPC' ? 'the disk is full (ENOSPC); MQTT state not stored' : `cannot write ${seg?.path ?? this.dir}: ${code}`)
      return null
    }
    const off = seg.size
    seg.size += rec.length
    this.written += rec.length
    st.wrote(seg.fd)
    return [seg, off]
  }

  private newSegment(): Seg {
    const f = this.store.files
    const id = (this.segs[this.segs.length - 1]?.id ?? 0) + 1
    const path = `${this.dir}/${id.toString(16).padStart(16, '0')}.kv`
    const fd = f.open(path)
    try {
      f.truncate(fd, 0)
      f.write(fd, segmentHeader(), 0)
    } catch (e) {
      f.close(fd)
      f.remove(path)
      throw e
    }
    const seg = { id, path, fd, size: SEG_HEADER, live: 0 }
    this.segs.push(seg)
    return seg
  }

  private afterWrite(): void {
    if (this.closed) return
    this.release()
    const total = this.bytes
    if (!this.compacting && total >= this.compactMin && this.dead > total * DEAD_SHARE) this.compact()
  }

  /**
   * Deletes leading segments with nothing live (never the one being written). Only leading
   * ones: a tombstone in a later segment may still be what hides an older put.
   */
  private release(): void {
    while (!this.compacting && this.segs.length > 1 && this.segs[0]!.live === 0) this.removeFirst()
  }

  private removeFirst(): void {
    const s = this.segs.shift()!
    this.store.forget(s.fd)
    this.store.files.close(s.fd)
    this.store.files.remove(s.path)
  }

  /**
   * Copies every live record into a new segment, syncs it, then deletes all older segments
   * whole. A crash before the deletes leaves both copies: replay gives the same values.
   */
  private compact(): void {
    const f = this.store.files
    const old = this.segs.slice()
    let seg: Seg
    try {
      seg = this.newSegment()
    } catch (e) {
      this.store.noSpace(`cannot compact ${this.dir}: ${(e as { code?: string }).code ?? (e as Error).message}`)
      return
    }
    // The copy is cut into segments of segMax too: start-up reads one segment at a time.
    const fresh = [seg]
    const moves: [string, Where][] = []
    let buf = new Uint8Array(256 * 1024)
    let used = 0
    const flush = (): void => {
      if (used === 0) return
      f.write(seg.fd, buf.subarray(0, used), seg.size)
      seg.size += used
      this.written += used
      used = 0
    }
    try {
      for (const [key, w] of this.index) {
        if (seg.size + used + w.len > this.segMax && seg.size + used > SEG_HEADER) {
          flush()
          seg = this.newSegment()
          fresh.push(seg)
        }
        if (used + w.len > buf.length) flush()
        if (w.len > buf.length) buf = new Uint8Array(w.len)
        f.read(w.seg.fd, buf.subarray(used, used + w.len), w.off)
        moves.push([key, { seg, off: seg.size + used, len: w.len, voff: seg.size + used + (w.voff - w.off), vlen: w.vlen }])
        used += w.len
      }
      flush()
    } catch (e) {
      // A full disk mid-copy: the copy is dropped, the old segments stay as they were.
      for (const s of fresh) {
        this.segs.splice(this.segs.indexOf(s), 1)
        this.store.forget(s.fd)
        f.close(s.fd)
        f.remove(s.path)
      }
      this.store.noSpace(`cannot compact ${this.dir}: ${(e as { code?: string }).code ?? (e as Error).message}`)
      return
    }
    for (const [key, w] of moves) this.setIndex(key, w)
    this.compacting = true
    this.compactions++
    let left = fresh.length
    let failed = false
    const synced = (err: string | null): void => {
      if (err !== null) failed = true
      if (--left > 0) return
      this.compacting = false
      // A failed sync keeps the old segments (the next compaction tries again); closed: nothing to do.
      if (failed || this.closed) return
      for (const s of old) {
        const i = this.segs.indexOf(s)
        if (i < 0) continue
        this.segs.splice(i, 1)
        this.store.forget(s.fd)
        f.close(s.fd)
        f.remove(s.path)
      }
      this.afterWrite() // writes made meanwhile may call for the next one
    }
    for (const s of fresh) f.sync(s.fd, synced)
  }
}

const EMPTY = new Uint8Array(0)

function record(kind: number, key: Uint8Array, value: Uint8Array): Uint8Array {
  const bodyLen = 3 + key.length + value.length
  const b = new Uint8Array(REC_HEADER + bodyLen)
  const v = new DataView(b.buffer)
  v.setUint32(0, bodyLen, true)
  b[REC_HEADER] = kind
  v.setUint16(REC_HEADER + 1, key.length, true)
  b.set(key, REC_HEADER + 3)
  b.set(value, REC_HEADER + 3 + key.length)
  v.setUint32(4, crc32(b, REC_HEADER), true)
  return b
}
