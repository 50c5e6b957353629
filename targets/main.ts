// The entry point: pick the runtime module for whatever is running us, then start.

import process from 'node:process'
import { bun } from './bun.ts'
import { deno } from './deno.ts'
import { node } from './node.ts'
import { main } from './run.ts'

const g = globalThis as { Bun?: unknown; Deno?: unknown }
const rt = g.Bun !== undefined ? bun() : g.Deno !== undefined ? deno() : node()
await main(rt, process.argv.slice(2))
