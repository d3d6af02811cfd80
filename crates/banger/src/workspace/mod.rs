//! Workspaces: a host git working tree shipped into a guest, and the guest's changes
//! brought back as a patch.
//!
//! * [`ship`]: tracked files as they are in the working tree (plus untracked,
//!   non-ignored files on request) stream in as a tar, next to the git objects of HEAD
//!   and the index, so that `git status`/`git diff` in the guest match the host.
//! * [`export`]: the guest's changes as a `git diff --binary` patch.
//! * [`apply`]: that patch, checked against hostile paths and symlinks, applied to the
//!   host working tree.
//!
//! All guest work runs through [`exec::run`], a programmatic exec with streamed stdin.

mod apply;
mod error;
pub mod exec;
mod export;
mod guard;
mod patch;
mod quote;
mod repo;
mod ship;
mod tarball;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::os::unix::ffi::OsStrExt;

pub use apply::Applied;
pub use error::WorkspaceError;
pub use export::{export, export_apply, export_to_file, Base};
pub use repo::{HostRepo, Manifest};
pub use ship::{check_dest, prepare, Prepared, ShipOptions};

/// Writes the paths a ship would send, one per line.
pub fn list<W: Write>(
    repo: &HostRepo,
    include_untracked: bool,
    mut out: W,
) -> Result<usize, WorkspaceError> {
    let manifest = Manifest::collect(repo, include_untracked)?;
    let werr = |source| WorkspaceError::Write {
        path: "<stdout>".into(),
        source,
    };
    for entry in &manifest.entries {
        out.write_all(entry.path.as_os_str().as_bytes())
            .map_err(werr)?;
        out.write_all(b"\n").map_err(werr)?;
    }
    out.flush().map_err(werr)?;
    Ok(manifest.entries.len())
}
