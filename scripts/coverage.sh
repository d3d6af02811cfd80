#!/usr/bin/env bash
# Builds banger and bangerd with coverage instrumentation (cargo-llvm-cov), runs the
# real-VM suites against them (scripts/smoke.sh, then the Rust e2e tests in
# crates/banger-e2e), and prints per-crate line coverage from the run.
#   scripts/coverage.sh          run both instrumented, print the per-crate summary
#   scripts/coverage.sh --html   write an HTML report of the last run
# SCENARIOS (smoke.sh names) and E2E (a cargo test filter) pick tests; with only one of
# them set, the other suite does not run.
# Needs cargo-llvm-cov and LLVM tools matching rustc's LLVM (Debian: llvm-22).
set -euo pipefail
cd "$(dirname "$0")/.."
run_smoke=1 run_e2e=1
if [ -n "${SCENARIOS:-}${E2E:-}" ]; then
  [ -n "${SCENARIOS:-}" ] || run_smoke=0
  [ -n "${E2E:-}" ] || run_e2e=0
fi
# The e2e crate's own lines are test code, not what the run covers.
ignore='(/\.cargo/|/rustc/|crates/banger-e2e/)'

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
export LLVM_COV=${LLVM_COV:-$(command -v "llvm-cov-$llvm_major" || true)}
export LLVM_PROFDATA=${LLVM_PROFDATA:-$(command -v "llvm-profdata-$llvm_major" || true)}
if ! cargo llvm-cov --version >/dev/null 2>&1 || [ -z "$LLVM_COV" ] || [ -z "$LLVM_PROFDATA" ]; then
  echo "coverage: needs cargo-llvm-cov and llvm-$llvm_major (llvm-cov, llvm-profdata); running smoke uninstrumented" >&2
  targets=()
  [ "$run_smoke" = 0 ] || targets+=(smoke-plain)
  [ "$run_e2e" = 0 ] || targets+=(e2e)
  exec make "${targets[@]}"
fi

if [ "${1:-}" = "--html" ]; then
  cargo llvm-cov report --html --ignore-filename-regex "$ignore"
  exit 0
fi

# shellcheck disable=SC1090
source <(cargo llvm-cov show-env --export-prefix)
cargo llvm-cov clean --workspace
cargo build --locked -p banger -p bangerd
bin="$CARGO_LLVM_COV_TARGET_DIR/debug"
cp "$AGENT_BIN" "$bin/banger-agent"
status=0
if [ "$run_smoke" = 1 ]; then
  # shellcheck disable=SC2086
  BANGER_SMOKE_BIN="$bin" scripts/smoke.sh ${SCENARIOS:-} || status=$?
fi
if [ "$run_e2e" = 1 ]; then
  # shellcheck disable=SC2086
  BANGER_E2E_BIN="$bin" cargo test --locked -p banger-e2e --test e2e -- --test-threads=1 ${E2E:-} ||
    status=$?
fi

echo
echo "coverage from the real-VM run (lines):"
cargo llvm-cov report --summary-only --ignore-filename-regex "$ignore" 2>/dev/null |
  awk '
    # Paths are relative to the common prefix of the sources: crates/<crate>/src/... or
    # <crate>/src/...
    $1 ~ /\/src\// && $8 ~ /^[0-9]+$/ {
      f = $1; sub(/^crates\//, "", f);
      split(f, p, "/"); c = p[1];
      lines[c] += $8; missed[c] += $9;
    }
    END {
      for (c in lines) {
        cov = lines[c] ? 100 * (lines[c] - missed[c]) / lines[c] : 0;
        printf "  %-14s %6.1f%%  (%d of %d lines)\n", c, cov, lines[c] - missed[c], lines[c];
      }
    }' | sort
echo "  (banger-agent runs inside the guests, where no profile is collected)"
exit $status
