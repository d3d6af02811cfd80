#!/usr/bin/env python3
"""A clone's agent was re-keyed: it refuses the token of the snapshot it came from and
accepts its own.

Run: python3 tests/snapshot/agent_token.py STATE_DB AGENT_SOCK CLONE SNAPSHOT while no
daemon holds the clone's channel (scripts/smoke.sh stops it). Reads both tokens from the
daemon's store, then speaks the start of the protocol in banger_wire::agent by hand:
knock, wait for HELLO_SYNC and the hello frame, send a HostAuth, read the AuthReply.
"""

import socket
import sqlite3
import struct
import sys
import time

HOST_KNOCK = b"\xffbanger-knok"  # banger_wire::agent::HOST_KNOCK
HELLO_SYNC = b"\xffBANGER\x01"  # banger_wire::agent::HELLO_SYNC
OK, ERR = 0, 1  # postcard's variant indices of Result
PERMISSION_DENIED = 8  # variant index of banger_wire::ErrorCode::PermissionDenied


def authenticate(path, token):
    """The AuthReply the agent gives `token`: (variant, error code or None)."""
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(60)
    sock.connect(path)

    def exact(n):
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                sys.exit(f"the agent closed the channel after {out!r}")
            out += chunk
        return out

    def frame():
        return exact(struct.unpack(">I", exact(4))[0])

    sock.sendall(HOST_KNOCK)
    window = b""
    while window != HELLO_SYNC:
        window = (window + exact(1))[-len(HELLO_SYNC):]
    frame()  # the hello
    raw = token.encode()
    auth = bytes([len(raw)]) + raw  # HostAuth { token }: a varint length (< 128), the bytes
    sock.sendall(struct.pack(">I", len(auth)) + auth)
    reply = frame()
    sock.close()
    return reply[0], (reply[1] if reply[0] == ERR else None)


def main():
    db, path, clone, snapshot = sys.argv[1:5]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (old,) = con.execute("SELECT token FROM snapshots WHERE name = ?", (snapshot,)).fetchone()
    (new,) = con.execute("SELECT token FROM vms WHERE name = ?", (clone,)).fetchone()
    assert old != new, "the clone kept the snapshot's token"

    refused = authenticate(path, old)
    # A refused host is dropped once the guest sees it hang up (it probes every 50 ms).
    time.sleep(1)
    accepted = authenticate(path, new)

    print(f"snapshot token: {refused}; clone token: {accepted}")
    assert refused == (ERR, PERMISSION_DENIED), "the snapshot's token still opens the clone"
    assert accepted == (OK, None), "the clone refused its own token"
    print("clone re-keyed")


if __name__ == "__main__":
    main()
