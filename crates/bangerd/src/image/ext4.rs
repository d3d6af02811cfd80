//! ext4 file systems made from files, never mounted on the host: the shared base root
//! (`banger-root`) and each VM's sparse writable disk (`banger-upper`).

use std::path::Path;
use std::process::Command;

use super::cmd;
use super::error::{ImageError, IoContext};

/// Label the initramfs looks for on the shared read-only base disk.
pub const ROOT_LABEL: &str = "banger-root";
/// Label the initramfs looks for on a VM's writable disk.
pub const UPPER_LABEL: &str = "banger-upper";

const MIB: u64 = 1 << 20;

/// Largest writable disk: 16 TiB, ext4's limit with 4 KiB blocks on a 32-bit layout. The
/// disk is sparse, so free space is not checked: it fills as the guest writes.
pub const MAX_DISK_MIB: u64 = 16 << 20;

/// `size_mib` in bytes; a size that does not fit in 64 bits is refused, not wrapped.
fn mib_to_bytes(size_mib: u64) -> Result<u64, ImageError> {
    size_mib
        .checked_mul(MIB)
        .ok_or_else(|| ImageError::InvalidInput {
            what: "disk size in MiB",
            value: size_mib.to_string(),
        })
}

fn mkfs() -> Result<std::path::PathBuf, ImageError> {
    cmd::tool("mkfs.ext4", "e2fsprogs")
}

/// Makes `out`, a sparse ext4 image of `size_mib` holding `tree`. The base is never
/// written by a guest, so it has no journal and no reserved blocks.
pub fn make_rootfs(tree: &Path, out: &Path, size_mib: u64) -> Result<(), ImageError> {
    let result = cmd::run(
        Command::new(mkfs()?)
            .args([
                "-q",
                "-F",
                "-L",
                ROOT_LABEL,
                "-m",
                "0",
                "-O",
                "^has_journal",
            ])
            .args(["-E", "lazy_itable_init=0,nodiscard"])
            .arg("-d")
            .arg(tree)
            .arg(out)
            .arg(format!("{size_mib}M")),
    );
    match result {
        Err(ImageError::Command { detail, .. })
            if detail.contains("Could not allocate") || detail.contains("No space left") =>
        {
            Err(ImageError::TooSmall {
                needed_mib: estimate_mib(tree),
                size_mib,
            })
        }
        other => other.map(drop),
    }
}

/// Rough space a tree needs as ext4: its blocks plus an inode's worth per entry, and a
/// tenth for metadata.
pub fn estimate_mib(tree: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0u64;
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs_err::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(meta) = entry.metadata() else { continue };
            bytes += meta.len().div_ceil(4096) * 4096 + 256;
            if meta.is_dir() && meta.dev() == fs_err::metadata(tree).map_or(0, |m| m.dev()) {
                stack.push(entry.path());
            }
        }
    }
    (bytes + bytes / 10).div_ceil(MIB)
}

/// Creates a VM's writable disk: a sparse file of `size_mib` with an empty ext4 labelled
/// [`UPPER_LABEL`]. Inode tables and journal are initialised lazily (by the guest), so
/// this takes milliseconds whatever the size.
pub fn create_upper_disk(path: &Path, size_mib: u64) -> Result<(), ImageError> {
    let bytes = mib_to_bytes(size_mib)?;
    let file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .ctx(|| "create a writable disk".into())?;
    let sized = file
        .set_len(bytes)
        .ctx(|| format!("size {}", path.display()));
    drop(file);
    let made = sized.and_then(|()| {
        cmd::run(
            Command::new(mkfs()?)
                .args(["-q", "-F", "-L", UPPER_LABEL, "-m", "0"])
                .args(["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard"])
                .arg(path),
        )
    });
    if made.is_err() {
        // Best effort: do not leave a disk without a file system behind.
        let _ = fs_err::remove_file(path);
    }
    made.map(drop)
}

/// Grows a stopped VM's writable disk to `size_mib`. Shrinking is refused; the same
/// size is a no-op. The guest must not be running.
pub fn grow_upper_disk(path: &Path, size_mib: u64) -> Result<(), ImageError> {
    let current = fs_err::metadata(path)
        .ctx(|| "read the writable disk".into())?
        .len();
    let wanted = mib_to_bytes(size_mib)?;
    if wanted < current {
        return Err(ImageError::Shrink {
            path: path.to_path_buf(),
            current_mib: current / MIB,
            requested_mib: size_mib,
        });
    }
    if wanted == current {
        return Ok(());
    }
    // resize2fs insists on a freshly checked file system; -p repairs only what is safe
    // (e.g. replays the journal of a guest that was killed).
    let e2fsck = cmd::tool("e2fsck", "e2fsprogs")?;
    let status = Command::new(&e2fsck)
        .args(["-f", "-p"])
        .arg(path)
        .output()
        .ctx(|| "run e2fsck".into())?;
    // 0: clean, 1: errors fixed; anything else needs a human.
    if !matches!(status.status.code(), Some(0 | 1)) {
        return Err(ImageError::Command {
            program: "e2fsck".into(),
            status: status.status.to_string(),
            detail: cmd::tail(&status.stdout),
        });
    }
    fs_err::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(wanted))
        .ctx(|| format!("grow {}", path.display()))?;
    cmd::run(Command::new(cmd::tool("resize2fs", "e2fsprogs")?).arg(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_mkfs() -> bool {
        if mkfs().is_ok() {
            return true;
        }
        eprintln!("skipping: mkfs.ext4 not installed (e2fsprogs)");
        false
    }

    fn label_of(path: &Path) -> String {
        let out = Command::new(cmd::tool("dumpe2fs", "e2fsprogs").unwrap())
            .arg("-h")
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("Filesystem volume name:"))
            .unwrap_or("")
            .trim()
            .to_string()
    }

    #[test]
    fn upper_disk_is_sparse_labelled_and_fast() {
        if !have_mkfs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("upper.ext4");
        let start = std::time::Instant::now();
        create_upper_disk(&disk, 8192).unwrap();
        let took = start.elapsed();
        use std::os::unix::fs::MetadataExt;
        let meta = fs_err::metadata(&disk).unwrap();
        assert_eq!(meta.len(), 8192 * MIB);
        assert!(
            meta.blocks() * 512 < 200 * MIB,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        assert_eq!(label_of(&disk), UPPER_LABEL);
        assert!(took.as_secs() < 5, "took {took:?}");
    }

    #[test]
    fn upper_disk_grows_and_refuses_to_shrink() {
        if !have_mkfs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("upper.ext4");
        create_upper_disk(&disk, 64).unwrap();
        grow_upper_disk(&disk, 128).unwrap();
        assert_eq!(fs_err::metadata(&disk).unwrap().len(), 128 * MIB);
        assert_eq!(label_of(&disk), UPPER_LABEL);
        let err = grow_upper_disk(&disk, 64).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot shrink writable disk {} from 128 MiB to 64 MiB",
                disk.display()
            )
        );
    }

    #[test]
    fn disk_size_past_64_bits_is_refused_not_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("upper.ext4");

        let err = create_upper_disk(&disk, 17592186044417).unwrap_err();

        assert_eq!(
            err.to_string(),
            "invalid disk size in MiB \"17592186044417\""
        );
        assert!(!disk.exists());
    }

    #[test]
    fn growing_past_64_bits_is_refused_not_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("upper.ext4");
        fs_err::write(&disk, "guest data").unwrap();

        let err = grow_upper_disk(&disk, u64::MAX).unwrap_err();

        assert!(matches!(err, ImageError::InvalidInput { .. }), "{err}");
        assert_eq!(fs_err::read_to_string(&disk).unwrap(), "guest data");
    }

    #[test]
    fn existing_disk_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("upper.ext4");
        fs_err::write(&disk, "guest data").unwrap();
        assert!(create_upper_disk(&disk, 64).is_err());
        assert_eq!(fs_err::read_to_string(&disk).unwrap(), "guest data");
    }

    #[test]
    fn tree_too_big_for_the_size_is_reported_as_such() {
        if !have_mkfs() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs_err::create_dir_all(&tree).unwrap();
        fs_err::write(tree.join("big"), vec![1u8; 12 << 20]).unwrap();
        let err = make_rootfs(&tree, &dir.path().join("r.ext4"), 8).unwrap_err();
        assert!(
            matches!(err, ImageError::TooSmall { size_mib: 8, .. }),
            "{err}"
        );
    }
}
