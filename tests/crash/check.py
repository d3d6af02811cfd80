#!/usr/bin/env python3
"""Checks that a stopped daemon's store and the host agree: every process, tap, nft
rule, file and row has its partner. Run after `banger daemon stop` (running VMs keep
their taps; the spare taps are gone).

    check.py STATE_DIR RUNTIME_DIR BRIDGE BASELINE_VMM_PIDS

Prints one line per leftover and exits 1 if there is any. BASELINE_VMM_PIDS is a
comma-separated list of banger VMM pids that ran before the test; a VMM counts only if
it holds a file under STATE_DIR or RUNTIME_DIR (other daemons' VMs are not ours).
"""
import json
import os
import re
import sqlite3
import subprocess
import sys

state, runtime, bridge, baseline = sys.argv[1:5]
state, runtime = os.path.realpath(state), os.path.realpath(runtime)
baseline = {int(p) for p in baseline.split(",") if p}
problems = []


def problem(msg):
    problems.append(msg)


def listdir(path):
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()


def start_time(pid):
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2:].split()[19])


db = sqlite3.connect(f"file:{state}/state.db?mode=ro", uri=True)
db.row_factory = sqlite3.Row
vms = {r["id"]: r for r in db.execute("SELECT * FROM vms")}
running = {i: r for i, r in vms.items() if r["state"] == "running"}
snaps = {r["id"] for r in db.execute("SELECT id FROM snapshots")}
leases = list(db.execute("SELECT ip, vm_id FROM leases"))

for i, r in vms.items():
    if r["creating"] or r["ephemeral"]:
        problem(f"row {r['name']} is half-made or throwaway (creating={r['creating']}, ephemeral={r['ephemeral']})")
    if r["state"] not in ("running", "stopped", "crashed"):
        problem(f"row {r['name']} is left {r['state']}")
    if r["state"] == "running":
        if not r["pid_start"] or start_time(r["pid"]) != r["pid_start"]:
            problem(f"row {r['name']} runs pid {r['pid']} (start {r['pid_start']}) that is not alive as recorded")
    elif r["pid"] is not None or r["tap"] is not None:
        problem(f"row {r['name']} is {r['state']} but keeps pid {r['pid']} / tap {r['tap']}")
    if not os.path.exists(f"{state}/vms/{i}/upper.ext4"):
        problem(f"row {r['name']} has no disk")

for ip, vm_id in leases:
    if vm_id not in vms:
        problem(f"lease {ip} of vm {vm_id} has no row")

for d in listdir(f"{state}/vms") - set(vms):
    problem(f"vm dir {d} has no row")
for d in listdir(f"{runtime}/vms") - set(running):
    problem(f"runtime dir {d} has no running vm")
for d in listdir(f"{state}/ssh/known_hosts") - set(vms):
    problem(f"known_hosts entry {d} has no row")
for d in listdir(f"{state}/snapshots") ^ snaps:
    problem(f"snapshot {d} has files without a row or a row without files")
for d in listdir(f"{state}/images"):
    if d.startswith("."):
        problem(f"image store keeps {d}")

def ours(pid):
    """Whether the process holds a file of this daemon's state or runtime dir: other
    banger daemons' VMMs (other tests on this host) hold their own."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith((state + "/", runtime + "/")):
            return True
    return False


# VMM processes: QEMU names itself `process=banger-<id>`, Firecracker gets `--id <id>`.
for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
    if pid in baseline:
        continue
    try:
        argv = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
    except OSError:
        continue
    ids = [m.group(1) for a in argv for m in [re.search(r"process=banger-([0-9a-f]{16})", a)] if m]
    ids += [argv[k + 1] for k, a in enumerate(argv[:-1]) if a == "--id" and re.fullmatch(r"[0-9a-f]{16}", argv[k + 1])]
    if ids and not ours(pid):
        continue
    for vm_id in ids:
        r = running.get(vm_id)
        if r is None or r["pid"] != pid:
            problem(f"vmm pid {pid} of vm {vm_id} is not a running vm's recorded vmm")

taps = {r["tap"] for r in running.values() if r["tap"]}
links = subprocess.run(["ip", "-o", "link", "show", "master", bridge],
                       capture_output=True, text=True).stdout
on_bridge = set(re.findall(r"^\d+: (bgtap\d+)", links, re.M))
for t in on_bridge - taps:
    problem(f"tap {t} on {bridge} belongs to no running vm")
for t in taps - on_bridge:
    problem(f"running vm's tap {t} is not on {bridge}")

table = "banger_" + re.sub(r"[^A-Za-z0-9]", "_", bridge)
out = subprocess.run(["nft", "-j", "list", "table", "ip", table], capture_output=True, text=True).stdout
for obj in json.loads(out or '{"nftables": []}')["nftables"]:
    chain = obj.get("chain", {}).get("name", "")
    if chain.startswith("vm_") and chain[3:] not in running:
        problem(f"nft chain {chain} belongs to no running vm")
    comment = obj.get("rule", {}).get("comment", "")
    if comment.startswith("banger vm ") and comment[10:] not in running:
        problem(f"nft rule '{comment}' belongs to no running vm")
for family in ("ip", "bridge"):
    text = subprocess.run(["nft", "list", "table", family, table], capture_output=True, text=True).stdout
    for t in set(re.findall(r"\bbgtap\d+\b", text)) - taps:
        problem(f"nft table {family} {table} names tap {t} of no running vm")

for p in problems:
    print(f"leftover: {p}")
print(f"checked {len(vms)} vms, {len(snaps)} snapshots: {'clean' if not problems else 'NOT clean'}")
sys.exit(1 if problems else 0)
