"""A fake bangerd on a Unix socket answering every GET with a DaemonInfo, for the
discovery tests; run as a script (by the fake `banger daemon start`) it serves until
killed. Standard library only: the script runs without the SDK on its path."""

from __future__ import annotations

import http.server
import json
import socketserver
import sys
import threading
from typing import Any

DAEMON: dict[str, Any] = {
    "version": "0.1.0",
    "pid": 7,
    "socket": "/run/banger/bangerd.sock",
    "state_dir": "/var/lib/banger",
    "uptime_secs": 1,
    "vms_running": 1,
    "vms_total": 1,
}


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = json.dumps(DAEMON).encode()
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "unix"


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def daemon_on(path: str, status: int = 200) -> _Server:
    """A daemon on the Unix socket `path` answering every GET with `status` (and a
    DaemonInfo)."""
    return _Server(path, type("Handler", (_Handler,), {"status": status}))


def serve(path: str, status: int = 200) -> _Server:
    """`daemon_on`, served from a thread until `shutdown()`."""
    server = daemon_on(path, status)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    return server


# A stand-in for the banger CLI: `banger daemon start` starts this file's daemon on the
# socket the CLI would use, in the background, and returns once it listens.
FAKE_BANGER = """#!/bin/sh
printf '%s\\n' "$*" >>"$FAKE_BANGER_LOG"
if [ -n "${FAKE_BANGER_FAIL:-}" ]; then echo "$FAKE_BANGER_FAIL" >&2; exit 1; fi
sock=${BANGER_SOCKET:-$BANGER_RUNTIME_DIR/bangerd.sock}
"$FAKE_PYTHON" "$FAKE_BANGERD" "$sock" >/dev/null 2>&1 &
echo $! >"$FAKE_BANGER_PID"
i=0
while [ ! -S "$sock" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
"""


if __name__ == "__main__":
    daemon_on(sys.argv[1]).serve_forever()
