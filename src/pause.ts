// Producer backpressure: pausing a publisher's reads. Several holders may pause one publisher
// at once (the memory budget, each uplink, each stalled subscriber queue, a fan-out's yield);
// each keeps a Paused set, and the socket is read again only when the last of them lets go.

import type { Host, Wire } from './host.ts'

/** Publishers' wires paused, with how many holders hold each. */
const pausedBy = new Map<Wire, number>()

/** Stops reading `w`; counted, so one holder's resume does not undo another's pause. */
export function pauseWire(w: Wire): void {
  const n = pausedBy.get(w) ?? 0
  pausedBy.set(w, n + 1)
  if (n === 0) w.pause?.()
}

/** Undoes one pauseWire(); the socket is read again once nobody holds it. */
export function resumeWire(w: Wire): void {
  const n = (pausedBy.get(w) ?? 1) - 1
  if (n > 0) pausedBy.set(w, n)
  else {
    pausedBy.delete(w)
    w.resume?.()
  }
}

/** The publishers one holder has paused, released together. */
export class Paused {
  private readonly wires = new Set<Wire>()
  /** When the first of the publishers held now was paused (the `now` given to add()). */
  since = 0

  get size(): number {
    return this.wires.size
  }

  /**
   * Pauses `w` for this holder; false (nothing done) when it has no socket to pause (the
   * uplink's hub traffic, sprig's own services) or this holder already pauses it.
   */
  add(w: Wire | undefined, now = 0): boolean {
    if (w === undefined || w.pause === undefined || this.wires.has(w)) return false
    if (this.wires.size === 0) this.since = now
    this.wires.add(w)
    pauseWire(w)
    return true
  }

  /** Lets go of every publisher this holder paused. */
  releaseAll(): void {
    for (const w of this.wires) resumeWire(w)
    this.wires.clear()
  }
}

/**
 * Bytes of deliveries one read from a publisher may cause before its socket yields: it is
 * read again on the next turn of the event loop, after the other sockets. A publisher whose
 * subject has hundreds of subscribers otherwise keeps the loop for many reads in a row while
 * everyone else waits (the runtime reads a ready socket up to 32 times per turn).
 */
export const FANOUT_PER_READ = 1024 * 1024

/** Pauses `w` until the next turn of the event loop (a timer, so other sockets' reads come first). */
export function yieldTurn(host: Host, w: Wire): void {
  if (w.pause === undefined) return
  pauseWire(w)
  const t = host.every(0, () => {
    t.cancel()
    resumeWire(w)
  })
}

