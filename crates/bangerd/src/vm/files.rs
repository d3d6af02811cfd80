//! Where a VM's and a snapshot's files live, and the VM's writable disk: made empty,
//! copied from a snapshot, grown, removed.

use std::path::{Path, PathBuf};

use banger_wire::{Diagnostic, ErrorCode};

use super::sparse;
use crate::error::DaemonError;
use crate::store::{SnapshotRecord, VmRecord};
use crate::vmm::SnapshotFiles;
use banger_host::config::Paths;

/// Name of the writable disk in a VM's directory, and of its copy in a snapshot's.
const DISK_FILE: &str = "upper.ext4";

/// The files of an image that a VM boots from.
pub struct ImageFiles {
    pub vmlinux: PathBuf,
    pub bzimage: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
}

/// The files of image `name`; an image that is missing or damaged is an error.
pub fn image(paths: &Paths, name: &str) -> Result<ImageFiles, DaemonError> {
    let img = crate::image::get(paths, name).map_err(|e| DaemonError::image(name, e))?;
    Ok(ImageFiles {
        vmlinux: img.vmlinux(),
        bzimage: img.bzimage(),
        initrd: img.initrd(),
        rootfs: img.rootfs(),
    })
}

pub fn upper_disk(paths: &Paths, rec: &VmRecord) -> PathBuf {
    paths.vm_dir(&rec.id).join(DISK_FILE)
}

pub fn snapshots_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("snapshots")
}

/// Snapshot `id`'s directory, `<state>/snapshots/<id>/`, and its copy of the disk.
pub fn snapshot_files(state_dir: &Path, id: &str) -> SnapshotFiles {
    let dir = snapshots_dir(state_dir).join(id);
    SnapshotFiles {
        disk: dir.join(DISK_FILE),
        dir,
    }
}

pub fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_path_buf();
    move |source| DaemonError::Io { what, path, source }
}

/// Creates the VM's directory and its sparse writable disk.
pub fn create_disk(paths: &Paths, rec: &VmRecord) -> Result<(), DaemonError> {
    let dir = paths.vm_dir(&rec.id);
    fs_err::create_dir_all(&dir).map_err(io_err("creating vm directory", &dir))?;
    let disk = upper_disk(paths, rec);
    crate::image::create_upper_disk(&disk, rec.disk_size_mib).map_err(|e| DaemonError::Image {
        name: rec.image.clone(),
        code: ErrorCode::HostFailed,
        hint: e.hint(),
        source: Box::new(e),
    })
}

/// Creates the VM's directory with a sparse copy of snapshot `snap`'s disk as its own.
pub fn copy_snapshot_disk(
    paths: &Paths,
    rec: &VmRecord,
    snap: &SnapshotRecord,
) -> Result<(), DaemonError> {
    let dir = paths.vm_dir(&rec.id);
    fs_err::create_dir_all(&dir).map_err(io_err("creating vm directory", &dir))?;
    let src = snapshot_files(&paths.state_dir, &snap.id).disk;
    sparse::copy(&src, &upper_disk(paths, rec))
        .map_err(io_err("copying the snapshot's disk", &src))?;
    Ok(())
}

pub fn grow_disk(paths: &Paths, rec: &VmRecord, size_mib: u64) -> Result<(), DaemonError> {
    let disk = upper_disk(paths, rec);
    crate::image::grow_upper_disk(&disk, size_mib).map_err(|e| DaemonError::image(&rec.image, e))
}

/// Removes the VM's directory, runtime directory and pinned SSH host key.
pub fn remove_files(paths: &Paths, rec: &VmRecord) {
    // The VM's pinned SSH host key dies with it.
    let known = paths.state_dir.join("ssh/known_hosts").join(&rec.id);
    let _ = fs_err::remove_file(known);
    for dir in [paths.vm_dir(&rec.id), paths.vm_runtime_dir(&rec.id)] {
        if let Err(e) = fs_err::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(vm = %rec.name, path = %dir.display(), cause = %e, "cannot remove");
            }
        }
    }
}
