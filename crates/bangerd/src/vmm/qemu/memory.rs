//! A QEMU guest's memory, and how clones share a snapshot's.
//!
//! A booted guest's RAM is a memfd the daemon creates and hands QEMU, mapped shared
//! (`memory-backend-file,share=on`). A snapshot of it then saves only the device state
//! in its migration stream (the `x-ignore-shared` capability leaves shared RAM out) and
//! copies the memfd's pages into the snapshot's [`MEMORY_FILE`]. A clone of that
//! snapshot maps the file's pages privately (`share=off`): the pages it never writes
//! stay one copy in the host's memory for all clones, the ones it writes become its own
//! (copy on write); the technique of Kata Containers' VM templating.
//!
//! QEMU 7.2 opens a memory backend's file read-write even when it maps it privately,
//! and every clone's QEMU must not be able to change what the others read. So clones
//! are not handed the snapshot's file but a memfd with its pages, sealed against
//! writes ([`Templates`]): QEMU may map it copy-on-write, never write it.
//!
//! A clone's own memory is not a file of its own, so a snapshot of a clone keeps its
//! RAM in the migration stream (the way before memory files), and the clones of that
//! snapshot get a fresh memfd the stream fills.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use rustix::fs::{MemfdFlags, SealFlags};

use super::handoff::fd;
use crate::vmm::SnapshotFiles;

/// The snapshot's copy of the guest's memory, beside its migration stream.
pub(super) const MEMORY_FILE: &str = "qemu.memory";
/// The memory backend's id: microvm's own name for its RAM, so a stream saved before
/// memory was a backend of banger's still loads.
const BACKEND_ID: &str = "microvm.ram";

/// Where a launch's memory comes from.
pub(super) enum Memory {
    /// Its own, empty (a boot) or filled by the migration stream: shared, so a
    /// snapshot can copy it.
    Own(OwnedFd),
    /// A snapshot's pages, sealed: mapped copy-on-write.
    Template(Arc<OwnedFd>),
}

impl Memory {
    /// A fresh guest memory of `mib` MiB.
    pub fn fresh(mib: u32) -> io::Result<Memory> {
        let memfd = rustix::fs::memfd_create("banger-guest", MemfdFlags::CLOEXEC)?;
        rustix::fs::ftruncate(&memfd, u64::from(mib) << 20)?;
        Ok(Memory::Own(memfd))
    }

    /// QEMU's arguments for this memory of `mib` MiB, found at [`fd::MEMORY`].
    pub fn args(&self, mib: u32) -> [String; 4] {
        let share = match self {
            Memory::Own(_) => "on",
            Memory::Template(_) => "off",
        };
        [
            "-object".into(),
            format!(
                "memory-backend-file,id={BACKEND_ID},size={mib}M,mem-path=/proc/self/fd/{},share={share}",
                fd::MEMORY
            ),
            "-machine".into(),
            format!("memory-backend={BACKEND_ID}"),
        ]
    }

    /// The descriptor QEMU gets (a duplicate: a template stays in the cache).
    pub fn fd(&self) -> io::Result<OwnedFd> {
        match self {
            Memory::Own(f) => f.try_clone(),
            Memory::Template(f) => f.try_clone(),
        }
    }

    pub fn is_template(&self) -> bool {
        matches!(self, Memory::Template(_))
    }
}

/// The sealed memfds of the snapshots clones were restored from, by memory file.
/// Each holds the snapshot's memory once for all its clones; [`forget`] drops one when
/// its snapshot goes. The map's lock is held only to find a file's slot; loading a
/// memory (seconds for gigabytes) holds that slot's lock alone.
static TEMPLATES: Mutex<Templates> = Mutex::new(Templates(None));

/// A memory file's template: empty until its first clone loads it.
type Slot = Arc<Mutex<Option<Arc<OwnedFd>>>>;

struct Templates(Option<HashMap<PathBuf, Slot>>);

fn templates() -> std::sync::MutexGuard<'static, Templates> {
    TEMPLATES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The memory a clone of `snap` starts with: the snapshot's pages when it has a memory
/// file, else a fresh memory for the migration stream to fill. Blocking (the first
/// clone of a snapshot copies its memory): call it off the async runtime's workers.
pub(super) fn for_restore(snap: &SnapshotFiles, mib: u32) -> io::Result<Memory> {
    let path = snap.dir.join(MEMORY_FILE);
    if !path.exists() {
        return Memory::fresh(mib);
    }
    let slot = templates()
        .0
        .get_or_insert_with(HashMap::new)
        .entry(path.clone())
        .or_default()
        .clone();
    let mut loaded = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = loaded.as_ref() {
        return Ok(Memory::Template(t.clone()));
    }
    let t0 = std::time::Instant::now();
    let sealed = Arc::new(load_sealed(&path, u64::from(mib) << 20)?);
    tracing::info!(path = %path.display(), ms = t0.elapsed().as_millis() as u64, "snapshot memory loaded");
    *loaded = Some(sealed.clone());
    Ok(Memory::Template(sealed))
}

/// Drops the cached pages of `snap`'s memory (its snapshot is being deleted; running
/// clones keep their own mapping of them).
pub fn forget(snap: &SnapshotFiles) {
    if let Some(map) = templates().0.as_mut() {
        map.remove(&snap.dir.join(MEMORY_FILE));
    }
}

/// Bytes the cached snapshot memories hold (one being loaded counts once it is).
pub fn templates_bytes() -> u64 {
    let slots: Vec<Slot> = templates()
        .0
        .iter()
        .flatten()
        .map(|(_, s)| s.clone())
        .collect();
    slots
        .iter()
        .filter_map(|s| s.try_lock().ok()?.as_ref().map(|f| held_bytes(f.as_fd())))
        .sum()
}

fn held_bytes(fd: BorrowedFd<'_>) -> u64 {
    rustix::fs::fstat(fd)
        .map(|s| s.st_blocks as u64 * 512)
        .unwrap_or(0)
}

/// A memfd with the pages of the file at `path` (`len` bytes), sealed against writes
/// and size changes.
fn load_sealed(path: &Path, len: u64) -> io::Result<OwnedFd> {
    let file = fs_err::File::open(path)?;
    let got = file.metadata()?.len();
    if got != len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} holds {got} bytes of memory, the snapshot's VM has {len}",
                path.display()
            ),
        ));
    }
    let memfd = rustix::fs::memfd_create(
        "banger-snapshot",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&memfd, len)?;
    let out = std::fs::File::from(memfd);
    copy_data(file.file(), &out, len)?;
    let memfd = OwnedFd::from(out);
    rustix::fs::fcntl_add_seals(
        &memfd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )?;
    Ok(memfd)
}

/// The running QEMU `pid`'s memory when it is its own (shared, not a snapshot's). QEMU
/// is the guest's side: what sits at its descriptor must be a memfd (a FIFO there
/// would hang the read; another file would be copied with the daemon's rights).
fn own_memory(pid: u32) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/{pid}/fd/{}", fd::MEMORY);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    // Only memfds (and shmem files) have seals to ask about.
    let seals = rustix::fs::fcntl_get_seals(&file).ok()?;
    (!seals.contains(SealFlags::WRITE)).then_some(file)
}

/// Whether a snapshot of QEMU `pid` saves its memory to a file (see [`save`]).
pub(super) fn is_own(pid: u32) -> bool {
    own_memory(pid).is_some()
}

/// Copies the paused QEMU `pid`'s own memory into `snap`'s [`MEMORY_FILE`], holes
/// (pages the guest never touched) left holes. Blocking.
pub(super) fn save(pid: u32, snap: &SnapshotFiles) -> io::Result<u64> {
    let memory = own_memory(pid).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("qemu {pid} has no memory of its own"),
        )
    })?;
    let len = memory.metadata()?.len();
    let path = snap.dir.join(MEMORY_FILE);
    let out = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    out.set_len(len)?;
    copy_data(&memory, out.file(), len)
}

/// Copies the data ranges of `src` (`len` bytes) into `dst` at the same offsets;
/// returns the bytes copied. Plain reads and writes: memfds and disk files are on
/// different filesystems.
fn copy_data(src: &std::fs::File, dst: &std::fs::File, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    let mut copied = 0u64;
    while pos < len {
        let data = match lseek(src.as_fd(), pos as i64, Whence::SeekData) {
            Ok(offset) => offset as u64,
            Err(Errno::ENXIO) => break,
            Err(e) => return Err(io::Error::from(e)),
        };
        let hole =
            lseek(src.as_fd(), data as i64, Whence::SeekHole).map_err(io::Error::from)? as u64;
        let mut off = data;
        while off < hole {
            let want = (hole - off).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..want], off)?;
            dst.write_all_at(&buf[..want], off)?;
            off += want as u64;
        }
        copied += hole - data;
        pos = hole;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_template_is_sealed_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MEMORY_FILE);
        let mut f = fs_err::File::create(&path).unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all(b"guest page").unwrap();

        let sealed = std::fs::File::from(load_sealed(&path, 8 << 20).unwrap());

        let mut head = [0u8; 10];
        sealed.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"guest page");
        assert!(
            sealed.write_all_at(b"x", 0).is_err(),
            "a template is writable"
        );
        assert!(held_bytes(sealed.as_fd()) < 1 << 20, "holes were filled");
    }

    /// A process holding `file` where a VMM holds its memory; killed on drop.
    struct Holder(std::process::Child);

    impl Holder {
        fn new(file: OwnedFd) -> Holder {
            use command_fds::{CommandFdExt, FdMapping};
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("60").stdin(std::process::Stdio::null());
            cmd.fd_mappings(vec![FdMapping {
                parent_fd: file,
                child_fd: fd::MEMORY,
            }])
            .unwrap();
            Holder(cmd.spawn().unwrap())
        }
    }

    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn only_an_unsealed_memfd_is_taken_for_a_vmms_own_memory() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let plain = dir.path().join("plain");
        fs_err::write(&plain, b"a file of the daemon's").unwrap();
        let open = |path: &Path| {
            use std::os::unix::fs::OpenOptionsExt;
            OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                    .open(path)
                    .unwrap(),
            )
        };
        let template = dir.path().join(MEMORY_FILE);
        fs_err::File::create(&template)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();

        let own = Holder::new(Memory::fresh(1).unwrap().fd().unwrap());
        let sealed = Holder::new(load_sealed(&template, 1 << 20).unwrap());
        let a_fifo = Holder::new(open(&fifo));
        let a_file = Holder::new(open(&plain));

        assert!(is_own(own.0.id()));
        assert!(!is_own(sealed.0.id()));
        assert!(!is_own(a_fifo.0.id()));
        assert!(!is_own(a_file.0.id()));
    }

    #[test]
    fn the_memory_figure_does_not_wait_for_a_memory_being_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let snap = SnapshotFiles {
            dir: dir.path().to_path_buf(),
            disk: dir.path().join("disk"),
        };
        let slot = templates()
            .0
            .get_or_insert_with(HashMap::new)
            .entry(snap.dir.join(MEMORY_FILE))
            .or_default()
            .clone();
        let loading = slot.lock().unwrap();

        // `daemon status` while a clone's first restore copies gigabytes.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(templates_bytes()).unwrap());

        let answered = rx.recv_timeout(std::time::Duration::from_secs(10));
        drop(loading);
        forget(&snap);
        assert!(answered.is_ok(), "templates_bytes waited for the load");
    }

    #[test]
    fn a_memory_file_of_another_size_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MEMORY_FILE);
        fs_err::File::create(&path)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();

        let err = load_sealed(&path, 8 << 20).unwrap_err();

        assert!(err.to_string().contains("the snapshot's VM has"), "{err}");
    }

    #[test]
    fn a_clone_maps_the_template_privately_and_a_boot_its_own_memory_shared() {
        let own = Memory::fresh(16).unwrap();
        let template = Memory::Template(Arc::new(own.fd().unwrap()));

        assert!(own.args(16)[1].ends_with("share=on"));
        assert!(template.args(16)[1].ends_with("share=off"));
        assert!(own.args(16)[1].contains(&format!("mem-path=/proc/self/fd/{}", fd::MEMORY)));
    }
}
