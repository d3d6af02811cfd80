# The smoke scenario `slurm` (sourced by scripts/smoke.sh): `banger vm run --slurm`
# across a real Slurm cluster on this machine (scripts/slurm-cluster.sh: slurmctld,
# munged, and nodes nodea and nodeb, each in its own network namespace with its own
# bangerd and one banger slot).

# Waits up to $1 seconds for the command after it to succeed (polling).
slurm_until() {
  local secs=$1 i; shift
  for ((i = 0; i < secs * 10; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "gave up after ${secs}s waiting for: $*"; return 1
}

# banger against one node's daemon.
slurm_node() {
  local n=$1; shift
  BANGER_STATE_DIR="$SLURM_D/$n/state" BANGER_CONFIG_DIR="$SLURM_D/$n/config" \
    BANGER_RUNTIME_DIR="$SLURM_D/$n/run" BANGER_SOCKET="$SLURM_D/$n/run/bangerd.sock" \
    BANGER_CACHE_DIR="$SLURM_D/$n/cache" "$BIN/banger" "$@"
}
slurm_vms() { slurm_node "$1" vm list --json | grep -c '"name"' || true; }
slurm_no_vm() { [ "$(slurm_vms "$1")" = 0 ]; }
slurm_has_vm() { [ "$(slurm_vms "$1")" = 1 ]; }
slurm_job_on() { squeue -h -t R -w "$1" -o %i | head -1; }
slurm_pending() { squeue -h -t PD -o %r | grep -q Resources; }
# The submit side needs no daemon; srun carries none of its BANGER_* settings.
slurm_run() { "$BIN/banger" vm run --slurm "$@"; }
# In the background, with $! the CLI's own pid.
slurm_bg() { local out=$1; shift; "$BIN/banger" vm run --slurm "$@" >"$out" 2>&1 & }

s_slurm() {
  SLURM_D=$RUN_DIR/slurm
  export SLURM_CONF=$SLURM_D/slurm.conf
  mkdir -p "$SLURM_D"
  trap 'BANGER_SMOKE_BIN=$BIN scripts/slurm-cluster.sh down "$SLURM_D"' EXIT
  BANGER_SMOKE_BIN=$BIN SMOKE_STATE=$BANGER_STATE_DIR scripts/slurm-cluster.sh up "$SLURM_D"

  log "a run placed on nodeb streams its output and exits with the command's code"
  set +e
  slurm_run --srun-arg=--nodelist=nodeb -- sh -c 'hostname; echo oops >&2; exit 42' \
    >"$SLURM_D/out" 2>"$SLURM_D/err"
  rc=$?
  set -e
  cat "$SLURM_D/err"
  expect_eq "$rc" 42
  grep -q '^slurm-[0-9]*-0$' "$SLURM_D/out"
  grep -q 'on node nodeb' "$SLURM_D/err"
  grep -q '^oops$' "$SLURM_D/err"
  slurm_no_vm nodeb

  log "a repository shipped from here is the guest's working tree"
  repo=$SLURM_D/repo
  git init -q "$repo"
  echo "from the submit host" >"$repo/hello.txt"
  git -C "$repo" add hello.txt
  git -C "$repo" -c user.email=s@s -c user.name=s commit -q -m one
  echo "uncommitted" >>"$repo/hello.txt"
  out=$(slurm_run --srun-arg=--nodelist=nodea "$repo" -- sh -c 'cat hello.txt; git status --short')
  expect_eq "$out" "from the submit host
uncommitted
 M hello.txt"

  log "the run's changes come back as a patch, and apply here"
  slurm_run --srun-arg=--nodelist=nodeb --export "$SLURM_D/changes.patch" --apply "$repo" \
    -- sh -c 'echo from the guest >>hello.txt; echo new >new.txt'
  expect_eq "$(cat "$repo/hello.txt")" "from the submit host
uncommitted
from the guest"
  expect_eq "$(cat "$repo/new.txt")" "new"
  git -C "$repo" stash -q -u
  git -C "$repo" apply "$SLURM_D/changes.patch"
  expect_eq "$(git -C "$repo" status --short | tr '\n' ' ')" " M hello.txt ?? new.txt "
  expect_eq "$(tail -1 "$repo/hello.txt")" "from the guest"

  log "with both nodes' slots taken, the next run waits for one"
  slurm_bg /dev/null --srun-arg=--nodelist=nodea -- sleep 600
  busy_a=$!
  slurm_bg "$SLURM_D/busy_b.out" --srun-arg=--nodelist=nodeb -- sleep 600
  busy_b=$!
  slurm_until 120 slurm_has_vm nodea
  slurm_until 120 slurm_has_vm nodeb
  slurm_bg "$SLURM_D/third" -- echo third
  third=$!
  slurm_until 30 slurm_pending
  log "a dead client ends its step, which deletes its VM and frees the slot"
  kill -9 "$busy_a"
  slurm_until 60 slurm_no_vm nodea
  wait "$third"
  grep -q '^third$' "$SLURM_D/third"

  log "scancel mid-run deletes the VM"
  job=$(slurm_job_on nodeb)
  [ -n "$job" ]
  scancel "$job"
  set +e; wait "$busy_b"; rc=$?; set -e
  cat "$SLURM_D/busy_b.out"
  [ "$rc" -ne 0 ]
  grep -q 'slurm step ended' "$SLURM_D/busy_b.out"
  slurm_until 60 slurm_no_vm nodeb

  log "a step killed outright leaves its VM to the epilog"
  slurm_bg /dev/null --srun-arg=--nodelist=nodea -- sleep 600
  killed=$!
  slurm_until 120 slurm_has_vm nodea
  job=$(slurm_job_on nodea)
  scancel --signal=KILL "$job"
  set +e; wait "$killed"; set -e
  slurm_until 60 grep -q "^$job 0$" "$SLURM_D/nodea/epilog.log"
  slurm_no_vm nodea

  log "a run on a node whose slurmd is dead fails with a clear error"
  kill "$(awk '$1 == "slurmd-nodeb" {print $2}' "$SLURM_D/pids")"
  expect_failure 7 "*slurm step ended before its node answered*" \
    timeout 120 "$BIN/banger" vm run --slurm --srun-arg=--nodelist=nodeb -- true
}
