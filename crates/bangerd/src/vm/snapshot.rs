//! Snapshots of running VMs: take, list, delete. A snapshot is a row in the store and
//! a directory `<state>/snapshots/<id>/` with the backend's state files and a sparse
//! copy of the VM's writable disk, taken while the guest was paused.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use banger_wire::api::{SnapshotInfo, VmState};
use tokio::sync::RwLock;

use super::files::{io_err, snapshot_files, upper_disk};
use super::{sparse, Manager};
use crate::error::DaemonError;
use crate::failpoint::failpoint;
use crate::store::SnapshotRecord;

/// Snapshot names follow VM names: they are typed on command lines.
pub fn validate_name(name: &str) -> Result<(), DaemonError> {
    super::spec::validate_label("snapshot", name)
}

/// `web` → `web-20261124-170512`.
fn default_name(vm: &str) -> String {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        now.year(),
        now.month() as u8,
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let keep = 63 - stamp.len() - 1;
    format!(
        "{}-{stamp}",
        &vm[..vm.len().min(keep)].trim_end_matches('-')
    )
}

/// Bytes the files under `dir` take on disk (sparse files count what they hold).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs_err::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

impl Manager {
    /// The lock that keeps a snapshot's files in place while clones read them.
    pub(crate) fn snapshot_lock(&self, id: &str) -> Arc<RwLock<()>> {
        let mut locks = self
            .snapshot_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    pub fn snapshot_record(&self, name: &str) -> Result<SnapshotRecord, DaemonError> {
        self.store
            .get_snapshot(name)?
            .ok_or_else(|| DaemonError::SnapshotNotFound(name.to_string()))
    }

    pub fn snapshot_info(&self, rec: &SnapshotRecord) -> SnapshotInfo {
        rec.info(disk_bytes(
            &snapshot_files(&self.paths.state_dir, &rec.id).dir,
        ))
    }

    pub fn snapshot_list(&self) -> Result<Vec<SnapshotInfo>, DaemonError> {
        Ok(self
            .store
            .list_snapshots()?
            .iter()
            .map(|s| self.snapshot_info(s))
            .collect())
    }

    /// Snapshots the running VM `vm`: pauses it, copies its writable disk, has the
    /// backend save devices and memory, and resumes it.
    pub async fn snapshot(
        &self,
        vm: &str,
        name: Option<String>,
        warm: bool,
    ) -> Result<SnapshotInfo, DaemonError> {
        let rec = self.record(vm)?;
        let name = name.unwrap_or_else(|| default_name(&rec.name));
        validate_name(&name)?;
        let slot = self.slot(&rec.id);
        let _op = slot.op.lock().await;
        let rec = self.record(&rec.id)?;
        let rt = match slot.runtime() {
            Some(rt) if rec.state == VmState::Running => rt,
            _ => {
                return Err(DaemonError::WrongState {
                    name: rec.name.clone(),
                    state: rec.state.as_str(),
                    hint: format!(
                        "only a running VM can be snapshotted: `banger vm start {}`",
                        rec.name
                    ),
                })
            }
        };
        if self.store.get_snapshot(&name)?.is_some() {
            return Err(crate::store::StoreError::SnapshotNameTaken(name).into());
        }
        let image = crate::image::get(&self.paths, &rec.image)
            .map_err(|e| DaemonError::image(&rec.image, e))?;
        let snap = SnapshotRecord {
            id: hex::encode(rand::random::<[u8; 8]>()),
            name,
            vm_name: rec.name.clone(),
            image: rec.image.clone(),
            image_digest: image.digest().to_string(),
            backend: rec.backend,
            vcpu: rec.vcpu,
            memory_mib: rec.memory_mib,
            disk_size_mib: rec.disk_size_mib,
            no_network: rec.no_network,
            token: rec.token.clone(),
            created_at: super::now_rfc3339(),
            paused_ms: 0,
            warm,
        };
        let files = snapshot_files(&self.paths.state_dir, &snap.id);
        fs_err::create_dir_all(&files.dir).map_err(io_err("creating snapshot dir", &files.dir))?;
        let upper = upper_disk(&self.paths, &rec);
        let vm_err = |source| DaemonError::Vmm {
            vm: rec.name.clone(),
            source,
        };
        let t0 = Instant::now();
        let saved = async {
            rt.vmm.pause(&rt.launched).await.map_err(vm_err)?;
            failpoint("snapshot.after_pause");
            // Paused, the guest issues no I/O, and QEMU drained what was in flight.
            let copy = sparse::copy(&upper, &files.disk)
                .map_err(io_err("copying the writable disk", &upper));
            failpoint("snapshot.after_disk_copy");
            let saved = match copy {
                Ok(_) => rt
                    .vmm
                    .snapshot(&rt.launched, &upper, &files)
                    .await
                    .map_err(vm_err),
                Err(e) => Err(e),
            };
            failpoint("snapshot.after_save");
            let resumed = rt.vmm.resume(&rt.launched).await.map_err(vm_err);
            failpoint("snapshot.after_resume");
            saved.and(resumed)
        }
        .await;
        let paused_ms = t0.elapsed().as_millis() as u64;
        let stored = saved.and_then(|()| {
            let snap = SnapshotRecord {
                paused_ms,
                ..snap.clone()
            };
            self.store
                .insert_snapshot(&snap)
                .map_err(DaemonError::from)?;
            Ok(snap)
        });
        match stored {
            Ok(snap) => {
                let info = self.snapshot_info(&snap);
                tracing::info!(vm = %rec.name, snapshot = %snap.name, paused_ms, bytes = info.disk_bytes, "snapshot taken");
                Ok(info)
            }
            Err(e) => {
                tracing::warn!(vm = %rec.name, cause = %e, "snapshot failed; removing its files");
                let _ = fs_err::remove_dir_all(&files.dir);
                Err(e)
            }
        }
    }

    /// Deletes a snapshot; waits for clones still reading its files.
    pub async fn snapshot_delete(&self, name: &str) -> Result<(), DaemonError> {
        let snap = self.snapshot_record(name)?;
        let lock = self.snapshot_lock(&snap.id);
        let _write = lock.write().await;
        // Once no clone of it is being made: its pooled clones go with it.
        self.discard_pool_of(&snap.id).await;
        self.store.delete_snapshot(&snap.id)?;
        failpoint("snapshot_delete.after_row");
        let files = snapshot_files(&self.paths.state_dir, &snap.id);
        if let Ok(vmm) = self.backends.get(snap.backend) {
            vmm.forget_snapshot(&files);
        }
        let dir = files.dir;
        fs_err::remove_dir_all(&dir).map_err(io_err("removing snapshot files", &dir))?;
        tracing::info!(snapshot = %snap.name, "snapshot deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_valid_even_for_long_vm_names() {
        let long = "a".repeat(63);

        for vm in ["web", long.as_str(), "x-"] {
            let name = default_name(vm);
            assert!(validate_name(&name).is_ok(), "{name}");
        }
    }

    #[test]
    fn snapshot_names_are_dns_labels() {
        assert!(validate_name("base-1").is_ok());
        assert!(validate_name("Base").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("").is_err());
    }
}
