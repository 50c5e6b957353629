// A long-lived raw TCP connection to a NATS-protocol server, for tests that need to watch
// what arrives over time, stop reading (to build backpressure), or see when the server
// closes the connection. exchange() in raw.ts is the one-shot version.

import net from 'node:net'

export class RawConn {
  readonly sock: net.Socket
  /** Everything received so far, latin1 (INFO included). */
  text = ''
  /** Bytes received so far. */
  received = 0
  closed = false
  info: Record<string, unknown> | null = null
  private readonly closedP: Promise<void>
  private waiters: (() => void)[] = []

  private constructor(sock: net.Socket, keepText: boolean) {
    this.sock = sock
    sock.on('error', () => {})
    this.closedP = new Promise((r) => sock.once('close', () => {
      this.closed = true
      r()
      this.wake()
    }))
    sock.on('data', (d: Buffer) => {
      this.received += d.length
      if (keepText || this.info === null) this.text += d.toString('latin1')
      if (this.info === null) {
        const i = this.text.indexOf('\r\n')
        if (i >= 0 && this.text.startsWith('INFO ')) this.info = JSON.parse(this.text.slice(5, i)) as Record<string, unknown>
      }
      this.wake()
    })
  }

  /**
   * Connects and waits for INFO. `keepText: false` keeps only a byte count after INFO (for floods).
   * `rcvbuf` is not settable from Node, so a flood needs enough data to fill the kernel buffers.
   */
  static async open(port: number, opts: { keepText?: boolean } = {}): Promise<RawConn> {
    const sock = net.connect(port, '127.0.0.1')
    const c = new RawConn(sock, opts.keepText ?? true)
    await c.until(() => c.info !== null || c.closed, 3000, 'INFO')
    if (c.info === null) throw new Error(`no INFO; got ${JSON.stringify(c.text)}`)
    return c
  }

  private wake(): void {
    for (const w of [...this.waiters]) w()
  }

  write(s: string | Uint8Array): void {
    if (!this.closed) this.sock.write(s)
  }

  /** Text after the INFO line. */
  get after(): string {
    const i = this.text.indexOf('\r\n')
    return i < 0 ? '' : this.text.slice(i + 2)
  }

  /** Stop reading from the socket: the kernel buffers fill and the server sees backpressure. */
  pause(): void {
    this.sock.pause()
  }

  resume(): void {
    this.sock.resume()
  }

  /** Resolves once `cond` holds; rejects after `ms` naming `what`. */
  until(cond: () => boolean, ms: number, what = 'condition'): Promise<void> {
    if (cond()) return Promise.resolve()
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (cond()) {
          clearTimeout(timer)
          this.waiters = this.waiters.filter((w) => w !== check)
          resolve()
        }
      }
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== check)
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; received ${JSON.stringify(this.after.slice(-300))}, closed=${this.closed}`))
      }, ms)
      this.waiters.push(check)
    })
  }

  /** Waits until the received text contains `s`. */
  waitFor(s: string, ms = 2000): Promise<void> {
    return this.until(() => this.after.includes(s), ms, JSON.stringify(s))
  }

  /** Waits for the server to close the connection; false if it did not within `ms`. */
  async waitClosed(ms = 3000): Promise<boolean> {
    await Promise.race([this.closedP, new Promise((r) => setTimeout(r, ms))])
    return this.closed
  }

  /** Sends PING and waits for the PONG that answers it (counting PONGs seen so far). */
  async ping(ms = 2000): Promise<void> {
    const before = count(this.after, 'PONG\r\n')
    this.write('PING\r\n')
    await this.until(() => count(this.after, 'PONG\r\n') > before, ms, 'PONG')
  }

  destroy(): void {
    this.sock.destroy()
  }
}

export function count(hay: string, needle: string): number {
  let n = 0
  let i = hay.indexOf(needle)
  while (i >= 0) {
    n++
    i = hay.indexOf(needle, i + needle.length)
  }
  return n
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
