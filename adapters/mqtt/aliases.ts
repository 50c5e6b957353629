// Topic aliases from sprig to an MQTT 5 client (5.0 §3.3.2.3.4). The client says in CONNECT how
// many it accepts (Topic Alias Maximum); sprig gives the first that many distinct topics it
// sends an alias each: the first PUBLISH of a topic carries the topic and its alias, later ones
// an empty topic and the alias. Aliases belong to one connection [MQTT-3.3.2-7]: a reconnect
// starts with none. Once all are given out, other topics go in full (no reassignment, so a busy
// topic never loses its alias to a passing one).

export interface AliasHolder {
  /** The client's Topic Alias Maximum; 0: it takes no aliases [MQTT-3.1.2-26]. */
  readonly aliasMax: number
  /** Topic -> alias given on this connection; null until the first. */
  outAliases: Map<string, number> | null
}

/**
 * The alias to send `topic` with: positive when the client knows it (send an empty topic),
 * negative when it is a new one (send the topic, then call setAlias once the packet is
 * queued), 0 for none.
 */
export function aliasFor(c: AliasHolder, topic: string): number {
  if (c.aliasMax === 0 || topic === '') return 0
  const m = c.outAliases
  const known = m?.get(topic)
  if (known !== undefined) return known
  const used = m === null ? 0 : m.size
  // Never above the client's maximum [MQTT-3.3.2-11], never 0 [MQTT-3.3.2-8].
  return used < c.aliasMax ? -(used + 1) : 0
}

/** Records that the PUBLISH setting `alias` for `topic` went into the outbound queue. */
export function setAlias(c: AliasHolder, topic: string, alias: number): void {
  ;(c.outAliases ??= new Map()).set(topic, alias)
}
