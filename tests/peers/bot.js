#!/usr/bin/env node
'use strict'
// A mineflayer bot that joins a real server (flying-squid) through the given port.
//
//   node bot.js --connect-port P [--connect-host 127.0.0.1] --host HOSTNAME [--port 25565]
//               --username U --chat TEXT [--version V|auto] [--timeout-ms 20000] [--stay]
//
// The handshake carries --host/--port (unescaped like client.js: \0 -> NUL) while the TCP
// connection goes to connect-host:connect-port. Waits for `spawn`, chats TEXT, waits for a
// chat line containing TEXT to come back, then quits.
// stdout: one JSON line
//   {"ok":true,"spawned":true,"chatEchoed":true|false,"ms":<elapsed>,"spawnMs":..,"version":..}
//   {"ok":false,"spawned":bool,"chatEchoed":false,"error":..,"kickReason":..,"ms":..}
// ok means the bot spawned and its chat was sent; chatEchoed tells whether the echo was
// seen within the time left (at most 5 s after sending). Exit 0 iff ok (2 on timeout).
//
// --stay keeps the session after the first chat, until told to leave: it prints
//   {"event":"playing","chatEchoed":..,"spawnMs":..}
// and then reads commands on stdin, one per line:
//   chat TEXT  -> chats, prints {"event":"chat","text":TEXT,"echoed":true|false} (echo ≤ 5 s)
//   leave      -> quits; the final line as above (stdin closing also leaves)
// If the session ends while playing, it prints {"event":"end","reason":..,"kickReason":..}
// at once and the final line has ok:false, "disconnected":true. --timeout-ms bounds the
// time to spawn; --stay-max-ms (default 300000) bounds the whole stay.

const { emit, parseArgs, unescapeHost, chatToText, intArg } = require('./lib/common')
const net = require('net')

function main () {
  const started = Date.now()
  const args = parseArgs(process.argv.slice(2), { booleans: ['stay'] })
  const connectPort = intArg(args['connect-port'], undefined)
  if (connectPort === undefined) throw new Error('--connect-port is required')
  const connectHost = args['connect-host'] || '127.0.0.1'
  const host = unescapeHost(args.host !== undefined ? args.host : 'localhost')
  const port = intArg(args.port, 25565)
  const username = args.username || 'RespawnBot'
  const text = args.chat !== undefined ? args.chat : 'hello from respawn'
  const timeoutMs = intArg(args['timeout-ms'], 20000)
  const stay = args.stay === true || args.stay === 'true'
  const stayMaxMs = intArg(args['stay-max-ms'], 300000)
  let version = args.version
  if (version === undefined || version === 'auto' || version === 'false') version = false
  else if (version === '1.7.10') version = '1.7'

  let spawned = false
  let spawnMs = null
  let chatSent = false
  let chatEchoed = false
  let kickReason = null
  let error = null
  let finished = false
  let playing = false
  let disconnected = false

  const mineflayer = require('mineflayer')
  const bot = mineflayer.createBot({
    host,
    port,
    username,
    auth: 'offline',
    version,
    connect: (client) => client.setSocket(net.connect(connectPort, connectHost)),
    hideErrors: true,
    logErrors: false,
    checkTimeoutInterval: 30000,
    physicsEnabled: false
  })

  const finish = (why) => {
    if (finished) return
    finished = true
    const ok = spawned && chatSent && !error
    const out = { ok, spawned, chatEchoed, ms: Date.now() - started, spawnMs, version: bot.version || null }
    if (stay) out.disconnected = disconnected
    if (!ok) {
      out.error = error || why || 'ended before spawn'
      out.kickReason = kickReason
    }
    emit(out)
    try { bot.quit() } catch (_) {}
    // Give the quit packet a moment to leave, then exit (bounded).
    setTimeout(() => process.exit(ok ? 0 : (why === 'timeout' ? 2 : 1)), 100)
  }

  const hard = setTimeout(() => finish('timeout'), timeoutMs)
  // Chat texts waiting for their echo while staying: text -> callback.
  const waiting = new Map()

  // Stay mode: keep playing, obey stdin, report an unexpected end at once.
  const startPlaying = () => {
    if (playing || finished) return
    playing = true
    clearTimeout(hard)
    emit({ event: 'playing', chatEchoed, spawnMs })
    const limit = setTimeout(() => finish('stay limit reached'), stayMaxMs)
    const leave = () => { clearTimeout(limit); finish() }
    let buffered = ''
    process.stdin.setEncoding('utf8')
    process.stdin.on('data', (chunk) => {
      buffered += chunk
      let nl
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const cmd = buffered.slice(0, nl).trim()
        buffered = buffered.slice(nl + 1)
        if (cmd === 'leave') return leave()
        if (cmd.startsWith('chat ')) {
          const said = cmd.slice(5)
          const timer = setTimeout(() => {
            waiting.delete(said)
            emit({ event: 'chat', text: said, echoed: false })
          }, 5000)
          waiting.set(said, () => { clearTimeout(timer); emit({ event: 'chat', text: said, echoed: true }) })
          bot.chat(said)
        }
      }
    })
    process.stdin.on('end', leave)
  }

  bot.on('messagestr', (msg) => {
    for (const [said, done] of waiting) {
      if (msg.includes(said)) { waiting.delete(said); done() }
    }
    if (chatSent && !chatEchoed && msg.includes(text)) {
      chatEchoed = true
      if (stay) return startPlaying()
      clearTimeout(hard)
      finish()
    }
  })
  bot.once('spawn', () => {
    spawned = true
    spawnMs = Date.now() - started
    bot.chat(text)
    chatSent = true
    // Wait for the echo at most 5 s (and never past the hard timeout).
    const left = Math.max(0, timeoutMs - (Date.now() - started) - 200)
    setTimeout(() => {
      if (stay) return startPlaying()
      clearTimeout(hard)
      finish()
    }, Math.min(5000, left))
  })
  bot.on('kicked', (reason) => {
    kickReason = chatToText(reason)
    if (!spawned) { error = `kicked: ${kickReason}` }
  })
  bot.on('error', (err) => {
    if (!spawned && !error) {
      // Before spawn every error is fatal for this test (bad version, refused, reset).
      error = String(err && err.message ? err.message : err)
      clearTimeout(hard)
      finish()
    }
  })
  bot.on('end', (reason) => {
    if (playing && !finished) {
      disconnected = true
      error = `disconnected while playing (${reason})`
      emit({ event: 'end', reason: String(reason), kickReason })
    }
    if (!finished) {
      if (!spawned && !error) error = `connection ended before spawn (${reason})`
      clearTimeout(hard)
      finish()
    }
  })
}

try {
  main()
} catch (err) {
  emit({ ok: false, spawned: false, chatEchoed: false, error: String(err && err.message ? err.message : err) })
  process.exit(1)
}
