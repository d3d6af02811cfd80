//! Applying tar layers onto a root tree, the way container runtimes do, without ever
//! writing outside the tree:
//! - entry paths that are absolute (but the root, `/`) or contain `..` are refused;
//! - symlinks already in the tree are resolved *inside* it (an absolute target is taken
//!   relative to the tree root), so `lib64 -> /usr/lib64` works and `x -> /etc` cannot
//!   reach the host;
//! - whiteouts: `.wh.NAME` deletes NAME from lower layers, `.wh..wh..opq` empties its
//!   directory of what lower layers put there.
//!
//! A [`Budget`] caps what the streams unpacked into one tree may take: bytes read after
//! decompression (a gzip bomb stops at the cap), file data (a sparse file counts at its
//! expanded size, before a byte is written) and entries.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use banger_host::config::Limits;
use tar::EntryType;

use super::error::{ImageError, IoContext};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// Symlinks followed while resolving one path before giving up (like Linux's 40).
const MAX_HOPS: u32 = 40;

/// Opens a tar stream that may be gzip- or zstd-compressed (told by its magic bytes).
pub fn open(mut r: impl Read + 'static, what: &Path) -> Result<Box<dyn Read>, ImageError> {
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut r, &mut magic).ctx(|| format!("read {}", what.display()))?;
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(r);
    match &magic[..n.min(4)] {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::MultiGzDecoder::new(head))),
        [0x28, 0xb5, 0x2f, 0xfd] => Ok(Box::new(
            zstd::stream::read::Decoder::new(head).ctx(|| format!("read {}", what.display()))?,
        )),
        _ => Ok(Box::new(head)),
    }
}

/// A tar stream that may end without its last entry's padding and the end-of-archive
/// blocks, as Go's archive/tar (so docker, and umoci's layers) accepts: at its end come
/// zeros to the next 512-byte block and two empty blocks. Only for layers whose digest
/// is checked: a stream cut inside a file reads as zeros until that check fails.
pub struct EndPadded<R> {
    inner: R,
    read: u64,
    /// Zeros still to give once `inner` ended.
    tail: Option<u64>,
}

impl<R: Read> EndPadded<R> {
    pub fn new(inner: R) -> EndPadded<R> {
        EndPadded {
            inner,
            read: 0,
            tail: None,
        }
    }
}

impl<R: Read> Read for EndPadded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let tail = match self.tail {
            Some(t) => t,
            None => {
                let n = self.inner.read(buf)?;
                if n > 0 || buf.is_empty() {
                    self.read += n as u64;
                    return Ok(n);
                }
                (512 - self.read % 512) % 512 + 1024
            }
        };
        let n = buf.len().min(usize::try_from(tail).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.tail = Some(tail - n as u64);
        Ok(n)
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// What the tar streams unpacked into one tree have taken so far, against [`Limits`].
pub struct Budget {
    limits: Limits,
    /// Bytes read from the (decompressed) tar streams.
    stream: Cell<u64>,
    /// Bytes of file data, sparse files at their expanded size.
    data: Cell<u64>,
    entries: Cell<u64>,
}

impl Budget {
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            stream: Cell::new(0),
            data: Cell::new(0),
            entries: Cell::new(0),
        }
    }

    fn over(&self) -> bool {
        let max = self.limits.max_bytes;
        self.stream.get() > max
            || self.data.get() > max
            || self.entries.get() > self.limits.max_entries
    }

    /// The refusal once a limit is passed.
    fn refusal(&self, archive: &Path) -> Option<ImageError> {
        if !self.over() {
            return None;
        }
        let what = format!("unpacking {}", archive.display());
        Some(if self.entries.get() > self.limits.max_entries {
            ImageError::TooLarge {
                what,
                limit: format!("{} entries", self.limits.max_entries),
                setting: "import_max_entries",
            }
        } else {
            ImageError::TooLarge {
                what,
                limit: format!("{} MiB uncompressed", self.limits.max_bytes >> 20),
                setting: "import_max_mib",
            }
        })
    }
}

/// Counts the bytes of a tar stream into a [`Budget`] and fails once it is spent.
struct Counted<'a, R> {
    inner: R,
    budget: &'a Budget,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let s = &self.budget.stream;
        s.set(s.get().saturating_add(n as u64));
        if self.budget.over() {
            return Err(std::io::Error::other("import size limit reached"));
        }
        Ok(n)
    }
}

/// Applies one layer (a tar stream) onto `root`, charging it to `budget`. `archive`
/// names the source in errors.
pub fn apply(
    root: &Path,
    layer: impl Read,
    archive: &Path,
    budget: &Budget,
) -> Result<(), ImageError> {
    let stream = Counted {
        inner: layer,
        budget,
    };
    apply_entries(root, stream, archive, budget).map_err(|e| budget.refusal(archive).unwrap_or(e))
}

fn apply_entries(
    root: &Path,
    layer: impl Read,
    archive: &Path,
    budget: &Budget,
) -> Result<(), ImageError> {
    let bad = |entry: &str| ImageError::UnsafeEntry {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
    };
    let io = |what: &str| format!("apply {what} from {}", archive.display());
    let not_tar = |e: std::io::Error| ImageError::NotAnImage {
        path: archive.to_path_buf(),
        reason: format!("not a valid tar archive ({e})"),
    };
    let mut ar = tar::Archive::new(layer);
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in ar.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let e = &budget.entries;
        e.set(e.get() + 1);
        // The real size: for a GNU sparse file, holes included.
        let d = &budget.data;
        d.set(d.get().saturating_add(entry.size()));
        if let Some(refused) = budget.refusal(archive) {
            return Err(refused);
        }
        let raw = entry.path().ctx(|| io("an entry"))?.into_owned();
        // The root itself, as `./` or `/` (umoci writes `/`): nothing to create.
        if raw
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::CurDir))
        {
            continue;
        }
        let shown = raw.display().to_string();
        let rel = clean_relative(&raw).ok_or_else(|| bad(&shown))?;
        let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root itself ("./")
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = resolve(root, parent_rel).map_err(|_| bad(&shown))?;
        if name == OPAQUE {
            empty_dir(&parent, &written).ctx(|| io(&shown))?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            remove_any(&parent.join(hidden)).ctx(|| io(&shown))?;
            continue;
        }
        create_dirs(root, &parent).ctx(|| io(&shown))?;
        let dest = parent.join(&name);
        let header = entry.header().clone();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let (uid, gid) = (
            header.uid().unwrap_or(0) as u32,
            header.gid().unwrap_or(0) as u32,
        );
        let kind = header.entry_type();
        if !(kind.is_dir() && dest.symlink_metadata().is_ok_and(|m| m.is_dir())) {
            remove_any(&dest).ctx(|| io(&shown))?;
        }
        match kind {
            EntryType::Directory => {
                if !dest.is_dir() {
                    fs_err::create_dir(&dest).ctx(|| io(&shown))?;
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = fs_err::File::create(&dest).ctx(|| io(&shown))?;
                std::io::copy(&mut entry, &mut f).ctx(|| io(&shown))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ctx(|| io(&shown))?
                    .ok_or_else(|| bad(&shown))?;
                std::os::unix::fs::symlink(&target, &dest).ctx(|| io(&shown))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .ctx(|| io(&shown))?
                    .ok_or_else(|| bad(&shown))?;
                let target_rel = clean_relative(&target).ok_or_else(|| bad(&shown))?;
                let target_parent = resolve(root, target_rel.parent().unwrap_or(Path::new("")))
                    .map_err(|_| bad(&shown))?;
                let source = target_parent.join(target_rel.file_name().unwrap_or_default());
                fs_err::hard_link(&source, &dest).ctx(|| io(&shown))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                make_node(&dest, kind, mode, &header).ctx(|| io(&shown))?;
            }
            // PAX/GNU metadata entries are consumed by the tar reader; anything else
            // (sockets, unknown types) has no place in a root file system.
            _ => continue,
        }
        lchown(&dest, Some(uid), Some(gid)).ctx(|| io(&shown))?;
        if kind != EntryType::Symlink && kind != EntryType::Link {
            // After chown, which clears set-id bits.
            fs_err::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                .ctx(|| io(&shown))?;
        }
        written.insert(dest);
    }
    Ok(())
}

/// `p` without `./` and a trailing `/`, or `None` when it is absolute or has `..`.
pub(crate) fn clean_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Resolves `rel` inside `root`, following symlinks found in the tree as if `root` were
/// `/`. The result is always under `root`; missing components are kept as they are.
pub(crate) fn resolve(root: &Path, rel: &Path) -> std::io::Result<PathBuf> {
    let mut done: Vec<OsString> = Vec::new();
    let mut pending: Vec<OsString> = rel
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let here: PathBuf = std::iter::once(root.as_os_str().to_os_string())
            .chain(done.iter().cloned())
            .chain(std::iter::once(part.clone()))
            .collect();
        match here.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(std::io::Error::other("too many levels of symbolic links"));
                }
                let target = fs_err::read_link(&here)?;
                if target.is_absolute() {
                    done.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_os_string()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => done.push(part),
        }
    }
    Ok(std::iter::once(root.as_os_str().to_os_string())
        .chain(done)
        .collect())
}

/// Creates `dir` (already resolved, under `root`) and its missing parents as plain
/// 0755 directories; a non-directory in the way is replaced.
fn create_dirs(root: &Path, dir: &Path) -> std::io::Result<()> {
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let mut path = root.to_path_buf();
    for c in rel.components() {
        path.push(c);
        match path.symlink_metadata() {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => fs_err::remove_file(&path)?,
            Err(_) => {}
        }
        fs_err::create_dir(&path)?;
    }
    Ok(())
}

/// Removes whatever is at `path` (file, symlink or tree); absent is fine.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => fs_err::remove_dir_all(path),
        Ok(_) => fs_err::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opaque whiteout: removes what lower layers left in `dir`, keeping this layer's
/// entries.
fn empty_dir(dir: &Path, written: &HashSet<PathBuf>) -> std::io::Result<()> {
    let entries = match fs_err::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if !written.contains(&path) {
            remove_any(&path)?;
        }
    }
    Ok(())
}

fn make_node(dest: &Path, kind: EntryType, mode: u32, h: &tar::Header) -> std::io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let flag = match kind {
        EntryType::Char => SFlag::S_IFCHR,
        EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    let dev = makedev(
        u64::from(h.device_major()?.unwrap_or(0)),
        u64::from(h.device_minor()?.unwrap_or(0)),
    );
    mknod(dest, flag, Mode::from_bits_truncate(mode), dev).map_err(std::io::Error::from)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tar layer from `(path, kind, data-or-link-target)`.
    pub(crate) fn layer(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_uid(nix::unistd::geteuid().as_raw().into());
            h.set_gid(nix::unistd::getegid().as_raw().into());
            match kind {
                EntryType::Symlink | EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    // Written raw: the builder refuses the hostile names tests need.
                    let name = &mut h.as_old_mut().name;
                    name.fill(0);
                    name[..path.len()].copy_from_slice(path.as_bytes());
                    h.set_cksum();
                    b.append(&h, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn apply_all(root: &Path, layers: &[Vec<u8>]) -> Result<(), ImageError> {
        let budget = Budget::new(Limits::default());
        for l in layers {
            apply(root, l.as_slice(), Path::new("test.tar"), &budget)?;
        }
        Ok(())
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let lower = layer(&[
            ("etc/", EntryType::Directory, ""),
            ("etc/motd", EntryType::Regular, "lower"),
            ("etc/gone", EntryType::Regular, "x"),
            ("opt/", EntryType::Directory, ""),
            ("opt/old", EntryType::Regular, "old"),
        ]);
        let upper = layer(&[
            ("etc/motd", EntryType::Regular, "upper"),
            ("etc/.wh.gone", EntryType::Regular, ""),
            ("opt/new", EntryType::Regular, "new"),
            ("opt/.wh..wh..opq", EntryType::Regular, ""),
        ]);
        apply_all(dir.path(), &[lower, upper]).unwrap();
        let root = dir.path();
        assert_eq!(
            fs_err::read_to_string(root.join("etc/motd")).unwrap(),
            "upper"
        );
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("etc/.wh.gone").exists());
        assert!(!root.join("opt/old").exists());
        assert_eq!(fs_err::read_to_string(root.join("opt/new")).unwrap(), "new");
    }

    #[test]
    fn dotdot_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let evil = layer(&[("../escape", EntryType::Regular, "x")]);
        let err = apply_all(dir.path(), &[evil]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "archive test.tar has an entry \"../escape\" that escapes the root file system"
        );
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn layer_without_its_end_blocks_applies_when_padded() {
        let dir = tempfile::tempdir().unwrap();
        let full = layer(&[("second", EntryType::Regular, "s\n")]);
        // As umoci 0.4 writes a layer: the header and the data, nothing after.
        let cut = full[..514].to_vec();

        let strict = apply_all(dir.path(), std::slice::from_ref(&cut));
        let budget = Budget::new(Limits::default());
        apply(
            dir.path(),
            EndPadded::new(&cut[..]),
            Path::new("l"),
            &budget,
        )
        .unwrap();

        assert!(strict.is_err());
        assert_eq!(fs_err::read(dir.path().join("second")).unwrap(), b"s\n");
    }

    #[test]
    fn root_entry_written_as_slash_is_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let umoci = layer(&[
            ("/", EntryType::Directory, ""),
            ("bin/", EntryType::Directory, ""),
        ]);
        apply_all(dir.path(), &[umoci]).unwrap();
        assert!(dir.path().join("bin").is_dir());
    }

    #[test]
    fn absolute_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let evil = layer(&[("/etc/evil", EntryType::Regular, "x")]);
        let err = apply_all(dir.path(), &[evil]).unwrap_err();
        assert!(matches!(err, ImageError::UnsafeEntry { .. }), "{err}");
    }

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        let l1 = layer(&[
            ("usr/", EntryType::Directory, ""),
            ("usr/lib64/", EntryType::Directory, ""),
            ("lib64", EntryType::Symlink, "/usr/lib64"),
            ("host", EntryType::Symlink, outside.path().to_str().unwrap()),
            ("up", EntryType::Symlink, "../../../.."),
        ]);
        let l2 = layer(&[
            ("lib64/ld.so", EntryType::Regular, "loader"),
            ("host/planted", EntryType::Regular, "x"),
            ("up/etc-planted", EntryType::Regular, "x"),
        ]);
        apply_all(root, &[l1, l2]).unwrap();
        assert_eq!(
            fs_err::read_to_string(root.join("usr/lib64/ld.so")).unwrap(),
            "loader"
        );
        assert_eq!(fs_err::read_dir(outside.path()).unwrap().count(), 0);
        let planted = root
            .join(outside.path().strip_prefix("/").unwrap())
            .join("planted");
        assert!(planted.exists());
        assert!(root.join("etc-planted").exists());
    }

    #[test]
    fn hard_links_point_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let l = layer(&[
            ("bin/", EntryType::Directory, ""),
            ("bin/perl5", EntryType::Regular, "perl"),
            ("bin/perl", EntryType::Link, "bin/perl5"),
        ]);
        apply_all(dir.path(), &[l]).unwrap();
        use std::os::unix::fs::MetadataExt;
        let a = fs_err::metadata(dir.path().join("bin/perl")).unwrap();
        assert_eq!(a.nlink(), 2);
    }

    #[test]
    fn gzip_layers_are_detected() {
        use std::io::Write;
        let plain = layer(&[("a", EntryType::Regular, "x")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let mut out = Vec::new();
        open(std::io::Cursor::new(gz.finish().unwrap()), Path::new("l"))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, plain);
    }

    fn small() -> Budget {
        Budget::new(Limits {
            max_bytes: 1 << 20,
            max_entries: 10,
        })
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    /// Writes `v` as a NUL-terminated octal number filling `field`.
    fn octal(field: &mut [u8], v: u64) {
        let text = format!("{v:0w$o}\0", w = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    }

    #[test]
    fn too_many_entries_are_refused_before_the_next_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..20).map(|i| format!("f{i:02}")).collect();
        let entries: Vec<_> = names
            .iter()
            .map(|n| (n.as_str(), EntryType::Regular, "x"))
            .collect();

        let err = apply(
            dir.path(),
            layer(&entries).as_slice(),
            Path::new("t.tar"),
            &small(),
        )
        .unwrap_err();

        assert!(
            matches!(
                err,
                ImageError::TooLarge {
                    setting: "import_max_entries",
                    ..
                }
            ),
            "{err}"
        );
        assert!(dir.path().join("f09").exists());
        assert!(!dir.path().join("f10").exists());
    }

    #[test]
    fn gzip_bomb_is_refused_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = "\0".repeat(8 << 20);
        let bomb = gzip(&layer(&[("bomb", EntryType::Regular, &zeros)]));
        let stream = open(std::io::Cursor::new(bomb), Path::new("bomb.tar.gz")).unwrap();

        let err = apply(dir.path(), stream, Path::new("bomb.tar.gz"), &small()).unwrap_err();

        assert!(
            matches!(
                err,
                ImageError::TooLarge {
                    setting: "import_max_mib",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "unpacking bomb.tar.gz is over the limit of 1 MiB uncompressed"
        );
        assert!(!dir.path().join("bomb").exists());
    }

    #[test]
    fn long_name_records_count_against_the_byte_limit() {
        // The tar reader buffers a GNU long name whole; it is never an entry of its own.
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::GNULongName);
        h.set_path("././@LongLink").unwrap();
        h.set_size(4 << 20);
        h.set_cksum();
        b.append(&h, vec![b'a'; 4 << 20].as_slice()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("short").unwrap();
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let bytes = gzip(&b.into_inner().unwrap());
        let stream = open(std::io::Cursor::new(bytes), Path::new("l.tar.gz")).unwrap();

        let err = apply(dir.path(), stream, Path::new("l.tar.gz"), &small()).unwrap_err();

        assert!(
            matches!(
                err,
                ImageError::TooLarge {
                    setting: "import_max_mib",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn gnu_sparse_file_counts_at_its_expanded_size() {
        let dir = tempfile::tempdir().unwrap();
        // 512 bytes of data at the end of an 8 MiB file that is otherwise a hole.
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::GNUSparse);
        h.set_path("sparse").unwrap();
        h.set_mode(0o644);
        h.set_size(512);
        let gnu = h.as_gnu_mut().unwrap();
        octal(&mut gnu.sparse[0].offset, (8 << 20) - 512);
        octal(&mut gnu.sparse[0].numbytes, 512);
        octal(&mut gnu.realsize, 8 << 20);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, [b'x'; 512].as_slice()).unwrap();
        let tarball = b.into_inner().unwrap();

        let err = apply(dir.path(), tarball.as_slice(), Path::new("s.tar"), &small()).unwrap_err();

        assert!(
            matches!(
                err,
                ImageError::TooLarge {
                    setting: "import_max_mib",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!dir.path().join("sparse").exists());
    }

    #[test]
    fn gnu_sparse_file_within_the_limit_is_expanded() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::GNUSparse);
        h.set_path("sparse").unwrap();
        h.set_mode(0o644);
        h.set_uid(nix::unistd::geteuid().as_raw().into());
        h.set_gid(nix::unistd::getegid().as_raw().into());
        h.set_size(512);
        let gnu = h.as_gnu_mut().unwrap();
        octal(&mut gnu.sparse[0].offset, 4096);
        octal(&mut gnu.sparse[0].numbytes, 512);
        octal(&mut gnu.realsize, 4096 + 512);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, [b'x'; 512].as_slice()).unwrap();
        let tarball = b.into_inner().unwrap();

        apply(dir.path(), tarball.as_slice(), Path::new("s.tar"), &small()).unwrap();

        assert_eq!(
            fs_err::metadata(dir.path().join("sparse")).unwrap().len(),
            4096 + 512
        );
    }

    #[test]
    fn garbage_is_not_a_tar_archive() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = "this is not a tarball\n".repeat(100);

        let err = apply(dir.path(), garbage.as_bytes(), Path::new("g"), &small()).unwrap_err();

        assert!(matches!(err, ImageError::NotAnImage { .. }), "{err}");
    }
}
