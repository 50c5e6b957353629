// The JSON-with-comments config syntax; src/config/conf.ts is its peer for nats-server's
// syntax. Both produce a plain object that src/config/schema.ts checks.

import { ConfigError } from './errors.ts'

// ---------------------------------------------------------------------------------------
// Config file syntax

/**
 * Parses JSON that may also contain `//`, `/* *\/` and `#` comments and trailing commas.
 * An empty file (or one with only comments) is an empty object. Duplicate keys are errors,
 * since the silently ignored first one is nearly always a mistake.
 */
export function parseConfigText(text: string, file: string): unknown {
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0

  const fail = (msg: string, at = i): never => {
    const { line, column } = position(text, at)
    throw new ConfigError(`config error in ${file}:${line}:${column}: ${msg}`, { file, line, column })
  }
  const here = (): string =>
    i >= text.length ? 'end of file' : text[i] === '"' ? 'a string' : JSON.stringify(String.fromCodePoint(text.codePointAt(i)!))

  const skip = (): void => {
    while (i < text.length) {
      const c = text[i]
      if (c === ' ' || c === '\t' || c === '\n' || c === '\r') i++
      else if (c === '#' || (c === '/' && text[i + 1] === '/')) {
        while (i < text.length && text[i] !== '\n') i++
      } else if (c === '/' && text[i + 1] === '*') {
        const end = text.indexOf('*/', i + 2)
        if (end < 0) fail('comment is not closed (missing "*/")')
        i = end + 2
      } else break
    }
  }

  const quoted = (): string => {
    const start = i++
    let out = ''
    let from = i
    for (;;) {
      if (i >= text.length) fail('string is not closed (missing \'"\')', start)
      const c = text.charCodeAt(i)
      if (c === 0x22) break // "
      if (c === 0x0a || c === 0x0d) fail('string is not closed before the end of the line', start)
      if (c < 0x20) fail('control character in string; write it as an escape like "\\t"')
      if (c !== 0x5c) {
        i++
        continue
      }
      out += text.slice(from, i)
      const e = text[i + 1]
      if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
        out += ESCAPES[e]
        i += 2
      } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) {
        out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16))
        i += 6
      } else {
        fail(`invalid escape "\\${e === undefined ? '' : JSON.stringify(e).slice(1, -1)}" in string`) // a raw newline would split the one-line error
      }
      from = i
    }
    out += text.slice(from, i)
    i++
    return out
  }

  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
  const number = (): number => {
    NUMBER.lastIndex = i
    const m = NUMBER.exec(text)
    if (!m) return fail(`unexpected ${here()}, expected a value`)
    i += m[0].length
    // `max_payload: 1MB` is valid in nats-server's own format; say how to write it here.
    if (/[A-Za-z_.]/.test(text[i] ?? '')) {
      fail(`unexpected ${here()} after a number; values with units must be quoted, like "1MB" or "10s"`)
    }
    return Number(m[0])
  }

  const value = (depth: number): unknown => {
    if (depth > 64) fail('nested too deeply')
    skip()
    const c = text[i]
    if (c === '{') return object(depth)
    if (c === '[') return array(depth)
    if (c === '"') return quoted()
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return number()
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, i) && !/[\w$]/.test(text[i + word.length] ?? '')) {
        i += word.length
        return v
      }
    }
    const word = /^[\w$.-]+/.exec(text.slice(i, i + 40))
    if (word) fail(`unexpected ${JSON.stringify(word[0])}; strings must be in double quotes`)
    return fail(`unexpected ${here()}, expected a value`)
  }

  const object = (depth: number): Record<string, unknown> => {
    i++
    const obj: Record<string, unknown> = {}
    const seen = new Set<string>()
    for (;;) {
      skip()
      if (text[i] === '}') {
        i++
        return obj
      }
      if (text[i] !== '"') fail(`unexpected ${here()}, expected a key in double quotes or "}"`)
      const keyAt = i
      const key = quoted()
      if (seen.has(key)) fail(`duplicate key ${JSON.stringify(key)}`, keyAt)
      seen.add(key)
      skip()
      if (text[i] !== ':') fail(`unexpected ${here()}, expected ":" after key ${JSON.stringify(key)}`)
      i++
      // defineProperty, so a "__proto__" key is data rather than a prototype change.
      Object.defineProperty(obj, key, { value: value(depth + 1), enumerable: true, writable: true, configurable: true })
      skip()
      if (text[i] === ',') i++
      else if (text[i] === '"') fail('missing "," before this key')
      else if (text[i] !== '}') fail(`unexpected ${here()}, expected "," or "}"`)
    }
  }

  const array = (depth: number): unknown[] => {
    i++
    const arr: unknown[] = []
    for (;;) {
      skip()
      if (text[i] === ']') {
        i++
        return arr
      }
      arr.push(value(depth + 1))
      skip()
      if (text[i] === ',') i++
      else if (text[i] !== ']') fail(`unexpected ${here()}, expected "," or "]"`)
    }
  }

  skip()
  if (i >= text.length) return {}
  const result = value(0)
  skip()
  if (i < text.length) fail(`unexpected ${here()} after the end of the configuration`)
  return result
}

const ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }

function position(text: string, at: number): { line: number; column: number } {
  let line = 1
  let lineStart = 0
  for (let j = 0; j < at && j < text.length; j++) {
    if (text.charCodeAt(j) === 0x0a) {
      line++
      lineStart = j + 1
    }
  }
  return { line, column: at - lineStart + 1 }
}
