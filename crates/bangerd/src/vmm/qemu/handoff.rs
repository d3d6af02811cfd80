//! What the daemon opens for a confined QEMU. QEMU runs as the VMM user and opens no
//! path of ours: it gets the sockets, disks, logs, tap and its boot secret as file
//! descriptors at fixed numbers, so it needs no access to any banger directory, and
//! nothing in those directories is ever created or replaced by it.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

use command_fds::FdMapping;

use crate::vmm::{LaunchSpec, VmmError};

/// The descriptor numbers QEMU finds its resources at.
pub(super) mod fd {
    pub const AGENT_SOCKET: i32 = 3;
    pub const QMP_SOCKET: i32 = 4;
    pub const ROOT_DISK: i32 = 5;
    pub const UPPER_DISK: i32 = 6;
    pub const SERIAL_LOG: i32 = 7;
    pub const BOOT_SECRET: i32 = 8;
    pub const KERNEL: i32 = 9;
    pub const INITRD: i32 = 10;
    pub const TAP: i32 = 11;
    /// The guest's memory (see [`super::memory`]).
    pub const MEMORY: i32 = 12;
}

/// Everything one QEMU process is handed.
pub(super) struct Handoff {
    pub fds: Vec<FdMapping>,
    /// QEMU's stdout and stderr (its own log), appended.
    pub log: fs_err::File,
    /// Where this launch's part of [`Handoff::log`] starts.
    pub log_start: u64,
}

fn err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmmError {
    let what = what.into();
    move |source| VmmError::Handoff { what, source }
}

/// Binds the sockets and opens the files `spec` names. `secret` is the boot config
/// that must stay off the command line; the guest reads it through fw_cfg. `memory`
/// is the guest's RAM.
pub(super) fn prepare(
    spec: &LaunchSpec,
    secret: &str,
    memory: OwnedFd,
) -> Result<Handoff, VmmError> {
    let rt = &spec.runtime_dir;
    let listen = |name: &str| -> Result<OwnedFd, VmmError> {
        let path = rt.join(name);
        let l = UnixListener::bind(&path).map_err(err(format!("{}", path.display())))?;
        Ok(l.into())
    };
    let append = |path: &Path| {
        fs_err::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(err(format!("{}", path.display())))
    };
    let mut fds = vec![
        (fd::AGENT_SOCKET, listen("agent.sock")?),
        (fd::QMP_SOCKET, listen("qmp.sock")?),
        (fd::ROOT_DISK, read_only(&spec.root_disk)?),
        (
            fd::UPPER_DISK,
            fs_err::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&spec.upper_disk)
                .map_err(err(format!("{}", spec.upper_disk.display())))?
                .into_parts()
                .0
                .into(),
        ),
        (
            fd::SERIAL_LOG,
            append(&spec.serial_log)?.into_parts().0.into(),
        ),
        (fd::BOOT_SECRET, memfd("banger-boot", secret.as_bytes())?),
        (fd::KERNEL, world_readable(&spec.kernel_bzimage)?),
        (fd::INITRD, world_readable(&spec.initrd)?),
        (fd::MEMORY, memory),
    ];
    if let Some(net) = &spec.net {
        let tap = crate::net::open_tap_queue(&net.tap).map_err(err(format!("tap {}", net.tap)))?;
        fds.push((fd::TAP, tap));
    }
    let log = fs_err::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(&spec.vmm_log)
        .map_err(err(format!("{}", spec.vmm_log.display())))?;
    let log_start = log
        .metadata()
        .map_err(err(format!("{}", spec.vmm_log.display())))?
        .len();
    Ok(Handoff {
        fds: fds
            .into_iter()
            .map(|(child_fd, parent_fd)| FdMapping {
                parent_fd,
                child_fd,
            })
            .collect(),
        log,
        log_start,
    })
}

fn read_only(path: &Path) -> Result<OwnedFd, VmmError> {
    let file = fs_err::File::open(path).map_err(err(format!("{}", path.display())))?;
    Ok(file.into_parts().0.into())
}

/// Opens a kernel or initrd, which QEMU reads by path (`/proc/self/fd/N`, so the
/// private directories above it do not matter). That reopen checks the file's own
/// mode, so it is made world-readable: a public kernel, busybox and modules.
fn world_readable(path: &Path) -> Result<OwnedFd, VmmError> {
    let file = fs_err::File::open(path).map_err(err(format!("{}", path.display())))?;
    let mode = file
        .metadata()
        .map_err(err(format!("{}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o004 == 0 {
        file.set_permissions(std::fs::Permissions::from_mode((mode & 0o7777) | 0o444))
            .map_err(err(format!("{}", path.display())))?;
    }
    Ok(file.into_parts().0.into())
}

/// An anonymous file holding `data`: it never exists on a filesystem.
fn memfd(name: &str, data: &[u8]) -> Result<OwnedFd, VmmError> {
    let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| err("the boot secret")(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data).map_err(err("the boot secret"))?;
    Ok(file.into())
}

/// What QEMU wrote to its log since `start`, for an error message.
pub(super) fn log_since(log: &mut fs_err::File, start: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    let _ = log.file_mut().seek(SeekFrom::Start(start));
    // Bounded: the log is written by the VMM.
    let _ = log.file_mut().take(8 * 1024).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).trim().to_string()
}
