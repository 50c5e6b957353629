#!/usr/bin/env node
// Import-graph check: no cycles among src/, adapters/ and targets/, and the layer rule of
// docs/architecture.md (src/ imports neither adapters/ nor targets/; adapters/ imports no
// targets/; the nats and mqtt adapters do not import each other). Relative imports only.
// Cycles count imports that exist at run time; type-only imports (`import type`, or braces
// holding only `type X`) are erased, so they cannot break load order, but they do count for
// the layer rule. No dependencies:
// `node scripts/cycles.mjs` (npm run cycles) prints every problem and exits 1; the tap test
// test/cycles.test.ts runs the same check.

import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOTS = ['src', 'adapters', 'targets']

/**
 * Edges of cycles that are known and accepted while being removed; a cycle made only of these
 * edges is reported as known, not as a failure. Empty today: keep it that way.
 */
export const KNOWN = []

// import/export ... from '...', bare import '...', import('...') (not the type `import('...').T`).
const IMPORT = /(?:^|[\s;])(?:import|export)\s+(type\s+)?(?:([\w*${}\s,]+?)\s+from\s+)?['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)(\.(?!then\b)[A-Za-z_$])?/g

// `{ type A, type B }`: nothing of it is left at run time.
const typeOnly = (typeKw, clause) =>
  typeKw !== undefined || (clause !== undefined && /^\{[^}]*\}$/.test(clause.trim()) && clause.replace(/[{}\s]/g, '').split(',').filter(Boolean).every((x) => x.startsWith('type')))

function files(root, dir) {
  const out = []
  for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...files(root, p))
    else if (/\.(ts|mts|js|mjs)$/.test(e.name) && !e.name.endsWith('.d.ts')) out.push(p)
  }
  return out
}

/** file -> the repo files it imports (relative specifiers only); `runtimeOnly` leaves out type-only imports. */
export function importGraph(root, runtimeOnly = false) {
  const graph = new Map()
  for (const r of ROOTS) {
    for (const f of files(root, r)) {
      const text = readFileSync(join(root, f), 'utf8').replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, '')
      const deps = new Set()
      for (const m of text.matchAll(IMPORT)) {
        const spec = m[3] ?? m[4]
        if (!spec.startsWith('.') || (runtimeOnly && (typeOnly(m[1], m[2]) || m[5] !== undefined))) continue
        deps.add(relative(root, resolve(root, dirname(f), spec)).split('\\').join('/'))
      }
      graph.set(f.split('\\').join('/'), [...deps].sort())
    }
  }
  return graph
}

/** The strongly connected components that hold a cycle (Tarjan), each as a sorted list of files. */
export function findCycles(graph) {
  let index = 0
  const idx = new Map()
  const low = new Map()
  const stack = []
  const on = new Set()
  const sccs = []
  const visit = (v) => {
    idx.set(v, index)
    low.set(v, index++)
    stack.push(v)
    on.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue
      if (!idx.has(w)) {
        visit(w)
        low.set(v, Math.min(low.get(v), low.get(w)))
      } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)))
    }
    if (low.get(v) === idx.get(v)) {
      const c = []
      let w
      do {
        w = stack.pop()
        on.delete(w)
        c.push(w)
      } while (w !== v)
      if (c.length > 1 || (graph.get(v) ?? []).includes(v)) sccs.push(c.sort())
    }
  }
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) visit(v)
  return sccs
}

/** A path from `from` back to itself inside the component, for the message. */
function cyclePath(graph, scc) {
  const inside = new Set(scc)
  const from = scc[0]
  const prev = new Map([[from, null]])
  const queue = [from]
  while (queue.length > 0) {
    const v = queue.shift()
    for (const w of graph.get(v) ?? []) {
      if (!inside.has(w)) continue
      if (w === from) {
        const path = [v]
        for (let p = prev.get(v); p !== null && p !== undefined; p = prev.get(p)) path.unshift(p)
        return [...path, from].join(' -> ')
      }
      if (!prev.has(w)) {
        prev.set(w, v)
        queue.push(w)
      }
    }
  }
  return scc.join(' <-> ')
}

const layer = (f) => f.split('/')[0]
const adapter = (f) => (f.startsWith('adapters/') ? f.split('/')[1] : null)

/** The layer rule's violations, one line per import. */
export function layerViolations(graph) {
  const out = []
  for (const [f, deps] of graph) {
    for (const d of deps) {
      const from = layer(f)
      const to = layer(d)
      if (from === 'src' && (to === 'adapters' || to === 'targets')) out.push(`${f} imports ${d}: src/ imports neither adapters/ nor targets/`)
      else if (from === 'adapters' && to === 'targets') out.push(`${f} imports ${d}: adapters/ import no targets/`)
      else if (adapter(f) !== null && adapter(d) !== null && adapter(f) !== adapter(d)) {
        out.push(`${f} imports ${d}: the ${adapter(f)} and ${adapter(d)} adapters do not import each other (shared rules live in src/)`)
      }
    }
  }
  return out.sort()
}

/** Everything wrong, as lines to print; and the known cycles still present. */
export function check(root, known = KNOWN) {
  const graph = importGraph(root, true)
  const problems = []
  const knownLeft = []
  const allowed = new Set(known)
  for (const scc of findCycles(graph)) {
    // A component is known when dropping the known edges leaves it without a cycle.
    const rest = new Map(scc.map((v) => [v, (graph.get(v) ?? []).filter((w) => !allowed.has(`${v} -> ${w}`))]))
    if (findCycles(rest).length === 0) knownLeft.push(cyclePath(graph, scc))
    else problems.push(`import cycle: ${cyclePath(rest, findCycles(rest)[0])}`)
  }
  problems.push(...layerViolations(importGraph(root)))
  return { problems, knownLeft, files: graph.size }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
  const { problems, knownLeft, files: n } = check(root)
  for (const k of knownLeft) console.log(`known cycle (scripts/cycles.mjs KNOWN): ${k}`)
  for (const p of problems) console.log(p)
  console.log(problems.length === 0 ? `ok: ${n} files, no new import cycles, layers respected` : `${problems.length} problem(s)`)
  process.exit(problems.length === 0 ? 0 : 1)
}
