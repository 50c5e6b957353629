// The keyed latest-value log (src/store/keyed.ts) on real files: last value wins across a
// reopen, deletes, compaction into a new generation, a torn tail and a flipped byte.

import t from 'tap'
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import type { Host } from '../src/host.ts'
import { createLogger } from '../src/log.ts'
import { KeyedStore } from '../src/store/keyed.ts'
import { Store } from '../src/store/store.ts'
import { nodeFiles } from '../targets/files.ts'

const host: Host = {
  now: () => performance.now(),
  defer: (fn) => queueMicrotask(fn),
  every: (ms, fn) => {
    const i = setInterval(fn, ms)
    return { cancel: () => clearInterval(i) }
  },
}
const enc = new TextEncoder()
const dec = new TextDecoder()

function open(dir: string, logs: string[] = []): { store: Store; kv: KeyedStore } {
  const log = createLogger({ level: 'info', time: false, sink: (l) => logs.push(l) })
  const store = Store.open({ dir, sync_interval: 0, max_bytes: 64 * 1024 * 1024 }, nodeFiles, host, log)
  return { store, kv: new KeyedStore(store, `${dir}/mqtt/retained`) }
}
const dump = (kv: KeyedStore): Record<string, string> => Object.fromEntries([...kv.entries()].map(([k, v]) => [k, dec.decode(v)]))
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 50))

t.test('last value wins, deletes stick, across a reopen', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-kv-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let { store, kv } = open(dir)
  kv.put('a/b', enc.encode('1'))
  kv.put('a/c', enc.encode('2'))
  kv.put('a/b', enc.encode('3'))
  kv.delete('a/c')
  store.close()
  ;({ store, kv } = open(dir))
  t.same(dump(kv), { 'a/b': '3' })
  store.close()
})

t.test('compaction: a new generation with the live entries; the old file deleted whole', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-kv-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let { store, kv } = open(dir)
  const big = new Uint8Array(10_000).fill(7)
  for (let i = 0; i < 500; i++) kv.put(`k${i % 10}`, big) // 5 MB written, 100 KB live
  const logs = (): string[] => readdirSync(`${dir}/mqtt/retained`).filter((f) => f.endsWith('.log'))
  // The old generation goes once the new one's fdatasync is done (in the background).
  for (let i = 0; i < 100 && logs().length > 1; i++) await settle()
  const files = logs()
  t.equal(files.length, 1, `one generation left (${files})`)
  t.ok(statSync(`${dir}/mqtt/retained/${files[0]}`).size < 2 * 1024 * 1024, 'bounded by twice the live data')
  store.close()
  ;({ store, kv } = open(dir))
  t.equal([...kv.entries()].length, 10)
  t.same(kv.get('k3'), big)
  store.close()
})

t.test('a torn tail and a flipped byte: logged, counted, the rest intact', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-kv-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let { store, kv } = open(dir)
  for (let i = 0; i < 10; i++) kv.put(`t/${i}`, enc.encode(`value-${i}`))
  store.close()
  const file = `${dir}/mqtt/retained/${readdirSync(`${dir}/mqtt/retained`)[0]}`
  const per = (statSync(file).size - 8) / 10
  truncateSync(file, statSync(file).size - 3)
  const b = readFileSync(file)
  b[8 + per * 4 + 12] ^= 0xff // inside record 4
  writeFileSync(file, b)
  const logs: string[] = []
  ;({ store, kv } = open(dir, logs))
  t.same(Object.keys(dump(kv)).sort(), ['t/0', 't/1', 't/2', 't/3', 't/5', 't/6', 't/7', 't/8'])
  t.match(logs.join('\n'), /record fails its checksum/)
  t.match(logs.join('\n'), /torn or damaged tail/)
  kv.put('t/9', enc.encode('again'))
  store.close()
  ;({ store, kv } = open(dir))
  t.equal(dec.decode(kv.get('t/9')!), 'again', 'appends after the cut are readable')
  store.close()
})
