#!/usr/bin/env python3
"""Turns the samples of bench/run.sh and the daemon's log into a table and a JSON
document.

Usage: report.py RESULTS_JSONL DAEMON_LOG_SLICE META_JSON
Prints the table, then a line `--- json ---`, then the JSON.
"""

import json
import re
import statistics
import sys

# What the daemon logs per VM (see bangerd::vm and bangerd::server::exec), keyed by the
# log message, with the fields to take from it.
LOG_FIELDS = {
    "vm created": ["disk_ms", "create_ms"],
    "vm network attached": ["isolation_ms"],
    "vmm launched": ["ms"],
    "agent ready": ["prepare_ms", "agent_ready_ms", "guest_uptime_ms"],
    "vm restored": ["hello_ms", "reconfigure_ms"],
    "exec finished": ["exec_ms"],
    "vm deleted": ["delete_ms"],
    "vm taken from the pool": ["take_ms", "resume_ms", "identity_ms"],
}
VM_RE = re.compile(r"(?:\{|\s)vm=\"?([a-z0-9-]+)")
FIELD_RE = re.compile(r"\b([a-z_]+)=(\d+)\b")


def parse_log(text):
    """Per VM name: the numeric fields the daemon logged for it."""
    per_vm = {}
    for line in text.splitlines():
        msg = next((m for m in LOG_FIELDS if f": {m}" in line), None)
        if msg is None:
            continue
        vm = VM_RE.search(line)
        if not vm:
            continue
        fields = dict((k, int(v)) for k, v in FIELD_RE.findall(line))
        rec = per_vm.setdefault(vm.group(1), {})
        for f in LOG_FIELDS[msg]:
            if f in fields:
                rec["launch_ms" if f == "ms" else f] = fields[f]
    return per_vm


def stats(values):
    if not values:
        return None
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values)),
        "min_ms": round(min(values)),
        "max_ms": round(max(values)),
    }


def phases(sample, daemon):
    """Splits one `vm run --rm -- true` into phases from the daemon's own timings. The
    delete runs after banger exited (`--rm` is detached): shown, not in the total."""
    if "take_ms" in daemon:
        return pool_phases(sample, daemon)
    need = ["create_ms", "disk_ms", "prepare_ms", "agent_ready_ms", "exec_ms", "delete_ms"]
    if any(k not in daemon for k in need):
        return None
    total = sample["ms"]
    launch = daemon.get("launch_ms", 0)
    # A restore (warm) reaches the hello sooner, then re-keys the guest.
    hello = daemon.get("hello_ms", daemon["agent_ready_ms"])
    p = {
        "disk_and_lease_ms": daemon["disk_ms"],
        # The guest's isolation rules (one nft transaction), inside prepare_ms.
        "isolation_ms": daemon.get("isolation_ms", 0),
        "prepare_ms": daemon["prepare_ms"],
        "vmm_launch_ms": launch,
        "guest_to_hello_ms": hello - launch,
        "reconfigure_ms": daemon.get("reconfigure_ms", 0),
        "after_hello_ms": daemon["create_ms"]
        - daemon["disk_ms"]
        - daemon["prepare_ms"]
        - daemon["agent_ready_ms"],
        "exec_ms": daemon["exec_ms"],
        "delete_after_exit_ms": daemon["delete_ms"],
    }
    p["cli_and_rpc_ms"] = total - daemon["create_ms"] - daemon["exec_ms"]
    # Everything but the guest's own boot is banger's (and the VMM launch's) cost.
    p["overhead_ms"] = total - p["guest_to_hello_ms"]
    return p


def pool_phases(sample, daemon):
    """A pooled run: the take (rename, resume, the guest's new name and clock), the
    exec, and banger's own share."""
    if "exec_ms" not in daemon:
        return None
    return {
        "take_ms": daemon["take_ms"],
        # Inside take_ms: the VMM's resume, and the guest's new name, clock and randomness.
        "resume_ms": daemon.get("resume_ms", 0),
        "identity_ms": daemon.get("identity_ms", 0),
        "exec_ms": daemon["exec_ms"],
        "cli_and_rpc_ms": sample["ms"] - daemon["take_ms"] - daemon["exec_ms"],
        "delete_after_exit_ms": daemon.get("delete_ms", 0),
    }


def pss(samples, series):
    """Each VMM's PSS (KiB) of a `pss_*` series, and their sum."""
    kib = [s["kib"] for s in samples if s["series"] == series]
    return {"each_kib": kib, "sum_kib": sum(kib)} if kib else None


def median_phases(rows):
    rows = [r for r in rows if r]
    if not rows:
        return None
    return {k: round(statistics.median(r[k] for r in rows)) for k in rows[0]}


def main():
    results_path, log_path, meta_path = sys.argv[1:4]
    samples = [json.loads(l) for l in open(results_path) if l.strip()]
    with open(log_path, errors="replace") as f:
        per_vm = parse_log(f.read())
    meta = json.load(open(meta_path))

    def series(name):
        return [s for s in samples if s["series"] == name]

    out = {"meta": meta, "series": {}, "phases_median": {}, "concurrency": {}, "ratios": {}}
    labels = {
        "raw": "raw qemu: spawn → agent hello",
        "cold": "vm run --rm --cold -- true",
        "cold_nonet": "vm run --rm --cold --no-network -- true",
        "ship_archive": "git archive HEAD | vm exec -i VM tar -x",
        "ship_prepare": "workspace prepare (shallow)",
        "ship_history": "workspace prepare --history",
        "warm": "vm run --rm --no-pool -- true (warm)",
        "pool": "vm run --rm -- true (from the pool)",
    }
    for key in labels:
        st = stats([s["ms"] for s in series(key)])
        if st:
            out["series"][key] = st
        rows = [phases(s, per_vm.get(s.get("name", ""), {})) for s in series(key)]
        mp = median_phases(rows)
        if mp:
            out["phases_median"][key] = mp
        agent = [per_vm[s["name"]]["agent_ready_ms"] for s in series(key)
                 if "agent_ready_ms" in per_vm.get(s.get("name", ""), {})]
        if agent:
            out["series"][key]["agent_ready_median_ms"] = round(statistics.median(agent))
    for mode, key in (("cold", "conc"), ("warm", "conc_warm"), ("pooled", "conc_pool")):
        for n in sorted({s["n"] for s in series(key)}):
            rows = [s for s in series(key) if s["n"] == n]
            batches = sorted({(s["round"], s["batch_ms"]) for s in rows})
            out["concurrency"].setdefault(mode, {})[str(n)] = {
                "per_run": stats([s["ms"] for s in rows]),
                "batch_median_ms": round(statistics.median(b for _, b in batches)),
                "rounds": len(batches),
            }
    build = [s["ms"] for s in series("warm_build")]
    if build:
        out["warm_build_ms"] = build[0]
    med = {k: v["median_ms"] for k, v in out["series"].items()}
    if "raw" in med:
        for k in ("cold", "cold_nonet", "warm"):
            if k in med:
                out["ratios"][f"{k}/raw"] = round(med[k] / med["raw"], 2)
    if "warm" in med and "cold" in med:
        out["ratios"]["warm/cold"] = round(med["warm"] / med["cold"], 3)
    for k in ("ship_prepare", "ship_history"):
        if k in med and "ship_archive" in med:
            out["ratios"][f"{k}/ship_archive"] = round(med[k] / med["ship_archive"], 2)
    for k in ("cold", "warm"):
        if "pool" in med and k in med:
            out["ratios"][f"pool/{k}"] = round(med["pool"] / med[k], 3)
    for key in ("pss_pool", "pss_cold"):
        if pss(samples, key):
            out[key] = pss(samples, key)
    refill = [s for s in samples if s["series"] == "pool_refill"]
    if refill:
        out["pool_refill"] = refill[0]

    print(f"banger bench: backend {meta['backend']}, {meta['runs']} runs per series, "
          f"{meta['date']}")
    print(f"{'series':<44}{'median':>8}{'min':>8}{'max':>8}{'n':>4}  agent_ready")
    for key, label in labels.items():
        st = out["series"].get(key)
        if st:
            ar = st.get("agent_ready_median_ms", "")
            print(f"{label:<44}{st['median_ms']:>8}{st['min_ms']:>8}{st['max_ms']:>8}"
                  f"{st['n']:>4}  {ar}")
    for mode, per_n in out["concurrency"].items():
        for n, c in per_n.items():
            st = c["per_run"]
            label = f"{n} concurrent {mode} runs (batch {c['batch_median_ms']} ms)"
            print(f"{label:<44}{st['median_ms']:>8}{st['min_ms']:>8}{st['max_ms']:>8}{st['n']:>4}")
    if "warm_build_ms" in out:
        print(f"{'banger image warm (once)':<44}{out['warm_build_ms']:>8}")
    for key, p in out["phases_median"].items():
        print(f"\nphases of {labels[key]} (median ms):")
        for k, v in p.items():
            print(f"  {k:<24}{v:>8}")
    for key, label in (("pss_pool", "idle pooled clones"), ("pss_cold", "idle cold VMs")):
        if key in out:
            each = " ".join(f"{k >> 10}" for k in out[key]["each_kib"])
            print(f"\nPSS of {len(out[key]['each_kib'])} {label} (MiB): {each}; "
                  f"sum {out[key]['sum_kib'] >> 10} MiB")
    if "pool_refill" in out:
        r = out["pool_refill"]
        print(f"\n{r['n']} concurrent pooled runs: {r['ok']} succeeded, "
              f"{r['pooled']} from the pool; pool refilled to {r['ready']} in {r['refill_ms']} ms")
    if out["ratios"]:
        print("\nratios (medians): " + ", ".join(f"{k} = {v}" for k, v in out["ratios"].items()))
    print("--- json ---")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
