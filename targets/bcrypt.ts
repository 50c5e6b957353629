// bcrypt password checks on worker threads, so a login never blocks the event loop: the
// BcryptEngine the server's fair queue (src/auth.ts) runs its checks on. node:worker_threads
// exists on Node, Bun and Deno alike. A worker runs this very module file: in the bundle
// (dist/sprig.js) and in a `bun build --compile` binary that is the whole program, which
// main.ts then does not start (isBcryptWorker); no separate worker file has to be shipped or
// found. Only Node running the TypeScript sources (the tests) cannot load this file without
// its loader hooks, which would take seconds per worker: there the worker is a few lines of
// JavaScript that load bcryptjs from node_modules.
//
// Workers are started on the first check (a broker without bcrypt users never has one) and
// ended after IDLE_MS without checks, and at shutdown: idle memory on a gateway counts.

import * as nodeModule from 'node:module' // not { createRequire }: the bundle's banner declares that name
import os from 'node:os'
import type { MessagePort, Worker } from 'node:worker_threads'
import type { BcryptEngine } from '../src/host.ts'
import type { Logger } from '../src/log.ts'
import { nodeWorkerThreads } from './lazy.ts'

const MARK = 'sprig-bcrypt-worker'

/**
 * This thread is a pool worker: it checks passwords and nothing else. Bun answers "main
 * thread" without node:worker_threads, which its binary then never loads unless bcrypt is used.
 */
export const isBcryptWorker = (globalThis as { Bun?: { isMainThread?: boolean } }).Bun?.isMainThread === true ? false : workerHere()

function workerHere(): boolean {
  const wt = nodeWorkerThreads()
  return !wt.isMainThread && wt.workerData === MARK
}

/** A worker's whole job; self-contained, as it also runs from its source text (workerScript). */
function serveChecks(port: MessagePort, lib: { compareSync(pass: string, hash: string): boolean }): void {
  port.on('message', (m: [number, string, string]) => {
    let ok = false
    try {
      ok = lib.compareSync(m[1], m[2])
    } catch {
      // a malformed hash is a mismatch
    }
    port.postMessage([m[0], ok])
  })
}

// bcryptjs is loaded only in a worker: the main thread never checks a hash itself.
if (isBcryptWorker) void import('bcryptjs').then((m) => serveChecks(nodeWorkerThreads().parentPort!, m.default))

/** How a worker is started here: this file, or (Node on the .ts sources) a script. */
function startWorker(): Worker {
  const { Worker } = nodeWorkerThreads()
  const self = new URL(import.meta.url)
  const g = globalThis as { Bun?: unknown; Deno?: unknown }
  if (!self.pathname.endsWith('.ts') || g.Bun !== undefined || g.Deno !== undefined) return new Worker(self, { workerData: MARK })
  const lib = nodeModule.createRequire(import.meta.url).resolve('bcryptjs')
  const script = `(${serveChecks.toString()})(require('node:worker_threads').parentPort, require(${JSON.stringify(lib)}))`
  return new Worker(script, { eval: true, execArgv: [], workerData: MARK })
}

/**
 * Workers end after this long without a check. A new one loads the program first (a few
 * hundred ms): a burst of device logins should not pay that twice.
 */
const IDLE_MS = 60_000

export interface BcryptPool extends BcryptEngine {
  /** Ends every worker (shutdown); later checks fail. */
  close(): void
}

/**
 * One thread per core, at most four (a gateway's broker has other work than logins; each
 * thread costs memory while it lives).
 */
export function poolSize(): number {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
  return Math.max(1, Math.min(4, cores))
}

interface Job {
  readonly id: number
  readonly pass: string
  readonly hash: string
  readonly done: (ok: boolean) => void
}

interface Slot {
  readonly w: Worker
  job: Job | null
  /** It has answered a check (so it loaded). */
  answered: boolean
}

export function bcryptPool(log: Logger, size = poolSize()): BcryptPool {
  const slots: Slot[] = []
  const queue: Job[] = []
  let nextId = 1
  let idle: ReturnType<typeof setTimeout> | null = null
  let closed = false
  let failedStart = false

  /** No worker can be had here (a runtime or sandbox without threads): checks stay on this thread. */
  const cannotStart = (why: string): null => {
    if (!failedStart) log.error(`bcrypt: cannot start a worker thread (${why}); checking passwords on the main thread`)
    failedStart = true
    return null
  }

  const spawn = (): Slot | null => {
    if (failedStart) return null
    let w: Worker
    try {
      w = startWorker()
    } catch (e) {
      return cannotStart((e as Error).message)
    }
    w.unref() // never what keeps the process alive
    const slot: Slot = { w, job: null, answered: false }
    w.on('message', (m: [number, boolean]) => {
      slot.answered = true
      const job = slot.job
      if (job === null || job.id !== m[0]) return
      slot.job = null
      job.done(m[1] === true)
      next()
    })
    const lost = (why: string): void => {
      const i = slots.indexOf(slot)
      if (i < 0) return
      slots.splice(i, 1)
      // One that never answered could not load: starting more would fail the same way.
      if (!slot.answered) cannotStart(why)
      else if (!closed) log.error(`bcrypt: worker thread ended: ${why}`)
      const job = slot.job
      slot.job = null
      if (job !== null) {
        if (closed) job.done(false)
        // Never loaded: its job goes back to the queue (now checked on this thread). A worker
        // that did work and died on this job refuses it: a hash that kills one must not kill all.
        else if (!slot.answered) queue.unshift(job)
        else job.done(false)
      }
      next()
    }
    w.on('error', (e: Error) => lost(e.message))
    w.on('exit', (code: number) => lost(`exit code ${code}`))
    slots.push(slot)
    log.debug(() => `bcrypt: worker thread ${slots.length} of ${size} started`)
    return slot
  }

  const run = (slot: Slot, job: Job): void => {
    slot.job = job
    slot.w.postMessage([job.id, job.pass, job.hash])
  }

  /** Gives waiting jobs to free workers (starting them as needed); arms the idle timer when all is done. */
  const next = (): void => {
    while (queue.length > 0 && !closed) {
      const slot = slots.find((s) => s.job === null) ?? (slots.length < size ? spawn() : undefined)
      if (slot === undefined) return // all busy: the next answer comes back here
      const job = queue.shift()!
      if (slot === null) {
        // No worker could be started: on this thread, as without a pool.
        import('bcryptjs').then((m) => m.default.compare(job.pass, job.hash)).then(job.done, () => job.done(false))
        continue
      }
      run(slot, job)
    }
    if (queue.length === 0 && slots.length > 0 && slots.every((s) => s.job === null)) {
      if (idle !== null) clearTimeout(idle)
      idle = setTimeout(end, IDLE_MS)
      ;(idle as { unref?(): void }).unref?.()
    }
  }

  const end = (): void => {
    idle = null
    if (slots.length > 0) log.debug(() => `bcrypt: ${slots.length} worker threads ended`)
    for (const s of slots.splice(0)) {
      s.job?.done(false)
      void s.w.terminate()
    }
  }

  return {
    parallel: size,
    compare(pass, hash) {
      if (closed) return Promise.resolve(false)
      if (idle !== null) {
        clearTimeout(idle)
        idle = null
      }
      return new Promise<boolean>((done) => {
        queue.push({ id: nextId++, pass, hash, done })
        next()
      })
    },
    close() {
      closed = true
      if (idle !== null) clearTimeout(idle)
      end()
      for (const j of queue.splice(0)) j.done(false)
    },
  }
}
