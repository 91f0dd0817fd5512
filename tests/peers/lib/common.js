'use strict'
// Shared helpers for the peer scripts: argument parsing, JSON-line output,
// hostname unescaping, chat-component flattening and hard timeouts.
//
// stdout is reserved for our machine-readable JSON lines. Libraries (flying-squid in
// particular) like to print to stdout, so we keep a private handle on the real stdout
// writer and route everything else (console.*, process.stdout.write) to stderr.

const realStdoutWrite = process.stdout.write.bind(process.stdout)
process.stdout.write = process.stderr.write.bind(process.stderr)
for (const m of ['log', 'info', 'debug', 'warn', 'trace']) {
  console[m] = console.error.bind(console)
}

// A parent that stops reading must not crash us with EPIPE.
process.stdout.on('error', () => {})

function emit (obj) {
  try { realStdoutWrite(JSON.stringify(obj) + '\n') } catch (_) {}
}

// Parse `--flag value` pairs (and bare `--flag` booleans listed in `booleans`).
// Positional arguments are returned in `_`.
function parseArgs (argv, { booleans = [] } = {}) {
  const out = { _: [] }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a.startsWith('--')) {
      const key = a.slice(2)
      if (booleans.includes(key)) {
        out[key] = true
      } else {
        if (i + 1 >= argv.length) throw new Error(`missing value for --${key}`)
        out[key] = argv[++i]
      }
    } else {
      out._.push(a)
    }
  }
  return out
}

// Turn a CLI-escaped string into the real one:
//   \0 -> NUL, \\ -> backslash, \n \r \t, \xNN (byte/char), \uNNNN.
// Any other backslash sequence is kept literally.
function unescapeHost (s) {
  if (s == null) return s
  let out = ''
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (c !== '\\' || i + 1 >= s.length) { out += c; continue }
    const n = s[i + 1]
    if (n === '0') { out += '\u0000'; i++ } else if (n === '\\') { out += '\\'; i++ } else if (n === 'n') { out += '\n'; i++ } else if (n === 'r') { out += '\r'; i++ } else if (n === 't') { out += '\t'; i++ } else if (n === 'x' && /^[0-9a-fA-F]{2}$/.test(s.substr(i + 2, 2))) {
      out += String.fromCharCode(parseInt(s.substr(i + 2, 2), 16)); i += 3
    } else if (n === 'u' && /^[0-9a-fA-F]{4}$/.test(s.substr(i + 2, 4))) {
      out += String.fromCharCode(parseInt(s.substr(i + 2, 4), 16)); i += 5
    } else { out += c }
  }
  return out
}

// Flatten a chat component to plain text. Accepts: a JSON string, a plain string,
// a chat object ({text, extra, translate, with}), or prismarine-nbt tagged data
// ({type:'compound', value:{...}}) as decoded for 1.20.3+ anonymousNbt fields.
function simplifyNbt (tag) {
  if (tag == null || typeof tag !== 'object' || !('type' in tag) || !('value' in tag)) return tag
  switch (tag.type) {
    case 'compound': {
      const o = {}
      for (const k of Object.keys(tag.value)) o[k] = simplifyNbt(tag.value[k])
      return o
    }
    case 'list': {
      const inner = tag.value
      if (!inner || !Array.isArray(inner.value)) return []
      return inner.value.map(v => simplifyNbt({ type: inner.type, value: v }))
    }
    default:
      return tag.value
  }
}

function chatToText (c, depth = 0) {
  if (depth > 50 || c == null) return ''
  if (typeof c === 'string') {
    const t = c.trim()
    if (depth === 0 && (t.startsWith('{') || t.startsWith('[') || t.startsWith('"'))) {
      try { return chatToText(JSON.parse(t), depth + 1) } catch (_) { /* plain text */ }
    }
    return c
  }
  if (typeof c === 'number' || typeof c === 'boolean') return String(c)
  if (Array.isArray(c)) return c.map(x => chatToText(x, depth + 1)).join('')
  if (typeof c === 'object') {
    if ('type' in c && 'value' in c && typeof c.type === 'string' && !('text' in c)) {
      return chatToText(simplifyNbt(c), depth + 1)
    }
    let s = ''
    if (c.text != null) s += chatToText(c.text, depth + 1)
    else if (c[''] != null) s += chatToText(c[''], depth + 1)
    else if (c.translate != null) {
      const args = (c.with || []).map(x => chatToText(x, depth + 1))
      s += args.length ? `${c.translate} ${args.join(' ')}` : c.translate
    }
    if (Array.isArray(c.extra)) s += c.extra.map(x => chatToText(x, depth + 1)).join('')
    return s
  }
  return String(c)
}

// Hard overall timeout: prints `failObj` (with an error field) and exits 2.
function hardTimeout (ms, failObj = {}) {
  const t = setTimeout(() => {
    emit({ ok: false, ...failObj, error: `timeout after ${ms} ms` })
    process.exit(2)
  }, ms)
  return t
}

function intArg (v, def) {
  if (v === undefined) return def
  const n = Number(v)
  if (!Number.isInteger(n)) throw new Error(`not an integer: ${v}`)
  return n
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

module.exports = { emit, parseArgs, unescapeHost, chatToText, simplifyNbt, hardTimeout, intArg, sleep }
