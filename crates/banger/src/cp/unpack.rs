//! The host side of a download: a tar stream from the guest, written below one host
//! directory. The guest is not trusted with host paths:
//!
//! * every entry must sit under the one name the guest was asked for, which is renamed
//!   to the destination's name; absolute names and `..` are refused;
//! * nothing is written through a symlink: every directory on the way must be a real
//!   directory (the guest's own symlinks are created as links, never followed);
//! * hard links must point at an entry of the same copy;
//! * setuid, setgid and sticky bits are dropped, the host's umask applies to the
//!   guest's modes, and files are owned by the caller; a directory that already
//!   exists on the host keeps its mode;
//! * FIFOs and devices are skipped and reported.
//!
//! Directory modes are applied last, so a read-only directory still gets its files.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use super::error::CopyError;

/// Where a download lands: the archive's `from` becomes `root/to`.
#[derive(Debug, Clone)]
pub struct Target {
    pub vm: String,
    pub root: PathBuf,
    pub from: OsString,
    pub to: OsString,
    /// Permission bits taken off every mode the guest chose (the host's umask).
    pub umask: u32,
}

/// This process's umask, read without changing it; 022 if the kernel does not say.
pub fn current_umask() -> u32 {
    let status = fs_err::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        .unwrap_or(0o022)
}

/// What a download wrote.
#[derive(Debug, Default)]
pub struct Unpacked {
    pub entries: u64,
    /// Archive names left out: FIFOs, devices.
    pub skipped: Vec<String>,
}

/// Extracts `archive` into `target`, then reads the stream to its end (the padding
/// after the end-of-archive blocks), so the sender never sees a broken pipe.
pub fn unpack<R: Read>(mut archive: R, target: &Target) -> Result<Unpacked, CopyError> {
    let unpacked = unpack_entries(&mut archive, target)?;
    io::copy(&mut archive, &mut io::sink()).map_err(|source| malformed(target, source))?;
    Ok(unpacked)
}

fn malformed(target: &Target, source: io::Error) -> CopyError {
    CopyError::Malformed {
        vm: target.vm.clone(),
        source,
    }
}

fn unpack_entries<R: Read>(archive: R, target: &Target) -> Result<Unpacked, CopyError> {
    let mut ar = tar::Archive::new(archive);
    ar.set_preserve_permissions(false);
    ar.set_preserve_ownerships(false);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    ar.set_mask(target.umask);
    let mut done = Unpacked::default();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for entry in ar.entries().map_err(|e| malformed(target, e))? {
        let mut entry = entry.map_err(|e| malformed(target, e))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason| CopyError::Unsafe {
            vm: target.vm.clone(),
            entry: raw.clone(),
            reason,
        };
        let path = entry.path().map_err(|e| malformed(target, e))?;
        let rel = map(&path, target).map_err(refuse)?;
        let dst = target.root.join(&rel);
        let write_err = |source| CopyError::Write {
            path: dst.clone(),
            source,
        };
        parents(&target.root, &rel, true).map_err(|e| match e {
            Walk::NotADir => refuse("a directory on its way is a symlink or a file"),
            Walk::Io(p, source) => CopyError::Write { path: p, source },
        })?;
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777 & !target.umask;
        match entry.header().entry_type() {
            EntryType::Directory => {
                if make_dir(&dst).map_err(write_err)? {
                    dirs.push((dst, mode));
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::Symlink => {
                entry.unpack(&dst).map_err(write_err)?;
            }
            EntryType::Link => {
                let name = entry
                    .link_name()
                    .map_err(|e| malformed(target, e))?
                    .ok_or_else(|| refuse("a hard link with no target"))?;
                let src_rel = map(&name, target).map_err(refuse)?;
                parents(&target.root, &src_rel, false)
                    .map_err(|_| refuse("a hard link through a symlink or to nothing"))?;
                replace(&dst).map_err(write_err)?;
                fs_err::hard_link(target.root.join(&src_rel), &dst).map_err(write_err)?;
            }
            EntryType::XGlobalHeader | EntryType::XHeader => continue,
            _ => {
                done.skipped.push(raw);
                continue;
            }
        }
        done.entries += 1;
    }
    for (dir, mode) in dirs.iter().rev() {
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(*mode)).map_err(|source| {
            CopyError::Write {
                path: dir.clone(),
                source,
            }
        })?;
    }
    Ok(done)
}

/// The archive name `path` as a path below the target root, renaming the first
/// component from `target.from` to `target.to`.
fn map(path: &Path, target: &Target) -> Result<PathBuf, &'static str> {
    let mut parts = path.components().filter(|c| *c != Component::CurDir);
    match parts.next() {
        Some(Component::Normal(first)) if first == target.from.as_os_str() => {}
        Some(Component::Normal(_)) => return Err("it is not inside what was asked for"),
        Some(Component::ParentDir) => return Err("it climbs out with `..`"),
        _ => return Err("it is an absolute path"),
    }
    let mut out = PathBuf::from(&target.to);
    for part in parts {
        match part {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => return Err("it climbs out with `..`"),
            _ => return Err("it is an absolute path"),
        }
    }
    Ok(out)
}

enum Walk {
    NotADir,
    Io(PathBuf, io::Error),
}

/// Checks that every directory between `root` and `rel` is a real directory, creating
/// missing ones when `create`.
fn parents(root: &Path, rel: &Path, create: bool) -> Result<(), Walk> {
    let mut cur = root.to_path_buf();
    let dirs: Vec<&OsStr> = rel.iter().collect();
    for part in dirs.iter().take(dirs.len().saturating_sub(1)) {
        cur.push(part);
        match fs_err::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Walk::NotADir),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                make_dir(&cur).map_err(|e| Walk::Io(cur.clone(), e))?;
            }
            Err(e) => return Err(Walk::Io(cur.clone(), e)),
        }
    }
    Ok(())
}

/// Creates `dir` (`true`), or accepts it if it is already a real directory (`false`).
fn make_dir(dir: &Path) -> io::Result<bool> {
    match fs_err::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if fs_err::symlink_metadata(dir)?.is_dir() {
                Ok(false)
            } else {
                Err(e)
            }
        }
        Err(e) => Err(e),
    }
}

/// Removes a non-directory at `path` so a link can take its place.
fn replace(path: &Path) -> io::Result<()> {
    match fs_err::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => fs_err::remove_file(path),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    /// One archive entry: name, kind, mode, data (or link target).
    fn archive(entries: &[(&str, EntryType, u32, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, mode, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_mtime(1_700_000_000);
            // Write names raw: the builder itself refuses `..` and absolute names.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            if matches!(kind, EntryType::Symlink | EntryType::Link) {
                h.set_link_name(data).unwrap();
                h.set_size(0);
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, data.as_bytes()).unwrap();
            }
        }
        let mut out = b.into_inner().unwrap();
        // Trailing padding, as GNU tar writes whole records.
        out.extend_from_slice(&[0u8; 4096]);
        out
    }

    fn target(root: &Path, from: &str, to: &str) -> Target {
        Target {
            vm: "web".into(),
            root: root.to_path_buf(),
            from: from.into(),
            to: to.into(),
            umask: 0o022,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs_err::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_tree_lands_renamed_with_its_modes_and_links() {
        let tmp = tempfile::tempdir().unwrap();
        let data = archive(&[
            ("src/", EntryType::Directory, 0o555, ""),
            ("src/run.sh", EntryType::Regular, 0o750, "#!/bin/sh\n"),
            ("src/d i r/", EntryType::Directory, 0o700, ""),
            ("src/d i r/ünï ☃", EntryType::Regular, 0o4755, "snow"),
            ("src/d i r/link", EntryType::Symlink, 0o777, "/etc/passwd"),
            ("src/hard", EntryType::Link, 0o644, "src/run.sh"),
        ]);

        let done = unpack(&data[..], &target(tmp.path(), "src", "copy")).unwrap();

        let out = tmp.path().join("copy");
        assert_eq!(done.entries, 6);
        assert_eq!(mode(&out), 0o555);
        assert_eq!(mode(&out.join("run.sh")), 0o750);
        assert_eq!(
            fs_err::read_to_string(out.join("d i r/ünï ☃")).unwrap(),
            "snow"
        );
        assert_eq!(
            mode(&out.join("d i r/ünï ☃")),
            0o755,
            "setuid must be dropped"
        );
        assert_eq!(
            fs_err::read_link(out.join("d i r/link")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(
            fs_err::read_to_string(out.join("hard")).unwrap(),
            "#!/bin/sh\n"
        );
        // Let the temp dir go, also for a caller that is not root.
        fs_err::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_host_umask_applies_to_the_guest_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let data = archive(&[
            ("src/", EntryType::Directory, 0o1777, ""),
            ("src/open", EntryType::Regular, 0o666, "x"),
            ("src/suid", EntryType::Regular, 0o6777, "x"),
        ]);

        unpack(&data[..], &target(tmp.path(), "src", "src")).unwrap();

        let out = tmp.path().join("src");
        assert_eq!(mode(&out), 0o755);
        assert_eq!(mode(&out.join("open")), 0o644);
        assert_eq!(mode(&out.join("suid")), 0o755);
    }

    #[test]
    fn an_existing_host_directory_keeps_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("src");
        fs_err::create_dir(&dir).unwrap();
        fs_err::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let data = archive(&[
            ("src/", EntryType::Directory, 0o777, ""),
            ("src/f", EntryType::Regular, 0o644, "x"),
        ]);

        unpack(&data[..], &target(tmp.path(), "src", "src")).unwrap();

        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn dot_dot_and_absolute_and_foreign_names_are_refused() {
        for name in ["src/../../evil", "/etc/evil", "other/x", "../x"] {
            let tmp = tempfile::tempdir().unwrap();
            let data = archive(&[(name, EntryType::Regular, 0o644, "x")]);

            let err = unpack(&data[..], &target(tmp.path(), "src", "src")).unwrap_err();

            assert!(matches!(err, CopyError::Unsafe { .. }), "{name}: {err:?}");
        }
    }

    #[test]
    fn nothing_is_written_through_a_symlink_the_guest_made() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs_err::create_dir(&outside).unwrap();
        let dest = tmp.path().join("dest");
        fs_err::create_dir(&dest).unwrap();
        let data = archive(&[
            ("src/", EntryType::Directory, 0o755, ""),
            (
                "src/esc",
                EntryType::Symlink,
                0o777,
                outside.to_str().unwrap(),
            ),
            ("src/esc/pwned", EntryType::Regular, 0o644, "owned"),
        ]);

        let err = unpack(&data[..], &target(&dest, "src", "src")).unwrap_err();

        assert!(matches!(err, CopyError::Unsafe { .. }), "{err:?}");
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn a_directory_copied_again_is_not_written_through_the_symlink_its_first_copy_left() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs_err::create_dir(&outside).unwrap();
        let dest = tmp.path().join("dest");
        fs_err::create_dir(&dest).unwrap();
        let first = archive(&[
            ("src/", EntryType::Directory, 0o755, ""),
            (
                "src/sub",
                EntryType::Symlink,
                0o777,
                outside.to_str().unwrap(),
            ),
        ]);
        unpack(&first[..], &target(&dest, "src", "src")).unwrap();
        // The guest now says `sub` is a directory and puts a file in it.
        let second = archive(&[
            ("src/", EntryType::Directory, 0o755, ""),
            ("src/sub/", EntryType::Directory, 0o755, ""),
            ("src/sub/pwned", EntryType::Regular, 0o644, "owned"),
        ]);

        let err = unpack(&second[..], &target(&dest, "src", "src")).unwrap_err();

        assert!(
            matches!(err, CopyError::Write { .. } | CopyError::Unsafe { .. }),
            "{err:?}"
        );
        assert!(!outside.join("pwned").exists());
    }

    #[test]
    fn a_huge_entry_cut_short_is_malformed() {
        let mut h = tar::Header::new_gnu();
        h.set_path("src/big").unwrap();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(1 << 40);
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[b'x'; 4096]);
        let tmp = tempfile::tempdir().unwrap();

        let err = unpack(&data[..], &target(tmp.path(), "src", "src")).unwrap_err();

        assert!(
            matches!(err, CopyError::Write { .. } | CopyError::Malformed { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_hard_link_out_of_the_copy_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = archive(&[
            ("src/", EntryType::Directory, 0o755, ""),
            ("src/h", EntryType::Link, 0o644, "/etc/passwd"),
        ]);

        let err = unpack(&data[..], &target(tmp.path(), "src", "src")).unwrap_err();

        assert!(matches!(err, CopyError::Unsafe { .. }), "{err:?}");
        assert!(!tmp.path().join("src/h").exists());
    }

    #[test]
    fn an_existing_file_is_replaced_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        fs_err::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("f")).unwrap();
        let data = archive(&[("f", EntryType::Regular, 0o600, "new")]);

        unpack(&data[..], &target(tmp.path(), "f", "f")).unwrap();

        assert_eq!(fs_err::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs_err::read_to_string(tmp.path().join("f")).unwrap(), "new");
        assert_eq!(mode(&tmp.path().join("f")), 0o600);
    }

    #[test]
    fn fifos_and_devices_are_skipped_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let data = archive(&[
            ("src/", EntryType::Directory, 0o755, ""),
            ("src/fifo", EntryType::Fifo, 0o644, ""),
            ("src/null", EntryType::Char, 0o666, ""),
        ]);

        let done = unpack(&data[..], &target(tmp.path(), "src", "src")).unwrap();

        assert_eq!(done.skipped, ["src/fifo", "src/null"]);
        assert!(!tmp.path().join("src/fifo").exists());
    }
}
