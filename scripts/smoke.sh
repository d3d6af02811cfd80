#!/usr/bin/env bash
# Real-VM smoke suite: drives the built `banger` binary against real VMs.
# One PASS/FAIL line per scenario, then "N passed, M failed".
#   scripts/smoke.sh               every scenario
#   scripts/smoke.sh ssh vm-cp     only these
# The lifecycle, exec, workspace and network scenarios moved to the Rust end-to-end
# tests in crates/banger-e2e (`make e2e`); the rest follow.
#
# State (images, debootstrap cache) persists under $BANGER_SMOKE_HOME (default
# target/smoke) for fast reruns; the runtime dir is fresh on every run. Nothing touches
# the user's real banger state. Runs on one host take turns.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BANGER_SMOKE_BIN:-$ROOT/target/release}
SMOKE_HOME=${BANGER_SMOKE_HOME:-$ROOT/target/smoke}
mkdir -p "$SMOKE_HOME"
# shellcheck source=scripts/take-turn.sh
. "$ROOT/scripts/take-turn.sh"
take_turn smoke "$ROOT/scripts/smoke.sh" "$@"
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
# Scenarios boot cold; warm-first-use turns this on for itself. No pool runs clones
# beside them (the e2e tests cover the pool).
warm_on_first_use = false
pool_size = 0
# console-flood fills more than this.
console_log_max_mib = 1
CFG

banger() { "$BIN/banger" "$@"; }
log() { printf '%s\n' "$*" >&2; }

# `scripts/smoke.sh [NAME...]` runs only the named scenarios; no names runs them all.
ONLY=" $* "
passed=0; failed=0; failures=(); known=" "
scenario() {
  local name=$1; shift
  known+="$name "
  [ "$ONLY" = "  " ] || [[ "$ONLY" == *" $name "* ]] || return 0
  local out="$RUN_DIR/$name.log" t0=$SECONDS rc
  # Not inside `if`: bash ignores `set -e` in a condition, which would let every
  # scenario pass.
  ( set -e; "$@" ) >"$out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed+1)); printf 'PASS  %-28s %4ss\n' "$name" $((SECONDS-t0))
    # A scenario's report lines (`failpoints: …`) belong in the summary too.
    grep '^failpoints:' "$out" | sed 's/^/      /' || true
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
# expect_failure CODE PATTERN CMD...: CMD must exit with CODE (`any`: not 0), with
# output that matches the glob PATTERN.
expect_failure() {
  local code=$1 pattern=$2 out rc; shift 2
  set +e; out=$("$@" 2>&1); rc=$?; set -e
  echo "$out"
  [ "$rc" -ne 0 ] || { echo "succeeded: $*"; return 1; }
  [ "$code" = any ] || expect_eq "$rc" "$code"
  case "$out" in $pattern) ;; *) echo "output of '$*' does not match $pattern"; return 1 ;; esac
}

# --- scenarios ---------------------------------------------------------------------
# shellcheck source=scripts/smoke-slurm.sh
. "$ROOT/scripts/smoke-slurm.sh"

s_concurrent_runs() {
  banger vm run --rm -- echo one >"$RUN_DIR/c1" & p1=$!
  banger vm run --rm -- echo two >"$RUN_DIR/c2" & p2=$!
  wait $p1; wait $p2
  expect_eq "$(cat "$RUN_DIR/c1")" "one"
  expect_eq "$(cat "$RUN_DIR/c2")" "two"
  expect_eq "$(vm_rows)" "0"
}

s_daemon_restart() {
  banger vm create keep
  banger daemon stop
  # The running VM keeps its tap; the spare taps went with the daemon.
  expect_eq "$(ip -o link show master bgsmoke0 | grep -c 'bgtap' || true)" "1"
  banger daemon start
  expect_eq "$(banger vm exec keep -- echo still-here)" "still-here"
  banger vm show keep | grep 'state     running' >/dev/null
  banger vm delete keep
}

# A daemon restart must not leave the guest agent busy: the VMM's CPU time over a few
# idle seconds after the restart stays near what it was before.
vmm_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
s_restart_idle_cpu() {
  banger vm create idle
  pid=$(banger vm show idle --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  banger vm exec idle -- true
  sleep 2
  t0=$(vmm_ticks "$pid"); sleep 4; before=$(( $(vmm_ticks "$pid") - t0 ))
  banger daemon stop
  banger daemon start
  banger vm exec idle -- true
  sleep 2
  t0=$(vmm_ticks "$pid"); sleep 4; after=$(( $(vmm_ticks "$pid") - t0 ))
  echo "vmm cpu ticks over 4 s: before $before, after $after"
  banger vm delete idle
  # A spinning agent costs a whole vCPU: ~400 ticks here.
  [ "$after" -le $(( before * 2 + 60 )) ] || { echo "the guest got busier after the restart"; return 1; }
}

# A guest that floods its console leaves a log under the cap, with its newest output.
s_console_flood() {
  banger vm create flood
  banger vm exec flood -- sh -c 'i=0; while [ $i -lt 40000 ]; do echo "flood line $i padded to be a little longer"; i=$((i+1)); done >/dev/console; echo flood-done >/dev/console'
  log=$BANGER_STATE_DIR/vms/$(vm_id flood)/serial.log
  for _ in $(seq 100); do grep -q flood-done "$log" && break; sleep 0.1; done
  size=$(stat -c %s "$log")
  echo "console log: $size bytes after ~2 MiB written"
  [ "$size" -le $((1024 * 1024)) ] || { echo "console log over its cap"; return 1; }
  grep -q flood-done "$log" || { echo "the newest output is missing"; return 1; }
  banger vm delete flood
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

s_daemon_sigkill() {
  banger vm create survivor
  dpid=$(banger daemon status --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  kill -9 "$dpid"
  banger daemon start
  banger vm list | grep survivor >/dev/null
  expect_eq "$(banger vm exec survivor -- echo adopted)" "adopted"
  banger vm delete survivor
}

# A VM's QEMU runs as the unprivileged VMM user under QEMU's seccomp sandbox (mode 2:
# filter), and no host process's command line carries an agent token; the guest got
# its token anyway.
drop_confined() { banger vm delete confined >/dev/null 2>&1 || true; }
s_vmm_confined() {
  trap drop_confined EXIT
  banger vm create confined
  local pid user
  pid=$(banger vm show confined --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  [ -n "$pid" ] || { echo "confined has no vmm pid"; return 1; }
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -F "$(vm_id confined)" >/dev/null ||
    { echo "pid $pid is not the qemu of confined"; return 1; }
  user=$(ps -o user= -p "$pid")
  [ "$user" != root ] || { echo "qemu (pid $pid) runs as root"; return 1; }
  expect_eq "$(sed -n 's/^Seccomp:\t//p' "/proc/$pid/status")" "2"
  expect_eq "$(ps -eo args | grep -c '[b]anger[.]token=' || true)" "0"
  expect_eq "$(banger vm exec confined -- echo authenticated)" "authenticated"
  banger vm delete confined
}

# bash's /dev/tcp reaches a TCP port by IP or name; the SSH banner proves the peer.
tcp_banner() { echo "exec 3<>/dev/tcp/$1/$2; head -c 4 <&3"; }

# --- mcp ---------------------------------------------------------------------------
# `banger mcp` driven by the official MCP Python SDK (scripts/deps.sh installs it).
s_mcp() {
  python3 -c 'import mcp' || { echo "the mcp Python package is missing: python3 -m pip install mcp"; return 1; }
  BANGER_BIN=$BIN/banger python3 tests/mcp/test_mcp.py
}

# --- access: cp, ssh, tty, agent auth ----------------------------------------------
vm_id() { banger vm show "$1" --json | sed -n 's/.*"id": "\(.*\)".*/\1/p'; }
vm_ip() { banger vm show "$1" --json | sed -n 's/.*"ip": "\(.*\)".*/\1/p'; }
# Every file and symlink below . (no .git): kind, mode or target, content hash, path.
TREE_SUM='find . -path ./.git -prune -o \( -type f -o -type l \) -print | LC_ALL=C sort |
  while IFS= read -r f; do
    if [ -L "$f" ]; then echo "L $(readlink "$f") $f";
    else echo "F $(stat -c %a "$f") $(sha256sum <"$f" | cut -c1-64) $f"; fi
  done'

# Every directory below . with its mode.
DIR_MODES='find . -type d -print | LC_ALL=C sort | while IFS= read -r d; do echo "D $(stat -c %a "$d") $d"; done'

s_vm_cp() {
  local d=$RUN_DIR/cp
  rm -rf "$d"; mkdir -p "$d/src/dir with space/ünï ☃" "$d/back"
  printf 'snow\n' >"$d/src/dir with space/ünï ☃/f ☃.txt"
  printf '#!/bin/sh\necho run\n' >"$d/src/run.sh"; chmod 750 "$d/src/run.sh"
  printf 'secret\n' >"$d/src/private"; chmod 600 "$d/src/private"
  chmod 711 "$d/src/dir with space"
  ln -s run.sh "$d/src/link"
  head -c $((5*1024*1024)) /dev/urandom >"$d/src/blob.bin"
  want=$(cd "$d/src" && sh -c "$TREE_SUM; $DIR_MODES")
  banger vm create cpvm
  # Host → guest to a new name, then guest → host into an existing directory.
  banger vm cp "$d/src" "cpvm:/tmp/in dir"
  guest=$(banger vm exec cpvm -w "/tmp/in dir" -- sh -c "$TREE_SUM; $DIR_MODES")
  banger vm cp "cpvm:/tmp/in dir" "$d/back"
  back=$(cd "$d/back/in dir" && sh -c "$TREE_SUM; $DIR_MODES")
  # Missing sources and destinations are named.
  set +e
  banger vm cp "$d/nope" cpvm:/tmp 2>"$RUN_DIR/cp1.err"; rc1=$?
  banger vm cp cpvm:/nope "$d" 2>"$RUN_DIR/cp2.err"; rc2=$?
  banger vm cp "$d/src" cpvm:/no/such/x 2>"$RUN_DIR/cp3.err"; rc3=$?
  set -e
  banger vm delete cpvm
  expect_eq "$guest" "$want"
  expect_eq "$back" "$want"
  cat "$RUN_DIR"/cp[123].err
  expect_eq "$rc1 $rc2 $rc3" "4 4 4"
  grep -F "$d/nope does not exist" "$RUN_DIR/cp1.err" >/dev/null
  grep -F "cpvm:/nope does not exist" "$RUN_DIR/cp2.err" >/dev/null
  grep -F "directory cpvm:/no/such does not exist" "$RUN_DIR/cp3.err" >/dev/null
}

s_vm_cp_hostile() {
  # A guest whose tar sends a symlink out of the copy and a file through it.
  local d=$RUN_DIR/cph
  rm -rf "$d"; mkdir -p "$d/dest"
  python3 - "$d" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1] + "/evil.tar", "w", format=tarfile.GNU_FORMAT) as t:
    d = tarfile.TarInfo("./data"); d.type = tarfile.DIRTYPE; d.mode = 0o755; t.addfile(d)
    l = tarfile.TarInfo("./data/esc"); l.type = tarfile.SYMTYPE; l.linkname = sys.argv[1]; t.addfile(l)
    f = tarfile.TarInfo("./data/esc/pwned"); f.size = 6; t.addfile(f, io.BytesIO(b"owned\n"))
PY
  banger vm create cph
  banger vm cp "$d/evil.tar" cph:/root/evil.tar
  banger vm exec cph -- sh -c 'mkdir /root/data && printf "#!/bin/sh\nexec cat /root/evil.tar\n" >/usr/local/bin/tar && chmod 755 /usr/local/bin/tar'
  set +e
  banger vm cp cph:/root/data "$d/dest" 2>"$RUN_DIR/cph.err"; rc=$?
  set -e
  banger vm delete cph
  cat "$RUN_DIR/cph.err"
  expect_eq "$rc" "11"
  grep -F 'refusing entry "./data/esc/pwned"' "$RUN_DIR/cph.err" >/dev/null
  [ ! -e "$d/pwned" ] || { echo "written through the guest's symlink"; return 1; }
}

s_ssh() {
  banger vm create sshvm
  # Ready means ready: sshd accepts connections the moment `vm create` returns.
  expect_eq "$(timeout 5 bash -c "$(tcp_banner "$(vm_ip sshvm)" 22)")" "SSH-"
  set +e
  banger vm ssh sshvm -- sh -c 'exit 42' </dev/null; rc=$?
  set -e
  expect_eq "$rc" "42"
  expect_eq "$(banger vm ssh sshvm -- echo ok </dev/null)" "ok"
  expect_eq "$(banger vm ssh sshvm -- printf '[%s]' 'a b' "c'd" '$HOME' '' </dev/null)" \
    "[a b][c'd][\$HOME][]"
  # The printed block works with plain ssh and never turns host key checking off.
  banger vm ssh-config sshvm >"$RUN_DIR/ssh_config"
  grep -x '  StrictHostKeyChecking yes' "$RUN_DIR/ssh_config" >/dev/null
  expect_eq "$(ssh -F "$RUN_DIR/ssh_config" -o BatchMode=yes sshvm echo via-config </dev/null)" \
    "via-config"
  banger vm delete sshvm
}

s_ssh_no_network() {
  banger vm create sshnn --no-network
  expect_eq "$(vm_ip sshnn)" ""
  out=$(banger vm ssh sshnn -- sh -c 'echo over-agent; exit 3' </dev/null; echo "rc=$?")
  banger vm ssh-config sshnn >"$RUN_DIR/ssh_config_nn"
  via_config=$(ssh -F "$RUN_DIR/ssh_config_nn" -o BatchMode=yes sshnn hostname </dev/null)
  banger vm delete sshnn
  expect_eq "$out" "$(printf 'over-agent\nrc=3')"
  grep '^  ProxyCommand .* vm exec sshnn -- /usr/local/sbin/banger-agent connect 127.0.0.1:22$' \
    "$RUN_DIR/ssh_config_nn" >/dev/null
  expect_eq "$via_config" "sshnn"
}

s_known_hosts_per_vm() {
  banger vm create kh-a
  banger vm create kh-b
  # Pins both keys (and waits for both sshds).
  banger vm ssh kh-a -- true </dev/null
  banger vm ssh kh-b -- true </dev/null
  id_a=$(vm_id kh-a); id_b=$(vm_id kh-b); ip_b=$(vm_ip kh-b)
  kh_a=$BANGER_STATE_DIR/ssh/known_hosts/$id_a
  kh_b=$BANGER_STATE_DIR/ssh/known_hosts/$id_b
  by_hand() {
    ssh -o BatchMode=yes -i "$BANGER_STATE_DIR/ssh/id_ed25519" -o IdentitiesOnly=yes \
      -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes \
      -o UserKnownHostsFile="$1" -o HostKeyAlias="$2" "root@$ip_b" echo reached </dev/null
  }
  # b's own pin lets ssh in; a's pin, presented for b's address, does not.
  own=$(by_hand "$kh_b" "banger-$id_b")
  set +e
  by_hand "$kh_a" "banger-$id_a" 2>"$RUN_DIR/kh.err"; rc=$?
  set -e
  key_a=$(cut -d' ' -f3 "$kh_a"); key_b=$(cut -d' ' -f3 "$kh_b")
  banger vm delete kh-a kh-b
  cat "$RUN_DIR/kh.err"
  expect_eq "$own" "reached"
  [ -n "$key_a" ] && [ "$key_a" != "$key_b" ] || { echo "same host key"; return 1; }
  expect_eq "$rc" "255"
  grep 'Host key verification failed' "$RUN_DIR/kh.err" >/dev/null
  # A deleted VM's pin goes with it.
  [ ! -e "$kh_a" ] && [ ! -e "$kh_b" ] || { echo "pins outlive their VMs"; return 1; }
}

s_exec_tty() {
  banger vm create ttyvm
  timeout 120 python3 tests/access/pty_session.py "$BIN/banger" vm exec -t ttyvm -- sh
  out=$(timeout 60 script -qec \
    "stty rows 33 cols 101; $BIN/banger vm exec -t ttyvm -- sh -c 'tty; stty size'" /dev/null </dev/null)
  banger vm delete ttyvm
  echo "$out"
  [[ "$out" == *"/dev/pts/"* ]] || { echo "no pty"; return 1; }
  [[ "$out" == *"33 101"* ]] || { echo "size lost"; return 1; }
}

s_agent_token_refused() {
  banger vm create authvm
  id=$(vm_id authvm)
  # Stopped, the daemon lets go of the VM's agent channel; the VM keeps running.
  banger daemon stop
  set +e
  timeout 120 python3 tests/access/agent_bad_token.py "$BANGER_RUNTIME_DIR/vms/$id/agent.sock"; rc=$?
  set -e
  banger daemon start
  expect_eq "$(banger vm exec authvm -- echo readopted)" "readopted"
  banger vm delete authvm
  expect_eq "$rc" "0"
}

s_guest_cannot_reach_daemon() {
  banger vm create iso
  dpid=$(banger daemon status --json | sed -n 's/.*"pid": \([0-9]*\).*/\1/p')
  # The daemon's only TCP listeners are DNS: on the bridge for guests, and dns_listen.
  ports=$(ss -Hltnp | grep "pid=$dpid," | awk '{print $4}' | sed 's/.*://' | sort -nu | xargs)
  gw=$(banger vm exec iso -- ip -4 route show default | cut -d' ' -f3)
  # From the guest: DNS answers on the gateway, nothing else of the daemon's does, and
  # the API socket is not there.
  probe='for p in "$@"; do
    if timeout 5 bash -c "exec 3<>/dev/tcp/$0/$p" 2>/dev/null; then echo "$p open"; else echo "$p closed"; fi
  done'
  seen=$(banger vm exec iso -- bash -c "$probe" "$gw" 53 "$SMOKE_DNS_PORT" 42069)
  banger vm exec iso -- test ! -e "$BANGER_SOCKET"
  banger vm exec iso -- test ! -e "$BANGER_RUNTIME_DIR"
  banger vm delete iso
  expect_eq "$ports" "53 $SMOKE_DNS_PORT"
  expect_eq "$seen" "$(printf '53 open\n%s closed\n42069 closed' "$SMOKE_DNS_PORT")"
}

# --- snapshots and clones ----------------------------------------------------------
s_snapshot_clone() {
  banger vm snapshot delete snap-base >/dev/null 2>&1 || true
  banger vm create snap-src
  banger vm exec snap-src -- sh -c 'echo from-source >/root/mark && sync'
  banger vm snapshot snap-src snap-base
  banger vm snapshot list | grep -E '^snap-base +snap-src ' >/dev/null
  # Clones in one group, so one resolves the other by name.
  banger vm create snap-c1 --from-snapshot snap-base --net-group clones
  banger vm create snap-c2 --from-snapshot snap-base --net-group clones
  # The source runs on, and every VM writes only its own disk.
  banger vm exec snap-src -- sh -c 'echo src >/root/after'
  banger vm exec snap-c1 -- sh -c 'echo c1 >/root/after && sync'
  expect_eq "$(banger vm exec snap-c2 -- cat /root/mark)" "from-source"
  set +e
  banger vm exec snap-c2 -- test -e /root/after; rc=$?
  set -e
  expect_eq "$rc" "1"
  expect_eq "$(banger vm exec snap-src -- cat /root/after)" "src"
  # Each clone has its own name, address and clock, and is reachable by name.
  ip1=$(vm_ip snap-c1)
  expect_eq "$(banger vm exec snap-c1 -- hostname)" "snap-c1"
  expect_eq "$(banger vm exec snap-c1 -- hostname -I | tr -d ' ')" "$ip1"
  expect_eq "$(dig +short @127.0.0.1 -p "$SMOKE_DNS_PORT" snap-c1.vm)" "$ip1"
  expect_eq "$(banger vm exec snap-c2 -- getent hosts snap-c1.vm | cut -d' ' -f1)" "$ip1"
  skew=$(( $(banger vm exec snap-c2 -- date +%s) - $(date +%s) ))
  [ "${skew#-}" -le 5 ] || { echo "clone clock is ${skew}s off"; return 1; }
  # Each clone gets its own SSH host key after the restore, and ssh pins and uses it.
  local key=/etc/ssh/ssh_host_ed25519_key.pub k0 k1 k2
  k0=$(banger vm ssh snap-src -- cat "$key")
  k1=$(banger vm ssh snap-c1 -- cat "$key")
  k2=$(banger vm ssh snap-c2 -- cat "$key")
  [ -n "$k1" ] && [ "$k1" != "$k2" ] && [ "$k1" != "$k0" ] && [ "$k2" != "$k0" ] ||
    { echo "clones share SSH host keys: $k0 / $k1 / $k2"; return 1; }
  # Re-keyed: the snapshot's agent token no longer opens a clone, its own does.
  id1=$(vm_id snap-c1)
  banger daemon stop
  set +e
  timeout 120 python3 tests/snapshot/agent_token.py "$BANGER_STATE_DIR/state.db" \
    "$BANGER_RUNTIME_DIR/vms/$id1/agent.sock" snap-c1 snap-base; rc=$?
  set -e
  banger daemon start
  expect_eq "$rc" "0"
  # Clones outlive their snapshot, and boot cold from their own disk.
  banger vm snapshot delete snap-base
  banger vm restart snap-c1
  expect_eq "$(banger vm exec snap-c1 -- cat /root/after)" "c1"
  banger vm delete snap-src snap-c1 snap-c2
  expect_eq "$(banger vm snapshot list --json)" "[]"
}

# A rootfs tarball and an OCI layout made from it import to images that boot to the
# same state; a tarball with a `../` entry is refused and leaves no image behind.
# A tiny rootfs tarball: busybox, a marker file and a script whose name has a space.
busybox_rootfs() {
  local dir=$1
  mkdir -p "$dir/root/bin" "$dir/root/etc"
  cp "$(command -v busybox)" "$dir/root/bin/busybox"
  for c in sh cat find stat sort hostname; do ln -s busybox "$dir/root/bin/$c"; done
  echo "imported rootfs" >"$dir/root/etc/marker"
  printf '#!/bin/sh\necho "ran $0"\n' >"$dir/root/etc/run me.sh"
  chmod 0750 "$dir/root/etc/run me.sh"
  tar -czf "$dir/rootfs.tar.gz" --owner=0 --group=0 -C "$dir/root" .
}

IMPORTED="smoke-imp-tar smoke-imp-oci smoke-imp-pulled"
drop_imported() {
  [ -z "${HTTP_PID:-}" ] || kill "$HTTP_PID" 2>/dev/null || true
  for image in $IMPORTED; do banger image delete "$image" >/dev/null 2>&1 || true; done
}

s_image_import() {
  local dir=$RUN_DIR/import
  drop_imported
  trap drop_imported EXIT
  busybox_rootfs "$dir"
  mkdir -p "$dir/layout/blobs/sha256"

  # The OCI layout: that tarball as its one layer, a config and a manifest.
  blob() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$dir/layout/blobs/sha256/$d"; echo "$d"; }
  local layer diff_id config manifest
  layer=$(blob "$dir/rootfs.tar.gz")
  diff_id=$(gzip -dc "$dir/rootfs.tar.gz" | sha256sum | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" >"$dir/config.json"
  config=$(blob "$dir/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
    "$config" "$(stat -c %s "$dir/config.json")" "$layer" "$(stat -c %s "$dir/rootfs.tar.gz")" >"$dir/manifest.json"
  manifest=$(blob "$dir/manifest.json")
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d}]}' \
    "$manifest" "$(stat -c %s "$dir/manifest.json")" >"$dir/layout/index.json"

  banger image import "$dir/rootfs.tar.gz" --name smoke-imp-tar
  banger image import "$dir/layout" --name smoke-imp-oci
  local probe='cat /etc/marker; "/etc/run me.sh"; cd / && find bin etc/marker "etc/run me.sh" -exec stat -c "%n %a %s %u:%g" {} + | sort'
  a=$(banger vm run --rm --image smoke-imp-tar -- sh -c "$probe")
  b=$(banger vm run --rm --image smoke-imp-oci -- sh -c "$probe")
  echo "$a"
  expect_eq "$(echo "$a" | head -2)" "imported rootfs
ran /etc/run me.sh"
  expect_eq "$(echo "$a" | grep -c '^etc/run me.sh 750 ')" "1"
  expect_eq "$b" "$a"

  # Export as a bundle, serve it over HTTP, pull it back and boot it; a corrupted
  # bundle is refused and leaves no image.
  banger image export smoke-imp-tar "$dir/bundle"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  python3 -m http.server --bind 127.0.0.1 --directory "$dir" "$port" >/dev/null 2>&1 &
  HTTP_PID=$!
  for _ in $(seq 50); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  banger image pull "http://127.0.0.1:$port/bundle" --name smoke-imp-pulled
  expect_eq "$(banger vm run --rm --image smoke-imp-pulled -- cat /etc/marker)" "imported rootfs"
  cp -r "$dir/bundle" "$dir/bad"
  # The CRC in a file's gzip trailer: its data decompresses in full, then fails the
  # check (a byte flipped inside the deflate stream fails in a way that depends on the
  # random ext4 contents).
  local victim=$dir/bad/initrd.img.gz
  printf 'XXXX' | dd of="$victim" bs=1 seek=$(($(stat -c %s "$victim") - 8)) conv=notrunc 2>/dev/null
  expect_failure any '*checksum*' banger image pull "http://127.0.0.1:$port/bad" --name smoke-imp-bad
  # A bundle whose file does not match the manifest's digest.
  cp -r "$dir/bundle" "$dir/lying"
  python3 - "$dir/lying/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
for f in m["files"].values():
    f["sha256"] = "0" * 64
json.dump(m, open(sys.argv[1], "w"))
PY
  expect_failure any '*expected 0000000000*' \
    banger image pull "http://127.0.0.1:$port/lying" --name smoke-imp-lying
  kill $HTTP_PID; HTTP_PID=
  for image in $IMPORTED; do banger image delete "$image"; done

  # Hostile input: refused with a clear error, nothing left in the image store.
  python3 - "$dir/evil.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w") as t:
    for name in ["bin/ok", "../escaped"]:
        info = tarfile.TarInfo(name); data = b"x"; info.size = len(data)
        t.addfile(info, io.BytesIO(data))
PY
  expect_failure any '*"../escaped"*' banger image import "$dir/evil.tar" --name smoke-imp-evil
  case "$(banger image list)" in *smoke-imp*) echo "image left behind"; return 1 ;; esac
  case "$(ls -A "$BANGER_STATE_DIR/images")" in *smoke-imp*) echo "files left behind"; return 1 ;; esac
  [ ! -e "$BANGER_STATE_DIR/../escaped" ] && [ ! -e "$BANGER_STATE_DIR/images/escaped" ]
}

# The first `vm run` of a machine leaves a warm snapshot; the next run resumes a clone
# of it (with its own name). Deleting the image takes its warm snapshots along, and is
# refused while a snapshot of the user's depends on it.
# The config as the other scenarios want it; also after a failure.
warm_config_off() {
  sed -i 's/^warm_on_first_use = true$/warm_on_first_use = false/' "$BANGER_CONFIG_DIR/config.toml"
  banger daemon stop >/dev/null; banger daemon start >/dev/null
  banger vm delete warm-src >/dev/null 2>&1 || true
  banger vm snapshot delete warm-user >/dev/null 2>&1 || true
  banger image delete smoke-warm >/dev/null 2>&1 || true
}

s_warm_first_use() {
  local dir=$RUN_DIR/warm
  busybox_rootfs "$dir"
  banger image delete smoke-warm >/dev/null 2>&1 || true
  banger image import "$dir/rootfs.tar.gz" --name smoke-warm
  trap warm_config_off EXIT
  sed -i 's/^warm_on_first_use = false$/warm_on_first_use = true/' "$BANGER_CONFIG_DIR/config.toml"
  banger daemon stop; banger daemon start
  expect_eq "$(banger vm run --rm --image smoke-warm -- cat /etc/marker)" "imported rootfs"
  expect_eq "$(banger vm snapshot list --json | grep -c '"warm": true')" "1"
  # A name of this run's own: the daemon log outlives runs.
  local second=warm-$$
  expect_eq "$(banger vm run --rm --image smoke-warm --name "$second" -- hostname)" "$second"
  banger daemon logs | grep -E "vm created vm=$second snapshot=warm-" >/dev/null
  expect_eq "$(banger vm run --rm --image smoke-warm --cold -- hostname | grep -c .)" "1"
  expect_eq "$(banger vm snapshot list --json | grep -c '"warm": true')" "1"
  # A snapshot of the user's pins the image; the warm one does not.
  banger vm create warm-src --image smoke-warm
  banger vm snapshot warm-src warm-user
  banger vm delete warm-src
  expect_failure 6 '*"smoke-warm" is in use*warm-user*' banger image delete smoke-warm
  banger vm snapshot delete warm-user
  banger image delete smoke-warm
  expect_eq "$(banger vm snapshot list --json)" "[]"
}

# Crash consistency: for each kill point of `bangerd --failpoints`, a daemon armed with
# it (BANGER_FAILPOINT) SIGKILLs itself in the middle of the operation that reaches it;
# the next daemon's start-up must leave every process, tap, nft rule, file and row with
# its partner (tests/crash/check.py), and the VMs it kept must answer.
daemon_pid() { banger daemon status --json 2>/dev/null | sed -n 's/.*"pid": \([0-9]*\).*/\1/p'; }
vmm_pids() { { pgrep -f 'process=banger-|firecracker.* --id ' || true; } | paste -sd, -; }
crash_cleanup() {
  delete_all_vms
  for s in fp-base fp-sd fp-snap; do banger vm snapshot delete "$s" >/dev/null 2>&1 || true; done
  for i in fp-imp fp-imgdel; do banger image delete "$i" >/dev/null 2>&1 || true; done
}
# crash_op POINT: the operation that reaches POINT, against the armed daemon.
crash_op() {
  case $1 in
    create.*) banger vm create fp-new --publish 42181:80 ;;
    # A VM that exists: its row is no half-made one, so the restart must undo the start.
    boot.*) banger vm start fp-stopped ;;
    delete.*) banger vm delete fp-del ;;
    snapshot_delete.*) banger vm snapshot delete fp-sd ;;
    snapshot.*) banger vm snapshot fp-src fp-snap ;;
    clone.*) banger vm create fp-clone --from-snapshot fp-base --publish 42182:80 ;;
    import.*) banger image import "$RUN_DIR/crash/rootfs.tar.gz" --name fp-imp ;;
    image_delete.*) banger image delete fp-imgdel ;;
    ephemeral)
      # The host kills the `vm run --rm` client and the daemon while the command runs.
      "$BIN/banger" vm run --rm --name fp-eph -- sleep 300 &
      local cli=$!
      for _ in $(seq 600); do banger vm list | grep 'fp-eph *running' >/dev/null && break; sleep 0.2; done
      kill -9 "$cli" "$(daemon_pid)"
      return 1 ;;
    *) echo "no operation reaches failpoint $1"; return 2 ;;
  esac
}
# crash_point POINT: arrange, arm, act, restart, check.
crash_point() {
  local p=$1 dpid armed rc seen
  case $p in
    delete.*) banger vm create fp-del >/dev/null ;;
    boot.*) banger vm create fp-stopped --no-start --publish 42183:80 >/dev/null ;;
    snapshot_delete.*) banger vm snapshot fp-src fp-sd >/dev/null ;;
    image_delete.*) banger image import "$RUN_DIR/crash/rootfs.tar.gz" --name fp-imgdel >/dev/null ;;
  esac
  banger daemon stop >/dev/null
  armed=$p; [ "$p" = ephemeral ] && armed=
  seen=$(banger daemon logs | wc -l)
  BANGER_FAILPOINT=$armed banger daemon start >/dev/null
  dpid=$(daemon_pid)
  # An adopted VM is `starting` until its agent is back, and only a running one snapshots.
  banger vm exec fp-src -- true
  set +e; crash_op "$p"; rc=$?; set -e
  [ "$rc" -ne 0 ] || { echo "$p: the operation finished: the daemon never died"; return 1; }
  for _ in $(seq 100); do [ -d "/proc/$dpid" ] || break; sleep 0.1; done
  [ ! -d "/proc/$dpid" ] || { echo "$p: the daemon is still alive"; return 1; }
  [ -z "$armed" ] || banger daemon logs | tail -n +"$((seen + 1))" | grep "failpoint reached; killing the daemon failpoint=$p\$" >/dev/null ||
    { echo "$p: the daemon died elsewhere"; return 1; }
  banger daemon start >/dev/null
  # Whatever the restart kept runs and answers (a snapshot may have left it paused).
  for vm in $(banger vm list | awk '$2 == "running" || $2 == "starting" {print $1}'); do
    timeout 120 "$BIN/banger" vm exec "$vm" -- true || { echo "$p: kept vm $vm does not answer"; return 1; }
  done
  banger daemon stop >/dev/null
  python3 tests/crash/check.py "$BANGER_STATE_DIR" "$BANGER_RUNTIME_DIR" bgsmoke0 "$BASELINE_VMMS" ||
    { echo "$p: leftovers after the restart"; return 1; }
  crash_reset
}
# What survives by design (a stopped fp-del, an import that finished) or a failure: gone,
# for the next point.
crash_reset() {
  banger daemon start >/dev/null 2>&1 || true
  for vm in $(banger vm list | awk 'NR > 1 && $1 != "fp-src" {print $1}'); do banger vm delete "$vm" || true; done
  for s in fp-snap fp-sd; do banger vm snapshot delete "$s" >/dev/null 2>&1 || true; done
  for i in fp-imp fp-imgdel; do banger image delete "$i" >/dev/null 2>&1 || true; done
}
s_crash_points() {
  trap crash_cleanup EXIT
  BASELINE_VMMS=$(vmm_pids)
  busybox_rootfs "$RUN_DIR/crash"
  banger vm create fp-src
  banger vm snapshot fp-src fp-base
  local points covered=0 passed=0 failed=() rc
  # BANGER_CRASH_POINTS="a b" runs only those.
  points=${BANGER_CRASH_POINTS:-"$("$BIN/bangerd" --failpoints) ephemeral"}
  for p in $points; do
    covered=$((covered+1))
    local t0=$SECONDS
    # Not in a condition: bash would ignore `set -e` inside.
    set +e; ( set -e; crash_point "$p" ); rc=$?; set -e
    if [ "$rc" -eq 0 ]; then
      passed=$((passed+1)); echo "ok   $p ($((SECONDS-t0))s)"
    else
      failed+=("$p"); echo "FAIL $p ($((SECONDS-t0))s)"
      crash_reset
    fi
  done
  echo "failpoints: $covered covered, $passed passed"
  [ ${#failed[@]} -eq 0 ] || { echo "failed: ${failed[*]}"; return 1; }
  banger vm delete fp-src
  banger vm snapshot delete fp-base
}

# --- run ---------------------------------------------------------------------------
log "smoke: state in $SMOKE_HOME, runtime in $RUN_DIR"
banger doctor || { log "smoke: doctor reports a FAIL"; exit 1; }
banger daemon start
t0=$SECONDS
banger image build || { log "smoke: image build failed"; exit 1; }
log "smoke: image ready in $((SECONDS-t0))s"

scenario concurrent-runs      s_concurrent_runs
scenario daemon-restart       s_daemon_restart
scenario restart-idle-cpu     s_restart_idle_cpu
scenario console-flood        s_console_flood
scenario vmm-sigkill          s_vmm_killed
scenario daemon-sigkill       s_daemon_sigkill
scenario vmm-confined         s_vmm_confined
scenario mcp                  s_mcp
scenario vm-cp                s_vm_cp
scenario vm-cp-hostile        s_vm_cp_hostile
scenario ssh                  s_ssh
scenario ssh-no-network       s_ssh_no_network
scenario known-hosts-per-vm   s_known_hosts_per_vm
scenario exec-tty             s_exec_tty
scenario agent-token-refused  s_agent_token_refused
scenario guest-cannot-reach-daemon s_guest_cannot_reach_daemon
scenario snapshot-clone       s_snapshot_clone
scenario image-import         s_image_import
scenario warm-first-use       s_warm_first_use
scenario crash-points         s_crash_points
scenario slurm                s_slurm

# A name that is no scenario here (maybe one that moved to crates/banger-e2e) fails.
for name in "$@"; do
  [[ "$known" == *" $name "* ]] && continue
  failed=$((failed+1))
  printf 'FAIL  %-28s no such scenario (moved ones run in crates/banger-e2e: make e2e)\n' "$name"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
