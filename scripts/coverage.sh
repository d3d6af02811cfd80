#!/usr/bin/env bash
# Builds banger and bangerd with coverage instrumentation (cargo-llvm-cov), runs the
# smoke suite against them, and prints per-crate line coverage from the real-VM run.
#   scripts/coverage.sh          run smoke instrumented, print the per-crate summary
#   scripts/coverage.sh --html   write an HTML report of the last run
# Needs cargo-llvm-cov and LLVM tools matching rustc's LLVM (Debian: llvm-22).
set -euo pipefail
cd "$(dirname "$0")/.."

llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
export LLVM_COV=${LLVM_COV:-$(command -v "llvm-cov-$llvm_major" || true)}
export LLVM_PROFDATA=${LLVM_PROFDATA:-$(command -v "llvm-profdata-$llvm_major" || true)}
if ! cargo llvm-cov --version >/dev/null 2>&1 || [ -z "$LLVM_COV" ] || [ -z "$LLVM_PROFDATA" ]; then
  echo "coverage: needs cargo-llvm-cov and llvm-$llvm_major (llvm-cov, llvm-profdata); running smoke uninstrumented" >&2
  exec make smoke-plain
fi

if [ "${1:-}" = "--html" ]; then
  cargo llvm-cov report --html --ignore-filename-regex '(/\.cargo/|/rustc/)'
  exit 0
fi

# shellcheck disable=SC1090
source <(cargo llvm-cov show-env --export-prefix)
cargo llvm-cov clean --workspace
cargo build --locked -p banger -p bangerd
bin="$CARGO_LLVM_COV_TARGET_DIR/debug"
cp "$AGENT_BIN" "$bin/banger-agent"
status=0
# shellcheck disable=SC2086
BANGER_SMOKE_BIN="$bin" scripts/smoke.sh ${SCENARIOS:-} || status=$?

echo
echo "coverage from the real-VM smoke run (lines):"
cargo llvm-cov report --summary-only --ignore-filename-regex '(/\.cargo/|/rustc/)' 2>/dev/null |
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
