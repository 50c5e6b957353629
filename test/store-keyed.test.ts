// The store's keyed latest-value log (src/store/keyed.ts), in process over real files: latest
// value per key across a reopen, tombstones, leading dead segments deleted, compaction past half
// dead bytes, max_bytes, and damaged records skipped and counted. (MQTT over it, with real
// kills: mqtt-store.test.ts.)

import t from 'tap'
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createLogger } from '../src/log.ts'
import { KeyedFile } from '../src/store/keyed.ts'
import { Store } from '../src/store/store.ts'
import { nodeFiles } from '../targets/files.ts'
import { node } from '../targets/node.ts'

const MB = 1024 * 1024

function open(dir: string, max = 64 * MB, o = { segMax: 64 * 1024, compactMin: 128 * 1024 }): { store: Store; kv: KeyedFile; logs: string[] } {
  const logs: string[] = []
  const log = createLogger({ level: 'info', time: false, sink: (l) => logs.push(l) })
  const store = Store.open({ dir, sync_interval: 0, max_bytes: max }, nodeFiles, node().host, log)
  return { store, kv: new KeyedFile(store, `${dir}/kv`, o), logs }
}

const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : Buffer.from(b).toString())
const segs = (dir: string): string[] => readdirSync(path.join(dir, 'kv')).filter((n) => n.endsWith('.kv')).sort()

t.test('latest value per key and tombstones survive a reopen; compaction and whole-segment deletes keep it bounded', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-kv-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let { store, kv } = open(dir)
  const big = 'x'.repeat(900)
  // A queue that drains: puts then deletes of the oldest, and a few keys overwritten often.
  for (let i = 0; i < 3000; i++) {
    kv.put(`m/${i}`, Buffer.from(`${i}:${big}`))
    if (i >= 20) kv.delete(`m/${i - 20}`)
    kv.put(`s/${i % 5}`, Buffer.from(`v${i}`))
  }
  kv.put('gone', Buffer.from('soon'))
  kv.delete('gone')
  t.equal(kv.size, 25, '20 queued + 5 overwritten')
  t.ok(kv.bytes < 512 * 1024, `bounded on disk: ${kv.bytes} bytes for 3000 x 1 KB written`)
  t.ok(segs(dir).length <= 8, `${segs(dir).length} segments`)
  kv.put('kept', Buffer.from('yes'))
  await new Promise((r) => store.afterSync(() => r(undefined)))
  store.close()
  ;({ store, kv } = open(dir))
  t.teardown(() => store.close())
  t.equal(text(kv.get('s/4')), 'v2999', 'last value wins after a reopen')
  t.equal(text(kv.get('m/2999'))?.slice(0, 5), '2999:', 'the queue tail is there')
  t.equal(kv.get('m/2979'), undefined, 'deleted entries stay deleted')
  t.equal(kv.get('gone'), undefined, 'a tombstone hides the put before it')
  t.equal(text(kv.get('kept')), 'yes')
  t.equal(kv.size, 26)
  t.equal(store.recovery.corrupt_records, 0)
})

t.test('compaction rewrites only live records, then deletes the old segments', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-kv-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let { store, kv } = open(dir)
  // A long-lived key at the front keeps the first segment alive; the rest churns.
  kv.put('pinned', Buffer.from('p'))
  for (let i = 0; i < 3000; i++) kv.put(`k/${i % 300}`, Buffer.alloc(500, i % 256))
  // The compaction's fdatasync, then the deletes, then the next one for what churned meanwhile.
  for (let i = 0; i < 50 && kv.dead > kv.bytes / 2; i++) await new Promise((r) => setTimeout(r, 20))
  t.ok(kv.compactions > 0, `${kv.compactions} compactions`)
  t.ok(kv.dead <= kv.bytes / 2 + 64 * 1024, `dead ${kv.dead} of ${kv.bytes}`)
  t.equal(text(kv.get('pinned')), 'p')
  t.equal(kv.get('k/3')![0], 2703 % 256)
  const sizes = segs(dir).map((n) => statSync(path.join(dir, 'kv', n)).size)
  t.ok(sizes.length > 2 && sizes.every((s) => s <= 64 * 1024), `the copy is cut into segments of segMax too: ${sizes.join(', ')}`)
  store.close()
  ;({ store, kv } = open(dir))
  t.teardown(() => store.close())
  t.equal(kv.size, 301, 'every live key after a reopen')
  t.equal(kv.get('k/299')![0], 2999 % 256)
})

t.test('max_bytes: a put over the bound is refused and counted, deletes still go', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-kv-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { store, kv, logs } = open(dir, 1 * MB, { segMax: 64 * 1024, compactMin: 16 * MB })
  t.teardown(() => store.close())
  let ok = 0
  for (let i = 0; i < 2000; i++) if (kv.put(`k/${i}`, Buffer.alloc(1000))) ok++
  t.ok(ok > 500 && ok < 1100, `${ok} stored under 1 MB`)
  t.equal(kv.refused, 2000 - ok)
  t.ok(kv.bytes <= 1 * MB)
  t.equal(logs.filter((l) => /max_bytes/.test(l)).length, 1, 'logged once per episode')
  for (let i = 0; i < 100; i++) kv.delete(`k/${i}`)
  t.equal(kv.size, ok - 100)
})

t.test('a record that fails its checksum is skipped and counted; a torn tail is cut off', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'sprig-kv-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let { store, kv, logs } = open(dir)
  kv.put('a', Buffer.from('first'))
  kv.put('b', Buffer.from('MARKER-b'))
  kv.put('c', Buffer.from('third'))
  store.close()
  const file = path.join(dir, 'kv', segs(dir)[0]!)
  const bytes = readFileSync(file)
  const at = bytes.indexOf('MARKER-b')
  bytes[at + 2] ^= 0xff
  writeFileSync(file, bytes)
  appendFileSync(file, Buffer.from([40, 0, 0, 0, 1, 2])) // a record cut mid-header
  ;({ store, kv, logs } = open(dir))
  t.teardown(() => store.close())
  t.equal(text(kv.get('a')), 'first', 'before the damage: intact')
  t.equal(kv.get('b'), undefined, 'the damaged record is skipped')
  t.equal(text(kv.get('c')), 'third', 'after it: intact')
  t.equal(store.recovery.corrupt_records, 1, 'counted')
  t.equal(store.recovery.truncated_bytes, 6, 'the torn tail is cut off')
  t.match(logs.join('\n'), new RegExp(`${segs(dir)[0]} at offset \\d+: record fails its checksum`), 'logged with file and offset')
  kv.put('d', Buffer.from('after'))
  t.equal(text(kv.get('d')), 'after', 'writes go on after the cut')
})
