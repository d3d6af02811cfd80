//! The image store: one directory per image under `<state>/images`, with the four
//! image files and `manifest.json`. Work in progress lives in hidden sibling
//! directories (`.staging.<name>.<pid>.<n>`) that appear under the image's name only
//! by a rename, so readers never see a partial image.

use std::path::{Path, PathBuf};

use banger_host::config::Paths;
use banger_wire::api::ImageInfo;
use banger_wire::bundle;

use super::error::{ImageError, IoContext};
use super::manifest::Manifest;
use super::name::validate_name;

/// One image in the store.
#[derive(Debug, Clone)]
pub struct Image {
    dir: PathBuf,
    manifest: Manifest,
    digest: String,
}

impl Image {
    /// Opens the image in `dir`, checking that its files are present with their
    /// recorded sizes (cheap: no hashing).
    pub fn open(dir: &Path) -> Result<Image, ImageError> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (manifest, digest) =
            Manifest::read(&dir.join(bundle::MANIFEST)).map_err(|e| match e {
                ImageError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    ImageError::Corrupt {
                        name: name.clone(),
                        reason: "it has no manifest.json".into(),
                    }
                }
                other => other,
            })?;
        manifest
            .check_sizes(dir)
            .map_err(|reason| ImageError::Corrupt {
                name: name.clone(),
                reason,
            })?;
        Ok(Image {
            dir: dir.to_path_buf(),
            manifest,
            digest,
        })
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Uncompressed ELF kernel, for Firecracker.
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join(bundle::VMLINUX)
    }
    /// bzImage kernel, for QEMU.
    pub fn bzimage(&self) -> PathBuf {
        self.dir.join(bundle::BZIMAGE)
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join(bundle::INITRD)
    }
    /// The shared base root filesystem (ext4, label `banger-root`); attach read-only.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(bundle::ROOTFS)
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// `sha256:<hex>` of `manifest.json`: names the exact kernel, initrd and rootfs.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn info(&self) -> ImageInfo {
        ImageInfo {
            name: self.manifest.name.clone(),
            digest: self.digest.clone(),
            created_at: self.manifest.created_at.clone(),
            rootfs_bytes: self
                .manifest
                .files
                .get(bundle::ROOTFS)
                .map_or(0, |f| f.bytes),
            source: self.manifest.source(),
            dir: self.dir.display().to_string(),
            run: self.manifest.run.clone(),
            lacks: self.manifest.lacks.clone(),
            // The daemon's store keeps it (see `server::image::info`).
            pool_size: None,
        }
    }
}

/// The image called `name`.
pub fn get(paths: &Paths, name: &str) -> Result<Image, ImageError> {
    validate_name(name)?;
    let dir = paths.images_dir().join(name);
    if !dir.is_dir() {
        return Err(ImageError::NotFound {
            name: name.to_string(),
        });
    }
    Image::open(&dir)
}

/// Every image in the store, by name. Damaged images are logged and left out.
pub fn list(paths: &Paths) -> Result<Vec<Image>, ImageError> {
    let dir = paths.images_dir();
    let entries = match fs_err::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx(|| "list images".into()),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| validate_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names
        .iter()
        .filter_map(|name| match get(paths, name) {
            Ok(image) => Some(image),
            Err(err) => {
                tracing::warn!(image = %name, cause = %err, "skipping damaged image");
                None
            }
        })
        .collect())
}

/// Deletes the image called `name`. The caller checks that no VM uses it.
pub fn delete(paths: &Paths, name: &str) -> Result<(), ImageError> {
    validate_name(name)?;
    let images = paths.images_dir();
    let _lock = lock(&images, name)?;
    let dir = images.join(name);
    if !dir.is_dir() {
        return Err(ImageError::NotFound {
            name: name.to_string(),
        });
    }
    let doomed = hidden_dir(&images, "deleting", name);
    fs_err::rename(&dir, &doomed).ctx(|| format!("delete image {name}"))?;
    crate::failpoint::failpoint("image_delete.after_rename");
    remove_tree(&doomed)
}

/// At daemon start: removes the work directories (`.staging.*`, `.deleting.*`) and lock
/// files that a build, import or delete killed midway left, for every name whose lock
/// nobody holds now. A name still being worked on (by a `banger image` process of its
/// own) keeps them.
pub fn sweep(paths: &Paths) {
    let images = paths.images_dir();
    let Ok(entries) = fs_err::read_dir(&images) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let file_name = e.file_name().to_string_lossy().into_owned();
            let name = file_name.strip_prefix('.')?.split('.').nth(1)?.to_string();
            validate_name(&name).is_ok().then_some(name)
        })
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        // Taking the lock removes the name's leftovers; dropping it, its file.
        match lock(&images, &name) {
            Ok(_lock) => {
                tracing::info!(image = %name, "removed leftovers of unfinished image work")
            }
            Err(e) => tracing::debug!(image = %name, cause = %e, "image work in progress; kept"),
        }
    }
}

/// An exclusive lock on one image name, held while it is built, imported or deleted.
/// Its file `.lock.<name>` goes when the lock does, so a failed import leaves no file.
pub(crate) struct NameLock {
    path: PathBuf,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl Drop for NameLock {
    fn drop(&mut self) {
        // Unlinked while still locked (the lock field drops after this): whoever opened
        // the old file meanwhile sees it is gone and locks a new one.
        let _ = fs_err::remove_file(&self.path);
    }
}

pub(crate) fn lock(images: &Path, name: &str) -> Result<NameLock, ImageError> {
    use std::os::unix::fs::MetadataExt;
    fs_err::create_dir_all(images).ctx(|| "create the image store".into())?;
    let path = images.join(format!(".lock.{name}"));
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| ImageError::Busy {
                name: name.to_string(),
            })?;
        let held = lock.metadata().ctx(|| format!("stat {}", path.display()))?;
        let still_there = fs_err::metadata(&path)
            .is_ok_and(|now| now.ino() == held.ino() && now.dev() == held.dev());
        if !still_there {
            continue;
        }
        // Whatever hidden work directories of this name exist now were left by a build
        // that died: nobody else can hold them while we hold the lock.
        remove_leftovers(images, name);
        return Ok(NameLock { path, _lock: lock });
    }
}

/// `<images>/.<kind>.<name>.<pid>.<n>`; `.` cannot occur in an image name.
pub(crate) fn hidden_dir(images: &Path, kind: &str, name: &str) -> PathBuf {
    images.join(format!(
        ".{kind}.{name}.{}.{}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

fn remove_leftovers(images: &Path, name: &str) {
    let Ok(entries) = fs_err::read_dir(images) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = file_name.split('.').collect();
        if parts.len() == 5 && parts[0].is_empty() && parts[2] == name && parts[1] != "lock" {
            if let Err(err) = remove_tree(&entry.path()) {
                tracing::warn!(path = %entry.path().display(), cause = %err, "cannot remove leftover image work directory");
            }
        }
    }
}

/// A directory being filled that becomes an image only on [`Staging::commit`]; dropped
/// uncommitted, it is removed.
pub(crate) struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    pub(crate) fn new(images: &Path, name: &str) -> Result<Staging, ImageError> {
        let dir = hidden_dir(images, "staging", name);
        fs_err::create_dir_all(&dir).ctx(|| "create a staging directory".into())?;
        Ok(Staging {
            dir,
            committed: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// Puts the staged image in place as `target`, atomically replacing an existing one.
    pub(crate) fn commit(mut self, target: &Path) -> Result<(), ImageError> {
        let exchanged = rustix::fs::renameat_with(
            rustix::fs::CWD,
            &self.dir,
            rustix::fs::CWD,
            target,
            rustix::fs::RenameFlags::EXCHANGE,
        );
        match exchanged {
            // The old image now sits in the staging path; Drop removes it.
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => {
                fs_err::rename(&self.dir, target).ctx(|| "move the new image into place".into())?;
                self.committed = true;
            }
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .ctx(|| format!("move the new image into place at {}", target.display()))
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(err) = remove_tree(&self.dir) {
            tracing::warn!(path = %self.dir.display(), cause = %err, "cannot remove staging directory");
        }
    }
}

/// Removes a directory tree, first detaching anything mounted inside it (a killed
/// debootstrap can leave its /proc and /sys mounted), and refusing if that fails:
/// `remove_dir_all` would otherwise descend into a host file system.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), ImageError> {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &mounts {
        if let Err(err) = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %m.display(), cause = %err, "cannot detach mount");
        }
    }
    if !mounts_under(dir).is_empty() {
        return Err(ImageError::StillMounted {
            path: dir.to_path_buf(),
        });
    }
    match fs_err::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).ctx(|| format!("remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = fs_err::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let text = fs_err::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mount_points(&text)
        .into_iter()
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// Mount points (field 5) of `/proc/self/mountinfo`, with octal escapes undone.
fn parse_mount_points(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| {
            let mut out = Vec::new();
            let b = m.as_bytes();
            let mut i = 0;
            while i < b.len() {
                let octal = b
                    .get(i + 1..i + 4)
                    .and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok());
                match (b[i], octal) {
                    (b'\\', Some(c)) => {
                        out.push(c);
                        i += 4;
                    }
                    (c, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            PathBuf::from(std::ffi::OsString::from(
                String::from_utf8_lossy(&out).into_owned(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::manifest::tests::{image_dir, inputs};
    use banger_wire::Diagnostic;

    fn store_with(names: &[&str]) -> (tempfile::TempDir, Paths) {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        for name in names {
            let dir = paths.images_dir().join(name);
            fs_err::create_dir_all(&dir).unwrap();
            image_dir(&dir, name, inputs());
        }
        (root, paths)
    }

    #[test]
    fn sweep_removes_leftovers_of_names_nobody_works_on() {
        let (_root, paths) = store_with(&["default"]);
        let images = paths.images_dir();
        for left in [
            ".staging.old.1.2",
            ".deleting.gone.3.4",
            ".staging.busy.5.6",
        ] {
            fs_err::create_dir_all(images.join(left).join("tree")).unwrap();
        }
        fs_err::write(images.join(".lock.old"), "").unwrap();
        let held = lock(&images, "busy").unwrap();
        fs_err::create_dir_all(images.join(".staging.busy.7.8")).unwrap();

        sweep(&paths);

        let mut left: Vec<String> = fs_err::read_dir(&images)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".lock.busy", ".staging.busy.7.8", "default"]);
        drop(held);
    }

    #[test]
    fn get_returns_files_and_info() {
        let (_root, paths) = store_with(&["default"]);
        let image = get(&paths, "default").unwrap();
        assert_eq!(
            image.rootfs(),
            paths.images_dir().join("default/rootfs.ext4")
        );
        assert_eq!(image.vmlinux(), paths.images_dir().join("default/vmlinux"));
        let info = image.info();
        assert_eq!(info.name, "default");
        assert_eq!(info.source, "build:bookworm");
        assert_eq!(info.rootfs_bytes, "rootfs.ext4 of default".len() as u64);
        assert_eq!(info.digest, image.digest());
    }

    #[test]
    fn missing_image_says_how_to_build_it() {
        let (_root, paths) = store_with(&[]);
        let err = get(&paths, "default").unwrap_err();
        assert_eq!(err.to_string(), "image default not found");
        assert_eq!(err.hint().unwrap(), "build it with `banger image build`");
    }

    #[test]
    fn list_skips_work_dirs_and_damaged_images() {
        let (_root, paths) = store_with(&["b", "a", "broken"]);
        fs_err::remove_file(paths.images_dir().join("broken/initrd.img")).unwrap();
        fs_err::create_dir_all(paths.images_dir().join(".staging.c.1.2")).unwrap();
        let names: Vec<String> = list(&paths)
            .unwrap()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn delete_removes_the_image() {
        let (_root, paths) = store_with(&["web"]);
        delete(&paths, "web").unwrap();
        assert!(matches!(
            get(&paths, "web").unwrap_err(),
            ImageError::NotFound { .. }
        ));
        assert_eq!(fs_err::read_dir(paths.images_dir()).unwrap().count(), 0);
    }

    #[test]
    fn second_lock_on_a_name_is_busy() {
        let (_root, paths) = store_with(&[]);
        let _held = lock(&paths.images_dir(), "web").unwrap();
        let err = lock(&paths.images_dir(), "web").err().unwrap();
        assert!(matches!(err, ImageError::Busy { .. }), "{err}");
        assert!(lock(&paths.images_dir(), "web-2").is_ok());
    }

    #[test]
    fn a_released_lock_leaves_no_file_and_the_name_locks_again() {
        let (_root, paths) = store_with(&[]);
        let images = paths.images_dir();
        drop(lock(&images, "web").unwrap());
        assert!(!images.join(".lock.web").exists());
        let again = lock(&images, "web").unwrap();
        assert!(images.join(".lock.web").exists());
        assert!(matches!(
            lock(&images, "web").err().unwrap(),
            ImageError::Busy { .. }
        ));
        drop(again);
    }

    #[test]
    fn lock_removes_leftovers_of_that_name_only() {
        let (_root, paths) = store_with(&[]);
        let images = paths.images_dir();
        fs_err::create_dir_all(images.join(".staging.web.99.1/tree")).unwrap();
        fs_err::create_dir_all(images.join(".staging.web-2.99.1")).unwrap();
        let _held = lock(&images, "web").unwrap();
        assert!(!images.join(".staging.web.99.1").exists());
        assert!(images.join(".staging.web-2.99.1").exists());
    }

    #[test]
    fn dropped_staging_leaves_nothing_and_commit_replaces() {
        let (_root, paths) = store_with(&["web"]);
        let images = paths.images_dir();
        let staging = Staging::new(&images, "web").unwrap();
        fs_err::write(staging.path().join("x"), "new").unwrap();
        drop(staging);
        let staging = Staging::new(&images, "web").unwrap();
        fs_err::write(staging.path().join("x"), "new").unwrap();
        staging.commit(&images.join("web")).unwrap();
        assert_eq!(fs_err::read_to_string(images.join("web/x")).unwrap(), "new");
        assert!(!images.join("web/manifest.json").exists());
        let hidden: Vec<_> = fs_err::read_dir(&images)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging"))
            .collect();
        assert!(hidden.is_empty());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        let line = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n";
        assert_eq!(parse_mount_points(line), [PathBuf::from("/mnt/a b")]);
    }
}
