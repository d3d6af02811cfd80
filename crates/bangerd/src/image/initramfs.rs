//! The initramfs banger generates: static busybox, the boot kernel modules and
//! `/init` (see `init.sh`), as a gzip-compressed newc cpio archive.
//!
//! The archive is reproducible: fixed inode numbers, owners and timestamps, so the
//! same inputs give the same bytes and the same digest.

use std::io::Write;
use std::path::{Path, PathBuf};

use cpio::newc::{Builder, ModeFileType};

use super::error::{ImageError, IoContext};

/// The `/init` script.
pub const INIT_SCRIPT: &str = include_str!("init.sh");

/// busybox applets `/init` uses, installed as symlinks in `/bin`.
const APPLETS: [&str; 14] = [
    "sh",
    "mount",
    "mkdir",
    "insmod",
    "findfs",
    "sleep",
    "switch_root",
    "poweroff",
    "reboot",
    "sync",
    "echo",
    "cat",
    "ls",
    "dmesg",
];
const DIRS: [&str; 10] = [
    "bin",
    "dev",
    "etc",
    "etc/banger",
    "lib",
    "lib/modules",
    "proc",
    "sys",
    "base",
    "upper",
];

/// One archive member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    CharDev {
        path: String,
        major: u32,
        minor: u32,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::Dir { path }
            | Entry::File { path, .. }
            | Entry::Symlink { path, .. }
            | Entry::CharDev { path, .. } => path,
        }
    }
}

/// What goes into the initramfs: busybox's bytes and the module files in load order.
pub struct Contents {
    pub busybox: Vec<u8>,
    /// `(name, file)`, dependencies first.
    pub modules: Vec<(String, PathBuf)>,
}

/// Lists the archive members for `contents`.
pub fn entries(contents: &Contents) -> Result<Vec<Entry>, ImageError> {
    let mut out: Vec<Entry> = DIRS
        .iter()
        .chain(["newroot"].iter())
        .map(|d| Entry::Dir {
            path: (*d).to_string(),
        })
        .collect();
    // The kernel opens /dev/console for /init before devtmpfs is mounted.
    out.push(Entry::CharDev {
        path: "dev/console".into(),
        major: 5,
        minor: 1,
    });
    out.push(Entry::File {
        path: "bin/busybox".into(),
        mode: 0o755,
        data: contents.busybox.clone(),
    });
    out.extend(APPLETS.iter().map(|a| Entry::Symlink {
        path: format!("bin/{a}"),
        target: "busybox".into(),
    }));
    let mut order = String::new();
    for (name, file) in &contents.modules {
        let data = fs_err::read(file).ctx(|| format!("read kernel module {name}"))?;
        out.push(Entry::File {
            path: format!("lib/modules/{name}.ko"),
            mode: 0o644,
            data,
        });
        order.push_str(name);
        order.push('\n');
    }
    out.push(Entry::File {
        path: "etc/banger/modules".into(),
        mode: 0o644,
        data: order.into_bytes(),
    });
    out.push(Entry::File {
        path: "init".into(),
        mode: 0o755,
        data: INIT_SCRIPT.as_bytes().to_vec(),
    });
    Ok(out)
}

/// Writes `entries` as a newc cpio archive.
pub fn write_cpio<W: Write>(entries: &[Entry], mut w: W) -> std::io::Result<W> {
    for (i, entry) in entries.iter().enumerate() {
        let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let b = Builder::new(entry.path()).ino(ino).uid(0).gid(0).mtime(0);
        let (b, data): (Builder, &[u8]) = match entry {
            Entry::Dir { .. } => (
                b.mode(0o755)
                    .set_mode_file_type(ModeFileType::Directory)
                    .nlink(2),
                &[],
            ),
            Entry::File { mode, data, .. } => (
                b.mode(*mode).set_mode_file_type(ModeFileType::Regular),
                data,
            ),
            Entry::Symlink { target, .. } => (
                b.mode(0o777).set_mode_file_type(ModeFileType::Symlink),
                target.as_bytes(),
            ),
            Entry::CharDev { major, minor, .. } => (
                b.mode(0o600)
                    .set_mode_file_type(ModeFileType::Char)
                    .rdev_major(*major)
                    .rdev_minor(*minor),
                &[],
            ),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "initramfs member over 4 GiB",
            )
        })?;
        let mut member = b.write(w, size);
        member.write_all(data)?;
        w = member.finish()?;
    }
    cpio::newc::trailer(w)
}

/// Writes the gzip-compressed initramfs for `contents` to `out`.
pub fn write(contents: &Contents, out: &Path) -> Result<(), ImageError> {
    let entries = entries(contents)?;
    let file = fs_err::File::create(out).ctx(|| "create the initramfs".into())?;
    let gz = flate2::write::GzEncoder::new(
        std::io::BufWriter::new(file),
        flate2::Compression::default(),
    );
    let gz = write_cpio(&entries, gz).ctx(|| format!("write {}", out.display()))?;
    let mut buf = gz.finish().ctx(|| format!("write {}", out.display()))?;
    buf.flush().ctx(|| format!("write {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_back(bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut gz = flate2::read::GzDecoder::new(bytes);
        let mut raw = Vec::new();
        gz.read_to_end(&mut raw).unwrap();
        let mut rest: &[u8] = &raw;
        let mut out = Vec::new();
        loop {
            let mut r = cpio::NewcReader::new(rest).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            let (name, mode) = (r.entry().name().to_string(), r.entry().mode());
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            out.push((name, mode, data));
            rest = r.finish().unwrap();
        }
        out
    }

    fn build(dir: &Path) -> Vec<u8> {
        fs_err::write(dir.join("virtio.ko"), b"virtio-module").unwrap();
        fs_err::write(dir.join("virtio_blk.ko"), b"blk-module").unwrap();
        let contents = Contents {
            busybox: b"\x7fELF-busybox".to_vec(),
            modules: vec![
                ("virtio".into(), dir.join("virtio.ko")),
                ("virtio_blk".into(), dir.join("virtio_blk.ko")),
            ],
        };
        let out = dir.join("initrd.img");
        write(&contents, &out).unwrap();
        fs_err::read(out).unwrap()
    }

    #[test]
    fn archive_holds_init_busybox_modules_and_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let members = read_back(&build(dir.path()));
        let get = |p: &str| members.iter().find(|(n, _, _)| n == p).cloned().unwrap();
        assert_eq!(get("init").1, 0o100755);
        assert_eq!(get("init").2, INIT_SCRIPT.as_bytes());
        assert_eq!(get("bin/busybox").2, b"\x7fELF-busybox");
        assert_eq!(get("bin/sh").1, 0o120777);
        assert_eq!(get("bin/sh").2, b"busybox");
        assert_eq!(get("dev/console").1, 0o020600);
        assert_eq!(get("lib/modules/virtio_blk.ko").2, b"blk-module");
        assert_eq!(get("etc/banger/modules").2, b"virtio\nvirtio_blk\n");
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        assert_eq!(build(a.path()), build(b.path()));
    }

    #[test]
    fn init_script_is_valid_shell() {
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", INIT_SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
