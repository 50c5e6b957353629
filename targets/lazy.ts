// Node built-ins that only some configurations use, loaded on their first use. Bun builds
// each built-in module when it is imported, used or not: in the compiled binary node:http
// alone adds ~2.7 MB of RSS, and node:tls, node:crypto, node:vm and node:child_process about
// 2 MB more together (docs/benchmarks.md, idle memory). A gateway with no monitoring port, no
// TLS and no systemd pays for none of them. node:worker_threads and node:v8 together cost the
// binary ~0.7 MiB of idle RSS (cold start) that a broker without bcrypt users or systemd never used.

import * as nodeModule from 'node:module' // not { createRequire }: the bundle's banner declares that name

const load = nodeModule.createRequire(import.meta.url)
const cache = new Map<string, unknown>()

function once<T>(name: string): () => T {
  return () => {
    let m = cache.get(name)
    if (m === undefined) cache.set(name, (m = load(name)))
    return m as T
  }
}

export const nodeHttp = once<typeof import('node:http')>('node:http')
export const nodeTls = once<typeof import('node:tls')>('node:tls')
export const nodeCrypto = once<typeof import('node:crypto')>('node:crypto')
export const nodeVm = once<typeof import('node:vm')>('node:vm')
export const nodeChildProcess = once<typeof import('node:child_process')>('node:child_process')
/** Worker threads: bcrypt checks and systemd-notify only (and, off Bun, asking whether this thread is a worker). */
export const nodeWorkerThreads = once<typeof import('node:worker_threads')>('node:worker_threads')
/** Bun's foreign-function interface: only to hand start-up's code pages back (targets/pageout.ts). */
export const bunFfi = once<BunFfi>('bun:ffi')
/** What targets/pageout.ts uses of bun:ffi (Bun's types are not installed). */
export interface BunFfi {
  dlopen(lib: string, symbols: Record<string, { args: string[]; returns: string }>): { symbols: Record<string, (...a: (number | bigint)[]) => number>; close(): void }
}
/** JavaScriptCore's controls: Bun only, to keep the tick and the ping's path out of the top tier (targets/bun.ts). */
export const bunJsc = once<BunJsc>('bun:jsc')
export interface BunJsc {
  noFTL(fn: Function): unknown
  noInline(fn: Function): unknown
}
/** V8's flags: Node (and Deno) only; Bun is not V8. */
export const nodeV8 = once<typeof import('node:v8')>('node:v8')
