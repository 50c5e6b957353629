// Node: sprig keeps V8's young generation at its starting size (targets/runtime.ts
// steadyYoungGeneration), so an accept burst does not leave ~6 KB of RSS per connection in a
// grown new space. The bundle runs on Node inside a wrapper that, once the broker is up,
// makes 300 MB of short-lived garbage and reports the new space's size; SPRIG_V8_YOUNG=grow
// (V8's default) must let it grow, or the check proves nothing.

import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freshBundle } from './helpers/bins.ts'
import { freePort } from './helpers/peers.ts'

const WRAPPER = `
import v8 from 'node:v8'
const bundle = process.env.YOUNG_BUNDLE
const ns = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size
console.log('NEW_SPACE_START ' + ns())
setTimeout(() => {
  console.log('NEW_SPACE_BEFORE ' + ns())
  const keep = []
  for (let r = 0; r < 60; r++) {
    const a = []
    for (let i = 0; i < 100000; i++) a.push({ i, s: 'x' + i })
    keep.push(a[r])
  }
  console.log('NEW_SPACE ' + ns())
  process.exit(0)
}, 1500)
await import(bundle)
`

function newSpace(bundle: string, env: NodeJS.ProcessEnv): Promise<{ size: number; out: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'sprig-young-'))
  const wrapper = join(dir, 'wrapper.mjs')
  writeFileSync(wrapper, WRAPPER)
  return freePort().then(
    (port) =>
      new Promise((resolve, reject) => {
        // Through bash, which clears NODE_OPTIONS: tap puts its process-info loader back into
        // every child's environment, and that loader's start-up grows the young generation
        // before sprig runs.
        const args = ['-c', 'NODE_OPTIONS= exec "$0" "$@"', process.execPath, wrapper, '-a', '127.0.0.1', '-p', String(port), '--mqtt-port', '0']
        const p = spawn('bash', args, {
          env: { ...process.env, NODE_OPTIONS: '', YOUNG_BUNDLE: bundle, ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        })
        let out = ''
        p.stdout.on('data', (d) => (out += d))
        p.stderr.on('data', (d) => (out += d))
        const timer = setTimeout(() => p.kill('SIGKILL'), 20_000)
        p.on('error', reject)
        p.on('exit', () => {
          clearTimeout(timer)
          const m = /NEW_SPACE (\d+)/.exec(out)
          resolve({ size: m ? Number(m[1]) : -1, out })
        })
      }),
  )
}

t.test('the young generation stays at its starting size on Node; SPRIG_V8_YOUNG=grow lets it grow', async (t) => {
  const bundle = freshBundle()
  const steady = await newSpace(bundle, { SPRIG_V8_YOUNG: '' })
  t.match(steady.out, /Server is ready/, 'the broker started')
  t.ok(steady.size > 0, 'the wrapper reported the new space')
  t.comment(steady.out.split('\n').filter((l) => l.startsWith('NEW_SPACE')).join(' '))
  t.ok(steady.size <= 4 << 20, `new space ${steady.size} bytes after 300 MB of garbage (≤ 4 MiB)`)
  const grown = await newSpace(bundle, { SPRIG_V8_YOUNG: 'grow' })
  t.ok(grown.size > 8 << 20, `with SPRIG_V8_YOUNG=grow V8 grows it (${grown.size} bytes)`)
})
