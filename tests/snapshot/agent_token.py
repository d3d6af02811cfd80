#!/usr/bin/env python3
"""A clone's agent was re-keyed: it refuses the token of the snapshot it came from and
accepts its own.

Run: python3 tests/snapshot/agent_token.py STATE_DB AGENT_SOCK CLONE SNAPSHOT while no
daemon holds the clone's channel (scripts/smoke.sh stops it). Reads both tokens from the
daemon's store, then presents each (tests/agent_proto.py).
"""

import os
import sqlite3
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from agent_proto import ERR, OK, PERMISSION_DENIED, authenticate, verdict  # noqa: E402


def main():
    db, path, clone, snapshot = sys.argv[1:5]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    (old,) = con.execute("SELECT token FROM snapshots WHERE name = ?", (snapshot,)).fetchone()
    (new,) = con.execute("SELECT token FROM vms WHERE name = ?", (clone,)).fetchone()
    assert old != new, "the clone kept the snapshot's token"

    refused = verdict(authenticate(path, old)[1])
    # No pause: the knock makes the guest drop the refused host at once.
    accepted = verdict(authenticate(path, new)[1])

    print(f"snapshot token: {refused}; clone token: {accepted}")
    assert refused == (ERR, PERMISSION_DENIED), "the snapshot's token still opens the clone"
    assert accepted == (OK, None), "the clone refused its own token"
    print("clone re-keyed")


if __name__ == "__main__":
    main()
