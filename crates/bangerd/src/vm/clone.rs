//! `vm create --from-snapshot`: a new VM that resumes a snapshot instead of booting,
//! on its own copy of the snapshot's disk, with its own address and agent token.

use std::sync::Arc;
use std::time::Instant;

use banger_wire::api::{VmCreateSpec, VmInfo};

use super::{files, spec, Machine, Manager, NewVm};
use crate::error::DaemonError;
use crate::failpoint::failpoint;
use crate::store::SnapshotRecord;

/// A clone is the snapshotted machine: refuses requests for another one.
fn check_spec(spec: &VmCreateSpec, snap: &SnapshotRecord) -> Result<(), DaemonError> {
    let differs = [
        (
            "image",
            spec.image.as_ref().is_some_and(|i| *i != snap.image),
        ),
        ("backend", spec.backend.is_some_and(|b| b != snap.backend)),
        ("vcpu", spec.vcpu.is_some_and(|v| v != snap.vcpu)),
        (
            "memory",
            spec.memory_mib.is_some_and(|m| m != snap.memory_mib),
        ),
        (
            "disk size",
            spec.disk_size_mib.is_some_and(|d| d != snap.disk_size_mib),
        ),
        ("network", spec.no_network && !snap.no_network),
    ];
    if let Some((what, _)) = differs.iter().find(|(_, d)| *d) {
        return Err(DaemonError::Invalid {
            message: format!(
                "a clone of snapshot {:?} has the snapshotted VM's {what}",
                snap.name
            ),
            hint: Some("leave out --image, --backend, --vcpu, --memory, --disk-size and --no-network with --from-snapshot".into()),
        });
    }
    if spec.no_start {
        return Err(DaemonError::invalid(
            "a clone resumes at once; --no-start does not apply to --from-snapshot",
        ));
    }
    if snap.no_network && !spec.publish.is_empty() {
        return Err(DaemonError::invalid(format!(
            "snapshot {:?} has no network, so its clones cannot --publish",
            snap.name
        )));
    }
    Ok(())
}

impl Manager {
    /// Creates a VM from snapshot `from`. On any failure nothing is left.
    pub(super) async fn create_clone(
        self: &Arc<Self>,
        spec: VmCreateSpec,
        from: &str,
    ) -> Result<VmInfo, DaemonError> {
        let t0 = Instant::now();
        let snap = self.snapshot_record(from)?;
        let lock = self.snapshot_lock(&snap.id);
        let _read = lock.read().await;
        // It may have been deleted while this waited for the lock.
        let snap = self.snapshot_record(&snap.id)?;
        check_spec(&spec, &snap)?;
        let image = crate::image::get(&self.paths, &snap.image)
            .map_err(|e| DaemonError::image(&snap.image, e))?;
        if image.digest() != snap.image_digest {
            return Err(DaemonError::Invalid {
                message: format!(
                    "image {:?} changed since snapshot {:?} was taken",
                    snap.image, snap.name
                ),
                hint: Some(
                    "a snapshot resumes on the exact base disk it was taken on; take a new one"
                        .into(),
                ),
            });
        }
        self.backend(snap.backend, &snap.name)?;
        let name = spec.name.clone().unwrap_or_else(spec::generate_name);
        spec::validate_name(&name)?;
        let rec = self.new_record(NewVm {
            name,
            machine: Machine::of_snapshot(&snap),
            publish: spec.publish.clone(),
            policy: spec.policy.clone(),
            ephemeral: spec.ephemeral,
        })?;
        let slot = self.slot(&rec.id);
        let _op = slot.op.lock().await;
        if let Err(e) = self.store.insert_vm(&rec) {
            self.forget_slot(&rec.id);
            return Err(e.into());
        }
        failpoint("clone.after_insert");
        let result = async {
            if !rec.no_network {
                self.lease(&rec)?;
            }
            files::copy_snapshot_disk(&self.paths, &rec, &snap)?;
            failpoint("clone.after_disk_copy");
            let disk_ms = t0.elapsed().as_millis() as u64;
            self.restore(&slot, &rec, &snap).await?;
            failpoint("clone.after_boot");
            self.store.set_created(&rec.id)?;
            Ok::<u64, DaemonError>(disk_ms)
        }
        .await;
        match result {
            Ok(disk_ms) => {
                let create_ms = t0.elapsed().as_millis() as u64;
                tracing::info!(vm = %rec.name, snapshot = %snap.name, disk_ms, create_ms, "vm created");
                self.show(&rec.id)
            }
            Err(e) => {
                tracing::warn!(vm = %rec.name, cause = %e, "clone failed; removing everything");
                self.destroy(&slot, &rec).await;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_wire::api::Backend;

    fn snap() -> SnapshotRecord {
        SnapshotRecord {
            id: "s".into(),
            name: "base".into(),
            vm_name: "web".into(),
            image: "default".into(),
            image_digest: "sha256:1".into(),
            backend: Backend::Qemu,
            vcpu: 2,
            memory_mib: 512,
            disk_size_mib: 1024,
            no_network: false,
            token: "t".into(),
            created_at: String::new(),
            paused_ms: 1,
            warm: false,
        }
    }

    #[test]
    fn a_clone_takes_the_snapshots_machine() {
        let same = VmCreateSpec {
            vcpu: Some(2),
            image: Some("default".into()),
            ..Default::default()
        };
        let more_cpus = VmCreateSpec {
            vcpu: Some(4),
            ..Default::default()
        };
        let unplugged = VmCreateSpec {
            no_network: true,
            ..Default::default()
        };

        assert!(check_spec(&same, &snap()).is_ok());
        let err = check_spec(&more_cpus, &snap()).unwrap_err();
        assert!(err.to_string().contains("vcpu"), "{err}");
        assert!(check_spec(&unplugged, &snap()).is_err());
    }
}
