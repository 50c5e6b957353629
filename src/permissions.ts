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
 * delivery (see needsDeliveryCheck).
 */
export function canSubscribe(p: CompiledPermissions, subject: string, queue: string | null): boolean {
  if (p.subAllow !== null) {
    const ok = p.subAllow.some((r) => (r.queue === null || r.queue === queue) && subjectIsSubsetOf(subject, r.subject))
    if (!ok) return false
  }
  return !p.subDeny.some((r) => (r.queue === null || r.queue === queue) && subjectMatches(r.subject, subject))
}

/**
 * A wildcard subscription that overlaps a deny rule must have each message checked as it
 * is delivered; every other subscription skips that check.
 */
export function needsDeliveryCheck(p: CompiledPermissions | null, subject: string): boolean {
  if (p === null || p.subDeny.length === 0 || !hasWildcard(subject)) return false
  return p.subDeny.some((r) => subjectsCollide(r.subject, subject))
}

/** At delivery, for subscriptions marked by needsDeliveryCheck: is this message's subject denied? */
export function deliveryDenied(p: CompiledPermissions | null, subject: string, queue: string | null): boolean {
  if (p === null) return false
  return p.subDeny.some((r) => (r.queue === null || r.queue === queue) && subjectMatches(r.subject, subject))
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
