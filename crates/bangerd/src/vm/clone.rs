//! `vm create --from-snapshot`: a new VM that resumes a snapshot instead of booting,
//! on its own copy of the snapshot's disk, with its own address and agent token.

use std::sync::Arc;
use std::time::Instant;

use banger_wire::api::{VmCreateSpec, VmInfo};

use super::create::{NewVm, Origin};
use super::{Machine, Manager};
use crate::error::DaemonError;
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
        self.create_clone_into(spec, from, None).await
    }

    /// [`Manager::create_clone`] of a VM for the pool `pool` (see [`super::pool`]).
    pub(super) async fn create_clone_into(
        self: &Arc<Self>,
        spec: VmCreateSpec,
        from: &str,
        pool: Option<&str>,
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
        let mut new = NewVm::of(&spec, Machine::of_snapshot(&snap))?;
        new.pool = pool.map(str::to_string);
        self.make_vm(new, Origin::Snapshot(&snap), t0).await
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
