// What the core and the adapters need from the outside world. Each target (targets/*.ts)
// implements these with its runtime's sockets and timers; tests implement them with plain
// objects. Nothing under src/ or adapters/ may reach a socket, a timer or process directly.

/** One accepted byte stream (TCP, later TLS), as the target hands it to an adapter. */
export interface Wire {
  /**
   * Hands bytes to the socket. The target owns `data` from here on (the caller never reuses it).
   * Returns false when the socket is backpressured: the data is still accepted, but the caller
   * should not write again until `Conn.drained()` is called.
   */
  write(data: Uint8Array): boolean
  /** Bytes written that the socket has not sent yet (counted against max_pending). */
  buffered(): number
  /** Flush what was written, then close. */
  end(): void
  /** Close at once, dropping anything unsent. */
  destroy(): void
  readonly remoteAddress: string
  readonly remotePort: number
}

/** What a target calls on an adapter connection. */
export interface Conn {
  /** Bytes read from the socket. The buffer is only valid during the call. */
  data(chunk: Uint8Array): void
  /** The socket accepted everything written so far. */
  drained(): void
  /** The socket is gone (peer closed, error, or our own end/destroy finished). */
  closed(reason?: string): void
}

/** Clock and scheduling. The server ticks itself through `every`. */
export interface Host {
  now(): number
  /** Runs `fn` once the current batch of I/O callbacks has finished (a microtask is fine). */
  defer(fn: () => void): void
  every(ms: number, fn: () => void): { cancel(): void }
}
