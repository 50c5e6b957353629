// Per-user permissions, nats-server's model: what a user may publish to and subscribe to
// (allow and deny lists of subjects with wildcards) and whether it may answer requests it
// received (allow_responses). Compiled once per user; the NATS and MQTT adapters (and the
// uplink) all ask the same compiled object, so a rule means the same thing everywhere.

import { hasWildcard, subjectIsSubsetOf, subjectMatches, subjectsCollide } from './subject.ts'

/** An `allow`/`deny` pair as written in the config; a missing list means "no rule". */
export interface SubjectPermission {
  allow?: string[]
  deny?: string[]
}

/** `allow_responses`: how many replies per received request, and for how long (ms). */
export interface ResponsePermission {
  max: number
  expires: number
}

/** A user's `permissions` block, after config validation. */
export interface Permissions {
  publish?: SubjectPermission
  subscribe?: SubjectPermission
  allow_responses?: ResponsePermission
}

// nats-server's DEFAULT_ALLOW_RESPONSE_MAX_MSGS and DEFAULT_ALLOW_RESPONSE_EXPIRATION.
export const DEFAULT_RESPONSE_MAX = 1
export const DEFAULT_RESPONSE_EXPIRES = 2 * 60_000

/** Reply subjects remembered per connection for allow_responses (nats-server prunes at 4096 too). */
const MAX_REPLIES = 4096
/** Publish verdicts cached per compiled permission set. */
const MAX_CACHE = 1024

/** One subscribe rule: a subject pattern, optionally limited to one queue group ("foo.> q"). */
interface SubRule {
  subject: string
  queue: string | null
}

export interface CompiledPermissions {
  /** null: every publish is allowed by the lists (allow_responses may still add). */
  readonly pubAllow: readonly string[] | null
  readonly pubDeny: readonly string[]
  readonly subAllow: readonly SubRule[] | null
  readonly subDeny: readonly SubRule[]
  /** Subscribe allow rules that name sprig's own subjects (first token `$SPRIG`). */
  readonly subService: readonly SubRule[]
  readonly responses: ResponsePermission | null
  /** Cached publish verdicts by subject (bounded). */
  readonly pubCache: Map<string, boolean>
}

/**
 * Compiles a permissions block. As in nats-server, `allow_responses` without a publish allow
 * list turns the blanket publish allow off: such a user may publish only replies.
 */
export function compilePermissions(p: Permissions): CompiledPermissions {
  const responses = p.allow_responses ?? null
  let pubAllow = p.publish?.allow ?? null
  if (responses !== null && pubAllow === null) pubAllow = []
  return {
    pubAllow,
    pubDeny: p.publish?.deny ?? [],
    subAllow: p.subscribe?.allow ? p.subscribe.allow.map(subRule) : null,
    subDeny: (p.subscribe?.deny ?? []).map(subRule),
    subService: (p.subscribe?.allow ?? []).map(subRule).filter((r) => isService(r.subject)),
    responses,
    pubCache: new Map(),
  }
}

/** "subject" or "subject queue" (nats-server's queue permission form). */
export function subRule(s: string): SubRule {
  const t = s.trim()
  const sp = t.search(/\s/)
  if (sp < 0) return { subject: t, queue: null }
  return { subject: t.slice(0, sp), queue: t.slice(sp).trim() }
}

/** May a client with `p` publish to the literal `subject` (not counting allow_responses)? */
export function canPublish(p: CompiledPermissions, subject: string): boolean {
  const hit = p.pubCache.get(subject)
  if (hit !== undefined) return hit
  let ok = p.pubAllow === null || p.pubAllow.some((a) => subjectMatches(a, subject))
  if (ok) ok = !p.pubDeny.some((d) => subjectMatches(d, subject))
  if (p.pubCache.size >= MAX_CACHE) p.pubCache.clear()
  p.pubCache.set(subject, ok)
  return ok
}

/**
 * May a client with `p` subscribe to `subject` (in `queue`)? An allow rule must cover every
 * subject the subscription could match (`foo.*` does not allow `foo.>`); a deny rule refuses
 * the subscription when it matches the subscription's subject as nats-server matches it.
 * Wildcard subscriptions that merely overlap a deny rule are allowed and filtered at
 * delivery (see needsDeliveryCheck). sprig's own subjects (`$SPRIG.`, its services' traffic)
 * need an allow rule that names them (see serviceHidden).
 */
export function canSubscribe(p: CompiledPermissions, subject: string, queue: string | null): boolean {
  if (isService(subject) && !p.subService.some((r) => (r.queue === null || r.queue === queue) && subjectIsSubsetOf(subject, r.subject))) return false
  return rulesAllowSubscribe(p, subject, queue)
}

/**
 * canSubscribe by the allow and deny lists alone, without the `$SPRIG.` rule: for the uplink,
 * whose maps name sprig's subjects when they may cross.
 */
export function rulesAllowSubscribe(p: CompiledPermissions, subject: string, queue: string | null): boolean {
  if (p.subAllow !== null) {
    const ok = p.subAllow.some((r) => (r.queue === null || r.queue === queue) && subjectIsSubsetOf(subject, r.subject))
    if (!ok) return false
  }
  return !subscribeDenied(p, subject, queue)
}

/** Does a subscribe deny rule match `subject` (in `queue`)? */
export function subscribeDenied(p: CompiledPermissions, subject: string, queue: string | null): boolean {
  return p.subDeny.some((r) => (r.queue === null || r.queue === queue) && subjectMatches(r.subject, subject))
}

/** Is the first token of `subject` literally `$SPRIG` (sprig's own subjects)? */
function isService(subject: string): boolean {
  return subject.charCodeAt(0) === 36 && subject.startsWith('$SPRIG') && (subject.length === 6 || subject.charCodeAt(6) === 46)
}

/**
 * sprig's services carry other users' traffic on `$SPRIG.` subjects (relayed replies,
 * retained sets). Like nats-server's `$SYS`, a user with permissions does not see them unless
 * a subscribe allow rule names them (first token `$SPRIG`); `>` or `*.x` does not. Users
 * without permissions (null) see everything, as in nats-server.
 */
export function serviceHidden(p: CompiledPermissions | null, subject: string, queue: string | null): boolean {
  if (p === null || !isService(subject)) return false
  return !p.subService.some((r) => (r.queue === null || r.queue === queue) && subjectMatches(r.subject, subject))
}

/**
 * Which subscriptions must have each message checked as it is delivered: a wildcard that
 * overlaps a deny rule, and, for a user with permissions, one whose first token is a
 * wildcard (it could match `$SPRIG.` subjects). Every other subscription skips that check,
 * and users without permissions never pay for it.
 */
export function needsDeliveryCheck(p: CompiledPermissions | null, subject: string): boolean {
  if (p === null || !hasWildcard(subject)) return false
  const c = subject.charCodeAt(0)
  if ((c === 42 || c === 62) && (subject.length === 1 || subject.charCodeAt(1) === 46)) return true // `*` or `>` first
  if (p.subDeny.length === 0) return false
  return p.subDeny.some((r) => subjectsCollide(r.subject, subject))
}

/** At delivery, for subscriptions marked by needsDeliveryCheck: may this message not be delivered? */
export function deliveryDenied(p: CompiledPermissions | null, subject: string, queue: string | null): boolean {
  if (p === null) return false
  return serviceHidden(p, subject, queue) || subscribeDenied(p, subject, queue)
}

/**
 * Could a client with `p` still receive a message on the literal `subject`, through any
 * subscription (any queue group) it may hold? For messages already held for a client whose
 * permissions changed (MQTT sessions).
 */
export function mayReceive(p: CompiledPermissions, subject: string): boolean {
  if (p.subAllow !== null && !p.subAllow.some((r) => subjectMatches(r.subject, subject))) return false
  return !p.subDeny.some((r) => r.queue === null && subjectMatches(r.subject, subject))
}

// --- allow_responses ------------------------------------------------------------------------

/** Reply subjects of requests a connection received, and how many answers each has left. */
export type Replies = Map<string, { left: number; until: number }>

/** Delivery of a request with a reply subject to a connection that may answer it. */
export function noteRequest(p: CompiledPermissions, replies: Replies, reply: string, now: number): void {
  const r = p.responses
  if (r === null || reply === '') return
  if (replies.size >= MAX_REPLIES && !replies.has(reply)) {
    for (const [k, v] of replies) if (v.until <= now) replies.delete(k)
    // Still full: forget the oldest (Map order is insertion order).
    if (replies.size >= MAX_REPLIES) replies.delete(replies.keys().next().value!)
  }
  replies.set(reply, { left: r.max, until: now + r.expires })
}

/** A publish the lists refused: allowed if it answers a request received, using one answer up. */
export function takeResponse(replies: Replies | null, subject: string, now: number): boolean {
  const e = replies?.get(subject)
  if (e === undefined) return false
  if (e.until <= now) {
    replies!.delete(subject)
    return false
  }
  if (--e.left <= 0) replies!.delete(subject)
  return true
}

/**
 * The whole publish check, lists then responses: what the NATS and MQTT adapters call for
 * each publish. `p` null means no permissions (everything allowed).
 */
export function publishAllowed(p: CompiledPermissions | null, replies: Replies | null, subject: string, now: number): boolean {
  if (p === null || canPublish(p, subject)) return true
  return p.responses !== null && takeResponse(replies, subject, now)
}

// --- on someone's behalf --------------------------------------------------------------------

/**
 * Whoever sprig's services act for when they turn a message into a publish on another
 * subject (a retained set, a relayed reply) or answer a query (retained messages): the
 * publishing connection with its permissions, or the uplink with its own filters. sprig's
 * own publishes (null) are trusted.
 */
export interface Principal {
  /** The user name, for logs ('' or absent: none). */
  readonly user?: string
  /** The client's permissions (null or absent: none). */
  readonly perms?: CompiledPermissions | null
  /** Instead of perms (the uplink): may this publisher's messages reach `subject` here? */
  mayPublish?(subject: string): boolean
  /** Instead of perms (the uplink): may messages on `subject` be given to this requester? */
  mayReceive?(subject: string): boolean
  /**
   * This is sprig answering a request of someone else (router.ts answerFor): its publishes
   * go where the requester could publish or read, and never set a retained message.
   */
  readonly answer?: boolean
}

/** May a service publish to `subject` on behalf of `who`? */
export function mayPublishAs(who: Principal | null, subject: string): boolean {
  if (who === null) return true
  if (who.mayPublish !== undefined) return who.mayPublish(subject)
  const p = who.perms
  return p === undefined || p === null || canPublish(p, subject)
}

/** May a service hand `who` a message on `subject` (what a subscription would deliver)? */
export function mayReceiveAs(who: Principal | null, subject: string): boolean {
  if (who === null) return true
  if (who.mayReceive !== undefined) return who.mayReceive(subject)
  const p = who.perms
  return p === undefined || p === null || canSubscribe(p, subject, null)
}

/**
 * May sprig answer `who`'s request on its reply subject `reply`? A reply subject is the
 * requester's choice, so only where `who` could publish or read anyway. A `$SPRIG.` reply (an
 * MQTT requester's relay subject) is left to the service there, which gets the answer as
 * `who`'s (Principal.answer).
 */
export function mayAnswer(who: Principal | null, reply: string): boolean {
  return who === null || isService(reply) || mayPublishAs(who, reply) || mayReceiveAs(who, reply)
}

/**
 * `who`'s publish to `via` passed although its lists refuse it: it was an answer to a
 * request it received (allow_responses). A relay of that answer may go where the request
 * said, as the answer could have gone there directly.
 */
export function answeredAs(who: Principal | null, via: string): boolean {
  const p = who?.perms
  return p !== undefined && p !== null && p.responses !== null && !canPublish(p, via)
}

/** The -ERR text nats-server sends for a refused publish. */
export function publishViolation(subject: string): string {
  return `Permissions Violation for Publish to "${subject}"`
}

/** The -ERR text nats-server sends for a refused subscription. */
export function subscribeViolation(subject: string, queue: string | null): string {
  return queue === null
    ? `Permissions Violation for Subscription to "${subject}"`
    : `Permissions Violation for Subscription to "${subject}" using queue "${queue}"`
}
