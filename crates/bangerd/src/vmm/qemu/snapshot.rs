//! QEMU snapshots: the migration stream of a paused guest written to a file, read back
//! by a new QEMU started with `-incoming defer`. The daemon opens the file and hands
//! QEMU the descriptor over QMP (`fd:` migration): a sandboxed QEMU can neither run
//! `exec:` helpers nor open the snapshot directory. A guest whose memory is its own
//! leaves it out of the stream (`x-ignore-shared`) and into a file of the snapshot's,
//! which clones share (see [`super::memory`]).

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::memory;
use crate::vmm::qmp::Qmp;
use crate::vmm::{Launched, SnapshotFiles, VmmError};

/// Extra QEMU arguments of a restore: wait for `migrate-incoming` instead of booting.
pub(super) const INCOMING_ARGS: [&str; 2] = ["-incoming", "defer"];
/// The migration stream, in the snapshot's directory.
const STATE_FILE: &str = "qemu.migration";
/// How often a running migration is polled.
const POLL: Duration = Duration::from_millis(5);
/// The name the migration file's descriptor goes by in QEMU.
const FD_NAME: &str = "banger-snapshot";
/// QEMU's default limit (128 MiB/s) would make saving a guest take seconds; a file
/// takes what the disk gives.
const MAX_BANDWIDTH: u64 = 64 << 30;

fn state_file(snap: &SnapshotFiles) -> PathBuf {
    snap.dir.join(STATE_FILE)
}

/// Writes the paused guest's state into the snapshot; the guest stays paused (QEMU's
/// `postmigrate`, which `cont` leaves).
pub(super) async fn save(launched: &Launched, snap: &SnapshotFiles) -> Result<(), VmmError> {
    let own_memory = memory::is_own(launched.pid);
    let mut qmp = Qmp::connect(&launched.control_socket).await?;
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": MAX_BANDWIDTH })),
    )
    .await?;
    ignore_shared(&mut qmp, own_memory).await?;
    let path = state_file(snap);
    let file = fs_err::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|source| VmmError::Handoff {
            what: path.display().to_string(),
            source,
        })?;
    qmp.send_fd(FD_NAME, file.file().as_fd()).await?;
    drop(file);
    let uri = format!("fd:{FD_NAME}");
    qmp.execute("migrate", Some(json!({ "uri": uri }))).await?;
    wait_migration(&mut qmp).await?;
    if own_memory {
        let t0 = std::time::Instant::now();
        let (pid, files) = (launched.pid, snap.clone());
        let bytes = tokio::task::spawn_blocking(move || memory::save(pid, &files))
            .await
            .map_err(std::io::Error::other)
            .and_then(|saved| saved)
            .map_err(|source| VmmError::Handoff {
                what: format!("the memory of qemu {}", launched.pid),
                source,
            })?;
        tracing::info!(
            bytes,
            ms = t0.elapsed().as_millis() as u64,
            "guest memory saved"
        );
    }
    Ok(())
}

/// Sets the `x-ignore-shared` capability: shared memory stays out of the stream.
async fn ignore_shared(qmp: &mut Qmp, on: bool) -> Result<(), VmmError> {
    let caps = json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": on }] });
    qmp.execute("migrate-set-capabilities", Some(caps))
        .await
        .map(drop)
}

/// Loads the snapshot into a QEMU started with [`INCOMING_ARGS`] and runs the guest.
/// `template`: its memory is the snapshot's memory file already, not in the stream.
pub(super) async fn load(
    launched: &Launched,
    snap: &SnapshotFiles,
    template: bool,
) -> Result<(), VmmError> {
    let state = state_file(snap);
    let file = fs_err::File::open(&state).map_err(|e| {
        VmmError::Unsupported(format!(
            "snapshot state {} is missing: {e}",
            state.display()
        ))
    })?;
    let mut qmp = Qmp::connect(&launched.control_socket).await?;
    ignore_shared(&mut qmp, template).await?;
    qmp.send_fd(FD_NAME, file.file().as_fd()).await?;
    drop(file);
    let uri = format!("fd:{FD_NAME}");
    qmp.execute("migrate-incoming", Some(json!({ "uri": uri })))
        .await?;
    // A stream QEMU cannot load makes it exit; its reason is in the VM's vmm log.
    wait_migration(&mut qmp).await.map_err(|e| match e {
        VmmError::Control { .. } => VmmError::DiedDuringStart {
            backend: "qemu",
            detail: format!(
                "it could not load {}; was it written by another QEMU version or for other devices?",
                state.display()
            ),
        },
        other => other,
    })?;
    qmp.execute("cont", None).await.map(drop)
}

/// Polls until the migration (either direction) completed; a failure carries QEMU's
/// `error-desc`.
async fn wait_migration(qmp: &mut Qmp) -> Result<(), VmmError> {
    loop {
        let info = qmp.execute("query-migrate", None).await?;
        match info["status"].as_str() {
            Some("completed") => return Ok(()),
            Some(status @ ("failed" | "cancelled")) => {
                let desc = info["error-desc"].as_str().unwrap_or(status);
                return Err(VmmError::Refused {
                    backend: "qemu",
                    message: format!("snapshot migration {status}: {desc}"),
                });
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}
