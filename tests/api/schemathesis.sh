#!/usr/bin/env bash
# The schema-driven test of the public API: schemathesis (PyPI) generates requests from
# the daemon's OpenAPI document, valid and invalid, and checks that none is answered with
# a 5xx or hangs.
#
# The daemon is isolated and harmless: its own dirs (no VMs, no images, so nothing it is
# asked can boot a VM), and as root it runs as `nobody`, so it touches no host network.
# schemathesis speaks TCP only: tests/api/forward.py relays 127.0.0.1 to the daemon's
# socket for the run. Everything it started is stopped on exit.
#
# usage: tests/api/schemathesis.sh [BANGERD]   (default: target/debug/bangerd)
# SCHEMATHESIS_MAX_EXAMPLES (default 25) caps the cases per operation.
set -euo pipefail
cd "$(dirname "$0")/../.."
bangerd=${1:-target/debug/bangerd}
examples=${SCHEMATHESIS_MAX_EXAMPLES:-25}
if ! command -v schemathesis >/dev/null; then
  echo "schemathesis: not installed (scripts/deps.sh --dev installs it)" >&2
  exit 1
fi

dir=$(mktemp -d /tmp/banger-api-schema.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# A copy the daemon's user can run, whatever the permissions on the way to the build.
install -m 0755 "$bangerd" "$dir/bangerd"
mkdir -p "$dir/config"
mkdir -m 0700 "$dir/run"
dns_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
echo "dns_listen = \"127.0.0.1:$dns_port\"" >"$dir/config/config.toml"
as_user=()
if [ "$(id -u)" = 0 ]; then
  chown -R nobody: "$dir"
  as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
fi

socket=$dir/run/bangerd.sock
env BANGER_NOTIFY_STDOUT=1 BANGER_STATE_DIR="$dir/state" BANGER_CACHE_DIR="$dir/cache" \
  BANGER_CONFIG_DIR="$dir/config" BANGER_RUNTIME_DIR="$dir/run" BANGER_SOCKET="$socket" \
  "${as_user[@]}" "$dir/bangerd" >"$dir/daemon.out" 2>"$dir/daemon.log" &
daemon=$!
pids+=("$daemon")
for _ in $(seq 100); do
  grep -q READY "$dir/daemon.out" 2>/dev/null && break
  kill -0 "$daemon" 2>/dev/null || break
  sleep 0.2
done
if ! grep -q READY "$dir/daemon.out"; then
  echo "schemathesis: the daemon did not start:" >&2
  cat "$dir/daemon.log" >&2
  exit 1
fi

python3 tests/api/forward.py "$socket" >"$dir/port" &
pids+=($!)
for _ in $(seq 50); do
  [ -s "$dir/port" ] && break
  sleep 0.1
done
port=$(head -1 "$dir/port")

echo "schemathesis: the API of an isolated daemon through 127.0.0.1:$port, $examples cases per operation"
# `timeout` turns a hang into a failure; --request-timeout does the same per request.
# From the run's dir, where schemathesis keeps its cache.
hooks=$PWD/tests/api/hooks.py
cd "$dir"
SCHEMATHESIS_HOOKS=$hooks timeout 900 schemathesis --no-color run "http://127.0.0.1:$port/api/v1/openapi.json" \
  --checks not_a_server_error \
  --max-examples "$examples" \
  --phases examples,coverage,fuzzing \
  --request-timeout 30 \
  --workers 1
