//! QEMU snapshots: the migration stream of a paused guest written to a file, read back
//! by a new QEMU started with `-incoming defer`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::vmm::qmp::Qmp;
use crate::vmm::{Launched, SnapshotFiles, VmmError};

/// Extra QEMU arguments of a restore: wait for `migrate-incoming` instead of booting.
pub(super) const INCOMING_ARGS: [&str; 2] = ["-incoming", "defer"];
/// The migration stream, in the snapshot's directory.
const STATE_FILE: &str = "qemu.migration";
/// How often a running migration is polled.
const POLL: Duration = Duration::from_millis(5);
/// QEMU's default limit (128 MiB/s) would make saving a guest take seconds; a file
/// takes what the disk gives.
const MAX_BANDWIDTH: u64 = 64 << 30;

fn state_file(snap: &SnapshotFiles) -> PathBuf {
    snap.dir.join(STATE_FILE)
}

/// Writes the paused guest's state into the snapshot; the guest stays paused (QEMU's
/// `postmigrate`, which `cont` leaves).
pub(super) async fn save(launched: &Launched, snap: &SnapshotFiles) -> Result<(), VmmError> {
    let mut qmp = Qmp::connect(&launched.control_socket).await?;
    qmp.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": MAX_BANDWIDTH })),
    )
    .await?;
    let uri = format!("exec:cat > {}", shell_quote(&state_file(snap)));
    qmp.execute("migrate", Some(json!({ "uri": uri }))).await?;
    wait_migration(&mut qmp).await
}

/// Loads the snapshot into a QEMU started with [`INCOMING_ARGS`] and runs the guest.
pub(super) async fn load(launched: &Launched, snap: &SnapshotFiles) -> Result<(), VmmError> {
    let state = state_file(snap);
    if !state.is_file() {
        return Err(VmmError::Unsupported(format!(
            "snapshot state {} is missing",
            state.display()
        )));
    }
    let mut qmp = Qmp::connect(&launched.control_socket).await?;
    let uri = format!("exec:cat {}", shell_quote(&state));
    qmp.execute("migrate-incoming", Some(json!({ "uri": uri })))
        .await?;
    // A stream QEMU cannot load makes it exit, and a daemonized QEMU says why nowhere.
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

/// `path` as one word for `/bin/sh`, which runs QEMU's `exec:` migrations.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_single_quoted_for_the_shell() {
        assert_eq!(
            shell_quote(Path::new("/s/it's here/x")),
            r"'/s/it'\''s here/x'"
        );
    }
}
