#!/usr/bin/env node
'use strict'
// A flying-squid server (a full Minecraft server in Node) for bot tests.
//
//   node squid.js --port P (0 = any free port) [--host 127.0.0.1] [--version 1.21.4] [--motd TEXT]
//                 [--max-players N] [--timeout-ms 20000] [--verbose]
//
// Offline mode, superflat world held in memory (no worldFolder), view-distance 2.
// stdout (one JSON object per line):
//   {"event":"ready","port":P,"version":..,"ms":<spawn-to-first-status ms>}
//       once a status ping (mc.ping, polled every 100 ms) is answered
//   {"event":"join","username":..}                          a player spawned into the world
//   {"event":"chat","username":..,"message":..}              a player chatted
//   {"event":"leave","username":..}
//   {"event":"error","error":..}                             then exit 1
// --timeout-ms bounds only start-up (no ready in time -> error, exit 2); once ready it
// runs until SIGTERM/SIGINT. --verbose sends flying-squid's own log to stderr.

const { emit, parseArgs, intArg, sleep } = require('./lib/common')
const net = require('net')

async function main () {
  const started = Date.now()
  const args = parseArgs(process.argv.slice(2), { booleans: ['verbose'] })
  const port = intArg(args.port, undefined)
  if (port === undefined) throw new Error('--port is required')
  const host = args.host || '127.0.0.1'
  const version = args.version || '1.21.4'
  const timeoutMs = intArg(args['timeout-ms'], 20000)
  const motd = args.motd !== undefined ? args.motd : 'Respawn flying-squid'

  const startupTimer = setTimeout(() => {
    emit({ event: 'error', error: `not ready after ${timeoutMs} ms` })
    process.exit(2)
  }, timeoutMs)

  const mc = require('minecraft-protocol')
  const squid = require('flying-squid')
  const serv = squid.createMCServer({
    motd,
    host,
    port,
    'max-players': intArg(args['max-players'], 10),
    'online-mode': false,
    logging: false,
    noConsoleOutput: !args.verbose,
    gameMode: 1,
    difficulty: 1,
    generation: { name: 'superflat', options: { worldHeight: 80 } },
    kickTimeout: 10000,
    plugins: {},
    modpe: false,
    'view-distance': 2,
    'player-list-text': { header: { text: 'Respawn' }, footer: { text: 'test' } },
    'everybody-op': false,
    'max-entities': 10,
    version
  })

  serv.on('error', (err) => {
    emit({ event: 'error', error: String(err && err.message ? err.message : err) })
    process.exit(1)
  })

  serv.on('newPlayer', (player) => {
    player.on('spawned', () => emit({ event: 'join', username: player.username }))
    player.on('chat', ({ message }) => emit({ event: 'chat', username: player.username, message }))
    player.on('disconnected', () => emit({ event: 'leave', username: player.username }))
  })

  const stop = () => {
    try { serv.quit() } catch (_) {}
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

  // Poll until a status ping is answered (bounded by startupTimer).
  let actualPort = port
  for (;;) {
    const sock = serv._server && serv._server.socketServer
    const addr = sock && sock.listening ? sock.address() : null
    if (!addr) { await sleep(50); continue }
    actualPort = addr.port
    try {
      await mc.ping({
        host: '127.0.0.1',
        port: actualPort,
        version,
        connect: (c) => c.setSocket(net.connect(actualPort, host)),
        closeTimeout: 1000,
        noPongTimeout: 500
      })
      if (serv.pluginsReady) break
    } catch (_) { /* not listening yet */ }
    await sleep(100)
  }
  clearTimeout(startupTimer)
  emit({ event: 'ready', port: actualPort, version, ms: Date.now() - started })
}

main().catch((err) => {
  emit({ event: 'error', error: String(err && err.message ? err.message : err) })
  process.exit(1)
})
