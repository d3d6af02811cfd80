//! Fixture for banger's end-to-end tests (tier 3): the built `banger`, `bangerd` and
//! `banger-agent` against real VMs, driven as a user would, with `--json` output parsed
//! into [`banger_wire::api`] types.
//!
//! - [`Harness`]: one per test binary run. It takes the host-wide smoke turn (the lock
//!   `scripts/smoke.sh` takes), gives the run its own config and runtime dirs on the smoke
//!   state (so the image is built once), starts a daemon and makes sure the image is
//!   current. A reaper process deletes leftover VMs, stops the daemon, removes the run dir
//!   and only then gives the turn back, however the test binary ends.
//! - [`TestVm`]: a VM with a name unique to the run, deleted on drop (also when the test
//!   panics).
//! - [`Turn`]: what a test holds while it runs; tests take turns even without
//!   `--test-threads=1`, since they share bridges, ports and the daemon.
//!
//! A test starts with `let Some(h) = banger_e2e::turn("name") else { return };`: it
//! skips, saying why on stderr, without root, QEMU or built binaries, and fails loudly if
//! anything else in the set-up goes wrong.
// A test fixture: panicking with the context is how it reports a failure, and stderr is
// where it says why it skips and how long the set-up took.
#![allow(clippy::print_stderr)]

mod harness;
pub mod host;
pub mod http;
mod out;
pub mod repo;
mod vm;

pub use harness::{turn, ConfigGuard, Harness, Turn, BRIDGE};
pub use out::Out;
pub use vm::TestVm;
