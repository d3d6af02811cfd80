"""The start of the agent protocol (banger_wire::agent), spoken by hand for the tests in
tests/access and tests/snapshot: knock, wait for HELLO_SYNC and the hello frame, send a
HostAuth, read the AuthReply."""

import socket
import struct
import sys

HOST_KNOCK = b"\xffbanger-knok"  # banger_wire::agent::HOST_KNOCK
HELLO_SYNC = b"\xffBANGER\x01"  # banger_wire::agent::HELLO_SYNC
OK, ERR = 0, 1  # postcard's variant indices of Result
PERMISSION_DENIED = 8  # variant index of banger_wire::ErrorCode::PermissionDenied


def authenticate(path, token):
    """Presents `token` to the agent on the Unix socket `path`; returns (hello, reply).

    A guest still in a session with a stopped daemon, or still dropping a refused host,
    starts over on the knock."""
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
    hello = frame()
    raw = token.encode()
    auth = bytes([len(raw)]) + raw  # HostAuth { token }: a varint length (< 128), the bytes
    sock.sendall(struct.pack(">I", len(auth)) + auth)
    reply = frame()
    sock.close()
    return hello, reply


def verdict(reply):
    """(variant, error code or None) of an AuthReply."""
    return reply[0], (reply[1] if reply[0] == ERR else None)
