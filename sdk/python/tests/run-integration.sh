#!/usr/bin/env bash
# The SDK's integration tests (tests/integration) against a real daemon and real VMs,
# with the smoke suite's isolation: the built binaries in BANGER_BIN_DIR (`make
# debug-bins` fills target/debug), the smoke state and cached guest image under
# BANGER_SMOKE_HOME (default target/smoke), a fresh runtime dir, config and socket,
# the smoke bridge and DNS port, and the host's smoke turn (scripts/take-turn.sh).
# The daemon is stopped first, so the SDK's first client starts it itself.
#   BANGER_BIN_DIR=target/debug sdk/python/tests/run-integration.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
BIN=${BANGER_BIN_DIR:?set BANGER_BIN_DIR to the dir of the built banger, bangerd and banger-agent}
BIN=$(cd "$BIN" && pwd)
for b in banger bangerd banger-agent; do
  [ -x "$BIN/$b" ] || { echo "sdk-integration: $BIN/$b is missing (make debug-bins builds it)" >&2; exit 1; }
done
SMOKE_HOME=${BANGER_SMOKE_HOME:-$ROOT/target/smoke}
mkdir -p "$SMOKE_HOME"
# shellcheck source=scripts/take-turn.sh
. "$ROOT/scripts/take-turn.sh"
take_turn sdk-integration "$ROOT/sdk/python/tests/run-integration.sh" "$@"
RUN_DIR=$(mktemp -d /tmp/banger-sdk.XXXXXX)

export BANGER_STATE_DIR=$SMOKE_HOME/state
export BANGER_CACHE_DIR=$SMOKE_HOME/cache
export BANGER_CONFIG_DIR=$RUN_DIR/config
export BANGER_RUNTIME_DIR=$RUN_DIR/run
export BANGER_SOCKET=$RUN_DIR/run/bangerd.sock
export BANGER_DAEMON=$BIN/bangerd
export BANGER_AGENT=$BIN/banger-agent
# The SDK starts the daemon with this CLI.
export BANGER_BIN=$BIN/banger
export NO_COLOR=1
mkdir -p "$BANGER_CONFIG_DIR" "$BANGER_STATE_DIR" "$BANGER_CACHE_DIR"
if [ -n "${BANGER_SMOKE_BACKEND:-}" ]; then
  echo "backend = \"$BANGER_SMOKE_BACKEND\"" >"$BANGER_CONFIG_DIR/config.toml"
fi
# Guests boot under software emulation here: give them room. The smoke bridge and DNS
# port keep a real banger on this host undisturbed.
cat >>"$BANGER_CONFIG_DIR/config.toml" <<CFG
bridge = "bgsmoke0"
dns_listen = "127.0.0.1:${BANGER_SMOKE_DNS_PORT:-42079}"
memory_mib = 512
disk_size_mib = 1024
boot_timeout_secs = 180
warm_on_first_use = false
CFG

banger() { "$BIN/banger" "$@"; }
delete_all_vms() {
  for vm in $(banger vm list 2>/dev/null | awk 'NR > 1 {print $1}'); do
    banger vm delete "$vm" >/dev/null 2>&1 || true
  done
}
cleanup() {
  delete_all_vms
  # The snapshot test's, should it fail before deleting its own.
  for s in $(banger vm snapshot list 2>/dev/null | awk 'NR > 1 && $1 ~ /^sdk-snap-/ {print $1}'); do
    banger vm snapshot delete "$s" >/dev/null 2>&1 || true
  done
  banger daemon stop >/dev/null 2>&1 || true
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

echo "sdk-integration: state in $SMOKE_HOME, runtime in $RUN_DIR" >&2
banger doctor >/dev/null || { banger doctor; echo "sdk-integration: doctor reports a FAIL" >&2; exit 1; }
banger image build >/dev/null
# A run killed outright leaves its VMs in the shared state; the tests expect none.
delete_all_vms
banger daemon stop >/dev/null
export BANGER_SDK_INTEGRATION=1
python3 -m pytest -v -p no:cacheprovider "$ROOT/sdk/python/tests/integration" "$@"
