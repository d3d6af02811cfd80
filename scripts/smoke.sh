#!/usr/bin/env bash
# Real-VM smoke suite: drives the built `banger` binary against real VMs.
# One PASS/FAIL line per scenario, then "N passed, M failed".
#
# State (images, debootstrap cache) persists under $BANGER_SMOKE_HOME for fast reruns;
# the runtime dir is fresh on every run. Nothing touches the user's real banger state.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BANGER_SMOKE_BIN:-$ROOT/target/release}
SMOKE_HOME=${BANGER_SMOKE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/banger-smoke}
RUN_DIR=$(mktemp -d /tmp/banger-smoke.XXXXXX)

export BANGER_STATE_DIR=$SMOKE_HOME/state
export BANGER_CACHE_DIR=$SMOKE_HOME/cache
export BANGER_CONFIG_DIR=$RUN_DIR/config
export BANGER_RUNTIME_DIR=$RUN_DIR/run
export BANGER_SOCKET=$RUN_DIR/run/bangerd.sock
export BANGER_DAEMON=$BIN/bangerd
export BANGER_AGENT=$BIN/banger-agent
export NO_COLOR=1
mkdir -p "$BANGER_CONFIG_DIR" "$BANGER_STATE_DIR" "$BANGER_CACHE_DIR"
if [ -n "${BANGER_SMOKE_BACKEND:-}" ]; then
  echo "backend = \"$BANGER_SMOKE_BACKEND\"" >"$BANGER_CONFIG_DIR/config.toml"
fi
# Guests boot under software emulation here: give them room.
# Its own bridge and DNS port, so a smoke run never disturbs a real banger on this host.
SMOKE_DNS_PORT=${BANGER_SMOKE_DNS_PORT:-42079}
cat >>"$BANGER_CONFIG_DIR/config.toml" <<CFG
bridge = "bgsmoke0"
dns_listen = "127.0.0.1:$SMOKE_DNS_PORT"
memory_mib = 512
disk_size_mib = 1024
boot_timeout_secs = 180
CFG

banger() { "$BIN/banger" "$@"; }
log() { printf '%s\n' "$*" >&2; }

passed=0; failed=0; failures=()
scenario() {
  local name=$1; shift
  local out="$RUN_DIR/$name.log" t0=$SECONDS rc
  # Not inside `if`: bash ignores `set -e` in a condition, which would let every
  # scenario pass.
  ( set -e; "$@" ) >"$out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed+1)); printf 'PASS  %-28s %4ss\n' "$name" $((SECONDS-t0))
  else
    failed=$((failed+1)); failures+=("$name"); printf 'FAIL  %-28s %4ss\n' "$name" $((SECONDS-t0))
    sed 's/^/      | /' "$out" | tail -n 30
    # A failed scenario may leave VMs behind; remove them so the next one starts clean.
    delete_all_vms
  fi
}

delete_all_vms() {
  for vm in $(banger vm list --json 2>/dev/null | sed -n 's/.*"name": "\(.*\)".*/\1/p'); do
    banger vm delete "$vm" >/dev/null 2>&1 || true
  done
}

cleanup() {
  delete_all_vms
  banger daemon stop >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

expect_eq() { [ "$1" = "$2" ] || { echo "expected [$2], got [$1]"; return 1; }; }
vm_rows() { banger vm list --json | grep -c '"name"' || true; }

# --- scenarios ---------------------------------------------------------------------
s_bare() {
  out=$(banger vm run --rm -- echo smoke-bare-ok)
  expect_eq "$out" "smoke-bare-ok"
  expect_eq "$(vm_rows)" "0"
}

s_exit_code() {
  set +e
  banger vm run --rm -- sh -c 'exit 42'; rc=$?
  set -e
  expect_eq "$rc" "42"
}

s_invalid_spec() {
  set +e
  banger vm create bad --vcpu 0; rc=$?
  set -e
  [ "$rc" -ne 0 ] || { echo "vcpu 0 was accepted"; return 1; }
  expect_eq "$(vm_rows)" "0"
  [ -z "$(ls -A "$BANGER_STATE_DIR/vms" 2>/dev/null)" ] || { echo "vm files left"; return 1; }
}

s_lifecycle() {
  banger vm create life
  banger vm exec life -- sh -c 'echo persisted >/root/mark && sync'
  banger vm stop life
  banger vm show life | grep 'state     stopped' >/dev/null
  banger vm start life
  expect_eq "$(banger vm exec life -- cat /root/mark)" "persisted"
  banger vm delete life
  expect_eq "$(vm_rows)" "0"
}

s_isolated_writes() {
  banger vm create iso-a
  banger vm create iso-b
  banger vm exec iso-a -- sh -c 'echo a >/root/only-a'
  set +e
  banger vm exec iso-b -- test -e /root/only-a; rc=$?
  set -e
  banger vm delete iso-a iso-b
  expect_eq "$rc" "1"
}

s_vm_set() {
  banger vm create cpus --vcpu 2
  expect_eq "$(banger vm exec cpus -- nproc)" "2"
  banger vm stop cpus
  banger vm set cpus --vcpu 4
  banger vm start cpus
  expect_eq "$(banger vm exec cpus -- nproc)" "4"
  banger vm delete cpus
}

s_set_running_refused() {
  banger vm create busy
  set +e
  banger vm set busy --vcpu 4 2>"$RUN_DIR/set.err"; rc=$?
  set -e
  banger vm delete busy
  [ "$rc" -ne 0 ] && grep -q "stopped VM only" "$RUN_DIR/set.err"
}

s_concurrent_runs() {
  banger vm run --rm -- echo one >"$RUN_DIR/c1" & p1=$!
  banger vm run --rm -- echo two >"$RUN_DIR/c2" & p2=$!
  wait $p1; wait $p2
  expect_eq "$(cat "$RUN_DIR/c1")" "one"
  expect_eq "$(cat "$RUN_DIR/c2")" "two"
  expect_eq "$(vm_rows)" "0"
}

s_stdin_stream() {
  head -c $((50*1024*1024)) /dev/urandom >"$RUN_DIR/blob"
  banger vm create pipe
  want=$(sha256sum <"$RUN_DIR/blob" | cut -d' ' -f1)
  got=$(banger vm exec pipe -- cat <"$RUN_DIR/blob" | sha256sum | cut -d' ' -f1)
  banger vm delete pipe
  expect_eq "$got" "$want"
}

s_argv_exact() {
  banger vm create argv
  out=$(banger vm exec argv -- printf '[%s]' 'a b' "c'd" '$HOME' '')
  set +e
  banger vm exec argv -- sh -c 'kill -9 $$'; rc=$?
  set -e
  banger vm delete argv
  expect_eq "$out" "[a b][c'd][\$HOME][]"
  expect_eq "$rc" "137"
}

s_daemon_restart() {
  banger vm create keep
  banger daemon stop
  banger daemon start
  expect_eq "$(banger vm exec keep -- echo still-here)" "still-here"
  banger vm show keep | grep 'state     running' >/dev/null
  banger vm delete keep
}

s_vmm_killed() {
  banger vm create doomed
  pid=$(banger vm show doomed --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  kill -9 "$pid"
  for _ in $(seq 50); do
    banger vm show doomed | grep 'state     crashed' >/dev/null && break
    sleep 0.1
  done
  banger vm show doomed | grep 'state     crashed' >/dev/null
  banger vm delete doomed
}

# --- workspace scenarios -----------------------------------------------------------
# A repo with what shipping must keep: an exec bit, a symlink, binary data, odd names,
# plus an uncommitted edit, a staged file, a deleted file, an untracked and an ignored one.
ws_repo() {
  local r=$1
  rm -rf "$r"; mkdir -p "$r/dir with space"
  git -C "$r" init -q -b main
  git -C "$r" config user.email smoke@banger.test; git -C "$r" config user.name smoke
  printf 'committed\n' >"$r/tracked.txt"
  printf '#!/bin/sh\necho run\n' >"$r/run.sh"; chmod 755 "$r/run.sh"
  head -c 4096 /dev/urandom >"$r/blob.bin"
  head -c 1024 /dev/urandom >"$r/old.bin"
  printf 'snow\n' >"$r/dir with space/ünï ☃.txt"
  ln -s tracked.txt "$r/link"
  printf 'gone\n' >"$r/deleted.txt"
  printf '*.log\n' >"$r/.gitignore"
  git -C "$r" add -A; git -C "$r" commit -qm base
  printf 'uncommitted\n' >"$r/tracked.txt"
  rm "$r/deleted.txt"
  printf 'staged\n' >"$r/staged.txt"; git -C "$r" add staged.txt
  printf 'SECRET=1\n' >"$r/untracked.env"
  printf 'noise\n' >"$r/build.log"
}

# Every file and symlink below . (no .git): kind, mode or target, content hash, path.
TREE_SUM='find . -path ./.git -prune -o \( -type f -o -type l \) -print | LC_ALL=C sort |
  while IFS= read -r f; do
    if [ -L "$f" ]; then echo "L $(readlink "$f") $f";
    else echo "F $(stat -c %a "$f") $(sha256sum <"$f" | cut -c1-64) $f"; fi
  done'

s_workspace_run() {
  ws_repo "$RUN_DIR/wsrun"
  probe='cat tracked.txt; git status --porcelain --untracked-files=no; git rev-parse HEAD
    test -e untracked.env || echo no-untracked; test -e build.log || echo no-ignored'
  out=$(banger vm run --rm "$RUN_DIR/wsrun" -- sh -c "$probe; $TREE_SUM; pwd")
  # The host, once its untracked and ignored files are gone, must look the same.
  rm "$RUN_DIR/wsrun/untracked.env" "$RUN_DIR/wsrun/build.log"
  want=$(cd "$RUN_DIR/wsrun" && sh -c "$probe; $TREE_SUM; pwd" | sed "s|^$RUN_DIR/wsrun\$|/root/repo|")
  expect_eq "$out" "$want"
  echo "$out" | grep -qx uncommitted
  expect_eq "$(vm_rows)" "0"
}

s_workspace_dry_run() {
  ws_repo "$RUN_DIR/wsdry"
  # No daemon may be needed: point at a socket nobody serves and a daemon that cannot run.
  out=$(BANGER_SOCKET=$RUN_DIR/nobody.sock BANGER_DAEMON=/bin/false \
    banger vm run --rm --dry-run "$RUN_DIR/wsdry" -- true)
  want=$(printf '%s\n' .gitignore blob.bin "dir with space/ünï ☃.txt" link old.bin run.sh \
    staged.txt tracked.txt)
  expect_eq "$out" "$want"
  [ ! -e "$RUN_DIR/nobody.sock" ] || { echo "a daemon was started"; return 1; }
  out=$(BANGER_SOCKET=$RUN_DIR/nobody.sock BANGER_DAEMON=/bin/false \
    banger vm run --dry-run --include-untracked "$RUN_DIR/wsdry")
  expect_eq "$out" "$(printf '%s\nuntracked.env' "$want")"
}

s_include_untracked() {
  ws_repo "$RUN_DIR/wsun"
  out=$(banger vm run --rm --include-untracked "$RUN_DIR/wsun" -- \
    sh -c 'cat untracked.env; test -e build.log || echo no-ignored; git status --porcelain')
  expect_eq "$out" "$(printf 'SECRET=1\nno-ignored\n D deleted.txt\nA  staged.txt\n M tracked.txt\n?? untracked.env')"
}

s_workspace_export() {
  local r=$RUN_DIR/wsexp
  ws_repo "$r"
  git -C "$r" add -A; git -C "$r" commit -qm everything
  banger vm create wsx
  banger workspace prepare wsx "$r"
  # Edit, add, delete and chmod a text and a binary file; rename a dir; repoint a link.
  banger vm exec wsx -w /root/repo -- sh -c '
    set -e
    printf "from the guest\n" >>tracked.txt; head -c 300 /dev/urandom >>blob.bin
    printf "new text\n" >new.txt; head -c 2048 /dev/urandom >new.bin
    rm staged.txt old.bin
    chmod 755 tracked.txt blob.bin; chmod 644 run.sh
    mv "dir with space" "moved dir"; ln -sfn run.sh link'
  banger workspace export wsx -o "$RUN_DIR/ws.patch"
  git clone -q "$r" "$RUN_DIR/wsclone"
  git -C "$RUN_DIR/wsclone" apply --check "$RUN_DIR/ws.patch"
  git -C "$RUN_DIR/wsclone" apply "$RUN_DIR/ws.patch"
  guest=$(banger vm exec wsx -w /root/repo -- sh -c "$TREE_SUM")
  expect_eq "$(cd "$RUN_DIR/wsclone" && sh -c "$TREE_SUM")" "$guest"
  # --apply brings the same changes into the host working tree.
  banger workspace export wsx --apply --repo "$r"
  expect_eq "$(cd "$r" && rm -f build.log && sh -c "$TREE_SUM")" "$guest"
  banger vm delete wsx
}

s_workspace_hostile() {
  local r=$RUN_DIR/wshost
  ws_repo "$r"
  banger vm create wsh
  banger workspace prepare wsh "$r"
  snap() { (cd "$r" && find . -print0 | LC_ALL=C sort -z | xargs -0 ls -ld --time-style=+%s.%N; \
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); }
  before=$(snap)
  # A symlink out of the repo, made by the guest's real git.
  banger vm exec wsh -w /root/repo -- ln -s /etc/passwd pw
  set +e
  banger workspace export wsh --apply --repo "$r" 2>"$RUN_DIR/hostile1.err"; rc1=$?
  set -e
  # A guest whose git writes a traversal patch.
  banger vm exec wsh -- sh -c 'rm /root/repo/pw; cat >/usr/local/bin/git <<"EOF"
#!/bin/sh
case " $* " in *" diff "*)
  printf "diff --git a/../../pwned b/../../pwned\nnew file mode 100644\n--- /dev/null\n+++ b/../../pwned\n@@ -0,0 +1 @@\n+owned\n"
  exit 0;; esac
exec /usr/bin/git "$@"
EOF
chmod 755 /usr/local/bin/git'
  set +e
  banger workspace export wsh --apply --repo "$r" 2>"$RUN_DIR/hostile2.err"; rc2=$?
  set -e
  banger vm delete wsh
  cat "$RUN_DIR/hostile1.err" "$RUN_DIR/hostile2.err"
  [ "$rc1" -ne 0 ] && grep -q 'would point outside the repository' "$RUN_DIR/hostile1.err"
  [ "$rc2" -ne 0 ] && grep -q 'climbs out' "$RUN_DIR/hostile2.err"
  expect_eq "$(snap)" "$before"
  [ ! -e "$RUN_DIR/pwned" ] && [ ! -e "$(dirname "$RUN_DIR")/pwned" ]
}

s_daemon_sigkill() {
  banger vm create survivor
  dpid=$(banger daemon status --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  kill -9 "$dpid"
  banger daemon start
  banger vm list | grep survivor >/dev/null
  expect_eq "$(banger vm exec survivor -- echo adopted)" "adopted"
  banger vm delete survivor
}

# bash's /dev/tcp reaches a TCP port by IP or name; the SSH banner proves the peer.
tcp_banner() { echo "exec 3<>/dev/tcp/$1/$2; head -c 4 <&3"; }

s_network() {
  banger vm create net-a
  banger vm create net-b
  ip_b=$(banger vm show net-b --json | sed -n 's/.*"ip": "\(.*\)".*/\1/p')
  [ -n "$ip_b" ] || { echo "net-b has no ip"; return 1; }
  # sshd starts once the guest has made its host keys (seconds under TCG).
  for vm in net-a net-b; do
    banger vm exec "$vm" -- timeout 120 sh -c 'until [ -e /run/sshd.pid ]; do sleep 0.2; done'
  done
  # DNS on the host answers with the lease.
  expect_eq "$(dig +short @127.0.0.1 -p "$SMOKE_DNS_PORT" net-b.vm)" "$ip_b"
  # The host reaches a guest's sshd by IP.
  expect_eq "$(timeout 20 bash -c "$(tcp_banner "$ip_b" 22)")" "SSH-"
  # Guest to guest, by IP and by <name>.vm through the bridge DNS.
  expect_eq "$(banger vm exec net-a -- timeout 20 bash -c "$(tcp_banner "$ip_b" 22)")" "SSH-"
  expect_eq "$(banger vm exec net-a -- getent hosts net-b.vm | cut -d' ' -f1)" "$ip_b"
  expect_eq "$(banger vm exec net-a -- timeout 20 bash -c "$(tcp_banner net-b.vm 22)")" "SSH-"
  # A guest reaches a service the host listens on (the bridge gateway).
  gw=$(banger vm exec net-a -- ip -4 route show default | cut -d' ' -f3)
  echo "smoke-host-service" >"$RUN_DIR/index.html"
  (cd "$RUN_DIR" && exec python3 -m http.server 18089 --bind "$gw") >/dev/null 2>&1 &
  web=$!
  got=$(banger vm exec net-a -- timeout 20 bash -c \
    "exec 3<>/dev/tcp/$gw/18089; printf 'GET /index.html HTTP/1.0\r\n\r\n' >&3; tail -n1 <&3")
  kill "$web"
  banger vm delete net-a net-b
  expect_eq "$got" "smoke-host-service"
}

s_net_churn() {
  # Booted cycles with a published port exercise taps and per-VM nft rules; the rest
  # exercise leases.
  for i in 1 2 3; do
    banger vm create churn --publish 18090:22 >/dev/null
    banger vm delete churn >/dev/null
  done
  for i in $(seq 17); do
    banger vm create churn --no-start >/dev/null
    banger vm delete churn >/dev/null
  done
  expect_eq "$(banger vm list --json | grep -c '"name"' || true)" "0"
  taps=$(ip -o link show | grep -c 'bgtap' || true)
  [ "$taps" -le 4 ] || { echo "$taps taps left"; return 1; }
  if nft list table ip banger >/dev/null 2>&1; then
    ! nft list table ip banger | grep 'chain vm_' >/dev/null || { echo "per-vm chains left"; return 1; }
  fi
}

# --- run ---------------------------------------------------------------------------
log "smoke: state in $SMOKE_HOME, runtime in $RUN_DIR"
banger doctor || { log "smoke: doctor reports a FAIL"; exit 1; }
banger daemon start
t0=$SECONDS
banger image build || { log "smoke: image build failed"; exit 1; }
log "smoke: image ready in $((SECONDS-t0))s"

scenario bare                 s_bare
scenario exit-code            s_exit_code
scenario invalid-spec         s_invalid_spec
scenario argv-and-signals     s_argv_exact
scenario lifecycle            s_lifecycle
scenario isolated-writes      s_isolated_writes
scenario vm-set-vcpu          s_vm_set
scenario set-running-refused  s_set_running_refused
scenario concurrent-runs      s_concurrent_runs
scenario stdin-50mib          s_stdin_stream
scenario daemon-restart       s_daemon_restart
scenario vmm-sigkill          s_vmm_killed
scenario daemon-sigkill       s_daemon_sigkill
scenario network              s_network
scenario net-churn            s_net_churn
scenario workspace-run        s_workspace_run
scenario workspace-dry-run    s_workspace_dry_run
scenario include-untracked    s_include_untracked
scenario workspace-export     s_workspace_export
scenario workspace-hostile    s_workspace_hostile

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
