#!/usr/bin/env python3
"""Status probe built on mcstatus 14.2.0 (see tests/requirements.txt).

    python3 mcstatus_probe.py --connect-port P [--connect-host 127.0.0.1]
        [--host HOSTNAME] [--port 25565] [--protocol 47] [--no-ping]
        [--legacy] [--timeout-ms 20000]

Modern (default): mcstatus's own JavaClient sends the handshake with --host/--port
(unescaped: the 2-char sequence \\0 is a NUL byte, \\\\ a backslash, \\xNN, \\uNNNN) and
protocol --protocol over a TCP connection to connect-host:connect-port, reads the status
and then the ping/pong (skipped with --no-ping). mcstatus's public JavaServer cannot
connect to one address while naming another, so this uses its lower-level classes
(the same ones JavaServer.status() uses).
--legacy: mcstatus's LegacyClient (what LegacyServer.status() runs): sends `fe 01 fa`
only, no hostname.

stdout: one JSON line
    {"ok":true,"mode":"modern"|"legacy","motd":..,"version":..,"protocol":..,
     "online":..,"max":..,"latency":ms,"ping":ms|null}
    {"ok":false,"mode":..,"error":..}        exit 1 (2 on the hard timeout)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time


def emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def unescape_host(s: str) -> str:
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "\\" or i + 1 >= len(s):
            out.append(c)
            i += 1
            continue
        n = s[i + 1]
        simple = {"0": "\0", "\\": "\\", "n": "\n", "r": "\r", "t": "\t"}
        if n in simple:
            out.append(simple[n])
            i += 2
        elif n == "x" and len(s) >= i + 4 and all(ch in "0123456789abcdefABCDEF" for ch in s[i + 2:i + 4]):
            out.append(chr(int(s[i + 2:i + 4], 16)))
            i += 4
        elif n == "u" and len(s) >= i + 6 and all(ch in "0123456789abcdefABCDEF" for ch in s[i + 2:i + 6]):
            out.append(chr(int(s[i + 2:i + 6], 16)))
            i += 6
        else:
            out.append(c)
            i += 1
    return "".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connect-port", type=int, required=True)
    ap.add_argument("--connect-host", default="127.0.0.1")
    ap.add_argument("--host", default="localhost", help="hostname sent in the handshake")
    ap.add_argument("--port", type=int, default=25565, help="port sent in the handshake")
    ap.add_argument("--protocol", type=int, default=47, help="protocol version in the handshake (mcstatus default 47)")
    ap.add_argument("--no-ping", action="store_true", help="modern: skip the ping/pong after the status")
    ap.add_argument("--legacy", action="store_true")
    ap.add_argument("--timeout-ms", type=int, default=20000)
    args = ap.parse_args()
    mode = "legacy" if args.legacy else "modern"

    def on_alarm(_signum, _frame):
        emit({"ok": False, "mode": mode, "error": f"timeout after {args.timeout_ms} ms"})
        sys.stdout.flush()
        # os._exit: do not let a blocked socket call keep us alive.
        import os
        os._exit(2)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout_ms / 1000.0)

    from mcstatus._net.address import Address
    from mcstatus._protocol.io.connection import TCPSocketConnection
    from mcstatus._protocol.java_client import JavaClient
    from mcstatus._protocol.legacy_client import LegacyClient

    sock_timeout = max(0.1, args.timeout_ms / 1000.0)
    started = time.perf_counter()
    try:
        if args.legacy:
            with TCPSocketConnection((args.connect_host, args.connect_port), sock_timeout) as conn:
                res = LegacyClient(conn).read_status()
            ping = None
        else:
            host = unescape_host(args.host)
            with TCPSocketConnection((args.connect_host, args.connect_port), sock_timeout) as conn:
                client = JavaClient(conn, address=Address(host, args.port), version=args.protocol)
                client.handshake()
                res = client.read_status()
                ping = None if args.no_ping else client.test_ping()
    except Exception as e:  # noqa: BLE001 - report every failure as JSON
        emit({"ok": False, "mode": mode, "error": f"{type(e).__name__}: {e}",
              "ms": round((time.perf_counter() - started) * 1000, 1)})
        return 1

    emit({
        "ok": True,
        "mode": mode,
        "motd": res.motd.to_plain(),
        "version": res.version.name,
        "protocol": res.version.protocol,
        "online": res.players.online,
        "max": res.players.max,
        "latency": round(res.latency, 2),
        "ping": None if ping is None else round(ping, 2),
        "ms": round((time.perf_counter() - started) * 1000, 1),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
