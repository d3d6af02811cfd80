# Sourced by scripts/smoke.sh and bench/run.sh: one smoke run or benchmark at a time on a
# host (they share bridges, DNS ports and the smoke state). `take_turn WHO SCRIPT ARGS...`
# re-runs SCRIPT under `flock -o`, which holds the lock in flock itself, so no daemon or
# VMM started by the run inherits it. Waits up to BANGER_SMOKE_WAIT_SECS (3600).
take_turn() {
  local who=$1 script=$2
  shift 2
  local lock=${BANGER_SMOKE_LOCK:-/tmp/banger-smoke.lock}
  [ "${BANGER_SMOKE_LOCKED:-}" != "$lock" ] || return 0
  flock -n "$lock" true ||
    echo "$who: a smoke run or benchmark is running on this host; waiting for it" >&2
  exec env BANGER_SMOKE_LOCKED="$lock" flock -o -w "${BANGER_SMOKE_WAIT_SECS:-3600}" "$lock" "$script" "$@"
}
