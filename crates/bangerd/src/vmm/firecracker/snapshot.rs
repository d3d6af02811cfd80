//! Firecracker snapshots: `PUT /snapshot/create` of a paused VM, and `PUT
//! /snapshot/load` into a fresh firecracker with the memory file mapped (`File`
//! backend: pages come from the page cache on demand and are copied on write, so
//! every clone of one snapshot shares what it has not written).
//!
//! Firecracker reopens each drive at the path saved in the snapshot. So before saving,
//! the writable drive is pointed at the snapshot's own disk copy (the same bytes at
//! this instant: the guest is paused), which lives as long as the snapshot; a restore
//! then points it at the clone's own disk before the guest runs.
//!
//! Jailed, firecracker names files by their place in its jail: the daemon creates the
//! snapshot files in `snap.dir`, links them into the jail for firecracker to write, and
//! takes them back with checks, all in the jail's root-owned `/snapshot` dir. The drive
//! path saved is the jail's `/snapshot/upper.ext4`, which a restoring jail links to the
//! clone's own disk. A snapshot restores in the mode it was taken in (jailed or not).

use std::io;
use std::path::{Path, PathBuf};

use super::api::ApiClient;
use super::jail::{self, inside, JailDir};
use super::models::{
    DrivePatch, MemoryBackend, MemoryBackendType, NetworkOverride, SnapshotCreate, SnapshotLoad,
    SnapshotType, VsockOverride,
};
use super::{Layout, UPPER_DISK, VSOCK_UDS};
use crate::vmm::{LaunchSpec, SnapshotFiles, VmmError};

const STATE_FILE: &str = "firecracker.vmstate";
const MEMORY_FILE: &str = "firecracker.memory";
/// The snapshot's disk copy in the jail's [`jail::LEND_DIR`].
const SNAPSHOT_UPPER: &str = "upper.ext4";
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
    let [state, memory] = files(&snap.dir);
    save_as(api, &snap.disk, upper_disk, state, memory).await
}

/// `save` with firecracker's own names for the files.
async fn save_as(
    api: &ApiClient,
    snapshot_disk: &Path,
    upper_disk: &Path,
    state: PathBuf,
    memory: PathBuf,
) -> Result<(), VmmError> {
    api.patch_drive(&upper(snapshot_disk)).await?;
    let created = api
        .create_snapshot(&SnapshotCreate {
            snapshot_path: state,
            mem_file_path: memory,
            snapshot_type: Some(SnapshotType::Full),
        })
        .await;
    let back = api.patch_drive(&upper(upper_disk)).await;
    created.and(back)
}

/// [`save`] for a jailed VMM running as `user`: the files are the daemon's, lent to
/// the jail for the call, then taken back (root-owned; the state and memory readable
/// by the jail group, for restores).
pub(super) async fn save_jailed(
    api: &ApiClient,
    jail: &JailDir,
    user: (u32, u32),
    snap: &SnapshotFiles,
) -> Result<(), VmmError> {
    let jail_error = |source| VmmError::Jail {
        path: jail.root.clone(),
        source,
    };
    let [state, memory] = files(&snap.dir);
    let lent = [
        (&state, STATE_FILE),
        (&memory, MEMORY_FILE),
        (&snap.disk, SNAPSHOT_UPPER),
    ];
    // Reached through a checked fd: the VMM runs and owns the rest of its jail.
    let dir = jail::LendDir::open(jail).map_err(jail_error)?;
    let lend = || -> io::Result<()> {
        for path in [&state, &memory] {
            fs_err::File::create(path)?;
        }
        for (path, name) in lent {
            jail::give(path, user)?;
            jail::link_in(&dir.path(), path, name, true)?;
        }
        Ok(())
    };
    let saved = match lend().map_err(jail_error) {
        Ok(()) => {
            save_as(
                api,
                &lent_name(SNAPSHOT_UPPER),
                &inside(UPPER_DISK),
                lent_name(STATE_FILE),
                lent_name(MEMORY_FILE),
            )
            .await
        }
        Err(e) => Err(e),
    };
    for (_, name) in lent {
        jail::unlink(&dir.path(), name);
    }
    let taken = [
        jail::take_back(&state, user.0, user.1, 0o640),
        jail::take_back(&memory, user.0, user.1, 0o640),
        jail::take_back(&snap.disk, user.0, 0, 0o600),
    ]
    .into_iter()
    .collect::<io::Result<Vec<()>>>()
    .map_err(jail_error);
    saved.and(taken.map(drop))
}

/// Firecracker's name for a file in the jail's [`jail::LEND_DIR`].
fn lent_name(name: &str) -> PathBuf {
    inside(jail::LEND_DIR).join(name)
}

/// Puts what a jailed restore of `snap` opens into the jail: the state and memory
/// read-only, and the clone's own disk at the snapshot disk's name (firecracker opens
/// the saved drive path before banger switches it), so the snapshot's disk copy is
/// never handed to the clone's VMM.
pub(super) fn link_for_load(
    jail: &JailDir,
    user: (u32, u32),
    spec: &LaunchSpec,
    snap: &SnapshotFiles,
) -> io::Result<()> {
    let [state, memory] = files(&snap.dir);
    let dir = jail.host(jail::LEND_DIR);
    for (path, name) in [(&state, STATE_FILE), (&memory, MEMORY_FILE)] {
        jail::grant_read(path, user.1)?;
        jail::link_in(&dir, path, name, false)?;
    }
    jail::link_in(&dir, &spec.upper_disk, SNAPSHOT_UPPER, true)
}

/// The load request for a clone: the memory file mapped, its tap and vsock socket in
/// place of the snapshotted VM's, paused until its disk is switched.
pub(super) fn load_request(
    spec: &LaunchSpec,
    snap: &SnapshotFiles,
    layout: &Layout,
) -> SnapshotLoad {
    let [state, memory] = files(&snap.dir);
    SnapshotLoad {
        snapshot_path: layout.lent(&state, STATE_FILE),
        mem_backend: MemoryBackend {
            backend_type: MemoryBackendType::File,
            backend_path: layout.lent(&memory, MEMORY_FILE),
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
            uds_path: layout.api(VSOCK_UDS),
        }),
    }
}

/// Loads `snap` into the fresh firecracker behind `api` and runs the guest on the
/// clone's own disk.
pub(super) async fn load(
    api: &ApiClient,
    spec: &LaunchSpec,
    snap: &SnapshotFiles,
    layout: &Layout,
) -> Result<(), VmmError> {
    api.load_snapshot(&load_request(spec, snap, layout)).await?;
    api.patch_drive(&upper(&layout.input(&spec.upper_disk, UPPER_DISK)))
        .await?;
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

        let layout = Layout {
            runtime_dir: spec.runtime_dir.clone(),
            jail: None,
        };

        let req = load_request(&spec, &snap, &layout);

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
