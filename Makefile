# banger developer targets. `make test` is what CI runs (see .ci/run).
CARGO ?= cargo
AGENT_TARGET := x86_64-unknown-linux-gnu
AGENT_BIN := target/$(AGENT_TARGET)/agent/banger-agent
BIN_DIR := target/release

.PHONY: all build agent install quickstart lint audit unit smoke smoke-plain coverage-html test test-deps clean-smoke

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
# `banger` group that may use the daemon's socket, and the VMMs' unprivileged user.
install: build
	install -m 0755 $(BIN_DIR)/banger $(BIN_DIR)/bangerd $(BIN_DIR)/banger-agent /usr/local/bin/
	install -D -m 0644 packaging/bangerd.service /etc/systemd/system/bangerd.service
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
	@if command -v cargo-deny >/dev/null; then $(CARGO) deny -L error check bans licenses sources; \
	 else echo "lint: cargo-deny not installed; skipping dependency policy check (cargo install cargo-deny)"; fi

# Known vulnerabilities in dependencies (fetches the RustSec advisory database).
audit:
	$(CARGO) deny check advisories

# Tiers 1 and 2: hermetic unit tests, and host integration tests (these need root
# and say why they skip otherwise).
unit:
	$(CARGO) test --locked --workspace

# Tier 3: the real-VM smoke suite against the built binaries. Debug binaries: the test
# build has compiled their dependencies already, and the VMs dominate the run time.
# With cargo-llvm-cov installed the binaries are instrumented and per-crate coverage of
# the run is printed afterwards (`make coverage-html` for a browsable report).
# `make smoke SCENARIOS="bare ssh"` runs only those scenarios.
smoke: agent
	AGENT_BIN=$(CURDIR)/$(AGENT_BIN) SCENARIOS="$(SCENARIOS)" scripts/coverage.sh

smoke-plain: agent
	$(CARGO) build --locked -p banger -p bangerd
	cp $(AGENT_BIN) target/debug/banger-agent
	BANGER_SMOKE_BIN=$(CURDIR)/target/debug scripts/smoke.sh $(SCENARIOS)

coverage-html:
	scripts/coverage.sh --html

# What the tests need beyond banger's own dependencies (a no-op once installed).
test-deps:
	scripts/deps.sh --dev

test: test-deps lint unit smoke

clean-smoke:
	rm -rf $${BANGER_SMOKE_HOME:-target/smoke}
