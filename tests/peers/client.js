#!/usr/bin/env node
'use strict'
// minecraft-protocol client for Respawn's end-to-end tests.
//
//   node client.js status --connect-port P [--connect-host 127.0.0.1] --host HOSTNAME
//                         [--port 25565] --version V [--timeout-ms 20000]
//   node client.js login  --connect-port P [--connect-host 127.0.0.1] --host HOSTNAME
//                         [--port 25565] --version V [--username U] [--timeout-ms 20000]
//
// The TCP connection goes to connect-host:connect-port while the handshake carries
// --host / --port exactly (after unescaping \0 \\ \xNN \uNNNN, so `\0FML3\0` works).
// --version: 1.7 (=1.7.10), 1.8.8, ... 1.21.4, 26.1, any version minecraft-protocol
// knows, or `auto` (minecraft-protocol's auto-version: a status ping first, then login).
//
// stdout: a single JSON line.
//   status: {"ok":true,"motd":..,"version":..,"protocol":..,"players":{..},"latency":ms,"ms":..}
//   login:  {"ok":true|false,"reachedState":null|"login-success"|"configuration"|"play",
//            "disconnectReason":<plain text or null>,"username":..,"protocol":..,"ms":..}
//           ok is true iff the client got past Login Success.
//   failure: {"ok":false,"error":..,...}; exit code 1 (2 on the hard timeout).

const { emit, parseArgs, unescapeHost, chatToText, hardTimeout, intArg } = require('./lib/common')
const net = require('net')
const mc = require('minecraft-protocol')

const STATE_RANK = { 'login-success': 1, configuration: 2, play: 3 }

function normalizeVersion (v) {
  if (v === undefined || v === 'auto' || v === 'false') return false
  if (v === '1.7.10') return '1.7'
  return v
}

function main () {
  const started = Date.now()
  const args = parseArgs(process.argv.slice(2))
  const mode = args._[0]
  if (mode !== 'status' && mode !== 'login') throw new Error('first argument must be status or login')
  const timeoutMs = intArg(args['timeout-ms'], 20000)
  const connectPort = intArg(args['connect-port'], undefined)
  if (connectPort === undefined) throw new Error('--connect-port is required')
  const connectHost = args['connect-host'] || '127.0.0.1'
  const host = unescapeHost(args.host !== undefined ? args.host : 'localhost')
  const port = intArg(args.port, 25565)
  const version = normalizeVersion(args.version)
  const username = args.username || 'Steve'
  const connect = (client) => client.setSocket(net.connect(connectPort, connectHost))

  hardTimeout(timeoutMs, { mode })

  if (mode === 'status') {
    const opts = {
      host,
      port,
      connect,
      closeTimeout: timeoutMs,
      noPongTimeout: Math.min(5000, timeoutMs)
    }
    if (version !== false) opts.version = version
    mc.ping(opts).then((res) => {
      const players = res.players || {}
      emit({
        ok: true,
        motd: chatToText(res.description),
        version: res.version ? res.version.name : null,
        protocol: res.version ? res.version.protocol : null,
        players,
        latency: res.latency === undefined ? null : res.latency,
        ms: Date.now() - started
      })
      process.exit(0)
    }, (err) => {
      emit({ ok: false, mode, error: String(err && err.message ? err.message : err), ms: Date.now() - started })
      process.exit(1)
    })
    return
  }

  // login
  let reached = null
  let disconnectReason = null
  let error = null
  let done = false
  const bump = (s) => { if (!reached || STATE_RANK[s] > STATE_RANK[reached]) reached = s }

  const opts = {
    host,
    port,
    username,
    auth: 'offline',
    version,
    connect,
    hideErrors: true,
    closeTimeout: 2000
  }
  const client = mc.createClient(opts)

  client.on('success', () => bump('login-success'))
  client.on('state', (s) => {
    if (s === 'configuration') bump('configuration')
    else if (s === 'play') bump('play') // only ever entered after Login Success
  })
  const onKick = (packet) => {
    if (disconnectReason === null && packet && packet.reason !== undefined) {
      disconnectReason = chatToText(packet.reason)
    }
  }
  client.on('disconnect', onKick) // login and configuration state
  client.on('kick_disconnect', onKick) // play state
  client.on('error', (err) => {
    if (!error) error = String(err && err.message ? err.message : err)
  })

  const finish = () => {
    if (done) return
    done = true
    const ok = reached !== null
    const out = {
      ok,
      reachedState: reached,
      disconnectReason,
      username,
      protocol: opts.protocolVersion !== undefined ? opts.protocolVersion : null,
      version: client.version,
      ms: Date.now() - started
    }
    if (!ok && error) out.error = error
    if (!ok && !error && disconnectReason === null) out.error = 'connection closed before Login Success'
    emit(out)
    process.exit(ok ? 0 : 1)
  }
  client.on('end', () => setImmediate(finish))
}

try {
  main()
} catch (err) {
  emit({ ok: false, error: String(err && err.message ? err.message : err) })
  process.exit(1)
}
