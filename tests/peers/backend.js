#!/usr/bin/env node
'use strict'
// A minecraft-protocol backend server for Respawn's end-to-end tests.
//
//   node backend.js --port P [--host 127.0.0.1] [--motd TEXT] [--version false|1.20.4|...]
//                   [--max-players N] [--quiet]
//
// stdout (one JSON object per line):
//   {"event":"ready","port":P,"host":..,"version":..}          once listening
//   {"event":"handshake","protocol":..,"serverHost":..,"serverPort":..,"nextState":1|2|3}
//   {"event":"status","protocol":..,"serverHost":..,"serverPort":..}   per status request
//   {"event":"legacy_ping","payload":..}                         per legacy 0xFE ping
//   {"event":"login","username":..,"protocol":..,"serverHost":..,"serverPort":..,"uuid":..}
//   {"event":"kicked","username":..,"reason":"welcome to <MOTD> as <username>"}
// Every client that logs in is taken to the play state and then kicked with the reason
// `welcome to <MOTD> as <username>`. Runs until SIGTERM/SIGINT (no timeout).
// --quiet prints only the ready/error lines (for load tests whose parent does not
// drain stdout: a full pipe would otherwise block this process).

const common = require('./lib/common')
const { parseArgs, intArg } = common
let quiet = false
const emit = (obj) => { if (!quiet || obj.event === 'ready' || obj.event === 'error') common.emit(obj) }
const mc = require('minecraft-protocol')

function varint (n) {
  const out = []
  n >>>= 0
  do {
    let b = n & 0x7f
    n >>>= 7
    if (n !== 0) b |= 0x80
    out.push(b)
  } while (n !== 0)
  return Buffer.from(out)
}

// Login-state Disconnect (id 0x00, JSON text) written straight to the socket.
function rawLoginDisconnect (socket, text) {
  const json = Buffer.from(JSON.stringify({ text }), 'utf8')
  const body = Buffer.concat([varint(0x00), varint(json.length), json])
  try {
    socket.end(Buffer.concat([varint(body.length), body]))
    setTimeout(() => socket.destroy(), 1000).unref()
  } catch (_) {}
}

function main () {
  const args = parseArgs(process.argv.slice(2), { booleans: ['quiet'] })
  quiet = !!args.quiet
  const port = intArg(args.port, undefined)
  if (port === undefined) throw new Error('--port is required (0 = pick a free port)')
  const host = args.host || '127.0.0.1'
  const motd = args.motd !== undefined ? args.motd : 'A Respawn test backend'
  const maxPlayers = intArg(args['max-players'], 20)
  const version = (args.version === undefined || args.version === 'false') ? false : args.version

  const server = mc.createServer({
    'online-mode': false,
    host,
    port,
    motd,
    maxPlayers,
    version,
    hideErrors: true,
    // We kick right after login; keep anything slow from lingering.
    kickTimeout: 15000,
    errorHandler: (client, err) => {
      if (client.rejected) return
      process.stderr.write(`backend: client error: ${err && err.stack ? err.stack : err}\n`)
      try { client.end(String(err && err.message ? err.message : err)) } catch (_) {}
    },
    beforePing: (response, client) => {
      emit({
        event: 'status',
        protocol: client.protocolVersion,
        serverHost: client.serverHost,
        serverPort: client.serverPort
      })
      return response
    }
  })

  server.on('connection', (client) => {
    client.once('set_protocol', (packet) => {
      emit({
        event: 'handshake',
        protocol: packet.protocolVersion,
        serverHost: packet.serverHost,
        serverPort: packet.serverPort,
        nextState: packet.nextState
      })
      // With a fixed --version, minecraft-protocol ends a mismatched login without
      // telling the client (the client then hangs). Send a proper Login Disconnect.
      if (version !== false && packet.nextState === 2 && packet.protocolVersion !== server.mcversion.version) {
        client.rejected = true
        const reason = `unsupported protocol version ${packet.protocolVersion}, this backend runs ${server.mcversion.minecraftVersion} (${server.mcversion.version})`
        emit({ event: 'rejected', protocol: packet.protocolVersion, reason })
        rawLoginDisconnect(client.socket, reason)
      }
    })
    client.once('legacy_server_list_ping', (packet) => {
      emit({ event: 'legacy_ping', payload: packet.payload })
    })
    client.on('error', () => {})
  })

  server.on('login', (client) => {
    if (client.rejected) return
    emit({
      event: 'login',
      username: client.username,
      protocol: client.protocolVersion,
      serverHost: client.serverHost,
      serverPort: client.serverPort,
      uuid: client.uuid
    })
  })

  // playerJoin fires once the client is in the play state (after configuration on
  // 1.20.2+), which is the only state where the kick packet parses for every version.
  server.on('playerJoin', (client) => {
    if (client.rejected) return
    const reason = `welcome to ${motd} as ${client.username}`
    emit({ event: 'kicked', username: client.username, reason })
    client.end(reason)
  })

  server.on('listening', () => {
    const addr = server.socketServer.address()
    emit({ event: 'ready', port: addr.port, host, version: version === false ? 'any' : version })
  })

  server.on('error', (err) => {
    emit({ event: 'error', error: String(err && err.message ? err.message : err) })
    process.exit(1)
  })

  const stop = () => {
    try { server.close() } catch (_) {}
    process.exit(0)
  }
  // A long-running peer should report, not die silently, on a stray exception.
  const report = (kind) => (err) => {
    process.stderr.write(`${kind}: ${err && err.stack ? err.stack : err}\n`)
    emit({ event: 'uncaught', kind, error: String(err && err.message ? err.message : err) })
  }
  process.on('uncaughtException', report('uncaughtException'))
  process.on('unhandledRejection', report('unhandledRejection'))
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

try {
  main()
} catch (err) {
  emit({ event: 'error', error: String(err && err.message ? err.message : err) })
  process.exit(1)
}
