// One MQTT connection, sans-I/O like the NATS client: the target feeds bytes to `data`, which
// splits them into packets (frame.ts). Every whole packet passes the malformed-packet checks
// (malformed.ts) first; then the hot ones (PUBLISH, PUBACK, PINGREQ, the common CONNECT and
// SUBSCRIBE) are read by hand (frame.ts fastPacket), every other packet by a shared
// mqtt-packet parser, for the handlers in packets.ts. Deliveries are
// framed by hand (frame.ts), other replies with mqtt-packet's generator, into a bounded
// Outbound queue.
// This module holds the connection's state and the byte/close plumbing; what each packet
// means lives in packets.ts.

import type { ConnInfo } from '../../src/monitor.ts'
import { Buffer } from 'node:buffer'
import { generate, parser as newParser, type Packet, type Parser } from 'mqtt-packet'
import type { Conn, Wire } from '../../src/host.ts'
import { headerValue } from '../../src/headers.ts'
import type { Msg } from '../../src/msg.ts'
import { FANOUT_PER_READ, yieldTurn } from '../../src/budget.ts'
import { Outbound } from '../../src/outbound.ts'
import type { Owner, Sub } from '../../src/router.ts'
import { mqttOptions as mqttOpts } from '../../src/options.ts'
import type { Server, Session } from '../../src/server.ts'
import { subjectToTopic } from './topic.ts'
import { mqttState, type Holder, type MqttState } from './state.ts'
import { checkConnectHeader, onPacket, onPubackIn, publishWill, publishRefused, QOS_HEADERS, reauthorize } from './packets.ts'
import { connectDeadline } from '../../src/auth.ts'
import { quote } from '../../src/log.ts'
import { deliveryDenied, noteRequest, type CompiledPermissions, type Replies } from '../../src/permissions.ts'
import { fastPacket, frameSize, headerSize, MALFORMED, NEED_MORE, parsePublish, publishSize, topicBytes, writePublish, writeSmall } from './frame.ts'
import { checkPacket, checkPublish, MALFORMED_PACKET } from './malformed.ts'
import { park } from './session.ts'
import { filterCount, filterEntries, type Filters } from './filters.ts'
import { aliasFor, setAlias } from './aliases.ts'
import { deliveryProps, headersToProps, msgRetained, RETAINED_HEADERS, unexpired, type PublishProps } from './props.ts'

export type QoS = 0 | 1 | 2

export interface MqttSub extends Sub {
  /** The connection, or a Parked session while its persistent client is away. */
  readonly owner: Owner
  /** The filter as the client sent it (the key of `subs`). */
  readonly filter: string
  readonly qos: QoS
  /** The filter starts with a wildcard, so it must not match `$` topics [MQTT-4.7.2-1]. */
  readonly noDollar: boolean
  /** MQTT 5 No Local: not the client's own publishes. */
  readonly noLocal: boolean
  /** MQTT 5 Subscription Identifier, sent back with each message it matches [MQTT-3.3.4-3]. */
  readonly subId?: number
  /** MQTT 5 Retain As Published: the retain flag as published [MQTT-3.3.1-13] (else 0 [MQTT-3.3.1-12]). */
  readonly rap?: boolean
  /**
   * For a wildcard that overlaps a subscribe deny rule: the permissions each message is
   * checked against at delivery (kept on the sub, so a parked session can check too).
   */
  denyCheck?: CompiledPermissions
}

/** A QoS > 0 message on its way to the client. */
export interface Outgoing {
  topic: string
  payload: Buffer
  qos: QoS
  retain: boolean
  /** QoS 2: PUBREC came and PUBREL went; waiting for PUBCOMP. */
  released: boolean
  /** MQTT 5 properties from the message's NATS headers. */
  props?: PublishProps
}

/** The will from CONNECT, published if the connection ends without DISCONNECT [MQTT-3.1.2-8]. */
export interface Will {
  topic: string
  subject: string
  payload: Buffer
  qos: QoS
  retain: boolean
}

/** QoS a NATS publish without `Nmqtt-Pub` gets: 1, so it reaches QoS 1 subscribers at least once. */
export const NATS_DEFAULT_QOS: QoS = 1

/** Bytes that may sit in the parser waiting for the rest of a packet, over max_payload. */
const PACKET_OVERHEAD = 64 * 1024

/**
 * QoS 1/2 bookkeeping of a connection, made on its first QoS > 0 message: an idle device
 * never needs it, and every field on the connection itself costs each connection 8 bytes.
 */
interface Flow {
  inflight: Map<number, Outgoing> | null
  waiting: Outgoing[] | null
  qos2In: Set<number> | null
  /** Payload bytes held in `inflight` and `waiting`, counted with the queue against max_pending. */
  held: number
  lastPid: number
}

export class MqttConn implements Owner, Session, Conn, Holder {
  // kind and echo are getters, on the prototype, rather than a copy in each connection.
  get kind(): 'mqtt' {
    return 'mqtt'
  }
  /** MQTT delivers a client's own publishes unless No Local says otherwise. */
  get echo(): boolean {
    return true
  }
  readonly out: Outbound
  readonly st: MqttState
  /** Bytes of the first packet, kept until its protocol level can be checked. */
  head: Uint8Array | null = EMPTY
  /** The start of a packet whose remaining bytes have not arrived yet (a private copy). */
  rest: Uint8Array | null = null
  version: 4 | 5 = 4
  clientId = ''
  connected = false
  done = false
  /** ms; 0 = no keepalive. */
  keepalive = 0
  lastIn: number
  will: Will | null = null
  /** Subscriptions by filter (filters.ts). */
  subs: Filters = null
  private flow: Flow | null = null
  maxInflight: number
  /** ms the session outlives this connection; 0 = a clean session, dropped at close. */
  sessionExpiry = 0
  /** MQTT 5 Maximum Packet Size the client accepts (0 = no limit). */
  maxOutPacket = 0
  /** MQTT 5 Topic Alias Maximum the client accepts (0: no aliases to it); aliases.ts. */
  aliasMax = 0
  /** Topic -> alias sprig gave this connection; null until the first (aliases.ts). */
  outAliases: Map<string, number> | null = null
  /** True while this connection's own PUBLISH is being routed (for No Local). */
  publishing = false
  /** Messages and payload bytes this client published and was sent (/connz). */
  in_msgs = 0
  in_bytes = 0
  out_msgs = 0
  out_bytes = 0
  /** Reused for each PUBLISH this client sends (the router does not keep it). */
  msg: Msg | null = null
  /** The authenticated user, and its permissions (null: none) and answerable requests (src/auth.ts). */
  user = ''
  perms: CompiledPermissions | null = null
  replies: Replies | null = null
  /** Until CONNECT is accepted: closes the connection at its deadline (src/auth.ts connectDeadline). */
  private connectTimer: { cancel(): void } | null

  constructor(
    readonly srv: Server,
    readonly cid: number,
    readonly wire: Wire,
  ) {
    this.out = new Outbound(wire, srv.opts.max_pending, srv.schedule, srv.budget)
    this.st = mqttState(srv)
    this.maxInflight = mqttOpts(srv.opts).max_ack_pending
    this.lastIn = srv.host.now()
    // From accept, so a TLS handshake, a CONNECT trickled byte by byte and a password check
    // all count. MQTT 3.1.1 and 5.0 §3.1: no CONNECT in a reasonable time, the server SHOULD close.
    this.connectTimer = srv.host.every(connectDeadline(srv.opts, 'mqtt', wire), () => this.connectTimeout())
    srv.add(this)
    srv.log.debug(() => `${this.label()} mqtt connection created`)
  }

  private qosFlow(): Flow {
    return (this.flow ??= { inflight: null, waiting: null, qos2In: null, held: 0, lastPid: 0 })
  }

  /** QoS > 0 messages sent and not yet acknowledged, by packet id. */
  get inflight(): Map<number, Outgoing> {
    return (this.qosFlow().inflight ??= new Map())
  }

  /** QoS > 0 messages waiting for a free in-flight slot. */
  get waiting(): Outgoing[] {
    return (this.qosFlow().waiting ??= [])
  }

  /** Packet ids of QoS 2 publishes received and not yet released (PUBREL). */
  get qos2In(): Set<number> {
    return (this.qosFlow().qos2In ??= new Set())
  }

  /** Payload bytes held in `inflight` and `waiting`, counted with the queue against max_pending. */
  get held(): number {
    return this.flow === null ? 0 : this.flow.held
  }

  set held(n: number) {
    const f = this.qosFlow()
    this.srv.budget.charge(n - f.held)
    f.held = n
  }

  /** Adds (n < 0: releases) payload bytes to `held`, charged to the memory budget: the per-message path, without the accessors. */
  private hold(f: Flow, n: number): void {
    f.held += n
    this.srv.budget.charge(n)
  }

  describe(): ConnInfo {
    return {
      cid: this.cid,
      type: 'mqtt',
      ip: this.wire.remoteAddress,
      port: this.wire.remotePort,
      last_activity: this.lastIn,
      pending_bytes: this.out.pending,
      in_msgs: this.in_msgs,
      out_msgs: this.out_msgs,
      in_bytes: this.in_bytes,
      out_bytes: this.out_bytes,
      subscriptions: filterCount(this.subs), // topic filters, as the client counts them
      mqtt_client: this.clientId,
      ...(this.wire.tls ? { tls_version: this.wire.tls.protocol } : {}),
    }
  }

  label(): string {
    const id = this.clientId ? ` (${quote(this.clientId)})` : ''
    return `${this.wire.remoteAddress}:${this.wire.remotePort} - mid:${this.cid}${id}`
  }

  // --- bytes in ---------------------------------------------------------------------------

  data(chunk: Uint8Array): void {
    if (this.done) return
    this.lastIn = this.srv.host.now()
    try {
      let bytes = chunk
      if (this.head) {
        // Until the first packet's level is known, mqtt-packet would only say "Invalid protocol
        // version"; we must answer it with a CONNACK [MQTT-3.1.2-2], so look first.
        bytes = this.head.length === 0 ? chunk : concat(this.head, chunk)
        const verdict = checkConnectHeader(this, bytes)
        if (verdict === 'more') {
          this.keepHead(bytes === chunk ? chunk.slice() : bytes) // the chunk is only lent to us
          return
        }
        if (verdict === 'refused') return
        this.keepHead(null)
      } else if (this.rest) {
        bytes = concat(this.rest, chunk)
        this.keepRest(null)
      }
      const t = this.srv.router.traffic
      const before = t.out_bytes
      this.packets(bytes)
      // A read that fanned out to a lot of bytes lets the other connections go first.
      if (t.out_bytes - before > FANOUT_PER_READ) yieldTurn(this.srv.host, this.wire)
    } catch (e) {
      // A handler bug or a codec surprise ends this connection only.
      this.srv.log.error(`${this.label()} mqtt error: ${(e as Error).message}`)
      this.teardown('Internal Error', true)
    }
  }

  /** Handles each whole packet in `b`; keeps a copy of a cut one at the end. */
  private packets(b: Uint8Array): void {
    const end = b.length
    let at = 0
    while (at < end && !this.done) {
      const n = frameSize(b, at, end)
      if (n === MALFORMED) return this.protocolError('Remaining Length is not a valid Variable Byte Integer')
      if (n === NEED_MORE) break
      // Refused as soon as its length is known, before its bytes are waited for (and held).
      if (n > this.srv.opts.max_payload + PACKET_OVERHEAD) return this.tooLarge(n)
      if (at + n > end) break
      this.packet(b, at, n)
      at += n
    }
    if (this.done || at === end) return
    this.keepRest(b.slice(at)) // the chunk is only lent to us; at most one packet under the limit
  }

  // Partial packets count against the memory budget while they wait for their rest.
  private keepHead(b: Uint8Array | null): void {
    this.srv.budget.charge((b === null ? 0 : b.length) - (this.head === null ? 0 : this.head.length))
    this.head = b
  }

  private keepRest(b: Uint8Array | null): void {
    this.srv.budget.charge((b === null ? 0 : b.length) - (this.rest === null ? 0 : this.rest.length))
    this.rest = b
  }

  /** One whole packet of n bytes at b[at]. */
  private packet(b: Uint8Array, at: number, n: number): void {
    const b0 = b[at]!
    const v5 = this.version === 5
    // The two packets of every QoS 1 message, straight to their checks and readers (the
    // same ones checkPacket and fastPacket would pick, without their dispatch).
    // A 4-byte PUBACK (0x40, Remaining Length 2) has all checkAck would look at: flags 0000
    // and a body of just the packet id, valid in 3.1.1 and 5.0 alike.
    if (b0 === 0x40 && n === 4) return onPubackIn(this, (b[at + 2]! << 8) | b[at + 3]!)
    if ((b0 & 0xf0) === 0x30) {
      const hs = headerSize(b, at)
      const bad = checkPublish(b, b0, at + hs, at + n, v5)
      if (bad !== null) return this.protocolError(bad.why, bad.code)
      const p = parsePublish(b, at, n, v5)
      if (p !== null) return onPacket(this, p)
    } else {
      // The malformed-packet rules, in one place for both readers below (malformed.ts).
      const bad = checkPacket(b, at, n, v5)
      if (bad !== null) return this.protocolError(bad.why, bad.code)
      const p = fastPacket(b, at, n, v5)
      if (p !== null) return onPacket(this, p)
    }
    // mqtt-packet keeps slices of what it parses (will payload, ...), so it gets a copy.
    parseWithMqttPacket(this, Buffer.from(b.subarray(at, at + n)))
  }

  drained(): void {
    this.out.drained(this.srv.host.now())
  }

  closed(reason?: string): void {
    try {
      this.teardown(reason ?? 'Client Closed', true)
      this.out.closed()
      if (this.head !== null) this.keepHead(null)
      if (this.rest !== null) this.keepRest(null)
    } catch (e) {
      // A socket callback: whatever went wrong is logged, and ends nothing else.
      this.srv.log.error(`${this.label()} mqtt error while closing: ${(e as Error).message}`)
    }
  }

  // --- bytes out --------------------------------------------------------------------------

  /** Frames a packet into the outbound queue; false when that made us a slow consumer. */
  send(p: Packet): boolean {
    if (this.done) return false
    const small = writeSmall(p, this.version === 5, this.out)
    if (small === true) return true
    if (small === 'full') {
      this.overPending()
      return false
    }
    const buf = this.frame(p)
    if (buf === null) return false
    if (!this.out.push(buf)) {
      this.overPending()
      return false
    }
    return true
  }

  /** Router delivery. The Msg is only lent: anything kept past this call is copied. */
  deliver(sub: Sub, m: Msg): void {
    if (this.done || !this.connected) return
    const s = sub as MqttSub
    if (s.noLocal && this.publishing) return
    if (s.denyCheck !== undefined && deliveryDenied(s.denyCheck, m.subject, s.queue)) return
    const topic = subTopic(this.st, s, m)
    if (topic === null) return
    // allow_responses: only a request the client actually gets may be answered.
    if (this.replies !== null && m.reply !== '') noteRequest(this.perms!, this.replies, m.reply, this.srv.host.now())
    this.out_msgs++
    this.out_bytes += m.payload.length
    const qos = deliveryQos(s, m)
    const props = this.version === 5 ? deliveryProps(headersToProps(this.st, m), s) : undefined
    const retain = s.rap === true && msgRetained(m) // Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13]
    if (qos === 0) {
      if (props === undefined && this.framed(topic, m.payload, 0, 0, false, retain)) return
      const payload = Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength)
      this.sendPublish({ topic, payload, qos: 0, retain, released: false, props }, 0, false)
      return
    }
    this.enqueue({ topic, payload: Buffer.from(m.payload), qos, retain, released: false, props })
  }

  /** A QoS > 0 message: sent now if the in-flight window has room, else it waits. */
  enqueue(o: Outgoing): void {
    if (o.qos === 0) {
      this.sendPublish(o, 0, false)
      return
    }
    const f = this.qosFlow()
    this.hold(f, o.payload.length)
    if (f.held + this.out.pending > this.out.limit) {
      this.overPending()
      return
    }
    if (this.inflight.size < this.maxInflight) this.sendInflight(o)
    else this.waiting.push(o)
  }

  private sendInflight(o: Outgoing): void {
    // A message that waited past its Message Expiry Interval is dropped [MQTT-3.3.2-5] (props.ts).
    if (o.props !== undefined && !unexpired(o, this.srv.host.now())) {
      this.hold(this.flow!, -o.payload.length)
      return
    }
    const pid = this.nextPid()
    this.inflight.set(pid, o)
    this.sendPublish(o, pid, false)
  }

  sendPublish(o: Outgoing, pid: number, dup: boolean): void {
    if (this.done) return
    if (!(o.props && this.version === 5) && this.framed(o.topic, o.payload, o.qos, pid, dup, o.retain)) return
    const p: Packet = { cmd: 'publish', topic: o.topic, payload: o.payload, qos: o.qos, dup, retain: o.retain }
    if (o.props && this.version === 5) p.properties = o.props
    if (pid !== 0) p.messageId = pid
    const alias = this.version === 5 ? aliasFor(this, o.topic) : 0
    if (alias !== 0) {
      // A known alias goes with an empty topic; a new one with the topic, which sets it.
      if (alias > 0) p.topic = ''
      p.properties = { ...p.properties, topicAlias: Math.abs(alias) }
    }
    if (this.maxOutPacket > 0) {
      const buf = this.frame(p)
      if (buf === null) return
      if (this.oversize(buf.length, pid)) return
      if (!this.out.push(buf)) return this.overPending()
    } else if (!this.send(p)) return
    if (alias < 0) setAlias(this, o.topic, -alias)
  }

  /**
   * Frames a PUBLISH without properties straight into the outbound queue; false (nothing
   * done) when it is one for mqtt-packet's generator to frame (and refuse).
   */
  private framed(topic: string, payload: Uint8Array, qos: QoS, pid: number, dup: boolean, retain: boolean): boolean {
    const v5 = this.version === 5
    const alias = v5 ? aliasFor(this, topic) : 0
    const t = alias > 0 ? EMPTY : topicBytes(topic)
    const size = publishSize(t, payload.length, qos, v5, Math.abs(alias))
    if (size < 0) return false
    if (this.oversize(size, pid)) return true
    const at = this.out.reserve(size)
    if (at < 0) {
      this.overPending()
      return true
    }
    writePublish(this.out.buf, at, t, payload, qos, dup, retain, pid, v5, Math.abs(alias))
    if (alias < 0) setAlias(this, topic, -alias) // only once the packet that sets it is queued
    return true
  }

  /**
   * Never send a packet over the client's Maximum Packet Size (5.0 §3.1.2.11.4): true when
   * one of `size` bytes is over it, and so dropped as if delivered.
   */
  private oversize(size: number, pid: number): boolean {
    if (this.maxOutPacket === 0 || size <= this.maxOutPacket) return false
    this.st.counters.oversize_drops++
    if (pid !== 0) this.acked(pid)
    return true
  }

  /**
   * mqtt-packet's generator throws on a packet it cannot encode. Deliveries run inside
   * another connection's publish, so that must end this connection, not the publisher's.
   */
  private frame(p: Packet): Buffer | null {
    try {
      return generate(p, { protocolVersion: this.version })
    } catch (e) {
      this.srv.log.error(`${this.label()} mqtt cannot encode ${p.cmd}: ${(e as Error).message}`)
      this.teardown('Internal Error', true)
      return null
    }
  }

  /** PUBACK (or PUBCOMP) for an in-flight message: frees its slot for a waiting one. */
  acked(pid: number): boolean {
    const o = this.inflight.get(pid)
    if (!o) return false
    this.inflight.delete(pid)
    const f = this.flow!
    this.hold(f, -o.payload.length)
    const w = f.waiting
    while (w !== null && w.length > 0 && this.inflight.size < this.maxInflight && !this.done) {
      this.sendInflight(w.shift()!)
    }
    return true
  }

  /**
   * Drops the QoS 1/2 messages held for this client (waiting, in flight) that `keep` refuses,
   * after a permissions change (session.ts recheckSession); returns how many.
   */
  dropHeld(keep: (o: Outgoing) => boolean): number {
    const f = this.flow
    if (f === null) return 0
    let n = 0
    if (f.waiting !== null) {
      const kept: Outgoing[] = []
      for (const o of f.waiting) {
        if (keep(o)) kept.push(o)
        else {
          this.hold(f, -o.payload.length)
          n++
        }
      }
      f.waiting = kept
    }
    // acked() frees the slot (and may send a waiting message, all of which passed `keep`).
    if (f.inflight !== null) for (const [pid, o] of [...f.inflight]) if (!keep(o) && this.acked(pid)) n++
    return n
  }

  /** Packet ids 1..65535, skipping those still in flight ([MQTT-2.2.1-4] in 5.0). */
  private nextPid(): number {
    const f = this.qosFlow()
    do f.lastPid = f.lastPid === 65535 ? 1 : f.lastPid + 1
    while (this.inflight.has(f.lastPid))
    return f.lastPid
  }

  // --- endings ----------------------------------------------------------------------------

  /**
   * A malformed packet, or one the protocol forbids (reason5: 0x81 Malformed Packet, 0x82
   * Protocol Error, ...): counted, logged, and the connection closed; MQTT 5 is told why
   * first, with DISCONNECT, or with CONNACK while its CONNECT is not yet answered
   * [MQTT-4.13.1-1] (5.0 §3.1.4).
   */
  protocolError(why: string, reason5 = MALFORMED_PACKET): void {
    if (this.done) return
    this.st.counters.malformed_packets++
    this.srv.log.error(`${this.label()} mqtt protocol error: ${why}`)
    this.refuse(reason5, 'Protocol Violation')
  }

  /** disconnect(), or before CONNACK the CONNACK with that reason code (MQTT 5 only). */
  private refuse(reason5: number, why: string): void {
    if (this.version === 5 && !this.connected) this.send({ cmd: 'connack', reasonCode: reason5, sessionPresent: false })
    this.disconnect(reason5, why)
  }

  /** MQTT 5: DISCONNECT with a reason code, then close; MQTT 3.1.1 just closes. */
  disconnect(reason5: number, why: string): void {
    if (this.done) return
    if (this.version === 5 && this.connected) this.send({ cmd: 'disconnect', reasonCode: reason5 })
    this.teardown(why, true)
  }

  private tooLarge(size: number): void {
    this.srv.log.error(`${this.label()} mqtt packet of ${size} bytes over ${this.srv.opts.max_payload + PACKET_OVERHEAD} (max_payload + ${PACKET_OVERHEAD})`)
    this.refuse(0x95, 'Packet Too Large')
  }

  /** Another connection CONNECTed with our client id [MQTT-3.1.4-2]. */
  takeover(): void {
    this.srv.log.debug(() => `${this.label()} session taken over`)
    this.disconnect(0x8e, 'Session Taken Over')
  }

  /** The outbound queue (with QoS > 0 messages held) went over max_pending. */
  private overPending(): void {
    this.slowConsumer(`MaxPending of ${this.out.limit} Exceeded`)
  }

  private slowConsumer(why: string): void {
    if (this.done) return
    this.srv.counters.slow_consumers++
    this.srv.log.warn(`${this.label()} Slow Consumer Detected: ${why}`)
    this.out.discard()
    this.teardown('Slow Consumer', true, true)
  }

  /**
   * Memory budget: bytes held for a client that is not taking them: its queue while the
   * socket is not draining, and QoS 1/2 messages waiting for acknowledgements.
   */
  stuck(): number {
    if (this.done) return 0
    const f = this.flow
    const waiting = f !== null && f.waiting !== null && f.waiting.length > 0
    return this.out.blockedSince !== 0 || waiting ? this.out.charged + this.held : 0
  }

  /** Memory budget: closed as a slow consumer, its socket dropped at once. */
  evict(why: string): void {
    if (this.done) return
    this.slowConsumer(why)
    this.wire.destroy()
  }

  tick(now: number): void {
    if (this.done) return
    const o = this.srv.opts
    if (this.out.blockedSince !== 0 && now - this.out.blockedSince > o.write_deadline) {
      return this.slowConsumer(`Write Deadline of ${o.write_deadline}ms Exceeded`)
    }
    // [MQTT-3.1.2-24]: nothing for one and a half keepalive periods ends the connection.
    if (this.keepalive > 0 && now - this.lastIn > this.keepalive * 1.5) {
      this.srv.log.debug(() => `${this.label()} keepalive timeout`)
      this.disconnect(0x8d, 'Keepalive Timeout')
    }
  }

  /** The connect deadline passed: closed unless CONNECT was accepted (no CONNACK: there is no CONNECT to answer). */
  private connectTimeout(): void {
    this.connectTimer?.cancel()
    this.connectTimer = null
    if (this.connected || this.done) return
    this.srv.log.debug(() => `${this.label()} mqtt connect timeout`)
    this.teardown('Connect Timeout', false)
  }

  shutdown(): void {
    this.disconnect(0x8b, 'Server Shutdown')
  }

  /** A service refused what this client's PUBLISH asked of it (packets.ts answers it). */
  refused(): void {
    publishRefused(this)
  }

  /** After a config reload: credentials and permissions again (packets.ts). */
  reauthorize(): void {
    reauthorize(this)
  }

  /**
   * Ends the connection once: publishes the will when `abrupt` (no DISCONNECT from the
   * client), drops subscriptions and the client id, and closes the wire after flushing.
   */
  teardown(reason: string, abrupt: boolean, discarded = false): void {
    if (this.done) return
    this.done = true
    this.connectTimer?.cancel()
    this.connectTimer = null
    const srv = this.srv
    srv.remove(this, reason) // first: /connz?state=closed keeps it as it was
    // A session whose user is gone is not kept: it ends here (and a delayed will goes now).
    if (this.connected && this.sessionExpiry > 0 && !park(this, srv.host.now(), this.sessionExpiry)) this.sessionExpiry = 0
    this.st.persistent.delete(this)
    for (const [, list] of filterEntries(this.subs)) for (const s of list) srv.router.unsubscribe(s)
    this.subs = null
    if (this.connected && this.st.clients.get(this.clientId) === this) this.st.clients.delete(this.clientId)
    const will = this.will
    this.will = null
    if (abrupt && will) publishWill(this, will)
    if (this.flow !== null) {
      this.flow.inflight = this.flow.waiting = null
      this.held = 0 // a persistent session's messages are the parked session's now
    }
    if (!discarded) this.out.flush(srv.host.now())
    this.wire.end()
    srv.log.debug(() => `${this.label()} mqtt connection closed: ${reason}`)
  }
}

/**
 * The topic a subscription gets a routed message under, or null: the subject has none, or
 * it is a `$` topic and the filter starts with a wildcard [MQTT-4.7.2-1]. The same check for
 * a live connection and a parked session.
 */
export function subTopic(st: MqttState, s: MqttSub, m: Msg): string | null {
  const topic = topicFor(st, m)
  return topic !== null && s.noDollar && topic.charCodeAt(0) === 36 ? null : topic
}

/** The topic for a routed message (mapped once per message), or null, counted, if it has none. */
function topicFor(st: MqttState, m: Msg): string | null {
  if (st.topicSeq !== m.seq) {
    st.topicSeq = m.seq
    if (m.subject !== lastSubject) {
      lastSubject = m.subject
      lastSubjectTopic = subjectToTopic(m.subject)
    }
    st.topic = lastSubjectTopic
    if (st.topic === null) st.counters.unmappable_subjects++
  }
  return st.topic
}

// The last subject mapped to a topic: a stream of messages on one subject maps it once.
let lastSubject = ''
let lastSubjectTopic: string | null = null

/** Delivery QoS: the lower of the subscription's and the message's [MQTT-3.8.4-8]. */
export function deliveryQos(s: MqttSub, m: Msg): QoS {
  const q = msgQos(m)
  return s.qos < q ? s.qos : q
}

/** The QoS a routed message carries: its `Nmqtt-Pub` header, else NATS_DEFAULT_QOS. */
export function msgQos(m: Msg): QoS {
  const h = m.hdr
  if (h === null) return NATS_DEFAULT_QOS
  // MQTT publishes without properties carry one of these blocks as they are: no need to parse them.
  if (h === QOS_HEADERS[0]) return 0
  if (h === QOS_HEADERS[1]) return 1
  if (h === QOS_HEADERS[2]) return 2
  if (h === RETAINED_HEADERS[0]) return 0
  if (h === RETAINED_HEADERS[1]) return 1
  if (h === RETAINED_HEADERS[2]) return 2
  const v = headerValue(h, 'Nmqtt-Pub')
  if (v === '0') return 0
  if (v === '1') return 1
  if (v === '2') return 2
  return NATS_DEFAULT_QOS
}

type SharedParser = Parser & { conn: MqttConn | null; settings: unknown }

const V4 = { protocolVersion: 4 }
const V5 = { protocolVersion: 5 }
/** One mqtt-packet parser for all connections: it is only ever given whole packets. */
let idleParser: SharedParser | null = null

function newSharedParser(): SharedParser {
  const p = newParser() as SharedParser
  p.conn = null
  p.on('packet', (pk: Packet) => onPacket(p.conn!, pk))
  p.on('error', (e: Error) => p.conn!.protocolError(e.message))
  return p
}

/** Parses one whole packet with mqtt-packet; a re-entrant call gets a parser of its own. */
function parseWithMqttPacket(c: MqttConn, frame: Buffer): void {
  const p = idleParser ?? newSharedParser()
  idleParser = null
  // The parser reads the protocol level from settings (CONNECT replaces them with itself).
  p.settings = c.version === 5 ? V5 : V4
  p.conn = c
  let left = -1
  try {
    left = p.parse(frame)
  } finally {
    p.conn = null
    // A throwing handler can leave the parser mid-packet: then it is dropped.
    if (left === 0) idleParser = p
  }
}

const EMPTY = new Uint8Array(0)

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b.slice()
  const out = new Uint8Array(a.length + b.length)
  out.set(a)
  out.set(b, a.length)
  return out
}
