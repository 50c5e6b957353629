// nats-server's own configuration syntax, so an operator's nats-server.conf loads in sprig.
// The result is the same plain object the JSON parser (json.ts) produces, so every option
// is checked by the same code; this module knows the syntax only, no option names.
//
// The grammar follows nats-server's conf lexer:
//   key: value   key = value   key value         (keys end at whitespace, ":" or "=")
//   a value ends at a new line, ";" or ","; blocks { ... } and arrays [ ... ] (comma or
//   new line separated); # and // comments; "double" (escapes \t \n \r \" \\ \xHH),
//   'single' (raw) and unquoted strings; 1K = 1000, 1KB = 1Ki = 1KiB = 1024 (K M G T P E);
//   true/false/yes/no/on/off; include FILE (relative to the including file); $NAME refers to
//   an earlier key in an enclosing block, else to the environment variable NAME.
// Pure: files come through the injected readFile, the environment through env.

export interface ConfPosition {
  file: string
  /** 1-based, like the JSON parser's errors. */
  line: number
  column: number
}

/** A syntax error. The message is ready to show: `config error in FILE:LINE:COL: ...`. */
export class ConfSyntaxError extends Error {
  override name = 'ConfSyntaxError'
  constructor(
    message: string,
    readonly detail: string,
    readonly file: string,
    readonly line: number,
    readonly column: number,
    readonly key?: string,
  ) {
    super(message)
  }
}

export interface ConfInput {
  /** Reads an included file; may throw (its message is shown). Without it, include is an error. */
  readFile?: (path: string) => string
  /** For $NAME references that are not earlier keys. */
  env?: Readonly<Record<string, string | undefined>>
  /**
   * A key that was only defined to be referenced as $NAME is dropped from the result (as
   * nats-server ignores it) unless this says the path is a real option.
   */
  isOption?: (path: string) => boolean
}

export interface ConfResult {
  value: Record<string, unknown>
  /** Where each key (dotted path, arrays as [i]) and array element was written. */
  positions: Map<string, ConfPosition>
}

type Seg = string | number

interface Parsed {
  value: Record<string, unknown>
  positions: Map<string, ConfPosition>
  /** Paths of keys that a $NAME referred to. */
  used: Seg[][]
}

interface Shared {
  readFile?: (path: string) => string
  env: Readonly<Record<string, string | undefined>>
  /** Environment values are parsed as values too, and may refer to others: the ones being read. */
  envStack: string[]
}

/** Parses `text` (the contents of `file`) in nats-server's syntax. Throws ConfSyntaxError. */
export function parseConf(text: string, file: string, input: ConfInput = {}): ConfResult {
  const shared: Shared = { readFile: input.readFile, env: input.env ?? {}, envStack: [] }
  const top = parseFile(text, file, shared, [cleanPath(file)])
  for (const segs of top.used) {
    const path = pathString(segs)
    if (input.isOption?.(path)) continue
    let parent: unknown = top.value
    for (const s of segs.slice(0, -1)) parent = (parent as Record<Seg, unknown> | undefined)?.[s]
    const last = segs[segs.length - 1]!
    if (typeof parent === 'object' && parent !== null && Object.hasOwn(parent, last)) {
      delete (parent as Record<Seg, unknown>)[last]
      dropPositions(top.positions, path)
    }
  }
  return { value: top.value, positions: top.positions }
}

/** The position recorded for `path`, or for its nearest enclosing key or element. */
export function positionOf(positions: ReadonlyMap<string, ConfPosition>, path: string): ConfPosition | undefined {
  for (let p = path; p !== ''; p = p.replace(/(?:\.[^.[\]]*|\[\d+\])$|^[^.[\]]*$/, '')) {
    const pos = positions.get(p)
    if (pos) return pos
  }
  return undefined
}

/**
 * Which parser reads a config file: `.conf` means nats-server's syntax, `.json` JSON; any
 * other name goes by content (a `{` followed by a double-quoted key, or nothing, is JSON).
 */
export function configSyntax(file: string, text: string): 'json' | 'conf' {
  const ext = /\.([A-Za-z]+)$/.exec(file)?.[1]?.toLowerCase()
  if (ext === 'conf') return 'conf'
  if (ext === 'json') return 'json'
  const skip = /(?:\s+|#[^\n]*|\/\/[^\n]*|\/\*[\s\S]*?\*\/|\ufeff)*/y
  skip.lastIndex = 0
  skip.exec(text)
  let at = skip.lastIndex
  if (at >= text.length) return 'json'
  if (text[at] !== '{') return 'conf'
  skip.lastIndex = at + 1
  skip.exec(text)
  at = skip.lastIndex
  return text[at] === '"' || text[at] === '}' ? 'json' : 'conf'
}

// ---------------------------------------------------------------------------------------

const MAX_DEPTH = 64
const MAX_INCLUDE_DEPTH = 32
const MAX_ENV_DEPTH = 8

const INT64_MIN = -(2n ** 63n)
const INT64_MAX = 2n ** 63n - 1n

// nats-server's size units: a bare letter is a power of 1000; "b", "i" or "ib" after it a power of 1024.
const SIZE_UNITS = new Map<string, bigint>([['', 1n]])
for (const [n, letter] of ['k', 'm', 'g', 't', 'p', 'e'].entries()) {
  SIZE_UNITS.set(letter, 1000n ** BigInt(n + 1))
  for (const s of ['b', 'i', 'ib']) SIZE_UNITS.set(letter + s, 1024n ** BigInt(n + 1))
}

const BOOLEANS = new Map<string, boolean>([
  ['true', true], ['yes', true], ['on', true],
  ['false', false], ['no', false], ['off', false],
])

const ESCAPES: Record<string, string> = { t: '\t', n: '\n', r: '\r', '"': '"', '\\': '\\' }

const isDigit = (c: string | undefined): boolean => c !== undefined && c >= '0' && c <= '9'
const isBlank = (c: string | undefined): boolean => c === ' ' || c === '\t'
const isNL = (c: string | undefined): boolean => c === '\n' || c === '\r'
const isSpace = (c: string | undefined): boolean => c !== undefined && /\s/.test(c)
/** Where an unquoted value or a number ends. */
const endsValue = (c: string | undefined): boolean =>
  c === undefined || isNL(c) || isBlank(c) || c === ';' || c === ',' || c === '}' || c === ']'

function pathString(segs: readonly Seg[]): string {
  let out = ''
  for (const s of segs) out += typeof s === 'number' ? `[${s}]` : out === '' ? s : `.${s}`
  return out
}

function dropPositions(positions: Map<string, ConfPosition>, path: string): void {
  for (const p of [...positions.keys()]) {
    if (p === path || p.startsWith(`${path}.`) || p.startsWith(`${path}[`)) positions.delete(p)
  }
}

/** Go's filepath.Clean, for '/'-separated paths. */
function cleanPath(p: string): string {
  const abs = p.startsWith('/')
  const out: string[] = []
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..' && out.length > 0 && out[out.length - 1] !== '..') out.pop()
    else if (part !== '..' || !abs) out.push(part)
  }
  const s = out.join('/')
  return abs ? `/${s}` : s || '.'
}

/** nats-server joins an include's name to the including file's directory, even a name starting with "/". */
function includePath(from: string, name: string): string {
  const slash = from.lastIndexOf('/')
  const dir = slash < 0 ? '.' : from.slice(0, slash) || '/'
  return cleanPath(`${dir}/${name}`)
}

function clone(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(clone)
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {}
    for (const [k, x] of Object.entries(v)) define(out, k, clone(x))
    return out
  }
  return v
}

// defineProperty, so a "__proto__" key is data rather than a prototype change.
function define(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
}

function describeChar(text: string, at: number): string {
  if (at >= text.length) return 'end of file'
  const c = String.fromCodePoint(text.codePointAt(at)!)
  return isNL(c) ? 'a new line' : JSON.stringify(c)
}

function parseFile(text: string, file: string, sh: Shared, chain: readonly string[]): Parsed {
  const n = text.length
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0

  const lineStarts = [0]
  for (let j = text.indexOf('\n'); j >= 0; j = text.indexOf('\n', j + 1)) lineStarts.push(j + 1)
  const where = (at: number): ConfPosition => {
    let lo = 0
    let hi = lineStarts.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (lineStarts[mid]! <= at) lo = mid
      else hi = mid - 1
    }
    return { file, line: lo + 1, column: at - lineStarts[lo]! + 1 }
  }

  const segs: Seg[] = [] // the key path of what is being parsed
  const scopes: { obj: Record<string, unknown>; segs: Seg[] }[] = [] // open blocks, for $NAME
  const positions = new Map<string, ConfPosition>()
  const used: Seg[][] = []

  const fail = (detail: string, at = i): never => {
    const { line, column } = where(at)
    const key = segs.length > 0 ? pathString(segs) : undefined
    // One line, whatever the key or the text holds.
    const oneLine = (s: string): string => s.replace(/[\r\n]/g, (c) => (c === '\n' ? '\\n' : '\\r'))
    detail = oneLine(detail)
    const message = `config error in ${oneLine(file)}:${line}:${column}: ${key !== undefined ? `${oneLine(key)}: ` : ''}${detail}`
    throw new ConfSyntaxError(message, detail, file, line, column, key)
  }
  const here = (): string => describeChar(text, i)

  /** Whitespace (new lines included) and comments. */
  const skipAll = (): void => {
    while (i < n) {
      const c = text[i]
      if (isSpace(c)) i++
      else if (c === '#' || (c === '/' && text[i + 1] === '/')) skipComment()
      else break
    }
  }
  const skipComment = (): void => {
    while (i < n && !isNL(text[i])) i++
  }
  /** After a value: blanks and a comment, up to the new line. */
  const skipTrailing = (): void => {
    while (isBlank(text[i])) i++
    if (text[i] === '#' || (text[i] === '/' && text[i + 1] === '/')) skipComment()
  }

  const set = (obj: Record<string, unknown>, key: string, value: unknown, at: number): void => {
    const path = pathString(segs)
    if (Object.hasOwn(obj, key)) dropPositions(positions, path) // the later value wins, as in nats-server
    define(obj, key, value)
    positions.set(path, where(at))
  }

  const key = (): string => {
    const c = text[i]
    if (c === '"' || c === "'") {
      const start = i
      const end = text.indexOf(c, i + 1)
      if (end < 0) fail(`key is not closed (missing ${c === '"' ? "'\"'" : '"\'"'})`, start)
      i = end + 1
      return text.slice(start + 1, end)
    }
    if (c === ':' || c === '=') fail(`unexpected ${here()}, expected a key`)
    if (c === ',' || c === ';' || c === '[' || c === ']' || c === '}') fail(`unexpected ${here()}, expected a key`)
    const start = i
    while (i < n && !isSpace(text[i]) && text[i] !== ':' && text[i] !== '=') i++
    return text.slice(start, i)
  }

  /** One `key value` (or `include FILE`) into `obj`. */
  const entry = (obj: Record<string, unknown>, inBlock: boolean, depth: number): void => {
    const keyAt = i
    const quoted = text[i] === '"' || text[i] === "'"
    const k = key()
    if (!quoted && k.toLowerCase() === 'include' && isSpace(text[i])) return include(obj, keyAt)
    segs.push(k)
    while (isSpace(text[i])) i++
    if (text[i] === ':' || text[i] === '=') {
      i++
      // At the top level the value must be on the key's line; inside a block it may follow.
      if (inBlock) while (isSpace(text[i])) i++
      else while (isBlank(text[i])) i++
    } else if (i >= n) {
      fail('expected a value after the key', keyAt)
    }
    set(obj, k, value(depth + 1, inBlock), keyAt)
    segs.pop()
  }

  const include = (obj: Record<string, unknown>, keyAt: number): void => {
    while (isBlank(text[i])) i++
    const nameAt = i
    const c = text[i]
    let name: string
    if (c === '"' || c === "'") {
      const end = text.indexOf(c, i + 1)
      if (end < 0) fail('include file name is not closed', nameAt)
      name = text.slice(i + 1, end)
      i = end + 1
    } else {
      if (i >= n || isNL(c) || c === '[' || c === '{' || c === '(' || c === '-' || c === '\\' || isDigit(c)) {
        fail(`expected a file name after include, got ${here()}`)
      }
      while (i < n && !isNL(text[i]) && !isBlank(text[i]) && text[i] !== ';' && text[i] !== '}' && text[i] !== "'") i++
      name = text.slice(nameAt, i)
      if (text[i] === "'") i++
    }
    const path = includePath(file, name)
    if (chain.includes(path)) fail(`include loop: ${[...chain, path].join(' -> ')}`, nameAt)
    if (chain.length > MAX_INCLUDE_DEPTH) fail('includes nested too deeply', nameAt)
    if (!sh.readFile) return fail('include is not available here', keyAt)
    let sub: string
    try {
      sub = sh.readFile(path)
    } catch (e) {
      return fail(`cannot read included file ${path}: ${e instanceof Error ? e.message : String(e)}`, nameAt)
    }
    const inc = parseFile(sub, path, sh, [...chain, path])
    for (const [k, v] of Object.entries(inc.value)) {
      segs.push(k)
      if (Object.hasOwn(obj, k)) dropPositions(positions, pathString(segs))
      define(obj, k, v)
      segs.pop()
    }
    const prefix = pathString(segs)
    for (const [p, pos] of inc.positions) positions.set(prefix === '' ? p : `${prefix}.${p}`, pos)
    for (const u of inc.used) used.push([...segs, ...u])
  }

  const value = (depth: number, inBlock: boolean): unknown => {
    if (depth > MAX_DEPTH) fail('nested too deeply')
    const c = text[i]
    if (c === '[') return array(depth)
    if (c === '{') return block(depth)
    if (c === '"') return doubleQuoted()
    if (c === "'") return singleQuoted()
    if (c === '(') return parenthesized()
    if (c === '-' || isDigit(c)) return number()
    if (c === '.') fail('a number must start with a digit')
    if (isNL(c)) fail('expected a value, found the end of the line')
    if (inBlock && (c === ',' || c === '}')) fail(`unexpected ${here()}, expected a value`)
    return unquoted()
  }

  const array = (depth: number): unknown[] => {
    const open = i++
    const arr: unknown[] = []
    for (;;) {
      skipAll()
      if (i >= n) fail('"[" is not closed (missing "]")', open)
      if (text[i] === ']') {
        i++
        return arr
      }
      if (text[i] === ',') fail('unexpected ",", expected a value or "]"')
      segs.push(arr.length)
      positions.set(pathString(segs), where(i))
      while (isBlank(text[i])) i++
      arr.push(value(depth + 1, true))
      segs.pop()
      skipTrailing()
      const c = text[i]
      if (c === ',' || isNL(c)) i++
      else if (c === ']') {
        i++
        return arr
      } else if (i >= n) fail('"[" is not closed (missing "]")', open)
      else fail(`unexpected ${here()}, expected "," or "]"`)
    }
  }

  const block = (depth: number): Record<string, unknown> => {
    const open = i++
    const obj: Record<string, unknown> = {}
    scopes.push({ obj, segs: [...segs] })
    for (;;) {
      skipAll()
      if (i >= n) fail('"{" is not closed (missing "}")', open)
      if (text[i] === '}') {
        i++
        scopes.pop()
        return obj
      }
      entry(obj, true, depth)
      skipTrailing()
      const c = text[i]
      if (c === ',' || c === ';' || isNL(c)) i++
      else if (i >= n) fail('"{" is not closed (missing "}")', open)
      else if (c !== '}') fail(`unexpected ${here()}, expected a new line, "," or "}"`)
    }
  }

  const escape = (): string => {
    const e = text[i + 1]
    if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
      i += 2
      return ESCAPES[e]!
    }
    if (e === 'x') {
      const hex = text.slice(i + 2, i + 4)
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) fail(`expected two hexadecimal digits after "\\x", got ${JSON.stringify(hex)}`)
      i += 4
      return String.fromCharCode(parseInt(hex, 16))
    }
    return fail(`invalid escape "\\${e ?? ''}" (allowed: \\t \\n \\r \\" \\\\ \\xHH)`)
  }

  const doubleQuoted = (): string => {
    const start = i++
    let out = ''
    let from = i
    for (;;) {
      if (i >= n) fail('string is not closed (missing \'"\')', start)
      const c = text[i]
      if (c === '"') break
      if (c !== '\\') {
        i++
        continue
      }
      out += text.slice(from, i) + escape()
      from = i
    }
    out += text.slice(from, i)
    i++
    return out
  }

  const singleQuoted = (): string => {
    const start = i
    const end = text.indexOf("'", i + 1)
    if (end < 0) fail('string is not closed (missing "\'")', start)
    i = end + 1
    return text.slice(start + 1, end)
  }

  // `( ... )` up to a line holding only ")": a raw multi-line string.
  const parenthesized = (): string => {
    const start = i
    for (let j = text.indexOf(')', i + 1); j >= 0; j = text.indexOf(')', j + 1)) {
      if (text[j - 1] === '\n' && (j + 1 >= n || text[j + 1] === '\n')) {
        i = j + 1
        return text.slice(start + 1, j - 1)
      }
    }
    return fail('"(" is not closed (missing ")" on a line of its own)', start)
  }

  const unquoted = (): unknown => {
    const start = i
    let out = ''
    let from = i
    let escaped = false
    while (!endsValue(text[i])) {
      if (text[i] === "'") {
        // nats-server ends an unquoted string at a quote, and drops the quote.
        out += text.slice(from, i)
        i++
        return out
      }
      if (text[i] === '\\') {
        out += text.slice(from, i) + escape()
        from = i
        escaped = true
      } else i++
    }
    out += text.slice(from, i)
    if (escaped) return out
    const b = BOOLEANS.get(out.toLowerCase())
    if (b !== undefined) return b
    if (out.startsWith('$')) return variable(out.slice(1), start)
    return out
  }

  const number = (): unknown => {
    const start = i
    const neg = text[i] === '-'
    if (neg) i++
    if (!isDigit(text[i])) fail(text[i] === '.' ? 'a number must start with a digit' : `expected a digit after "-", got ${here()}`)
    while (isDigit(text[i])) i++
    const digits = text.slice(start, i)
    const c = text[i]
    if (c === '-' && !neg) {
      // 2006-01-02T15:04:05Z: nats-server's datetime. sprig has no date options; keep the text.
      const date = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/y
      date.lastIndex = start
      if (!date.test(text)) fail('dates must be in full Zulu form, like 2006-01-02T15:04:05Z', start)
      i = date.lastIndex
      return text.slice(start, i)
    }
    if (c === '.') {
      i++
      if (!isDigit(text[i])) fail(`expected a digit after ".", got ${here()}`)
      while (isDigit(text[i])) i++
      if (text[i] === '.' && !neg) {
        // Three dots and more: an address such as 0.0.0.0:4222, kept as a string.
        while (isDigit(text[i]) || text[i] === '.' || text[i] === ':' || text[i] === '-') i++
        return text.slice(start, i)
      }
      if (/[A-Za-z]/.test(text[i] ?? '')) {
        fail(`unexpected ${here()} after the number ${text.slice(start, i)}; write values with units in quotes, like "1.5s"`)
      }
      return Number(text.slice(start, i))
    }
    let unit = ''
    if (c !== undefined && /[kmgtpe]/i.test(c)) {
      let j = i + 1
      while (/[bi]/i.test(text[j] ?? '')) j++
      if (!endsValue(text[j])) {
        if (isDigit(text[j])) fail(`unexpected ${describeChar(text, j)} after the size ${text.slice(start, j)}`, j)
        // Not a size after all (10ms, 1minute): an unquoted string, as in nats-server.
        i = start
        return unquoted()
      }
      unit = text.slice(i, j).toLowerCase()
      i = j
    } else if (!endsValue(c)) {
      if (neg) fail(`unexpected ${here()} after the number ${digits}`)
      i = start // 10s, 2h, 4222abc: an unquoted string
      return unquoted()
    }
    const mult = SIZE_UNITS.get(unit)
    if (mult === undefined) fail(`unknown size unit ${JSON.stringify(text.slice(start + digits.length, i))} (use K, KB, KiB, M, MB, MiB, G, ...)`, start)
    const v = BigInt(digits) * mult!
    if (v < INT64_MIN || v > INT64_MAX) fail(`the number ${text.slice(start, i)} is out of range`, start)
    return Number(v)
  }

  const variable = (name: string, at: number): unknown => {
    // A bcrypt hash ($2a$...) in an unquoted password is not a reference.
    if (/^2[aby]\$/.test(name)) return `$${name}`
    for (let s = scopes.length - 1; s >= 0; s--) {
      const scope = scopes[s]!
      if (Object.hasOwn(scope.obj, name)) {
        used.push([...scope.segs, name])
        return clone(scope.obj[name])
      }
    }
    const env = sh.env[name]
    if (env !== undefined) {
      if (sh.envStack.includes(name)) fail(`environment variables refer to each other in a loop: ${[...sh.envStack, name].join(' -> ')}`, at)
      if (sh.envStack.length >= MAX_ENV_DEPTH) fail(`environment variable ${name}: references nested too deeply`, at)
      sh.envStack.push(name)
      try {
        // nats-server reads the variable's text as a value: PORT=4222 is a number.
        return parseFile(`pk=${env}`, `$${name}`, sh, chain).value.pk ?? ''
      } catch (e) {
        if (!(e instanceof ConfSyntaxError)) throw e
        // An inner variable's problem is already worded; do not wrap it once per level.
        if (e.detail.startsWith('environment variable')) return fail(e.detail, at)
        return fail(`environment variable ${name} is not a valid value: ${e.detail}`, at)
      } finally {
        sh.envStack.pop()
      }
    }
    return fail(`$${name} is not defined: no earlier key ${JSON.stringify(name)} in scope and no environment variable ${name}`, at)
  }

  // The top level: entries, optionally wrapped in one { } (nats-server accepts JSON-like files).
  const root: Record<string, unknown> = {}
  scopes.push({ obj: root, segs: [] })
  let wrapped = -1
  for (;;) {
    skipAll()
    if (i >= n) {
      if (wrapped >= 0) fail('"{" is not closed (missing "}")', wrapped)
      break
    }
    if (text[i] === '{' && wrapped < 0) {
      wrapped = i++
      continue
    }
    if (text[i] === '}') {
      if (wrapped < 0) fail('unexpected "}" (no "{" to close)')
      wrapped = -1
      i++
      continue
    }
    entry(root, false, 0)
    skipTrailing()
    const c = text[i]
    if (c === ',' || c === ';' || isNL(c)) i++
    else if (i < n && c !== '}') fail(`unexpected ${here()} after the value; expected a new line, ";" or ","`)
  }
  return { value: root, positions, used }
}
