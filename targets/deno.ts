// Deno: node:net listeners. TLS on Deno must go through node:tls anyway (Deno.listenTls
// cannot ask for client certificates), so one socket API serves both.

import { listenNet } from './net.ts'
import { standardHost, type Runtime } from './runtime.ts'

declare const Deno: { version: { deno: string } }

/** A function, not a constant: this module is also loaded (but not called) under Node and Bun. */
export function deno(): Runtime {
  return { name: `deno ${Deno.version.deno}`, host: standardHost, listen: listenNet }
}
