#!/usr/bin/env bash
# Start-up benchmark of banger on the current backend (not a timed test: it measures
# and reports, it never fails on a number). Prints a table, then `--- json ---` and a
# JSON document. Series:
#   raw         the floor: QEMU alone, with banger's exact command line for this image,
#               a fresh upper disk, timed from spawn to the agent's hello (bench/raw_boot.py)
#   cold        `banger vm run --rm --cold -- true`, split into phases from the daemon's log
#   cold_nonet  the same with --no-network (no tap, no lease: closest to the raw floor)
#   warm        `banger vm run --rm --no-pool -- true` resuming the image's warm snapshot
#               (made first with `banger image warm`, timed; removed afterwards unless
#               one existed before)
#   conc N      N = 1, 2, 4 concurrent runs, cold and warm
#   ship        `workspace prepare` of a repository with a long history (shallow, and once
#               with --history) against `git archive HEAD | vm exec -i VM -- tar -x` into
#               the same VM; BANGER_BENCH_SHIP_REPO names it (skipped when unset)
#   pool        `banger vm run --rm -- true` taking a paused clone from the daemon's pool
#               (pool_size 8, refilled before each run); then 8 concurrent pooled runs
#               and the time the pool takes to refill; the PSS of each of the pool's 8
#               idle clones and of 8 idle cold VMs, and their sums
#
# Settings: BANGER_BENCH_BIN (default target/release), BANGER_BENCH_RUNS (5),
# BANGER_BENCH_CONC_ROUNDS (2), BANGER_BENCH_STATE (the smoke suite's state, whose
# image it reuses), BANGER_BENCH_JSON (also write the JSON there), BANGER_BENCH_ONLY=ship
# (only the ship series).
# It never runs beside a smoke run on the same state dir: it waits for it to end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/take-turn.sh
. "$ROOT/scripts/take-turn.sh"
take_turn bench "$ROOT/bench/run.sh" "$@"

BIN=${BANGER_BENCH_BIN:-$ROOT/target/release}
RUNS=${BANGER_BENCH_RUNS:-5}
CONC_ROUNDS=${BANGER_BENCH_CONC_ROUNDS:-2}
STATE=${BANGER_BENCH_STATE:-${BANGER_SMOKE_HOME:-$ROOT/target/smoke}/state}
RUN_DIR=$(mktemp -d /tmp/banger-bench.XXXXXX)

export BANGER_STATE_DIR=$STATE
export BANGER_CACHE_DIR=$(dirname "$STATE")/cache
export BANGER_CONFIG_DIR=$RUN_DIR/config
export BANGER_RUNTIME_DIR=$RUN_DIR/run
export BANGER_SOCKET=$RUN_DIR/run/bangerd.sock
export BANGER_DAEMON=$BIN/bangerd
AGENT=$BIN/banger-agent
[ -e "$AGENT" ] || AGENT=$ROOT/target/x86_64-unknown-linux-gnu/agent/banger-agent
export BANGER_AGENT=${BANGER_AGENT:-$AGENT}
export NO_COLOR=1
mkdir -p "$BANGER_CONFIG_DIR" "$STATE"
cat >"$BANGER_CONFIG_DIR/config.toml" <<'CFG'
bridge = "bgbench0"
dns_listen = "127.0.0.1:42089"
memory_mib = 512
disk_size_mib = 1024
boot_timeout_secs = 180
# The warm series makes its snapshot with `image warm`, timed; no run makes one itself.
warm_on_first_use = false
pool_size = 8
CFG

banger() { "$BIN/banger" "$@"; }
log() { printf 'bench: %s\n' "$*" >&2; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

cleanup() {
  for vm in $(banger vm list --json 2>/dev/null | sed -n 's/.*"name": "\(bench-.*\)".*/\1/p'); do
    banger vm delete "$vm" >/dev/null 2>&1 || true
  done
  banger daemon stop >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

RESULTS=$RUN_DIR/results.jsonl
: >"$RESULTS"
LOG=$STATE/bangerd.log
LOG_START=$(stat -c %s "$LOG" 2>/dev/null || echo 0)

banger daemon start >/dev/null
# A no-op when the image already has this agent; a rebuild (a minute or more) when not.
log "image build (a no-op when it is current)"
banger image build >/dev/null

ONLY=${BANGER_BENCH_ONLY:-}
if [ -z "$ONLY" ]; then
log "warm-up run (not counted)"
banger vm run --rm --cold --name bench-warmup -- true

# The probe: a VM booted by banger whose QEMU command line the raw floor reuses, and
# whose never-booted upper disk is the template for the raw runs' fresh disks.
banger vm create bench-probe --no-start --no-network >/dev/null
probe_id=$(banger vm show bench-probe --json | sed -n 's/.*"id": "\(.*\)".*/\1/p')
backend=$(banger vm show bench-probe --json | sed -n 's/.*"backend": "\(.*\)".*/\1/p')
image=$(banger vm show bench-probe --json | sed -n 's/.*"image": "\(.*\)".*/\1/p')
cp --sparse=always "$STATE/vms/$probe_id/upper.ext4" "$RUN_DIR/upper-template.ext4"
banger vm start bench-probe >/dev/null
probe_pid=$(banger vm show bench-probe --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
cp "/proc/$probe_pid/cmdline" "$RUN_DIR/vmm.cmdline"
banger vm delete bench-probe >/dev/null

if [ "$backend" = qemu ]; then
  log "raw qemu boots x$RUNS"
  python3 bench/raw_boot.py "$RUN_DIR/vmm.cmdline" "$STATE/images/$image" \
    "$RUN_DIR/upper-template.ext4" "$RUNS" |
    while read -r ms; do echo "{\"series\":\"raw\",\"ms\":$ms}" >>"$RESULTS"; done
else
  log "backend $backend: the raw floor script drives QEMU only; skipping it"
fi

warm_snapshots() {
  banger vm snapshot list --json |
    python3 -c 'import json, sys; print(" ".join(s["name"] for s in json.load(sys.stdin) if s["warm"]))'
}
had_warm=$(warm_snapshots)

timed_run() { # series name [vm run flags...]
  local series=$1 name=$2 t0 t1; shift 2
  t0=$(now_ms)
  banger vm run --rm --name "$name" "$@" -- true
  t1=$(now_ms)
  echo "{\"series\":\"$series\",\"name\":\"$name\",\"ms\":$((t1-t0))}" >>"$RESULTS"
}

log "cold vm run x$RUNS"
for i in $(seq "$RUNS"); do timed_run cold "bench-cold-$i" --cold; done
log "cold vm run --no-network x$RUNS"
for i in $(seq "$RUNS"); do timed_run cold_nonet "bench-nonet-$i" --cold --no-network; done

concurrent() { # series tag [vm run flags...]
  local series=$1 tag=$2 n r k t0 batch ms pids; shift 2
  for n in 1 2 4; do
    for r in $(seq "$CONC_ROUNDS"); do
      log "$series: $n concurrent runs, round $r"
      t0=$(now_ms); pids=()
      for k in $(seq "$n"); do
        ( s=$(now_ms); banger vm run --rm --name "bench-$tag$n-$r-$k" "$@" -- true
          echo "$(( $(now_ms) - s ))" >"$RUN_DIR/$tag-$n-$r-$k" ) & pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p"; done
      batch=$(( $(now_ms) - t0 ))
      for k in $(seq "$n"); do
        ms=$(cat "$RUN_DIR/$tag-$n-$r-$k")
        echo "{\"series\":\"$series\",\"n\":$n,\"round\":$r,\"name\":\"bench-$tag$n-$r-$k\",\"ms\":$ms,\"batch_ms\":$batch}" >>"$RESULTS"
      done
    done
  done
}
concurrent conc c --cold

log "banger image warm"
t0=$(now_ms)
banger image warm >/dev/null
echo "{\"series\":\"warm_build\",\"ms\":$(( $(now_ms) - t0 ))}" >>"$RESULTS"
# An image's own pool size (`image warm --pool N`) would override the config's 8; set
# it, and put back what it was (`default` when it had none) at the end.
image=${image:-$(banger image list --json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["name"])')}
had_pool=$(banger image show "$image" --json | python3 -c 'import json, sys; s = json.load(sys.stdin).get("pool_size"); print("default" if s is None else s)')
banger image warm "$image" --pool 8 >/dev/null
pool_ready() { # the pools' ready clones (pool_vms also counts clones being made)
  banger daemon status --json |
    python3 -c 'import json, sys; print(sum(p["ready"] for p in json.load(sys.stdin).get("pools", [])))'
}
wait_pool() { # N: waits (up to 5 minutes) until the pool holds N clones
  local t0; t0=$(now_ms)
  until [ "$(pool_ready)" -ge "$1" ]; do
    if [ $(( $(now_ms) - t0 )) -gt 300000 ]; then log "the pool never held $1 clones"; return 1; fi
    sleep 0.2
  done
}
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup"; }

log "waiting for the pool to fill (8 clones)"
wait_pool 8
log "warm vm run --no-pool x$RUNS"
for i in $(seq "$RUNS"); do timed_run warm "bench-warm-$i" --no-pool; done
concurrent conc_warm w --no-pool

wait_pool 8
log "PSS of the pool's 8 idle clones"
for pid in $(pgrep -f 'banger-pool-'); do
  if ls -l "/proc/$pid/fd" 2>/dev/null | grep -q "$STATE/"; then
    echo "{\"series\":\"pss_pool\",\"pid\":$pid,\"kib\":$(pss_kib "$pid")}" >>"$RESULTS"
  fi
done
log "pooled vm run x$RUNS (the pool refilled before each)"
for i in $(seq "$RUNS"); do wait_pool 8; timed_run pool "bench-pool-$i"; done

wait_pool 8
log "8 concurrent pooled runs"
pids=()
for k in $(seq 8); do
  ( banger vm run --rm --name "bench-cp-$k" -- true && touch "$RUN_DIR/cp-ok-$k" ) & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || true; done
t0=$(now_ms)
wait_pool 8
refill_ms=$(( $(now_ms) - t0 ))
ok=$(ls "$RUN_DIR"/cp-ok-* 2>/dev/null | wc -l)
pooled=$(tail -c +"$((LOG_START+1))" "$LOG" | grep -c 'vm taken from the pool vm=bench-cp-' || true)
echo "{\"series\":\"pool_refill\",\"n\":8,\"ok\":$ok,\"pooled\":$pooled,\"ready\":$(pool_ready),\"refill_ms\":$refill_ms}" >>"$RESULTS"

log "PSS of 8 idle cold VMs"
for k in $(seq 8); do banger vm create "bench-pss-$k" >/dev/null & done
wait
for k in $(seq 8); do
  pid=$(banger vm show "bench-pss-$k" --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  echo "{\"series\":\"pss_cold\",\"pid\":$pid,\"kib\":$(pss_kib "$pid")}" >>"$RESULTS"
done
for k in $(seq 8); do banger vm delete "bench-pss-$k" >/dev/null & done
wait
banger image warm "$image" --pool "$had_pool" >/dev/null
if [ -z "$had_warm" ]; then
  for s in $(warm_snapshots); do banger vm snapshot delete "$s" >/dev/null; done
fi
fi # ONLY

ship_series() {
  local repo=${BANGER_BENCH_SHIP_REPO:-} i t0
  if [ -z "$repo" ] || ! git -C "$repo" rev-parse -q --verify HEAD >/dev/null; then
    log "ship: set BANGER_BENCH_SHIP_REPO to a git repository with a long history; skipping"
    return 0
  fi
  log "ship: $repo, $(git -C "$repo" rev-list --count HEAD) commits, $(git -C "$repo" ls-files | wc -l) files, x$RUNS"
  banger vm create bench-ship >/dev/null
  backend=${backend:-$(banger vm show bench-ship --json | sed -n 's/.*"backend": "\(.*\)".*/\1/p')}
  sample() { echo "{\"series\":\"$1\",\"ms\":$(( $(now_ms) - t0 ))}" >>"$RESULTS"; }
  for i in $(seq "$RUNS"); do
    t0=$(now_ms)
    git -C "$repo" archive HEAD | banger vm exec -i bench-ship -- sh -c 'mkdir "$0" && exec tar -x -C "$0"' "/root/archive-$i"
    sample ship_archive
    t0=$(now_ms)
    banger workspace prepare bench-ship "$repo" --dest "/root/ship-$i" >/dev/null
    sample ship_prepare
    if [ "$i" = 1 ]; then
      t0=$(now_ms)
      banger workspace prepare bench-ship "$repo" --dest /root/ship-history --history >/dev/null
      sample ship_history
    fi
    banger vm exec bench-ship -- rm -rf "/root/archive-$i" "/root/ship-$i" /root/ship-history
  done
  banger vm delete bench-ship >/dev/null
}
ship_series

tail -c +"$((LOG_START+1))" "$LOG" >"$RUN_DIR/daemon.log"
cat >"$RUN_DIR/meta.json" <<META
{"backend":"${backend:-}","runs":$RUNS,"conc_rounds":$CONC_ROUNDS,"date":"$(date -u +%FT%TZ)",
 "host_cpus":$(nproc),"memory_mib":512,"bin":"$BIN"}
META
python3 bench/report.py "$RESULTS" "$RUN_DIR/daemon.log" "$RUN_DIR/meta.json" | tee "$RUN_DIR/report.txt"
if [ -n "${BANGER_BENCH_JSON:-}" ]; then
  sed -n '/^--- json ---$/,$p' "$RUN_DIR/report.txt" | tail -n +2 >"$BANGER_BENCH_JSON"
fi
