# banger developer targets. `make test` is what CI runs (see .ci/run).
CARGO ?= cargo
AGENT_TARGET := x86_64-unknown-linux-gnu
AGENT_BIN := target/$(AGENT_TARGET)/agent/banger-agent
BIN_DIR := target/release

.PHONY: all build agent install quickstart lint audit unit api-schema smoke smoke-plain debug-bins e2e sdk-test coverage-html test test-deps clean-smoke

all: build

# The guest agent is a static binary: it runs in any guest rootfs.
agent:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --locked -p banger-agent --profile agent --target $(AGENT_TARGET)

build: agent
	$(CARGO) build --locked --release -p banger -p bangerd
	cp $(AGENT_BIN) $(BIN_DIR)/banger-agent

# QEMU and a jailed Firecracker run as the unprivileged system user banger-vmm, never as root.
VMM_USER := banger-vmm

# Binaries, the systemd unit (not enabled: any banger command starts the daemon), the
# Slurm epilog (docs/slurm.md), the `banger` group that may use the daemon's socket, and the VMMs' unprivileged user.
install: build
	install -m 0755 $(BIN_DIR)/banger $(BIN_DIR)/bangerd $(BIN_DIR)/banger-agent /usr/local/bin/
	install -D -m 0644 packaging/bangerd.service /etc/systemd/system/bangerd.service
	install -D -m 0755 packaging/slurm/epilog /usr/local/lib/banger/slurm-epilog
	if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	getent group banger >/dev/null || groupadd --system banger
	id -u $(VMM_USER) >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin $(VMM_USER)

# One command from a fresh machine to a VM running a command.
quickstart:
	scripts/deps.sh
	$(MAKE) install
	banger doctor || true
	banger image build
	banger vm run --rm -- sh -c 'echo "hello from $$(hostname): $$(uname -sr)"'

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	python3 scripts/import-cycles.py
	@if command -v cargo-deny >/dev/null; then $(CARGO) deny -L error check bans licenses sources; \
	 else echo "lint: cargo-deny not installed; skipping dependency policy check (cargo install cargo-deny)"; fi

# Known vulnerabilities in dependencies (fetches the RustSec advisory database).
audit:
	$(CARGO) deny check advisories

# Tiers 1 and 2: hermetic unit tests, and host integration tests (these need root
# and say why they skip otherwise). The end-to-end crate is tier 3: `make e2e`.
unit:
	$(CARGO) test --locked --workspace --exclude banger-e2e

# The public API against its OpenAPI document: schemathesis drives an isolated daemon
# with generated requests; none may get a 5xx or hang. No VMs.
api-schema:
	$(CARGO) build --locked -p bangerd
	tests/api/schemathesis.sh target/debug/bangerd

# Tier 3: real VMs against the built binaries: the Rust end-to-end tests
# (crates/banger-e2e) and the scenarios still in scripts/smoke.sh. Debug binaries: the
# test build has compiled their dependencies already, and the VMs dominate the run time.
# With cargo-llvm-cov installed the binaries are instrumented and per-crate coverage of
# the run is printed afterwards (`make coverage-html` for a browsable report).
# `make smoke SCENARIOS="ssh vm-cp"` runs only those bash scenarios, `make smoke
# E2E=network::` only those e2e tests (a cargo test filter); with one set, the other
# suite is left out.
smoke: agent
	AGENT_BIN=$(CURDIR)/$(AGENT_BIN) SCENARIOS="$(SCENARIOS)" E2E="$(E2E)" scripts/coverage.sh

debug-bins: agent
	$(CARGO) build --locked -p banger -p bangerd
	cp $(AGENT_BIN) target/debug/banger-agent

smoke-plain: debug-bins
	BANGER_SMOKE_BIN=$(CURDIR)/target/debug scripts/smoke.sh $(SCENARIOS)

# The e2e tests share the host (bridge, ports, daemon): one at a time.
e2e: debug-bins
	BANGER_E2E_BIN=$(CURDIR)/target/debug $(CARGO) test --locked -p banger-e2e --test e2e -- --test-threads=1 $(E2E)

# The Python SDK (sdk/python): its unit tests (no VM), then its integration tests
# against a real daemon with the smoke state and a few real VMs (the runner takes the
# smoke turn).
sdk-test: debug-bins
	cd sdk/python && python3 -m mypy --strict src/banger && python3 -m pytest -q -p no:cacheprovider tests/unit
	BANGER_BIN_DIR=$(CURDIR)/target/debug sdk/python/tests/run-integration.sh

coverage-html:
	scripts/coverage.sh --html

# What the tests need beyond banger's own dependencies (a no-op once installed).
test-deps:
	scripts/deps.sh --dev

test: test-deps lint unit api-schema smoke sdk-test

clean-smoke:
	rm -rf $${BANGER_SMOKE_HOME:-target/smoke}
