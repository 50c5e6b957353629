// The import graph (scripts/cycles.mjs, also `npm run cycles`): no import cycles among
// src/, adapters/ and targets/ beyond the known ones listed there, and the layer rule.

import t, { type Test } from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
// @ts-expect-error: a plain .mjs script without type declarations
import { check, KNOWN } from '../scripts/cycles.mjs'

type Report = { problems: string[]; knownLeft: string[]; files: number }
const run = check as (root: string, known?: readonly string[]) => Report

t.test('the repository has no new import cycles and keeps its layers', async (t) => {
  const r = run(join(import.meta.dirname, '..'))
  t.ok(r.files > 40, `${r.files} files read`)
  t.same(r.problems, [], r.problems.join('\n'))
  // Once the known MQTT cycle is gone, KNOWN must be emptied too, so it cannot hide a new one.
  if (r.knownLeft.length === 0) t.same(KNOWN, [], 'no known cycle left: empty KNOWN in scripts/cycles.mjs')
})

function tree(t: Test, files: Record<string, string>): string {
  const root = t.testdir({})
  for (const [f, text] of Object.entries(files)) {
    mkdirSync(join(root, f, '..'), { recursive: true })
    writeFileSync(join(root, f), text)
  }
  for (const d of ['src', 'adapters', 'targets']) mkdirSync(join(root, d), { recursive: true })
  return root
}
t.test('finds a cycle and prints its path', async (t) => {
  const root = tree(t, {
    'src/a.ts': "import { b } from './b.ts'\nexport const a = 1",
    'src/b.ts': "import { c } from './sub/c.ts'\nexport const b = 1",
    'src/sub/c.ts': "export { a } from '../a.ts'",
    'src/d.ts': "// import { a } from './a.ts'\nexport const d = 1",
  })
  const r = run(root, [])
  t.same(r.problems, ['import cycle: src/a.ts -> src/b.ts -> src/sub/c.ts -> src/a.ts'])
})

t.test('type-only imports make no cycle; dynamic imports do', async (t) => {
  const root = tree(t, {
    'src/a.ts': "import type { B } from './b.ts'\nimport { type C } from './c.ts'\nexport const a = 1",
    'src/b.ts': "import { a } from './a.ts'\nexport type B = number\nlet x: import('./a.ts').A",
    'src/c.ts': "import { a } from './a.ts'\nexport type C = number",
    'src/d.ts': "const e = await import('./e.ts')",
    'src/e.ts': "import './d.ts'",
  })
  t.same(run(root, []).problems, ['import cycle: src/d.ts -> src/e.ts -> src/d.ts'])
})

t.test('known edges excuse their cycle only', async (t) => {
  const files = {
    'adapters/mqtt/x.ts': "import { y } from './y.ts'",
    'adapters/mqtt/y.ts': "import { x } from './x.ts'",
  }
  const known = ['adapters/mqtt/y.ts -> adapters/mqtt/x.ts']
  const r = run(tree(t, files), known)
  t.same(r.problems, [])
  t.same(r.knownLeft, ['adapters/mqtt/x.ts -> adapters/mqtt/y.ts -> adapters/mqtt/x.ts'])
  const r2 = run(tree(t, { ...files, 'adapters/mqtt/z.ts': "import { x } from './x.ts'", 'adapters/mqtt/x.ts': "import './y.ts'\nimport './z.ts'" }), known)
  t.same(r2.problems, ['import cycle: adapters/mqtt/x.ts -> adapters/mqtt/z.ts -> adapters/mqtt/x.ts'])
})

t.test('the layer rule, type imports included', async (t) => {
  const root = tree(t, {
    'src/a.ts': "import type { N } from '../adapters/nats/n.ts'",
    'src/b.ts': "import { listen } from '../targets/t.ts'",
    'adapters/nats/n.ts': "import { m } from '../mqtt/m.ts'\nexport type N = 1",
    'adapters/mqtt/m.ts': "import { t } from '../../targets/t.ts'\nimport { a } from '../../src/a.ts'",
    'targets/t.ts': "import { m } from '../adapters/mqtt/m.ts'\nimport { a } from '../src/a.ts'",
  })
  const r = run(root, [])
  t.same(r.problems.filter((p) => !p.startsWith('import cycle')), [
    'adapters/mqtt/m.ts imports targets/t.ts: adapters/ import no targets/',
    'adapters/nats/n.ts imports adapters/mqtt/m.ts: the nats and mqtt adapters do not import each other (shared rules live in src/)',
    'src/a.ts imports adapters/nats/n.ts: src/ imports neither adapters/ nor targets/',
    'src/b.ts imports targets/t.ts: src/ imports neither adapters/ nor targets/',
  ])
})
