// The entry point: pick the runtime module for whatever is running us, then start.

import process from 'node:process'
import { isBcryptWorker } from './bcrypt.ts'
import { bun, tuneAllocator } from './bun.ts'
import { deno } from './deno.ts'
import { node } from './node.ts'
import { main } from './run.ts'

// A bcrypt worker thread of the bundle or a compiled binary runs this same file: it only
// checks passwords (targets/bcrypt.ts).
if (!isBcryptWorker) {
  const g = globalThis as { Bun?: unknown; Deno?: unknown }
  if (g.Bun !== undefined) tuneAllocator()
  const rt = g.Bun !== undefined ? bun() : g.Deno !== undefined ? deno() : node()
  await main(rt, process.argv.slice(2))
}
