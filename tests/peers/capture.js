#!/usr/bin/env node
'use strict'
// Captures the REAL bytes that third-party clients send, for Respawn's protocol fixtures.
//
//   node capture.js [--out DIR] [--python python3] [--timeout-ms 60000]
//
// DIR defaults to ../../proxy/codec/tests/fixtures (relative to this script). For each
// capture a raw TCP server on 127.0.0.1:0 records every byte one client connection
// sends until 300 ms of silence (at most 5 s), then closes it. The server never
// answers, so a login capture ends after Login Start and a status capture after the
// Status Request. Every capture is decoded here (handshake, Login Start, Status
// Request — by hand, per protocol number) and checked against what was asked for
// before it is written as DIR/<name>.bin; DIR/manifest.json describes them all.
// stdout: {"ok":true,"files":N,"out":DIR,"ms":..} or {"ok":false,"error":..}.

const { emit, parseArgs, intArg, sleep } = require('./lib/common')
const fs = require('fs')
const path = require('path')
const net = require('net')
const { spawn } = require('child_process')
const mc = require('minecraft-protocol')
const minecraftData = require('minecraft-data')

const MP_VERSION = require('minecraft-protocol/package.json').version
const MCSTATUS_VERSION = '14.2.0'
const HOST = 'survival.acme.example'
const FML_HOST = 'Survival.Acme.Example.\u0000FML3\u0000'
const PORT = 25565
const USERNAME = 'Steve'
const SILENCE_MS = 300
const MAX_CONN_MS = 5000

// ---------------------------------------------------------------- raw capture server
function captureOnce (startClient) {
  return new Promise((resolve, reject) => {
    const chunks = []
    let done = false
    const server = net.createServer((sock) => {
      server.close() // one connection per capture
      let silence = null
      const finish = () => {
        if (done) return
        done = true
        clearTimeout(silence)
        clearTimeout(cap)
        sock.destroy()
        resolve({ bytes: Buffer.concat(chunks), chunks: chunks.map(c => c.length) })
      }
      const cap = setTimeout(finish, MAX_CONN_MS)
      sock.on('data', (d) => {
        chunks.push(Buffer.from(d))
        clearTimeout(silence)
        silence = setTimeout(finish, SILENCE_MS)
      })
      sock.on('error', () => {})
      sock.on('close', finish)
    })
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = server.address().port
      setTimeout(() => {
        if (!done) { done = true; server.close(); reject(new Error('no connection within 5 s')) }
      }, MAX_CONN_MS + 1000)
      try { startClient(port) } catch (err) { reject(err) }
    })
  })
}

// ---------------------------------------------------------------- decoding
class Reader {
  constructor (buf) { this.buf = buf; this.pos = 0 }
  left () { return this.buf.length - this.pos }
  need (n) { if (this.left() < n) throw new Error(`truncated at ${this.pos} (need ${n})`) }
  byte () { this.need(1); return this.buf[this.pos++] }
  varint () {
    let v = 0
    for (let i = 0; i < 5; i++) {
      const b = this.byte()
      v |= (b & 0x7f) << (7 * i)
      if (!(b & 0x80)) return v
    }
    throw new Error('varint too long')
  }
  bytes (n) { this.need(n); const b = this.buf.subarray(this.pos, this.pos + n); this.pos += n; return b }
  string () { const n = this.varint(); return this.bytes(n).toString('utf8') }
  u16 () { return this.bytes(2).readUInt16BE(0) }
  bool () { const b = this.byte(); if (b > 1) throw new Error(`bad bool ${b}`); return b === 1 }
  uuid () {
    const h = this.bytes(16).toString('hex')
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
  }
}

// Split the stream into uncompressed frames [ {id, body} ]. (Nothing is compressed
// before the server asks for it, and the raw server never does.)
function frames (buf) {
  const r = new Reader(buf)
  const out = []
  while (r.left() > 0) {
    const len = r.varint()
    const body = r.bytes(len)
    const fr = new Reader(body)
    const id = fr.varint()
    out.push({ id, reader: fr, length: len })
  }
  return out
}

function decodeHandshake (f) {
  if (f.id !== 0) throw new Error(`first packet id ${f.id}, expected handshake 0`)
  const r = f.reader
  const hs = { protocol: r.varint(), host: r.string(), port: r.u16(), nextState: r.varint() }
  if (r.left() !== 0) throw new Error(`${r.left()} stray bytes in handshake`)
  return hs
}

// Login Start layouts by protocol number:
//   <759           username
//   759 (1.19)     username, Option<signature{i64 ts, varint-len key, varint-len sig}>
//   760 (1.19.1/2) username, Option<signature>, Option<UUID>
//   761..763       username, Option<UUID>            (1.19.3 .. 1.20.1)
//   >=764          username, UUID                     (1.20.2+)
function decodeLoginStart (f, protocol) {
  if (f.id !== 0) throw new Error(`login packet id ${f.id}, expected Login Start 0`)
  const r = f.reader
  const ls = { username: r.string(), uuid: null, uuid_field: 'absent', signature_field: 'absent', has_signature: false }
  if (protocol === 759 || protocol === 760) {
    ls.signature_field = 'optional'
    ls.has_signature = r.bool()
    if (ls.has_signature) {
      r.bytes(8); r.bytes(r.varint()); r.bytes(r.varint())
    }
  }
  if (protocol >= 760 && protocol <= 763) {
    ls.uuid_field = 'optional'
    if (r.bool()) ls.uuid = r.uuid()
  } else if (protocol >= 764) {
    ls.uuid_field = 'mandatory'
    ls.uuid = r.uuid()
  }
  if (r.left() !== 0) throw new Error(`${r.left()} stray bytes in Login Start (protocol ${protocol})`)
  return ls
}

function check (cond, msg) { if (!cond) throw new Error(`check failed: ${msg}`) }

// ---------------------------------------------------------------- clients
function mpLogin (version, host) {
  return (port) => {
    const client = mc.createClient({
      host,
      port: PORT,
      username: USERNAME,
      auth: 'offline',
      version,
      hideErrors: true,
      connect: (c) => c.setSocket(net.connect(port, '127.0.0.1'))
    })
    client.on('error', () => {})
  }
}

function mpStatus (version, host) {
  return (port) => {
    mc.ping({
      host,
      port: PORT,
      version,
      closeTimeout: MAX_CONN_MS,
      connect: (c) => c.setSocket(net.connect(port, '127.0.0.1'))
    }).catch(() => {})
  }
}

function python (pythonBin, extra) {
  return (port) => {
    const child = spawn(pythonBin, [path.join(__dirname, 'mcstatus_probe.py'), '--connect-port', String(port),
      '--timeout-ms', '4000', ...extra], { stdio: ['ignore', 'ignore', 'inherit'] })
    child.on('error', (err) => process.stderr.write(`capture: ${pythonBin}: ${err.message}\n`))
  }
}

// ---------------------------------------------------------------- main
async function main () {
  const started = Date.now()
  const args = parseArgs(process.argv.slice(2))
  const outDir = path.resolve(args.out || path.join(__dirname, '..', '..', 'proxy', 'codec', 'tests', 'fixtures'))
  const pythonBin = args.python || 'python3'
  const timeoutMs = intArg(args['timeout-ms'], 60000)
  setTimeout(() => { emit({ ok: false, error: `timeout after ${timeoutMs} ms` }); process.exit(2) }, timeoutMs)
  fs.mkdirSync(outDir, { recursive: true })

  const versions = ['1.7.10', '1.8.8', '1.12.2', '1.16.5', '1.19', '1.19.2', '1.19.4', '1.20.4', '1.20.6',
    '1.21.4', mc.supportedVersions[mc.supportedVersions.length - 1]]
  const offlineUuid = require('minecraft-protocol/src/datatypes/uuid').nameToMcOfflineUUID(USERNAME)

  const jobs = []
  for (const v of versions) {
    const mpv = v === '1.7.10' ? '1.7' : v
    const proto = minecraftData(mpv).version.version
    const mcv = minecraftData(mpv).version.minecraftVersion
    jobs.push({ name: `login-${mcv}`, kind: 'login', client: `minecraft-protocol ${MP_VERSION} version ${mcv}`, version: mcv, proto, host: HOST, run: mpLogin(mpv, HOST) })
    jobs.push({ name: `status-${mcv}`, kind: 'status', client: `minecraft-protocol ${MP_VERSION} version ${mcv}`, version: mcv, proto, host: HOST, run: mpStatus(mpv, HOST) })
  }
  jobs.push({ name: 'login-1.20.4-fml3', kind: 'login', client: `minecraft-protocol ${MP_VERSION} version 1.20.4`, version: '1.20.4', proto: 765, host: FML_HOST, run: mpLogin('1.20.4', FML_HOST) })
  jobs.push({ name: 'status-1.20.4-fml3', kind: 'status', client: `minecraft-protocol ${MP_VERSION} version 1.20.4`, version: '1.20.4', proto: 765, host: FML_HOST, run: mpStatus('1.20.4', FML_HOST) })
  jobs.push({ name: 'status-mcstatus', kind: 'status', client: `mcstatus ${MCSTATUS_VERSION} JavaServer status (protocol 47)`, version: null, proto: 47, host: HOST, run: python(pythonBin, ['--host', HOST, '--no-ping']) })
  jobs.push({ name: 'legacy-mcstatus', kind: 'legacy', client: `mcstatus ${MCSTATUS_VERSION} LegacyServer`, version: null, proto: null, host: null, run: python(pythonBin, ['--legacy']) })

  const manifest = []
  for (const job of jobs) {
    const { bytes, chunks } = await captureOnce(job.run)
    const entry = {
      file: `${job.name}.bin`,
      kind: job.kind,
      client: job.client,
      minecraft_version: job.version,
      protocol: null,
      host: null,
      port: null,
      next_state: null,
      username: null,
      uuid: null,
      bytes: bytes.length,
      tcp_chunks: chunks,
      hex: bytes.toString('hex')
    }
    if (job.kind === 'legacy') {
      check(bytes.equals(Buffer.from([0xfe, 0x01, 0xfa])), `${job.name}: expected fe 01 fa, got ${bytes.toString('hex')}`)
      entry.note = 'legacy 1.4-1.5 style ping: fe 01 fa, no MC|PingHost payload, no hostname'
    } else {
      const fs_ = frames(bytes)
      const hs = decodeHandshake(fs_[0])
      check(hs.protocol === job.proto, `${job.name}: protocol ${hs.protocol} != ${job.proto}`)
      check(hs.host === job.host, `${job.name}: host ${JSON.stringify(hs.host)} != ${JSON.stringify(job.host)}`)
      check(hs.port === PORT, `${job.name}: port ${hs.port}`)
      entry.protocol = hs.protocol
      entry.host = hs.host
      entry.port = hs.port
      entry.next_state = hs.nextState
      entry.packets = fs_.length
      entry.handshake_bytes = fs_[0].length + varintLen(fs_[0].length)
      if (job.kind === 'login') {
        check(hs.nextState === 2, `${job.name}: next state ${hs.nextState}`)
        check(fs_.length === 2, `${job.name}: ${fs_.length} packets, expected handshake + Login Start`)
        const ls = decodeLoginStart(fs_[1], hs.protocol)
        check(ls.username === USERNAME, `${job.name}: username ${ls.username}`)
        entry.username = ls.username
        entry.uuid = ls.uuid
        entry.login_start = {
          uuid_field: ls.uuid_field,
          has_uuid: ls.uuid !== null,
          uuid_is_offline_uuid: ls.uuid === null ? null : ls.uuid === offlineUuid,
          signature_field: ls.signature_field,
          has_signature: ls.has_signature
        }
      } else {
        check(hs.nextState === 1, `${job.name}: next state ${hs.nextState}`)
        check(fs_.length === 2, `${job.name}: ${fs_.length} packets, expected handshake + Status Request`)
        check(fs_[1].id === 0 && fs_[1].reader.left() === 0, `${job.name}: second packet is not an empty Status Request`)
      }
    }
    fs.writeFileSync(path.join(outDir, entry.file), bytes)
    manifest.push(entry)
    await sleep(20)
  }
  fs.writeFileSync(path.join(outDir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n')
  emit({ ok: true, files: manifest.length, out: outDir, ms: Date.now() - started })
  process.exit(0)
}

function varintLen (n) { let l = 1; while (n >= 0x80) { n >>>= 7; l++ } return l }

main().catch((err) => {
  emit({ ok: false, error: String(err && err.message ? err.message : err) })
  process.exit(1)
})
