// Where the runtimes the tests and the benchmark start live. Bun comes from the npm package
// `bun` (node_modules/.bin/bun). Deno comes from its platform package (@deno/linux-x64-glibc):
// our registry lacks the other platforms' packages, so the `deno` wrapper package cannot be
// locked for `npm ci`. A deno or bun on PATH is the fallback.

import { accessSync, constants, existsSync, readdirSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { spawnSync } from 'node:child_process'
import { buildSync } from 'esbuild'

const root = resolve(import.meta.dirname, '..', '..')

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK)
    return true
  } catch {
    return false
  }
}

function onPath(cmd: string): string {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : ''
}

/** Absolute path of the runtime's binary, or '' when it is not installed. */
export function runtimeBin(name: 'node' | 'bun' | 'deno'): string {
  if (name === 'node') return process.execPath
  const arch = process.arch === 'arm64' ? 'arm64' : 'x64'
  const candidates =
    name === 'bun' ? [join(root, 'node_modules/.bin/bun')] : [join(root, `node_modules/@deno/linux-${arch}-glibc/deno`), join(root, 'node_modules/.bin/deno')]
  return candidates.find(executable) ?? onPath(name)
}

/** Newest modification time of the sources that go into the bundle and the binaries. */
export function newestSource(): number {
  let newest = 0
  for (const dir of ['src', 'adapters', 'targets']) {
    for (const f of readdirSync(join(root, dir), { recursive: true, encoding: 'utf8' })) {
      newest = Math.max(newest, statSync(join(root, dir, f)).mtimeMs)
    }
  }
  return newest
}

/** dist/sprig.js, built first when it is missing or older than the sources. */
export function freshBundle(): string {
  const bundle = join(root, 'dist', 'sprig.js')
  if (existsSync(bundle) && statSync(bundle).mtimeMs >= newestSource()) return bundle
  const r = spawnSync('npm', ['run', '--silent', 'bundle'], { cwd: root, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`npm run bundle failed: ${r.stderr}`)
  return bundle
}

/**
 * A bundle of the tree as it is, at `outfile`, for a test that must not race other tests over
 * dist/sprig.js: the same esbuild settings as `npm run bundle`.
 */
export function privateBundle(outfile: string): string {
  buildSync({
    entryPoints: [join(root, 'targets/main.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    outfile,
    alias: { debug: './targets/shims/debug.cjs', bl: './targets/shims/bl.cjs' },
    absWorkingDir: root,
    logLevel: 'silent',
    banner: { js: 'import { createRequire } from "node:module"; const require = createRequire(import.meta.url);' },
  })
  return outfile
}
