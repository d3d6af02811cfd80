//! Firecracker under its `jailer`: a chroot per VM, the unprivileged `banger-vmm` user,
//! a cgroup when cgroup v2 has controllers, and firecracker's own default seccomp filter.
//!
//! The jail of the VM `<id>` is `<runtime_dir>/jail/<exec name>/<id>/root` (the jailer's
//! layout under `--chroot-base-dir`). The daemon creates it before the jailer runs and
//! puts in it what firecracker opens: hard links when on the same filesystem, else bind
//! mounts (read-only for the shared inputs). Firecracker names them by chroot-relative
//! paths (`/vmlinux`, `/upper.ext4`, …) and creates its sockets at the jail's root.
//!
//! Everything in the jail is writable by the VMM, so nothing there is trusted: sockets
//! are opened with `O_NOFOLLOW` and must be sockets owned by the jail user, files the
//! VMM wrote (snapshots) are checked before the daemon takes them back, and the pid
//! file the jailer leaves there is never read (firecracker is exec'd in place, so its
//! pid is the pid of the process the daemon spawned).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chown, Gid, Uid};
use tokio::net::UnixStream;

use crate::vmm::user::VMM_USER;
use crate::vmm::VmmError;

/// Environment variable naming the jailer binary; else `jailer` beside firecracker.
pub const JAILER_ENV: &str = "BANGER_JAILER";
/// Under cgroup v2, each VM's cgroup is `<cgroup root>/banger/<id>`.
const PARENT_CGROUP: &str = "banger";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A jailer binary and the user the jailed VMM runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    pub jailer: PathBuf,
    /// `(uid, gid)` of the VMM user ([`crate::vmm::user`]); `None` when it does not exist.
    pub user: Option<(u32, u32)>,
}

impl Jail {
    /// `$BANGER_JAILER` if set, else `jailer` beside `firecracker`; `None` when neither
    /// is an executable file.
    pub fn locate(firecracker: &Path, env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
        let candidate = match env(JAILER_ENV) {
            Some(path) => PathBuf::from(path),
            None => firecracker.with_file_name("jailer"),
        };
        super::is_executable(&candidate).then_some(candidate)
    }

    pub fn new(jailer: PathBuf) -> Jail {
        let user =
            crate::vmm::user::lookup(Path::new("/etc/passwd"), VMM_USER).map(|u| (u.uid, u.gid));
        Jail { jailer, user }
    }

    /// The jail user, or an error saying how to create it.
    pub fn user(&self) -> Result<(u32, u32), VmmError> {
        self.user.ok_or_else(|| VmmError::NoVmmUser {
            user: VMM_USER.into(),
        })
    }
}

/// The jail of one VM. All paths are the daemon's (host) view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailDir {
    /// `--chroot-base-dir`.
    pub base: PathBuf,
    /// The chroot: firecracker's `/`.
    pub root: PathBuf,
}

impl JailDir {
    pub fn new(runtime_dir: &Path, exec_name: &str, vm_id: &str) -> JailDir {
        let base = runtime_dir.join("jail");
        let root = base.join(exec_name).join(vm_id).join("root");
        JailDir { base, root }
    }

    /// The host path of the jail file firecracker knows as `/<name>`.
    pub fn host(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// Firecracker's name for the jail file `name`: chroot-relative.
pub fn inside(name: &str) -> PathBuf {
    Path::new("/").join(name)
}

/// The jailer's command line. Firecracker's own arguments follow `--`; the jailer adds
/// `--id` for it. Nothing secret goes here: the guest's boot arguments (with the agent
/// token) travel over the API socket.
pub fn argv(
    firecracker: &Path,
    vm_id: &str,
    (uid, gid): (u32, u32),
    jail: &JailDir,
    cgroup_v2: bool,
    firecracker_args: &[OsString],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--id".into(),
        vm_id.into(),
        "--exec-file".into(),
        firecracker.into(),
        "--uid".into(),
        uid.to_string().into(),
        "--gid".into(),
        gid.to_string().into(),
        "--chroot-base-dir".into(),
        jail.base.clone().into(),
    ];
    if cgroup_v2 {
        // A cgroup of the VM's own (cpu.weight=100 is the default weight): the jailer
        // creates `banger/<id>` only when given a value to write.
        args.extend(
            [
                "--cgroup-version",
                "2",
                "--parent-cgroup",
                PARENT_CGROUP,
                "--cgroup",
                "cpu.weight=100",
            ]
            .map(OsString::from),
        );
    }
    args.push("--".into());
    args.extend(firecracker_args.iter().cloned());
    args
}

/// Whether `/sys/fs/cgroup` is a cgroup v2 hierarchy with the cpu controller.
pub fn cgroup_v2_available() -> bool {
    fs_err::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|name| name == "cpu"))
}

/// The jail's root-owned directory for files the daemon lends a running VMM
/// (snapshots): the VMM can use what is in it but cannot add, rename or replace
/// anything there.
pub const LEND_DIR: &str = "snapshot";

/// Creates the jail root (root-owned; the jailer hands it to the jail user) and its
/// [`LEND_DIR`]. The daemon may have bound the agent socket in it already; a previous
/// run's jail is removed by [`remove`] when that run ends.
pub fn create(jail: &JailDir) -> io::Result<()> {
    fs_err::create_dir_all(&jail.root)?;
    let lend = jail.host(LEND_DIR);
    fs_err::create_dir(&lend)?;
    fs_err::set_permissions(&lend, std::fs::Permissions::from_mode(0o755))
}

/// [`LEND_DIR`] of a jail whose VMM may be running, opened without following links
/// and checked to be root's and not writable by others. Files are reached through it
/// (`/proc/self/fd/N/<name>`), so nothing the VMM does to its jail redirects them.
pub struct LendDir {
    fd: OwnedFd,
}

impl LendDir {
    pub fn open(jail: &JailDir) -> io::Result<LendDir> {
        let path = jail.host(LEND_DIR);
        let fd = open_path(&path)?;
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| with_path(e, &path))?;
        let is_dir = stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR;
        if !is_dir || stat.st_uid != 0 || stat.st_mode & 0o022 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is not a root-owned directory only root can write (uid {}, mode {:o})",
                    path.display(),
                    stat.st_uid,
                    stat.st_mode
                ),
            ));
        }
        Ok(LendDir { fd })
    }

    /// The directory as a path the daemon can use (`/proc/self/fd/N`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Puts `src` into `dir` (the jail root before the jailer runs, or a [`LendDir`]) as
/// `name`: a hard link, else (another filesystem) a bind mount, read-only unless
/// `writable`.
pub fn link_in(dir: &Path, src: &Path, name: &str, writable: bool) -> io::Result<()> {
    let dst = dir.join(name);
    match fs_err::hard_link(src, &dst) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {}
        Err(e) => return Err(e),
    }
    fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&dst)?;
    let mount_error = |e: nix::Error| {
        io::Error::other(format!(
            "bind-mounting {} on {}: {e}",
            src.display(),
            dst.display()
        ))
    };
    mount(
        Some(src),
        &dst,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mount_error)?;
    if !writable {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, &dst, None::<&str>, flags, None::<&str>).map_err(mount_error)?;
    }
    Ok(())
}

/// Takes `name` out of `dir` (unmounts or unlinks it); the file it stood for stays.
pub fn unlink(dir: &Path, name: &str) {
    let path = dir.join(name);
    unmount(&path);
    match fs_err::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove a jail file"),
    }
}

/// Detaches a bind mount at `path`, never following a symlink the VMM put there.
/// EINVAL (not a mount point) is the usual, harmless outcome.
fn unmount(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW);
}

/// Removes the whole jail: bind mounts first (so no removal reaches their sources),
/// then the tree. Call once the VMM has exited.
pub fn remove(jail: &JailDir) {
    let mut dirs = vec![jail.root.clone()];
    // Through the checked fd: the VMM may have put a symlink in its place.
    let lend = LendDir::open(jail).ok();
    dirs.extend(lend.as_ref().map(LendDir::path));
    for dir in dirs {
        if let Ok(entries) = fs_err::read_dir(&dir) {
            for entry in entries.flatten() {
                unmount(&dir.join(entry.file_name()));
            }
        }
    }
    drop(lend);
    match fs_err::remove_dir_all(&jail.base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove the jail"),
    }
}

/// Removes the VM's cgroup the jailer created (it stays after the VMM exits).
pub fn remove_cgroup(vm_id: &str) {
    let dir = Path::new(CGROUP_ROOT).join(PARENT_CGROUP).join(vm_id);
    match fs_err::remove_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(error = %e, "cannot remove the vm's cgroup"),
    }
}

/// Makes `path` readable by the jail's group, unless anyone may read it already.
pub fn grant_read(path: &Path, gid: u32) -> io::Result<()> {
    let meta = fs_err::metadata(path)?;
    let mode = meta.mode();
    if mode & 0o004 != 0 || (meta.gid() == gid && mode & 0o040 != 0) {
        return Ok(());
    }
    chown(path, None, Some(Gid::from_raw(gid))).map_err(|e| with_path(e, path))?;
    fs_err::set_permissions(
        path,
        std::fs::Permissions::from_mode((mode | 0o040) & 0o7777),
    )
}

/// Gives `path` to the jail user (a file the VMM writes). A symlink is not followed:
/// the path may be in a jail whose VMM runs.
pub fn give(path: &Path, (uid, gid): (u32, u32)) -> io::Result<()> {
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| with_path(e, path))
}

/// Takes back a file lent to the VMM: it must be a regular file owned by the jail user
/// `uid` with no other links (none left in the jail); it then belongs to root and
/// `group`, with `mode`.
pub fn take_back(path: &Path, uid: u32, group: u32, mode: u32) -> io::Result<()> {
    let stat = fstat_nofollow(path)?;
    let is_file = stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFREG;
    if !is_file || stat.st_nlink != 1 || stat.st_uid != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a regular file of uid {uid} with one link (uid {}, mode {:o}, {} links)",
                path.display(),
                stat.st_uid,
                stat.st_mode,
                stat.st_nlink
            ),
        ));
    }
    chown(path, Some(Uid::from_raw(0)), Some(Gid::from_raw(group)))
        .map_err(|e| with_path(e, path))?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Connects to a Unix socket the jailed VMM created, refusing anything but a socket
/// owned by `uid`: the final component is opened with `O_PATH | O_NOFOLLOW` and the
/// connection goes through that very inode (`/proc/self/fd/N`), so a swap after the
/// check cannot redirect it.
pub async fn connect_owned(path: &Path, uid: u32) -> io::Result<UnixStream> {
    let fd = open_path(path)?;
    let stat = nix::sys::stat::fstat(&fd).map_err(|e| with_path(e, path))?;
    let is_socket = stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFSOCK;
    if !is_socket || stat.st_uid != uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a socket owned by the jail user (uid {}, mode {:o})",
                path.display(),
                stat.st_uid,
                stat.st_mode
            ),
        ));
    }
    UnixStream::connect(format!("/proc/self/fd/{}", fd.as_raw_fd())).await
}

/// `path` itself (a symlink is not followed), without opening what it is.
fn open_path(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
    Ok(OwnedFd::from(file))
}

fn fstat_nofollow(path: &Path) -> io::Result<nix::libc::stat> {
    let fd = open_path(path)?;
    nix::sys::stat::fstat(&fd).map_err(|e| with_path(e, path))
}

fn with_path(e: nix::Error, path: &Path) -> io::Error {
    io::Error::new(
        io::Error::from(e).kind(),
        format!("{}: {e}", path.display()),
    )
}

#[cfg(test)]
#[path = "jail_tests.rs"]
mod tests;
