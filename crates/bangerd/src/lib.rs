//! bangerd: the per-host daemon. See ARCHITECTURE.md for the code map.

pub mod config;
pub mod store;
pub mod vmm;

pub fn main_entry() -> anyhow::Result<()> {
    Ok(())
}
