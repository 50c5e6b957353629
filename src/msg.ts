// A message as it travels through the router. One object is reused by each publisher for
// every message it parses, so a deliver() implementation must copy what it keeps (the NATS
// adapter copies straight into its outbound buffer; anything that queues must clone).

export interface Msg {
  /** Literal subject, used to match subscriptions. */
  subject: string
  /** The subject's UTF-8 bytes, so adapters can frame without re-encoding. */
  subjectBytes: Uint8Array
  /** Reply subject, or '' for none. */
  reply: string
  replyBytes: Uint8Array
  /** NATS header block ("NATS/1.0\r\n...\r\n\r\n"), or null. */
  hdr: Uint8Array | null
  payload: Uint8Array
  /**
   * Bumped for every publish through the router: adapters cache per-message framing
   * (sizes, reply) keyed by it, so fan-out to N subscribers builds that framing once.
   */
  seq: number
}

import { EMPTY } from './bytes.ts'

// Importers from before EMPTY moved to bytes.ts (adapters/mqtt/packets.ts).
export { EMPTY }

export function newMsg(): Msg {
  return { subject: '', subjectBytes: EMPTY, reply: '', replyBytes: EMPTY, hdr: null, payload: EMPTY, seq: 0 }
}
