// The `store` block and `--store DIR`: checked here, called from config.ts at one spot.
//   "store": { "dir": "/var/lib/sprig", "sync_interval": "1s" | "always", "max_bytes": "1GB" }

import type { StoreOptions } from './store.ts'
import { STORE_DEFAULTS } from './store.ts'

const KEYS = ['dir', 'sync_interval', 'max_bytes']

export interface StoreParsers {
  size(v: unknown): number | undefined
  duration(v: unknown): number | undefined
  /** An error naming `key` (the caller adds file, line or flag). */
  fail(key: string, detail: string): Error
}

/**
 * One layer's `store` value (`key` "store": the block, replacing any below; "store.dir": the
 * flag, over the block's other keys) merged over `base`.
 */
export function storeOption(key: string, v: unknown, base: StoreOptions | undefined, p: StoreParsers): StoreOptions {
  if (key === 'store.dir') return { ...STORE_DEFAULTS, ...base, dir: dir(v, key, p) }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw p.fail('store', 'expected an object like { "dir": "/var/lib/sprig" }')
  const raw = v as Record<string, unknown>
  const out: Partial<StoreOptions> = { ...STORE_DEFAULTS }
  for (const [k, x] of Object.entries(raw)) {
    const path = `store.${k}`
    if (k === 'dir') out.dir = dir(x, path, p)
    else if (k === 'sync_interval') {
      if (x === 'always') out.sync_interval = 0
      else {
        const ms = p.duration(x)
        if (ms === undefined || ms <= 0 || ms > 60_000) throw p.fail(path, `expected "always" or a duration up to 1m like "1s", got ${JSON.stringify(x)}`)
        out.sync_interval = ms
      }
    } else if (k === 'max_bytes') {
      const n = p.size(x)
      if (n === undefined || n < 1024 * 1024) throw p.fail(path, `expected a size of at least 1MB like "1GB", got ${JSON.stringify(x)}`)
      out.max_bytes = n
    } else throw p.fail(path, `unknown option ${JSON.stringify(path)} (known: ${KEYS.join(', ')})`)
  }
  if (out.dir === undefined) throw p.fail('store.dir', 'required: the directory the store keeps its files in, like "/var/lib/sprig"')
  return out as StoreOptions
}

function dir(v: unknown, key: string, p: StoreParsers): string {
  if (typeof v !== 'string' || v.trim() === '') throw p.fail(key, `expected a directory path, got ${JSON.stringify(v)}`)
  return v.replace(/\/+$/, '') || '/'
}
