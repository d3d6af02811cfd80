#!/usr/bin/env python3
"""A guest agent refuses a host that presents the wrong token.

Run: python3 tests/access/agent_bad_token.py <runtime_dir>/vms/<id>/agent.sock while no
daemon holds that channel (scripts/smoke.sh stops it in the agent-token-refused scenario).
Expects an AuthReply of Err with the code PermissionDenied.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agent_proto import ERR, PERMISSION_DENIED, authenticate, verdict  # noqa: E402


def main():
    hello, reply = authenticate(sys.argv[1], "not-the-token")
    message = reply[3 : 3 + reply[2]].decode(errors="replace")
    print(f"hello: {len(hello)} bytes; reply: {reply[:2]!r} {message!r}")
    assert reply[0] == ERR, "the agent accepted a wrong token"
    assert verdict(reply) == (ERR, PERMISSION_DENIED), f"error code index {reply[1]}, not PermissionDenied"
    print("wrong token refused")


if __name__ == "__main__":
    main()
