//! The early-boot mounts, and reading the mount table.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

/// One line of `/proc/self/mountinfo`, reduced to what shutdown needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub target: String,
    pub fstype: String,
}

pub fn read_mountinfo() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&fs_err::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Parses mountinfo text: field 5 is the mount point, the type follows the `-`.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let target = unescape(left.split_whitespace().nth(4)?);
            let fstype = right.split_whitespace().next()?.to_string();
            Some(MountEntry { target, fstype })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Early {
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: &'static str,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

const EARLY: &[Early] = &[
    Early {
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Early {
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    Early {
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
    },
    Early {
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "gid=5,mode=0620,ptmxmode=0666",
    },
    Early {
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: "mode=1777",
    },
    Early {
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: "mode=0755",
    },
    Early {
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: "mode=1777",
    },
    Early {
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
];

/// Mounts proc, sysfs, devtmpfs, devpts, the tmpfs trio and cgroup2, skipping any that
/// is already a mount point (the initramfs may have moved some in). Failures are logged:
/// a guest with a missing /tmp is still better than no guest.
pub fn mount_early() {
    for m in EARLY {
        let target = Path::new(m.target);
        if is_mount_point(target) {
            continue;
        }
        if let Err(e) = fs_err::create_dir_all(target) {
            tracing::warn!(target = m.target, cause = %e, "cannot create mount point");
            continue;
        }
        let data = (!m.data.is_empty()).then_some(m.data);
        match mount(Some(m.fstype), target, Some(m.fstype), m.flags, data) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => {
                tracing::warn!(target = m.target, fstype = m.fstype, cause = %e, "mount failed")
            }
        }
    }
}

/// True if `path` is on a different device than its parent (so something is mounted
/// there). `/` always counts.
fn is_mount_point(path: &Path) -> bool {
    let Some(parent) = path.parent() else {
        return true;
    };
    match (fs_err::metadata(path), fs_err::metadata(parent)) {
        (Ok(here), Ok(above)) => here.dev() != above.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_gives_targets_and_types() {
        let got = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n",
        );

        assert_eq!(
            got,
            [MountEntry {
                target: "/mnt/with space".into(),
                fstype: "ext3".into()
            }]
        );
    }

    #[test]
    fn root_is_a_mount_point() {
        assert!(is_mount_point(Path::new("/")));
    }

    #[test]
    fn fresh_directory_is_not_a_mount_point() {
        let dir = tempfile::tempdir().unwrap();

        assert!(!is_mount_point(dir.path()));
    }
}
