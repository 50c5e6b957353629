// The leafnode protocol as a hub sends it: INFO, PING, PONG, +OK, -ERR, LS+, LS-, LMSG, HMSG
// (grammar in docs/leafnode-protocol.md). Bytes in, one callback per
// operation out. Frames may split anywhere (TLS records do), so an incomplete frame is kept
// until the rest arrives; every kept frame is bounded (line length, payload size).

import type { Budget } from '../budget.ts'
import { concat, copyOf, text } from '../bytes.ts'

export interface LeafHandler {
  info(json: string): void
  ping(): void
  pong(): void
  err(text: string): void
  sub(subject: string, queue: string | null, weight: number): void
  unsub(subject: string, queue: string | null): void
  /** `queues` null: no queue list (plain subscribers only). Payload bytes are valid during the call. */
  msg(subject: string, reply: string, queues: string[] | null, hdr: Uint8Array | null, payload: Uint8Array): void
}

const CR = 13
const LF = 10

export class LeafParser {
  /**
   * The start of a frame whose rest has not arrived, as the chunks it came in (copies); charged
   * to `budget` while held. Joined once, when the frame can be complete: re-joining on every
   * chunk would copy a large payload split in many reads quadratically often.
   */
  private parts: Uint8Array[] = []
  private held = 0
  /** Bytes the held frame needs in all (a message whose size is known); 0: a line, until its LF. */
  private need = 0
  /** Set by message() when it returns -1: where the waiting frame ends in the current buffer. */
  private frameEnd = 0
  /** The memory budget (src/budget.ts), when there is one. */
  budget: Budget | null = null

  constructor(
    private readonly h: LeafHandler,
    private readonly maxLine: number,
    /** Raised to the hub's max_payload once its INFO is in. */
    public maxPayload: number,
  ) {}

  /** Feeds bytes; returns an error text when the stream is malformed (then stop feeding). */
  feed(chunk: Uint8Array): string | null {
    let buf = chunk
    if (this.held > 0) {
      const enough = this.need > 0 ? this.held + chunk.length >= this.need : chunk.indexOf(LF) >= 0
      if (!enough) {
        if (this.need === 0 && this.held + chunk.length > this.maxLine) return 'control line too long'
        this.hold(copyOf(chunk))
        return null
      }
      buf = this.join(chunk)
    }
    let pos = 0
    let need = 0
    while (pos < buf.length) {
      const nl = buf.indexOf(LF, pos)
      if (nl < 0) {
        if (buf.length - pos > this.maxLine) return 'control line too long'
        break
      }
      if (nl - pos > this.maxLine) return 'control line too long'
      const end = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl
      const line = text(buf, pos, end)
      const r = this.op(line, buf, nl + 1)
      if (typeof r === 'string') return r
      if (r < 0) {
        need = this.frameEnd - pos // a message whose payload has not fully arrived
        break
      }
      pos = r
    }
    if (pos < buf.length) {
      this.hold(copyOf(buf.subarray(pos)))
      this.need = need
    }
    return null
  }

  /** Drops a partly received frame (the link is gone, or its rest arrived). */
  release(): void {
    if (this.held === 0) return
    this.budget?.charge(-this.held)
    this.parts = []
    this.held = 0
    this.need = 0
  }

  private hold(b: Uint8Array): void {
    this.parts.push(b)
    this.held += b.length
    this.budget?.charge(b.length)
  }

  /** The held parts and `chunk` as one buffer; releases the parts. */
  private join(chunk: Uint8Array): Uint8Array {
    let out: Uint8Array
    if (this.parts.length === 1) out = concat(this.parts[0]!, chunk)
    else {
      out = new Uint8Array(this.held + chunk.length)
      let at = 0
      for (const p of this.parts) {
        out.set(p, at)
        at += p.length
      }
      out.set(chunk, at)
    }
    this.release()
    return out
  }

  /** Handles one line; returns where the next frame starts, -1 to wait for more, or an error. */
  private op(line: string, buf: Uint8Array, next: number): number | string {
    const sp = line.search(/[ \t]/)
    const name = (sp < 0 ? line : line.slice(0, sp)).toUpperCase()
    const rest = sp < 0 ? '' : line.slice(sp + 1).trim()
    switch (name) {
      case 'PING':
        this.h.ping()
        return next
      case 'PONG':
        this.h.pong()
        return next
      case '+OK':
        return next
      case '-ERR':
        this.h.err(rest.replace(/^'|'$/g, ''))
        return next
      case 'INFO':
        this.h.info(rest)
        return next
      case 'LS+':
      case 'LS-': {
        const a = rest.split(/[ \t]+/).filter((x) => x !== '')
        if (name === 'LS+') {
          if (a.length === 1) this.h.sub(a[0]!, null, 1)
          else if (a.length === 3 && /^\d+$/.test(a[2]!)) this.h.sub(a[0]!, a[1]!, Number(a[2]))
          else return `malformed LS+: ${line}`
        } else {
          if (a.length === 1) this.h.unsub(a[0]!, null)
          else if (a.length === 2) this.h.unsub(a[0]!, a[1]!)
          else return `malformed LS-: ${line}`
        }
        return next
      }
      case 'LMSG':
      case 'HMSG':
        return this.message(name === 'HMSG', rest, line, buf, next)
      case '':
        return next // tolerate blank lines
      default:
        return `unknown operation: ${line.slice(0, 64)}`
    }
  }

  private message(headers: boolean, rest: string, line: string, buf: Uint8Array, next: number): number | string {
    const a = rest.split(/[ \t]+/).filter((x) => x !== '')
    const sizes = headers ? 2 : 1
    if (a.length < 1 + sizes) return `malformed message: ${line}`
    const nums = a.slice(a.length - sizes)
    if (!nums.every((n) => /^\d+$/.test(n))) return `malformed message size: ${line}`
    const head = a.slice(0, a.length - sizes)
    const subject = head[0]!
    let reply = ''
    let queues: string[] | null = null
    if (head.length === 2) reply = head[1]!
    else if (head.length >= 3) {
      if (head[1] === '|') queues = head.slice(2)
      else if (head[1] === '+' && head.length >= 4) {
        reply = head[2]!
        queues = head.slice(3)
      } else return `bad or missing reply indicator: ${line}`
    }
    const total = Number(nums[nums.length - 1])
    const hdrLen = headers ? Number(nums[0]) : 0
    if (hdrLen > total) return `header length over total: ${line}`
    if (total > this.maxPayload) return `message of ${total} bytes is over the limit of ${this.maxPayload}`
    if (buf.length < next + total + 2) {
      this.frameEnd = next + total + 2
      return -1
    }
    if (buf[next + total] !== CR || buf[next + total + 1] !== LF) return 'message not followed by CRLF'
    const hdr = headers ? buf.subarray(next, next + hdrLen) : null
    this.h.msg(subject, reply, queues, hdr, buf.subarray(next + hdrLen, next + total))
    return next + total + 2
  }
}
