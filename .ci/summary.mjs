// The end of a CI log: each failed assertion (file > subtest > assertion), then one line
// "N passed, M failed". Arguments: one "first.log[,retry.log]" per tap run. The retry log is
// a second run of only the files that failed in the first; a file that passes there is
// listed as FLAKY with what failed on its first try, and those assertions count as passed.
import { existsSync, readFileSync } from 'node:fs'

/** Failed leaf assertions by top-level file, from TAP text. */
function failures(text) {
  const byFile = new Map()
  const path = []
  for (const line of text.split('\n')) {
    const sub = /^( *)# Subtest: (.*)$/.exec(line)
    if (sub) {
      path.length = sub[1].length / 4
      path.push(sub[2])
      continue
    }
    const bad = /^( *)not ok \d+ - (.*?)(?: # time=.*)?$/.exec(line)
    if (!bad || /# (TODO|SKIP)/i.test(line)) continue
    const depth = bad[1].length / 4
    if (depth === 0 || path[depth] === bad[2]) continue // a file's or a subtest's own line
    const file = path[0]
    if (!byFile.has(file)) byFile.set(file, [])
    byFile.get(file).push(path.slice(0, depth).concat(bad[2]).join(' > '))
  }
  return byFile
}

/** Files whose own line says ok. */
function passedFiles(text) {
  return new Set([...text.matchAll(/^ok \d+ - (\S+\.test\.ts)/gm)].map((m) => m[1]))
}

/** tap's own totals: every run ends with "# { total: 120, pass: 118, fail: 2 }". */
function totals(text) {
  const get = (m, k) => Number((new RegExp(k + ': (\\d+)').exec(m) || [0, 0])[1])
  const ms = [...text.matchAll(/^# \{ total: \d+(.*)\}$/gm)].map((m) => m[1])
  if (!ms.length) return null
  return { pass: ms.reduce((n, m) => n + get(m, 'pass'), 0), fail: ms.reduce((n, m) => n + get(m, 'fail'), 0), skip: ms.reduce((n, m) => n + get(m, 'skip'), 0) }
}

let pass = 0, fail = 0, skip = 0, broken = false
for (const arg of process.argv.slice(2)) {
  const [first, retry] = arg.split(',')
  if (!existsSync(first)) continue
  const text = readFileSync(first, 'utf8')
  const t = totals(text)
  if (t === null) {
    console.log(`FAILED: ${first}: no tap summary (the run did not finish)`)
    broken = true
    continue
  }
  pass += t.pass
  fail += t.fail
  skip += t.skip
  const again = retry && existsSync(retry) ? passedFiles(readFileSync(retry, 'utf8')) : new Set()
  for (const [file, list] of failures(text)) {
    const flaky = again.has(file)
    for (const f of list) console.log(`${flaky ? 'FLAKY (passed when its file ran again)' : 'FAILED'}: ${f}`)
    if (flaky) {
      pass += list.length
      fail -= list.length
    }
  }
}
if (broken) fail++
console.log(`${pass} passed, ${fail} failed` + (skip ? `, ${skip} skipped` : ''))
