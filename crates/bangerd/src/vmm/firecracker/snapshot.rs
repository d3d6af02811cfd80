//! Firecracker snapshots: `PUT /snapshot/create` of a paused VM, and `PUT
//! /snapshot/load` into a fresh firecracker with the memory file mapped (`File`
//! backend: pages come from the page cache on demand and are copied on write, so
//! every clone of one snapshot shares what it has not written).
//!
//! Firecracker reopens each drive at the path saved in the snapshot. So before saving,
//! the writable drive is pointed at the snapshot's own disk copy (the same bytes at
//! this instant: the guest is paused), which lives as long as the snapshot; a restore
//! then points it at the clone's own disk before the guest runs.

use std::path::{Path, PathBuf};

use super::api::ApiClient;
use super::models::{
    DrivePatch, MemoryBackend, MemoryBackendType, NetworkOverride, SnapshotCreate, SnapshotLoad,
    SnapshotType, VsockOverride,
};
use super::vsock_uds_path;
use crate::vmm::{LaunchSpec, SnapshotFiles, VmmError};

const STATE_FILE: &str = "firecracker.vmstate";
const MEMORY_FILE: &str = "firecracker.memory";
const UPPER_DRIVE: &str = "upper";
const NIC: &str = "eth0";

fn upper(path: &Path) -> DrivePatch {
    DrivePatch {
        drive_id: UPPER_DRIVE.into(),
        path_on_host: path.to_path_buf(),
    }
}

/// Saves a paused VM into `snap.dir`; it stays paused, on its own disk again.
pub(super) async fn save(
    api: &ApiClient,
    upper_disk: &Path,
    snap: &SnapshotFiles,
) -> Result<(), VmmError> {
    api.patch_drive(&upper(&snap.disk)).await?;
    let created = api
        .create_snapshot(&SnapshotCreate {
            snapshot_path: snap.dir.join(STATE_FILE),
            mem_file_path: snap.dir.join(MEMORY_FILE),
            snapshot_type: Some(SnapshotType::Full),
        })
        .await;
    let back = api.patch_drive(&upper(upper_disk)).await;
    created.and(back)
}

/// The load request for a clone: the memory file mapped, its tap and vsock socket in
/// place of the snapshotted VM's, paused until its disk is switched.
pub(super) fn load_request(spec: &LaunchSpec, snap: &SnapshotFiles) -> SnapshotLoad {
    SnapshotLoad {
        snapshot_path: snap.dir.join(STATE_FILE),
        mem_backend: MemoryBackend {
            backend_type: MemoryBackendType::File,
            backend_path: snap.dir.join(MEMORY_FILE),
        },
        track_dirty_pages: None,
        resume_vm: false,
        network_overrides: spec
            .net
            .iter()
            .map(|n| NetworkOverride {
                iface_id: NIC.into(),
                host_dev_name: n.tap.clone(),
            })
            .collect(),
        vsock_override: Some(VsockOverride {
            uds_path: vsock_uds_path(&spec.runtime_dir),
        }),
    }
}

/// Loads `snap` into the fresh firecracker behind `api` and runs the guest on the
/// clone's own disk.
pub(super) async fn load(
    api: &ApiClient,
    spec: &LaunchSpec,
    snap: &SnapshotFiles,
) -> Result<(), VmmError> {
    api.load_snapshot(&load_request(spec, snap)).await?;
    api.patch_drive(&upper(&spec.upper_disk)).await?;
    api.set_vm_state(super::models::VmState::Resumed).await
}

/// The files a snapshot of this backend consists of, besides the disk copy.
pub fn files(dir: &Path) -> [PathBuf; 2] {
    [dir.join(STATE_FILE), dir.join(MEMORY_FILE)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::NetAttach;

    #[test]
    fn a_clone_maps_the_memory_file_and_brings_its_own_tap_and_socket() {
        let spec = LaunchSpec {
            vm_id: "c1".into(),
            name: "clone".into(),
            vcpu: 1,
            memory_mib: 128,
            kernel_elf: "/i/vmlinux".into(),
            kernel_bzimage: "/i/bz".into(),
            initrd: "/i/initrd".into(),
            boot_args: String::new(),
            root_disk: "/i/root".into(),
            upper_disk: "/vms/c1/upper.ext4".into(),
            net: Some(NetAttach {
                tap: "bgtap7".into(),
                mac: "06:00:00:00:00:07".into(),
            }),
            runtime_dir: "/run/vms/c1".into(),
            serial_log: "/vms/c1/serial.log".into(),
            vmm_log: "/vms/c1/vmm.log".into(),
        };
        let snap = SnapshotFiles {
            dir: "/snaps/s".into(),
            disk: "/snaps/s/upper.ext4".into(),
        };

        let req = load_request(&spec, &snap);

        assert_eq!(req.mem_backend.backend_type, MemoryBackendType::File);
        assert_eq!(
            req.mem_backend.backend_path,
            Path::new("/snaps/s/firecracker.memory")
        );
        assert!(!req.resume_vm);
        assert_eq!(req.network_overrides[0].host_dev_name, "bgtap7");
        assert_eq!(
            req.vsock_override.map(|v| v.uds_path),
            Some(PathBuf::from("/run/vms/c1/vsock.sock"))
        );
    }
}
