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
  /**
   * True when the wire holds no reference to anything written so far (all of it reached the
   * kernel), so the writer may reuse its buffer. Absent: never (the wire may keep the data).
   */
  idle?(): boolean
  /** Flush what was written, then close. */
  end(): void
  /** Close at once, dropping anything unsent. */
  destroy(): void
  readonly remoteAddress: string
  readonly remotePort: number
  /**
   * Set once a TLS handshake has completed on this wire (server side: the client's certificate,
   * if it sent one; client side: the hub's). Absent on plain TCP.
   */
  readonly tls?: PeerTls
  /**
   * Set on a WebSocket connection (targets/ws.ts): its TLS, certificate mapping and timeouts
   * are the `websocket` block's, not the protocol's own listener's.
   */
  readonly websocket?: true
  /**
   * Client side only (dialled wires with TLS configured): upgrade this plaintext connection to
   * TLS now, after the peer's plaintext INFO, as NATS does. Data keeps flowing to the same Conn.
   */
  startTls?(done: (err: string | null) => void): void
  /**
   * Stop reading from the socket until `resume()` (producer backpressure: the uplink stalls a
   * publisher while its queue to the hub is full). Data already read is still delivered.
   */
  pause?(): void
  resume?(): void
}

/** What a finished TLS handshake tells the adapters about the peer. */
export interface PeerTls {
  /** TLS version, e.g. "TLSv1.3". */
  readonly protocol: string
  /** The peer's certificate passed verification against the configured CA. */
  readonly authorized: boolean
  /** Certificate identities in the order the identity mapping chose (first one wins). */
  readonly identities: readonly string[]
  /** The subject DN in nats-server's format (e.g. "CN=device-42,O=Acme"), or '' without a certificate. */
  readonly subject: string
}

/**
 * Outgoing connections (the uplink). The target opens a socket (and TLS when asked: TLS-first
 * handshakes before `open` is called, otherwise the wire offers `startTls`); the core supplies
 * the Conn. `failed` is called instead of `open` when the connection cannot be made.
 */
export type Dial = (to: DialTarget, open: (wire: Wire) => Conn, failed: (reason: string) => void) => void

export interface DialTarget {
  readonly host: string
  readonly port: number
  /** null: plain TCP only (a hub that requires TLS is then an error). */
  readonly tls: import('./options.ts').TlsOptions | null
}

/** What a target calls on an adapter connection. */
export interface Conn {
  /**
   * Bytes read from the socket. The buffer is only valid during the call: Deno's native
   * listener and Node's plain listener (targets/net.ts useSharedReads) read the next bytes
   * into it, and on Bun and Deno's node:net it is detached (freed at once, targets/net.ts
   * releaseRead). Copy what you keep.
   */
  data(chunk: Uint8Array): void
  /** The socket accepted everything written so far. */
  drained(): void
  /** The socket is gone (peer closed, error, or our own end/destroy finished). */
  closed(reason?: string): void
}

/** Clock and scheduling. The server ticks itself through `every`. */
export interface Host {
  /**
   * Milliseconds on a monotonic clock (epoch-like at start, but never jumps with the wall
   * clock): every deadline, timeout and interval is measured on it.
   */
  now(): number
  /** The wall clock (ms since the epoch), for display only; absent: now() is shown. */
  wall?(): number
  /** Runs `fn` once the current batch of I/O callbacks has finished (a microtask is fine). */
  defer(fn: () => void): void
  /**
   * Runs `fn` once the runtime has handled every socket event of this event-loop turn
   * (setImmediate), so work from many reads is done once. Absent: `defer`.
   */
  soon?(fn: () => void): void
  every(ms: number, fn: () => void): { cancel(): void }
  /**
   * Asks the runtime for a full garbage collection, where it offers one (the memory budget,
   * after closing consumers, so their buffers are given back now rather than at some later
   * collection). Absent or a no-op elsewhere.
   */
  collect?(): void
}

/**
 * Checks passwords against bcrypt hashes away from the event loop (targets/bcrypt.ts: a pool
 * of worker threads). Without one, src/auth.ts checks on this thread, one at a time.
 */
export interface BcryptEngine {
  /** How many checks may run at once (the pool's threads). */
  readonly parallel: number
  /** Resolves true when `pass` matches `hash`; false on a mismatch or a failure. */
  compare(pass: string, hash: string): Promise<boolean>
}

/**
 * host.now() readings as ISO times for display: the monotonic clock shown on the wall clock,
 * by the offset between them now (one offset for everything one answer shows).
 */
export function wallClock(host: Host): (t: number) => string {
  const off = host.wall ? host.wall() - host.now() : 0
  return (t) => new Date(t + off).toISOString()
}

/** One host.now() reading as an ISO time for display. */
export function isoTime(host: Host, t: number): string {
  return wallClock(host)(t)
}

/**
 * File access for the store (src/store/), implemented once over node:fs in targets/files.ts
 * (Node, Bun, Deno and the compiled binaries). Calls are synchronous except sync(): the store
 * appends to the page cache at once and batches the slow part, fdatasync, per I/O turn or
 * interval (group commit). Errors are thrown as Error with a `code` (ENOSPC, EACCES, ...).
 */
export interface Files {
  /** Creates a directory and its parents; fine when it exists. */
  mkdir(path: string): void
  /** Names in a directory (not paths), or [] when it does not exist. */
  list(path: string): string[]
  /** Opens for reading and writing, created when missing; returns a descriptor. */
  open(path: string): number
  /** Opens for reading only (no create). */
  openRead(path: string): number
  /** Reads into `buf` from file position `pos`; returns bytes read (0 at the end). */
  read(fd: number, buf: Uint8Array, pos: number): number
  /** Writes all of `data` at file position `pos`. */
  write(fd: number, data: Uint8Array, pos: number): void
  size(fd: number): number
  truncate(fd: number, len: number): void
  /** fdatasync in the background; `done` gets the error text or null. */
  sync(fd: number, done: (err: string | null) => void): void
  close(fd: number): void
  remove(path: string): void
  /** A small file's text, or null when missing. */
  readText(path: string): string | null
  /** Replaces a small file (write a temporary file, fsync, rename). */
  writeText(path: string, text: string): void
  /** Creates `path` with `text` only when it does not exist; false when it does. */
  createOnly(path: string, text: string): boolean
  /** Whether a process with this id runs (the store's lock file names its owner). */
  alive(pid: number): boolean
  /** This process's id. */
  readonly pid: number
}
