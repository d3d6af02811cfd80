#!/usr/bin/env bash
# Installs what banger needs to build and run (run as root). `--dev` adds what its
# tests and lints need (dig, Slurm and munge for the `slurm` scenario, LLVM tools for
# coverage, cargo-deny, cargo-llvm-cov, the mcp, pytest, httpx and mypy Python
# packages, venv for the SDK's fresh-install test);
# `.ci/run` uses it.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
dev=false
case "${1:-}" in
  --dev) dev=true ;;
  "") ;;
  *) echo "usage: scripts/deps.sh [--dev]" >&2; exit 2 ;;
esac
need=(qemu-system-x86 debootstrap busybox-static e2fsprogs lz4 nftables iproute2
      openssh-client git make gcc ca-certificates)
# docker-registry, skopeo, umoci: the local registry of the oci e2e test.
$dev && need+=(dnsutils python3-venv docker-registry skopeo umoci)
# The smoke scenario `slurm` runs a throwaway Slurm cluster (scripts/slurm-cluster.sh).
$dev && need+=(slurmctld slurmd slurm-client munge)
# A fresh machine has no package lists yet.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
  apt-get update -qq
fi
# LLVM tools matching rustc's LLVM, for coverage of the smoke run.
llvm_major=$(rustc -vV 2>/dev/null | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if $dev && [ -n "$llvm_major" ] && apt-cache show "llvm-$llvm_major" >/dev/null 2>&1; then
  need+=("llvm-$llvm_major")
fi
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# QEMU runs as this unprivileged system user (the daemon refuses to start it as root).
if ! id -u banger-vmm >/dev/null 2>&1; then
  echo "deps: creating the system user banger-vmm" >&2
  useradd --system --no-create-home --shell /usr/sbin/nologin banger-vmm
fi

$dev || exit 0

if ! cargo deny --version >/dev/null 2>&1; then
  echo "deps: installing cargo-deny" >&2
  cargo install --locked -q cargo-deny || echo "deps: cargo-deny unavailable; lint skips the dependency policy" >&2
fi
if ! cargo llvm-cov --version >/dev/null 2>&1; then
  echo "deps: installing cargo-llvm-cov" >&2
  cargo install --locked -q cargo-llvm-cov || echo "deps: cargo-llvm-cov unavailable; smoke runs without coverage" >&2
fi

# tests/mcp drives `banger mcp` with the official MCP Python SDK; sdk/python's tests run
# under pytest, with httpx (the SDK's one dependency) for the unit tier, and mypy checks
# its type hints.
for module in mcp pytest httpx mypy; do
  python3 -c "import $module" >/dev/null 2>&1 && continue
  echo "deps: installing the $module Python package" >&2
  python3 -m pip --version >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null; }
  # Debian's own python3 refuses a plain pip install (PEP 668).
  python3 -m pip install -q "$module" 2>/dev/null || python3 -m pip install -q --break-system-packages "$module"
done

# tests/api/schemathesis.sh checks the public API against its OpenAPI document.
if ! command -v schemathesis >/dev/null 2>&1; then
  echo "deps: installing the schemathesis Python package" >&2
  python3 -m pip install -q schemathesis 2>/dev/null ||
    python3 -m pip install -q --break-system-packages schemathesis
fi
