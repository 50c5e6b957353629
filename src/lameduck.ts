// Lame duck mode, as nats-server has it (SIGUSR2, or `sprig --signal ldm`): a broker about to
// go away stops accepting, tells the clients that can hear it (NATS: an INFO with `ldm: true`,
// so they reconnect elsewhere on their own time), waits lame_duck_grace_period, then closes
// the clients one by one spread over the rest of lame_duck_duration (MQTT 5 clients get
// DISCONNECT 0x8B Server shutting down; 3.1.1 ones are closed), so a fleet does not reconnect
// to the next server all at once. Then the uplink is flushed and the broker exits 0.

import type { Options } from './options.ts'
import type { Server } from './server.ts'
import type { Uplink } from './leaf/index.ts'

/** nats-server's rule: the grace period must end before the duration does. */
export function lameDuckProblem(o: Pick<Options, 'lame_duck_duration' | 'lame_duck_grace_period'>): string | null {
  if (o.lame_duck_grace_period >= o.lame_duck_duration) {
    return `lame_duck_grace_period (${o.lame_duck_grace_period}ms) must be lower than lame_duck_duration (${o.lame_duck_duration}ms)`
  }
  return null
}

/** What the target does for lame duck: the I/O parts. */
export interface LameDuckHooks {
  /** Close the client listeners (monitoring stays up: /healthz reports the phase). */
  stopAccepting(): void
  /** Every client is gone: flush, stop and exit. */
  finish(): void
}

/** How long the uplink gets to send what it holds once the clients are gone. */
export const UPLINK_FLUSH_MS = 5000

/**
 * Enters lame duck mode (once; a second call does nothing). Returns false when it already was.
 * Timers run on srv.host, so the schedule is the event loop's.
 */
export function enterLameDuck(srv: Server, hooks: LameDuckHooks): boolean {
  if (srv.phase === 'lame_duck') return false
  srv.phase = 'lame_duck'
  const o = srv.opts
  srv.log.info('Entering lame duck mode, stop accepting new clients')
  hooks.stopAccepting()
  for (const s of srv.sessions.values()) s.lameDuck?.()
  const grace = o.lame_duck_grace_period
  // nats-server: the closes are spread over the duration minus the grace period (at least 1 s).
  const span = Math.max(1000, o.lame_duck_duration - grace)
  once(srv, grace, () => {
    const list = [...srv.sessions.values()]
    if (list.length === 0) return hooks.finish()
    // One close per interval; with more clients than ms, several per (1 ms) interval.
    const interval = Math.max(1, Math.floor(span / list.length))
    const batch = Math.max(1, Math.ceil(list.length / span))
    srv.log.info(`Closing ${list.length} existing clients over ${span}ms`)
    let i = 0
    const t = srv.host.every(interval, () => {
      for (let n = 0; n < batch && i < list.length; i++) {
        const s = list[i]!
        if (!srv.sessions.has(s.cid)) continue // gone on its own
        s.shutdown()
        n++
      }
      if (i < list.length) return
      t.cancel()
      hooks.finish()
    })
  })
  return true
}

/**
 * Resolves once no connected remote holds buffered messages (they went up to the hub), or
 * after `ms`; a remote that is not connected cannot send and is not waited for.
 */
export function uplinkFlushed(srv: Server, uplink: Uplink | null, ms = UPLINK_FLUSH_MS): Promise<void> {
  const pending = (): boolean => uplink !== null && uplink.remotes.some((r) => r.state === 'connected' && r.buffer.length > 0)
  if (!pending()) return Promise.resolve()
  const end = srv.host.now() + ms
  return new Promise((resolve) => {
    const t = srv.host.every(50, () => {
      if (pending() && srv.host.now() < end) return
      t.cancel()
      resolve()
    })
  })
}

/** SIGHUP: new lame duck timings apply to the next lame duck (as nats-server reloads them). */
export function reloadLameDuck(srv: Server, next: Options): () => string[] {
  const keys = ['lame_duck_duration', 'lame_duck_grace_period'] as const
  return () => {
    const changed = keys.filter((k) => srv.opts[k] !== next[k])
    if (changed.length > 0) srv.opts = { ...srv.opts, lame_duck_duration: next.lame_duck_duration, lame_duck_grace_period: next.lame_duck_grace_period }
    return changed.map((k) => `${k}: ${next[k]}ms`)
  }
}

function once(srv: Server, ms: number, fn: () => void): void {
  const t = srv.host.every(Math.max(1, ms), () => {
    t.cancel()
    fn()
  })
}
