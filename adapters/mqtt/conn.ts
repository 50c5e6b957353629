// One MQTT connection, sans-I/O like the NATS client: the target feeds bytes to `data`, which
// splits them into packets (frame.ts). Every whole packet passes the malformed-packet checks
// (malformed.ts) first; then the hot ones (PUBLISH, PUBACK, PINGREQ) are read by hand
// (frame.ts fastPacket), every other packet by a shared mqtt-packet parser, and each goes to
// its handler (handlers/). Deliveries are framed by hand (frame.ts), other replies with
// mqtt-packet's generator, into a bounded Outbound queue.
// The connection owns its state: the handlers change it only through the methods here. Login,
// the connect deadline, reload and slow consumers are src/lifecycle.ts's, as for NATS.

import type { ConnInfo } from '../../src/monitor.ts'
import { Buffer } from 'node:buffer'
import { generate, parser as newParser, type Packet, type Parser } from 'mqtt-packet'
import { utf8 } from '../../src/bytes.ts'
import type { Conn, Wire } from '../../src/host.ts'
import { Client } from '../../src/lifecycle.ts'
import { newMsg, putPayload, type Msg } from '../../src/msg.ts'
import { EMPTY, concat, copyOf } from '../../src/bytes.ts'
import { FANOUT_PER_READ, yieldTurn } from '../../src/pause.ts'
import type { Owner, Sub } from '../../src/router.ts'
import { mqttOptions as mqttOpts } from '../../src/options.ts'
import type { Server } from '../../src/server.ts'
import { mqttState, type Holder, type MqttState } from './state.ts'
import type { MqttPersist } from './persist.ts'
import { onPacket, onPubackIn } from './handlers/index.ts'
import { onPublishIn } from './handlers/publish.ts'
import { publishWill } from './will.ts'
import { quote } from '../../src/log.ts'
import { deliveryDenied, noteRequest } from '../../src/permissions.ts'
import { frameSize, headerSize, MALFORMED, NEED_MORE, publishIn, publishPacket, publishSize, readPublish, topicBytes, writePublishHead, writeSmall, fastPacket, type TopicMemo } from './frame.ts'
import { checkPacket, checkPublish, connectPreamble, MALFORMED_PACKET } from './malformed.ts'
import { park, recheckSession, unpark, type Parked } from './session.ts'
import { filterCount, filterEntries, subsOf, withFilter, withoutFilter, type Filters } from './filters.ts'
import { aliasFor, setAlias } from './aliases.ts'
import { deliveryProps, headersToProps, msgRetained, unexpired } from './props.ts'
import { deliveryQos, subTopic, type MqttSub, type Outgoing, type QoS, type Will } from './delivery.ts'

export type { MqttSub, Outgoing, QoS, Will } from './delivery.ts'

/** Bytes that may sit in the parser waiting for the rest of a packet, over max_payload. */
export const PACKET_OVERHEAD = 64 * 1024

/**
 * QoS 1/2 bookkeeping of a connection, made on its first QoS > 0 message: an idle device
 * never needs it, and every field on the connection itself costs each connection 8 bytes.
 */
interface Flow {
  /** Most QoS > 0 messages in flight at once: max_ack_pending, or the client's Receive Maximum if lower. */
  max: number
  inflight: Map<number, Outgoing> | null
  waiting: Outgoing[] | null
  qos2In: Set<number> | null
  /** Payload bytes held in `inflight` and `waiting`, counted with the queue against max_pending. */
  held: number
  lastPid: number
}

/**
 * What a connection needs only for a will, a persistent session or MQTT 5's limits and topic
 * aliases: one object, made when CONNECT asks for any of them (an idle 3.1.1 device without a
 * will has none), instead of seven fields on every connection.
 */
interface Rare {
  will: Will | null
  /** ms the session outlives this connection; 0 = a clean session, dropped at close. */
  sessionExpiry: number
  /** MQTT 5 Receive Maximum of the client (0: not given); Flow.max is made from it. */
  receiveMaximum: number
  /** MQTT 5 Maximum Packet Size the client accepts (0 = no limit). */
  maxOutPacket: number
  /** MQTT 5 Topic Alias Maximum the client accepts (0: no aliases to it); aliases.ts. */
  aliasMax: number
  /** Topic -> alias sprig gave this connection; null until the first (aliases.ts). */
  outAliases: Map<string, number> | null
  /** Alias -> topic the client set (MQTT 5 §3.3.2.3.4); null until the first. */
  inAliases: Map<number, string> | null
}

/**
 * Bytes of a packet whose rest has not arrived yet (a private copy), or, before the protocol
 * level is known, the first bytes (`head`), kept until it can be checked.
 */
interface Cut {
  /** For a packet of known size, room for all of it: later reads fill it in place. */
  readonly buf: Uint8Array
  /** How many bytes of `buf` have arrived. */
  fill: number
  readonly head: boolean
}

/** A new connection: nothing of its first packet yet, and its level still to be checked. */
const START: Cut = Object.freeze({ buf: EMPTY, fill: 0, head: true })

/**
 * What a client that publishes keeps: its last topic and subject (frame.ts TopicMemo), the Msg
 * reused for each PUBLISH (the router does not keep it) and what it published (/connz). Made
 * on its first PUBLISH: a device that only subscribes has none.
 */
interface Pub extends TopicMemo {
  readonly msg: Msg
  in_msgs: number
  in_bytes: number
}

function newPub(): Pub {
  // Spelled out: V8 gives each object made by a spread a hidden class of its own.
  return { bytes: EMPTY, topic: '', subjectOf: '', limits: null, subject: '', msg: newMsg(), in_msgs: 0, in_bytes: 0 }
}

/** What an accepted CONNECT sets on its connection (handlers/connect.ts). */
export interface Settings {
  clientId: string
  will: Will | null
  /** ms; 0 = no keepalive. */
  keepalive: number
  /** MQTT 5 Receive Maximum of the client (0: not given). */
  receiveMaximum: number
  /** MQTT 5 Maximum Packet Size the client accepts (0 = no limit). */
  maxPacket: number
  /** MQTT 5 Topic Alias Maximum the client accepts (0: none). */
  aliasMax: number
  /** ms the session outlives the connection; 0 = a clean session. */
  sessionExpiry: number
}

/** Where packet() reads a PUBLISH: used and done with before the next one is read. */
const READ = publishIn()
/** PINGRESP, as written for a PINGREQ alone in a read (never changed: wires may hold it). */
const PINGRESP_BYTES = new Uint8Array([0xd0, 0])

// MqttConn.mode: the protocol level (4 or 5) in the low three bits, and above them `routing`
// while this connection's own PUBLISH goes through the router.
const LEVEL = 7
const IDLE = 0
const PUBLISHING = 8
/** A service refused the PUBLISH being routed (refused()). */
const REFUSED = 16

export class MqttConn extends Client implements Owner, Conn, Holder {
  // kind, echo and skipsHeaderHook are getters, on the prototype, rather than a copy in each connection.
  get kind(): 'mqtt' {
    return 'mqtt'
  }
  /** MQTT delivers a client's own publishes unless No Local says otherwise. */
  get echo(): boolean {
    return true
  }
  /** Its retained messages are kept by its PUBLISH handler, not the router's header hook. */
  get skipsHeaderHook(): true {
    return true
  }
  // Every field here costs each idle connection 8 bytes (JSC and V8 alike), and JSC rounds an
  // object up to its size class (≤ 18 fields: 160 bytes, ≤ 26: 224, ≤ 38: 320): what only some
  // connections need is in an object of its own, made on first use (Flow, Rare, Cut, Pub), the
  // level and `routing` share a number, and the queue counts what is sent (src/lifecycle.ts
  // keeps its own fields down the same way).
  readonly st: MqttState
  /** A packet cut by the end of a read, or the first bytes before the level is known; null: none. */
  private cut: Cut | null = START
  /** The protocol level (LEVEL bits) and `routing`. */
  private mode: number = 4
  clientId = ''
  /** ms; 0 = no keepalive. */
  keepalive = 0
  lastIn: number
  /** Subscriptions by filter (filters.ts). */
  subs: Filters = null
  private flow: Flow | null = null
  /** Will, session expiry, MQTT 5 limits and aliases; null while all are unset. */
  private rare: Rare | null = null
  /** This client's last PUBLISH topic and subject, its reused Msg and counts; made on its first PUBLISH. */
  topics: Pub | null = null

  constructor(srv: Server, cid: number, wire: Wire) {
    // MQTT 3.1.1 and 5.0 §3.1: no CONNECT in a reasonable time, the server SHOULD close (src/lifecycle.ts).
    super(srv, cid, wire, 'mqtt')
    this.st = mqttState(srv)
    this.lastIn = srv.host.now()
    srv.add(this)
    srv.log.debug(() => `${this.label()} mqtt connection created`)
  }

  /** The protocol level, known from the first bytes of CONNECT (connectPreamble). */
  get version(): 4 | 5 {
    return (this.mode & LEVEL) as 4 | 5
  }

  set version(v: 4 | 5) {
    this.mode = (this.mode & ~LEVEL) | v
  }

  /** IDLE, PUBLISHING (for No Local), REFUSED. */
  private get routing(): number {
    return this.mode & ~LEVEL
  }

  private set routing(r: number) {
    this.mode = (this.mode & LEVEL) | r
  }

  private rareState(): Rare {
    return (this.rare ??= { will: null, sessionExpiry: 0, receiveMaximum: 0, maxOutPacket: 0, aliasMax: 0, outAliases: null, inAliases: null })
  }

  /** ms the session outlives this connection; 0 = a clean session, dropped at close. */
  get sessionExpiry(): number {
    return this.rare === null ? 0 : this.rare.sessionExpiry
  }

  set sessionExpiry(ms: number) {
    if (ms !== this.sessionExpiry) this.rareState().sessionExpiry = ms
  }

  /** MQTT 5 Topic Alias Maximum the client accepts (0: no aliases to it); aliases.ts. */
  get aliasMax(): number {
    return this.rare === null ? 0 : this.rare.aliasMax
  }

  /** Topic -> alias sprig gave this connection; null until the first (aliases.ts). */
  get outAliases(): Map<string, number> | null {
    return this.rare === null ? null : this.rare.outAliases
  }

  set outAliases(m: Map<string, number> | null) {
    this.rareState().outAliases = m
  }

  /** Most QoS > 0 messages in flight at once (the QoS state is made on first use). */
  get maxInflight(): number {
    return this.qosFlow().max
  }

  set maxInflight(n: number) {
    this.qosFlow().max = n
  }

  private qosFlow(): Flow {
    if (this.flow !== null) return this.flow
    const rm = this.rare === null ? 0 : this.rare.receiveMaximum
    const max = mqttOpts(this.srv.opts).max_ack_pending
    return (this.flow = { max: rm > 0 && rm < max ? rm : max, inflight: null, waiting: null, qos2In: null, held: 0, lastPid: 0 })
  }

  /** QoS > 0 messages sent and not yet acknowledged, by packet id. */
  private get inflight(): Map<number, Outgoing> {
    return (this.qosFlow().inflight ??= new Map())
  }

  /** QoS > 0 messages waiting for a free in-flight slot. */
  private get waiting(): Outgoing[] {
    return (this.qosFlow().waiting ??= [])
  }

  /** Packet ids of QoS 2 publishes received and not yet released (PUBREL). */
  private get qos2In(): Set<number> {
    return (this.qosFlow().qos2In ??= new Set())
  }

  /** The on-disk store's writer while this session is persistent and a store is on (persist.ts). */
  private get ps(): MqttPersist | null {
    return this.sessionExpiry > 0 ? this.st.persist : null
  }

  /**
   * After CONNACK: a persistent session's record in the store (with its subscriptions); a
   * session that ends at disconnect has none there any more.
   */
  storeSession(): void {
    const ps = this.st.persist
    if (ps === null) return
    if (this.sessionExpiry > 0) ps.live(this.clientId, this.user, this.sessionExpiry, this.subs)
    else ps.endSession(this.clientId)
  }

  /** Payload bytes held in `inflight` and `waiting`, counted with the queue against max_pending. */
  get held(): number {
    return this.flow === null ? 0 : this.flow.held
  }

  /** Adds (n < 0: releases) payload bytes to `held`, charged to the memory budget. */
  private charge(f: Flow, n: number): void {
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
      in_msgs: this.topics === null ? 0 : this.topics.in_msgs,
      out_msgs: this.out_msgs,
      in_bytes: this.topics === null ? 0 : this.topics.in_bytes,
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

  /**
   * Bytes read. A read that is just a PINGREQ (an idle device keeping alive) is answered here,
   * straight to the wire: the rest of the read path (the parser, the handlers, a buffer and a
   * flush per PINGRESP), with its garbage and its compiles, was most of what a pinging fleet
   * cost in memory (docs/benchmarks.md, 2026-12-07 21:45). On Bun this entry is kept from the
   * top tier (targets/run.ts, the list).
   */
  data(chunk: Uint8Array): void {
    if (chunk.length === 2 && chunk[0] === 0xc0 && chunk[1] === 0 && this.pong()) return
    this.read(chunk)
  }

  /** A PINGREQ alone in a read: answered at once if nothing waits before it [MQTT-3.12.4-1]. */
  private pong(): boolean {
    const now = this.cut === null ? this.answerKeepalive(PINGRESP_BYTES) : -1
    if (now < 0) return false
    this.lastIn = now
    return true
  }

  /** Every other read: kept a function of its own (noInline on Bun) so it tiers up on its own. */
  read(chunk: Uint8Array): void {
    if (this.done) return
    this.lastIn = this.srv.host.now()
    try {
      let bytes = chunk
      const cut = this.cut
      if (cut === null) {
        // The common case: this read starts with a packet.
      } else if (cut.head) {
        bytes = cut.buf.length === 0 ? chunk : concat(cut.buf, chunk)
        const verdict = this.preamble(bytes)
        if (verdict === 'more') {
          this.keepCut(bytes === chunk ? copyOf(chunk) : bytes, -1, true) // the chunk is only lent to us
          return
        }
        if (verdict === 'refused') return
        this.keepCut(null)
      } else if (cut.fill < cut.buf.length) {
        // A cut packet whose size is known: fill its buffer in place (each byte copied once,
        // however small the reads), then go on with the rest of this read.
        const whole = cut.buf
        const take = Math.min(whole.length - cut.fill, chunk.length)
        whole.set(take === chunk.length ? chunk : chunk.subarray(0, take), cut.fill)
        cut.fill += take
        if (cut.fill < whole.length) return
        this.keepCut(null)
        this.packets(whole)
        if (take === chunk.length || this.done) return
        bytes = chunk.subarray(take)
      } else {
        bytes = concat(cut.buf, chunk) // only a few bytes of fixed header so far
        this.keepCut(null)
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

  /**
   * The first bytes: until the first packet's level is known, mqtt-packet would only say
   * "Invalid protocol version"; we must answer it with a CONNACK [MQTT-3.1.2-2], so look first
   * (malformed.ts connectPreamble). A level other than 4 (3.1.1) or 5 gets CONNACK 0x01
   * (3.1.1's "unacceptable protocol version") or, for levels above 5, 0x84 in 5.0's format.
   */
  private preamble(b: Uint8Array): 'more' | 'ok' | 'refused' {
    const p = connectPreamble(b)
    if (p === 'more') return 'more'
    if ('why' in p) return this.refuseFirst(p.why)
    if (p.level === 4 || p.level === 5) {
      // Known before the CONNECT is read: a malformed one is refused in its version's format.
      this.version = p.level
      return 'ok'
    }
    // The refusal goes out in the format the client can read: 3.1.1's for older levels.
    this.out.push(p.level > 5 ? new Uint8Array([0x20, 3, 0, 0x84, 0]) : new Uint8Array([0x20, 2, 0, 0x01]))
    return this.refuseFirst(`unsupported protocol ${p.name} level ${p.level}`)
  }

  private refuseFirst(why: string): 'refused' {
    this.srv.log.error(`${this.label()} mqtt connect refused: ${why}`)
    this.teardown(why, true)
    return 'refused'
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
    // The chunk is only lent to us. With the packet's size known, room for all of it now (at
    // most one packet under the limit), so later reads fill it instead of re-joining it.
    const n = frameSize(b, at, end)
    if (n > 0) {
      const whole = new Uint8Array(n)
      whole.set(b.subarray(at, end))
      this.keepCut(whole, end - at)
    } else this.keepCut(copyOf(b.subarray(at)))
  }

  /**
   * Keeps `b` (null: nothing) as the cut packet, or with `head` as the first bytes; `filled`:
   * how much of `b` holds bytes yet (less than its length for a packet still arriving; -1:
   * all). Partial packets count against the memory budget while they wait for their rest.
   */
  private keepCut(b: Uint8Array | null, filled = -1, head = false): void {
    const had = this.cut === null ? 0 : this.cut.buf.length
    this.srv.budget.charge((b === null ? 0 : b.length) - had)
    this.cut = b === null ? null : { buf: b, fill: filled < 0 ? b.length : filled, head }
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
      const r = READ
      if (readPublish(b, at, n, v5, (this.topics ??= newPub()), r)) {
        // The payload goes on as a range of the read, no view or packet object made, unless
        // onPacket must hold or refuse it.
        if (!this.done && this.connected && !this.holding) return onPublishIn(this, r.topic, r.qos, r.retain, r.messageId, b, r.at, r.size)
        return onPacket(this, publishPacket(b, r))
      }
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
      if (this.cut !== null) this.keepCut(null)
    } catch (e) {
      // A socket callback: whatever went wrong is logged, and ends nothing else.
      this.srv.log.error(`${this.label()} mqtt error while closing: ${(e as Error).message}`)
    }
  }

  // --- CONNECT (handlers/connect.ts) ----------------------------------------------------------

  /** Takes what an accepted CONNECT asked for (its session is not yet picked up). */
  open(s: Settings): void {
    this.clientId = s.clientId
    this.keepalive = s.keepalive
    if (s.will === null && s.receiveMaximum === 0 && s.maxPacket === 0 && s.aliasMax === 0 && s.sessionExpiry === 0 && this.rare === null) return
    const r = this.rareState()
    r.will = s.will
    r.receiveMaximum = s.receiveMaximum
    if (s.maxPacket > 0) r.maxOutPacket = s.maxPacket
    r.aliasMax = s.aliasMax
    r.sessionExpiry = s.sessionExpiry
  }

  /** Takes over a parked session once CONNACK is sent: its subscriptions, then its messages. */
  resume(p: Parked): void {
    this.subs = unpark(this.srv, p, this.perms, this)
    for (const id of p.qos2In) this.qos2In.add(id)
    // Unacknowledged messages first, as they were, with DUP [MQTT-4.4.0-1].
    const f = this.qosFlow()
    for (const [pid, o] of p.inflight) {
      this.inflight.set(pid, o)
      this.charge(f, o.payload.length)
      if (o.released) this.send({ cmd: 'pubrel', messageId: pid })
      else this.sendPublish(o, pid, true)
    }
    for (const o of p.queue) if (!this.done) this.enqueue(o)
  }

  // --- PUBLISH in (handlers/publish.ts) -------------------------------------------------------

  /**
   * MQTT 5 Topic Alias of an incoming PUBLISH: a topic name sets the alias and is returned,
   * an empty one uses it; null for an alias the client never set.
   */
  topicAlias(alias: number, topic: string): string | null {
    if (topic === '') return this.rare?.inAliases?.get(alias) ?? null
    ;(this.rareState().inAliases ??= new Map()).set(alias, topic)
    return topic
  }

  /** A QoS 2 PUBLISH id not yet released (a resent PUBLISH is only acknowledged again). */
  qos2Pending(pid: number): boolean {
    return this.flow !== null && this.flow.qos2In !== null && this.flow.qos2In.has(pid)
  }

  /** QoS 2 PUBLISH ids waiting for PUBREL. */
  get qos2Count(): number {
    return this.flow === null || this.flow.qos2In === null ? 0 : this.flow.qos2In.size
  }

  qos2Received(pid: number): void {
    this.qos2In.add(pid)
    this.ps?.qos2(this.clientId, pid, true) // a PUBLISH resent after a restart is not routed again
  }

  /** PUBREL (or a refused QoS 2 PUBLISH): forgets the id; false when it was not known. */
  qos2Released(pid: number): boolean {
    const known = this.flow !== null && this.flow.qos2In !== null && this.flow.qos2In.delete(pid)
    if (known) this.ps?.qos2(this.clientId, pid, false)
    return known
  }

  /**
   * Hands this client's PUBLISH to the router as a NATS message (in a Msg the connection
   * reuses: the router does not keep it), its payload src[at, at + size), lent for this call.
   * False when a service refused it ($SPRIG/mqtt/retain/... to a topic the user may not
   * publish to).
   */
  route(subject: string, hdr: Uint8Array, src: Uint8Array, at: number, size: number, reply: string): boolean {
    const pub = (this.topics ??= newPub())
    const m = pub.msg
    // Nothing changes the Msg's bytes: a publisher that repeats its subject (and reply)
    // keeps the encoded bytes of the last one.
    if (m.subject !== subject) {
      m.subject = subject
      m.subjectBytes = utf8(subject)
    }
    m.hdr = hdr
    m.lend(src, at, size)
    if (m.reply !== reply) {
      m.reply = reply // the Response Topic, as props.ts maps it
      m.replyBytes = reply === '' ? EMPTY : utf8(reply)
    }
    pub.in_msgs++
    pub.in_bytes += size
    this.routing = PUBLISHING
    let refused = false
    try {
      this.srv.router.publish(m, this)
    } finally {
      refused = this.routing === REFUSED
      this.routing = IDLE
    }
    return !refused
  }

  /** A service refused what this client's PUBLISH asked of it (it logged and counted that already). */
  refused(): void {
    if (this.routing === PUBLISHING) this.routing = REFUSED
  }

  // --- acknowledgements from the client (handlers/publish.ts) ---------------------------------

  /** PUBACK (qos 1) or PUBCOMP (qos 2) for a message in flight with that QoS: its slot is free. */
  acknowledged(pid: number, qos: 1 | 2): void {
    const o = this.flow?.inflight?.get(pid)
    if (o !== undefined && o.qos === qos) this.acked(pid)
  }

  /** PUBREC: a QoS 2 message the client has, to be released; false when the id is not in flight. */
  received(pid: number): boolean {
    const o = this.flow?.inflight?.get(pid)
    if (o === undefined) return false
    if (o.qos === 2 && !o.released) {
      o.released = true
      this.ps?.sent(this.clientId, o, pid)
    }
    return true
  }

  // --- subscriptions (handlers/subscribe.ts) --------------------------------------------------

  /** The router subscriptions of a filter, or undefined. */
  filterSubs(filter: string): readonly MqttSub[] | undefined {
    return subsOf(this.subs, filter)
  }

  /**
   * Subscribes a filter, replacing its old subscriptions [MQTT-3.8.4-3]. The handler stores
   * the session's new subscriptions once per packet (storeSubs), not once per filter.
   */
  subscribe(filter: string, list: MqttSub[]): void {
    const old = subsOf(this.subs, filter)
    if (old) for (const x of old) this.srv.router.unsubscribe(x)
    this.subs = withFilter(this.subs, filter, list)
    for (const x of list) this.srv.router.subscribe(x)
  }

  /** Unsubscribes a filter; false when there was none. (Stored by storeSubs, as subscribe.) */
  unsubscribe(filter: string): boolean {
    const list = subsOf(this.subs, filter)
    if (!list) return false
    for (const s of list) this.srv.router.unsubscribe(s)
    this.subs = withoutFilter(this.subs, filter)
    return true
  }

  /** After a SUBSCRIBE or UNSUBSCRIBE packet: a persistent session's changed filters. */
  storeSubs(): void {
    this.ps?.subscriptions(this.clientId, this.subs)
  }

  // --- DISCONNECT ---------------------------------------------------------------------------

  /** The client's DISCONNECT: its session expiry (MQTT 5, ms; undefined: unchanged), and whether its will still goes. */
  disconnected(expiry: number | undefined, keepWill: boolean): void {
    if (expiry !== undefined) this.sessionExpiry = expiry
    this.teardown('Client Disconnect', keepWill)
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
    if (s.noLocal && this.routing !== IDLE) return
    if (s.denyCheck && deliveryDenied(this.perms, m.subject, s.queue)) return
    const topic = subTopic(this.st, s, m)
    if (topic === null) return
    const qos = deliveryQos(s, m)
    // no_fast_producer_stall: QoS 0 is dropped for a crowded queue; QoS 1 and 2 wait in the
    // in-flight window and the session's queue, bounded by max_pending, as before.
    if (qos === 0 && this.out.shedding()) return
    // allow_responses: only a request the client actually gets may be answered.
    if (this.replies !== null && m.reply !== '') noteRequest(this.perms!, this.replies, m.reply, this.srv.host.now())
    this.out.msgs++ // out_msgs and out_bytes (/connz): counted by the queue
    this.out.bytes += m.size
    const props = this.version === 5 ? deliveryProps(headersToProps(this.st, m), s) : undefined
    const retain = s.rap === true && msgRetained(m) // Retain As Published [MQTT-3.3.1-12] [MQTT-3.3.1-13]
    if (qos === 0) {
      // Straight from the publisher's lent range (no view of it on Bun: src/msg.ts putPayload).
      if (props === undefined && this.framed(topic, null, m, 0, 0, false, retain)) return
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
    this.charge(f, o.payload.length)
    if (f.held + this.out.pending > this.out.limit) {
      this.overPending()
      return
    }
    if (this.inflight.size < this.maxInflight) this.sendInflight(o)
    else {
      this.waiting.push(o)
      this.ps?.queued(this.clientId, o)
    }
  }

  private sendInflight(o: Outgoing): void {
    // A message that waited past its Message Expiry Interval is dropped [MQTT-3.3.2-5] (props.ts).
    if (o.props !== undefined && !unexpired(o, this.srv.host.now())) {
      this.charge(this.flow!, -o.payload.length)
      this.ps?.done(this.clientId, o)
      return
    }
    const pid = this.nextPid()
    this.inflight.set(pid, o)
    this.ps?.sent(this.clientId, o, pid)
    this.sendPublish(o, pid, false)
  }

  private sendPublish(o: Outgoing, pid: number, dup: boolean): void {
    if (this.done) return
    if (!(o.props && this.version === 5) && this.framed(o.topic, o.payload, null, o.qos, pid, dup, o.retain)) return
    const p: Packet = { cmd: 'publish', topic: o.topic, payload: o.payload, qos: o.qos, dup, retain: o.retain }
    if (o.props && this.version === 5) p.properties = o.props
    if (pid !== 0) p.messageId = pid
    const alias = this.version === 5 ? aliasFor(this, o.topic) : 0
    if (alias !== 0) {
      // A known alias goes with an empty topic; a new one with the topic, which sets it.
      if (alias > 0) p.topic = ''
      p.properties = { ...p.properties, topicAlias: Math.abs(alias) }
    }
    if (this.rare !== null && this.rare.maxOutPacket > 0) {
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
  private framed(topic: string, payload: Uint8Array | null, m: Msg | null, qos: QoS, pid: number, dup: boolean, retain: boolean): boolean {
    const v5 = this.version === 5
    const alias = v5 ? aliasFor(this, topic) : 0
    const t = alias > 0 ? EMPTY : topicBytes(topic)
    const n = payload !== null ? payload.length : m!.size
    const size = publishSize(t, n, qos, v5, Math.abs(alias))
    if (size < 0) return false
    if (this.oversize(size, pid)) return true
    const at = this.out.reserve(size)
    if (at < 0) {
      this.overPending()
      return true
    }
    const b = this.out.buf
    const p = writePublishHead(b, at, t, n, qos, dup, retain, pid, v5, Math.abs(alias))
    if (payload !== null) b.set(payload, p)
    else putPayload(b, p, m!)
    if (alias < 0) setAlias(this, topic, -alias) // only once the packet that sets it is queued
    return true
  }

  /**
   * Never send a packet over the client's Maximum Packet Size (5.0 §3.1.2.11.4): true when
   * one of `size` bytes is over it, and so dropped as if delivered.
   */
  private oversize(size: number, pid: number): boolean {
    const r = this.rare
    if (r === null || r.maxOutPacket === 0 || size <= r.maxOutPacket) return false
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
  private acked(pid: number): boolean {
    const o = this.inflight.get(pid)
    if (!o) return false
    this.inflight.delete(pid)
    this.ps?.done(this.clientId, o)
    const f = this.flow!
    this.charge(f, -o.payload.length)
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
          this.charge(f, -o.payload.length)
          this.ps?.done(this.clientId, o)
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

  // --- src/lifecycle.ts: what MQTT says ---------------------------------------------------

  /** The connect deadline passed: closed (no CONNACK: there is no CONNECT to answer). */
  protected connectTimeout(): void {
    this.srv.log.debug(() => `${this.label()} mqtt connect timeout`)
    this.teardown('Connect Timeout', false)
  }

  protected closeSlow(): void {
    this.teardown('Slow Consumer', true, true)
  }

  /** QoS 1/2 messages held for acknowledgements count with the queue (memory budget). */
  protected override heldBytes(): number {
    return this.held
  }

  protected override backlogged(): boolean {
    const f = this.flow
    return f !== null && f.waiting !== null && f.waiting.length > 0
  }

  /** After a reload, credentials that no longer pass: disconnected (0x87 Not authorized). */
  protected revoked(user: string | undefined): void {
    this.srv.log.error(`${this.label()} mqtt authentication error after reload${user ? ` - User ${quote(user)}` : ''}`)
    this.disconnect(0x87, 'Authorization Violation')
  }

  /** After a reload: filters the new permissions refuse are removed (session.ts recheckSession). */
  protected recheck(): void {
    this.subs = recheckSession(this, this.srv.router, this.st, this.perms, (filter) =>
      this.srv.log.info(`Removed sub ${quote(filter)} for User ${quote(this.user)} - not authorized`),
    )
    this.ps?.subscriptions(this.clientId, this.subs)
  }

  tick(now: number): void {
    if (this.done) return
    if (this.writeDeadline(now)) return
    // [MQTT-3.1.2-24]: nothing for one and a half keepalive periods ends the connection.
    if (this.keepalive > 0 && now - this.lastIn > this.keepalive * 1.5) {
      this.srv.log.debug(() => `${this.label()} keepalive timeout`)
      this.disconnect(0x8d, 'Keepalive Timeout')
    }
  }

  shutdown(): void {
    this.disconnect(0x8b, 'Server Shutdown')
  }

  /**
   * Ends the connection once: publishes the will when `abrupt` (no DISCONNECT from the
   * client), drops subscriptions and the client id, and closes the wire after flushing.
   */
  teardown(reason: string, abrupt: boolean, discarded = false): void {
    if (this.done) return
    this.done = true
    this.stopDeadline()
    const srv = this.srv
    srv.remove(this, reason) // first: /connz?state=closed keeps it as it was
    // A session whose user is gone is not kept: it ends here (and a delayed will goes now).
    if (this.connected && this.sessionExpiry > 0) {
      const f = this.flow
      const leaving = { cid: this.cid, clientId: this.clientId, user: this.user, perms: this.perms, subs: this.subs, inflight: f?.inflight ?? null, waiting: f?.waiting ?? null, qos2In: f?.qos2In ?? null, label: () => this.label() }
      if (park(srv, this.st, leaving, srv.host.now(), this.sessionExpiry)) this.subs = null
      else this.sessionExpiry = 0
    }
    // The store: the session parked until its expiry, or ended (persist.ts).
    const ps = this.st.persist
    if (ps !== null && this.connected) {
      const p = this.sessionExpiry > 0 ? this.st.sessions.get(this.clientId) : undefined
      if (p !== undefined) ps.parked(p, this.sessionExpiry)
      else ps.endSession(this.clientId)
    }
    this.st.persistent.delete(this)
    for (const [, list] of filterEntries(this.subs)) for (const s of list) srv.router.unsubscribe(s)
    this.subs = null
    if (this.connected && this.st.clients.get(this.clientId) === this) this.st.clients.delete(this.clientId)
    const r = this.rare
    const will = r === null ? null : r.will
    if (r !== null) r.will = null
    if (abrupt && will) publishWill(srv, this.st, will, this.willOwner(), this.clientId, this.sessionExpiry)
    if (this.flow !== null) {
      this.flow.inflight = this.flow.waiting = null
      // A persistent session's messages are the parked session's now.
      this.charge(this.flow, -this.flow.held)
    }
    if (!discarded) this.out.flush(srv.host.now())
    this.wire.end()
    srv.log.debug(() => `${this.label()} mqtt connection closed: ${reason}`)
  }

  /** Who a will is published as, after the connection is gone: the client that set it (the services check its permissions). */
  private willOwner(): Owner {
    const label = this.label()
    return { cid: this.cid, echo: true, skipsHeaderHook: true, user: this.user, perms: this.perms, label: () => label, deliver() {} }
  }
}

const V4 = { protocolVersion: 4 }
const V5 = { protocolVersion: 5 }

type SharedParser = Parser & { conn: MqttConn | null; settings: unknown }

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

