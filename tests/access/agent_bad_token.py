#!/usr/bin/env python3
"""A guest agent refuses a host that presents the wrong token.

Run: python3 tests/access/agent_bad_token.py <runtime_dir>/vms/<id>/agent.sock while no
daemon holds that channel (scripts/smoke.sh stops it in the agent-token-refused scenario).
Speaks the start of the protocol in banger_wire::agent by hand: knock, wait for the
HELLO_SYNC marker and the hello frame, send a HostAuth with a wrong token, and expect an
AuthReply of Err with the code PermissionDenied.
"""

import socket
import struct
import sys

HOST_KNOCK = b"\xffbanger-knok"  # banger_wire::agent::HOST_KNOCK
HELLO_SYNC = b"\xffBANGER\x01"  # banger_wire::agent::HELLO_SYNC
ERR = 1  # postcard's variant index of Result::Err
PERMISSION_DENIED = 8  # variant index of banger_wire::ErrorCode::PermissionDenied


def main():
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(60)
    sock.connect(sys.argv[1])

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

    # A guest still in a session with the stopped daemon starts over on the knock.
    sock.sendall(HOST_KNOCK)
    window = b""
    while window != HELLO_SYNC:
        window = (window + exact(1))[-len(HELLO_SYNC):]
    hello = frame()

    token = b"not-the-token"
    auth = bytes([len(token)]) + token  # HostAuth { token }: a varint length, the bytes
    sock.sendall(struct.pack(">I", len(auth)) + auth)
    reply = frame()

    message = reply[3 : 3 + reply[2]].decode(errors="replace")
    print(f"hello: {len(hello)} bytes; reply: {reply[:2]!r} {message!r}")
    assert reply[0] == ERR, "the agent accepted a wrong token"
    assert reply[1] == PERMISSION_DENIED, f"error code index {reply[1]}, not PermissionDenied"
    print("wrong token refused")


if __name__ == "__main__":
    main()
