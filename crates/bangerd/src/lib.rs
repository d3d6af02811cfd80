//! bangerd: the per-host daemon. See ARCHITECTURE.md for the code map.

pub mod agent_conn;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod error;
pub mod host;
pub mod image;
pub(crate) mod image_api;
mod logs;
pub mod net;
pub mod server;
pub mod ssh;
pub mod store;
pub mod vm;
pub mod vmm;

pub use server::{serve, Deps};

/// Entry point of the `bangerd` binary.
pub fn main_entry() -> anyhow::Result<()> {
    daemon::run()
}
