//! The boot files (kernel as bzImage and ELF vmlinux, banger's initramfs), made from
//! Debian's `linux-image-cloud-amd64` and `busybox-static` and cached apart from any
//! root file system, so imports reuse them.
//!
//! Cache layout: `<cache>/debs/*.deb` (shared with debootstrap) and
//! `<cache>/boot/<kernel package>_<version>.<key>/{bzImage,vmlinux,initrd.img,boot.json}`
//! where `key` covers everything that shapes the files.

use std::path::{Path, PathBuf};

use banger_wire::bundle;
use sha2::{Digest, Sha256};

use super::error::{ImageError, IoContext};
use super::manifest::{BootInfo, RECIPE};
use super::modules::{ModuleIndex, BOOT_MODULES};
use super::packages::{self, DebEntry};
use super::{elf, initramfs, kernel, Progress, ProgressFn};

/// Meta-package that depends on the current cloud kernel.
const KERNEL_META: &str = "linux-image-cloud-amd64";
const BUSYBOX: &str = "busybox-static";
const BOOT_JSON: &str = "boot.json";

/// A complete set of cached boot files.
#[derive(Debug, Clone)]
pub struct BootFiles {
    pub dir: PathBuf,
    pub info: BootInfo,
}

impl BootFiles {
    fn open(dir: &Path) -> Result<BootFiles, ImageError> {
        let path = dir.join(BOOT_JSON);
        let bytes = fs_err::read(&path).ctx(|| "read cached boot files".into())?;
        let info = serde_json::from_slice(&bytes)
            .map_err(|source| ImageError::Manifest { path, source })?;
        Ok(BootFiles {
            dir: dir.to_path_buf(),
            info,
        })
    }

    /// Hard-links (or copies, across file systems) the three boot files into `dest`.
    pub fn install(&self, dest: &Path) -> Result<(), ImageError> {
        for name in [bundle::VMLINUX, bundle::BZIMAGE, bundle::INITRD] {
            let (src, dst) = (self.dir.join(name), dest.join(name));
            if fs_err::hard_link(&src, &dst).is_err() {
                fs_err::copy(&src, &dst).ctx(|| format!("copy {name} into the image"))?;
            }
        }
        Ok(())
    }
}

fn boot_root(cache: &Path) -> PathBuf {
    cache.join("boot")
}

/// `.deb` cache shared by debootstrap and [`prepare`].
pub fn debs_dir(cache: &Path) -> PathBuf {
    cache.join("debs")
}

/// The most recently made boot files in the cache, for images that bring no kernel.
pub fn latest(cache: &Path) -> Result<BootFiles, ImageError> {
    let entries = fs_err::read_dir(boot_root(cache)).map_err(|_| ImageError::NoBootFiles)?;
    entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let modified = e.path().join(BOOT_JSON).metadata().ok()?.modified().ok()?;
            Some((modified, e.path()))
        })
        .max()
        .ok_or(ImageError::NoBootFiles)
        .and_then(|(_, dir)| BootFiles::open(&dir))
}

/// Returns boot files for the kernel and busybox named in the verified package index
/// `lists`, making and caching them first when needed.
pub fn prepare(
    cache: &Path,
    lists: &Path,
    mirror: &str,
    progress: ProgressFn<'_>,
) -> Result<BootFiles, ImageError> {
    let mut found = packages::lookup(lists, &[KERNEL_META, BUSYBOX])?;
    let missing = |package: &str| ImageError::PackageMissing {
        package: package.to_string(),
        lists: lists.to_path_buf(),
    };
    let meta = found
        .remove(KERNEL_META)
        .ok_or_else(|| missing(KERNEL_META))?;
    let busybox = found.remove(BUSYBOX).ok_or_else(|| missing(BUSYBOX))?;
    let kernel_name = meta
        .first_dependency()
        .ok_or_else(|| missing(KERNEL_META))?;
    let kernel = packages::lookup_one(lists, kernel_name)?;

    let key = cache_key(&kernel, &busybox);
    let dir = boot_root(cache).join(format!("{}_{}.{}", kernel.package, kernel.version, key));
    if dir.join(BOOT_JSON).exists() {
        progress(Progress::step(
            "kernel",
            format!("cached {}", kernel.package),
        ));
        return BootFiles::open(&dir);
    }
    let work = boot_root(cache).join(format!(".work.{}.{}", std::process::id(), key));
    let result = make(cache, mirror, &kernel, &busybox, &work, progress).and_then(|()| {
        match fs_err::rename(&work, &dir) {
            Ok(()) => Ok(()),
            // A concurrent build finished the same files first.
            Err(_) if dir.join(BOOT_JSON).exists() => Ok(()),
            Err(e) => Err(e).ctx(|| "store the boot files".into()),
        }
    });
    if work.exists() {
        // Best effort: leftovers only cost disk space.
        let _ = fs_err::remove_dir_all(&work);
    }
    result?;
    BootFiles::open(&dir)
}

fn cache_key(kernel: &DebEntry, busybox: &DebEntry) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE.to_le_bytes());
    h.update(kernel.sha256.as_bytes());
    h.update(busybox.sha256.as_bytes());
    h.update(initramfs::INIT_SCRIPT.as_bytes());
    h.update(BOOT_MODULES.join(",").as_bytes());
    hex::encode(h.finalize())[..12].to_string()
}

fn make(
    cache: &Path,
    mirror: &str,
    kernel: &DebEntry,
    busybox: &DebEntry,
    work: &Path,
    progress: ProgressFn<'_>,
) -> Result<(), ImageError> {
    if work.exists() {
        fs_err::remove_dir_all(work).ctx(|| "clear a boot work directory".into())?;
    }
    fs_err::create_dir_all(work).ctx(|| "create a boot work directory".into())?;
    let debs = debs_dir(cache);
    let kernel_deb = packages::fetch(mirror, kernel, &debs, &|done, total| {
        progress(Progress::bytes("kernel", done, total, &kernel.package));
    })?;
    let busybox_deb = packages::fetch(mirror, busybox, &debs, &|_, _| {})?;
    progress(Progress::step(
        "kernel",
        format!("unpacking {}", kernel.package),
    ));
    let kroot = work.join("kernel");
    packages::extract(&kernel_deb, &kroot)?;
    let broot = work.join("busybox");
    packages::extract(&busybox_deb, &broot)?;

    let vmlinuz = single_entry(&kroot.join("boot"), "vmlinuz-")?;
    let bzimage = work.join(bundle::BZIMAGE);
    fs_err::copy(&vmlinuz, &bzimage).ctx(|| "copy the kernel".into())?;
    let bytes = fs_err::read(&vmlinuz).ctx(|| "read the kernel".into())?;
    let vmlinux = kernel::extract_vmlinux(&bytes).map_err(|reason| ImageError::Kernel {
        path: vmlinuz.clone(),
        reason,
    })?;
    fs_err::write(work.join(bundle::VMLINUX), vmlinux).ctx(|| "write vmlinux".into())?;

    progress(Progress::step(
        "initramfs",
        "resolving kernel modules".into(),
    ));
    let moddir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| kroot.join(d))
        .find(|d| d.is_dir())
        .ok_or_else(|| ImageError::ModuleMissing {
            module: "any".into(),
            dir: kroot.join("lib/modules"),
        })?;
    let moddir = single_entry(&moddir, "")?;
    let modules = ModuleIndex::load(&moddir)?.resolve(&BOOT_MODULES)?;
    let busybox_bin = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| broot.join(p))
        .find(|p| p.is_file())
        .ok_or_else(|| ImageError::PackageMissing {
            package: "busybox binary in busybox-static".into(),
            lists: busybox_deb.clone(),
        })?;
    let busybox_bytes = fs_err::read(&busybox_bin).ctx(|| "read busybox".into())?;
    if !elf::is_static(&busybox_bytes) {
        return Err(ImageError::Kernel {
            path: busybox_bin,
            reason: "busybox from busybox-static is not statically linked".into(),
        });
    }
    progress(Progress::step(
        "initramfs",
        format!("{} modules", modules.len()),
    ));
    initramfs::write(
        &initramfs::Contents {
            busybox: busybox_bytes,
            modules: modules.clone(),
        },
        &work.join(bundle::INITRD),
    )?;
    let info = BootInfo {
        kernel_package: kernel.package.clone(),
        kernel_version: kernel.version.clone(),
        kernel_deb_sha256: kernel.sha256.clone(),
        busybox_version: busybox.version.clone(),
        modules: modules.into_iter().map(|(name, _)| name).collect(),
    };
    let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
    fs_err::remove_dir_all(&kroot).ctx(|| "clean the kernel unpack".into())?;
    fs_err::remove_dir_all(&broot).ctx(|| "clean the busybox unpack".into())?;
    fs_err::write(work.join(BOOT_JSON), json).ctx(|| "write boot.json".into())
}

/// The one entry of `dir` whose name starts with `prefix`.
fn single_entry(dir: &Path, prefix: &str) -> Result<PathBuf, ImageError> {
    let mut found: Vec<PathBuf> = fs_err::read_dir(dir)
        .ctx(|| "read the unpacked kernel package".into())?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(ImageError::Kernel {
            path: dir.to_path_buf(),
            reason: format!("expected one {prefix}* entry, found {n}"),
        }),
    }
}
