#![allow(clippy::unwrap_used)]
//! Tier 3: the built binaries against real VMs (moved here from `scripts/smoke.sh`).
//! One module per area; each test is named after the smoke scenario it replaced and
//! takes its turn on the host with `banger_e2e::turn`. `make e2e` builds the binaries
//! and runs these; without root, QEMU or `BANGER_E2E_BIN` every test says why it skips.

mod api;
mod cpport;
mod defaultuser;
mod detach;
mod exec;
mod idle;
mod lifecycle;
mod lifetimes;
mod network;
mod oci;
mod pool;
mod poolops;
mod roundtrip;
mod user;
mod workspace;
