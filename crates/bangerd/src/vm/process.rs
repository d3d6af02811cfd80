//! VMM process identity and exit watching.
//!
//! The daemon never holds a VMM as a child it must wait on: QEMU and Firecracker are
//! started as children in their own process groups and outlive the daemon. A pidfd tells us the instant a VMM exits,
//! whether we started it or adopted it after a daemon restart, and the recorded start
//! time guards against a recycled PID.

use std::os::fd::OwnedFd;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

/// Start time of `pid` in clock ticks since boot, from `/proc/PID/stat` field 22.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs_err::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that was recorded with `start`.
pub fn is_same_process(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start) && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    fs_err::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(false)
}

/// A handle that becomes readable when the process exits.
pub struct ExitWatch {
    fd: AsyncFd<OwnedFd>,
}

impl ExitWatch {
    pub fn new(pid: u32) -> std::io::Result<ExitWatch> {
        let pid = rustix::process::Pid::from_raw(pid as i32)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        // The pidfd is an OwnedFd moved in here and never shared, which is the I/O
        // safety `AsyncFd::new` is deprecated for not checking.
        #[allow(deprecated)]
        let fd = AsyncFd::new(fd)?;
        Ok(ExitWatch { fd })
    }

    /// Resolves when the process has exited.
    pub async fn exited(&self) {
        // A pidfd only ever becomes readable on exit; an error means it is gone too.
        let _ = self.fd.readable().await;
    }
}

/// Marks every descriptor above stdio close-on-exec: whatever started the daemon may
/// have left some open, and they must not reach a confined VMM.
pub fn close_inherited_on_exec() {
    let Ok(dir) = fs_err::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        #[allow(unsafe_code)]
        // SAFETY: the borrow lives for one fcntl that only sets a flag; an fd closed
        // meanwhile fails with EBADF (ignored), one reused gets a flag std sets anyway.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}

/// Whether `argv` is that of a VMM of VM `vm_id`: QEMU names its process
/// `banger-<id>` (`-name …,process=banger-<id>`), Firecracker and its jailer get `--id <id>`.
fn is_vmm_of(argv: &[&str], vm_id: &str) -> bool {
    let qemu = format!("process=banger-{vm_id}");
    argv.iter().any(|a| a.split(',').any(|part| part == qemu))
        || argv.windows(2).any(|w| w[0] == "--id" && w[1] == vm_id)
}

/// The processes that are VMMs of VM `vm_id`, found by their command lines: a VMM the
/// daemon launched but died before recording is found this way.
pub fn vmm_pids(vm_id: &str) -> Vec<u32> {
    let Ok(dir) = fs_err::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(raw) = fs_err::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let text = String::from_utf8_lossy(&raw);
            let argv: Vec<&str> = text.split('\0').collect();
            is_vmm_of(&argv, vm_id) && !is_zombie(*pid)
        })
        .collect()
}

/// SIGKILLs `pids` and waits (up to 10 s) until each has exited.
pub async fn kill_and_wait(pids: &[u32]) {
    for pid in pids {
        tracing::info!(pid, "killing a vmm nobody tracks");
        signal(*pid, Signal::SIGKILL);
    }
    for pid in pids {
        let gone = || start_time(*pid).is_none() || is_zombie(*pid);
        for _ in 0..100 {
            if gone() {
                break;
            }
            reap(*pid);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

pub fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// Reaps `pid` if it is our child (Firecracker is spawned directly); harmless otherwise.
pub fn reap(pid: u32) {
    let _ = nix::sys::wait::waitpid(
        Pid::from_raw(pid as i32),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// The proportional set size of process `pid` in KiB (`/proc/PID/smaps_rollup`):
/// its private pages plus its share of the pages it shares.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = fs_err::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_pss(&rollup)
}

fn parse_pss(rollup: &str) -> Option<u64> {
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The last `lines` lines of a log file, for crash reports. Reads at most the last
/// 16 KiB: the VMM writes these logs, so their size is not ours to trust.
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX: u64 = 16 * 1024;
    let mut text = Vec::new();
    if let Ok(mut f) = fs_err::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(MAX)));
        let _ = f.take(MAX).read_to_end(&mut text);
    }
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_identified_by_start_time() {
        let me = std::process::id();
        let start = start_time(me).unwrap();
        assert!(is_same_process(me, start));
        assert!(!is_same_process(me, start + 1));
    }

    #[tokio::test]
    async fn exit_watch_fires_when_the_process_dies() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let watch = ExitWatch::new(child.id()).unwrap();
        signal(child.id(), Signal::SIGKILL);
        tokio::time::timeout(std::time::Duration::from_secs(5), watch.exited())
            .await
            .unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn vmms_are_known_by_the_vm_id_in_their_argv() {
        let qemu = [
            "qemu",
            "-name",
            "banger-web,process=banger-ab12",
            "-m",
            "512M",
        ];
        let fc = ["firecracker", "--id", "ab12", "--api-sock", "x"];

        assert!(is_vmm_of(&qemu, "ab12"));
        assert!(is_vmm_of(&fc, "ab12"));
        assert!(!is_vmm_of(&qemu, "ab1"));
        assert!(!is_vmm_of(&["banger", "vm", "show", "ab12"], "ab12"));
    }

    #[tokio::test]
    async fn an_unrecorded_vmm_is_found_and_killed() {
        let id = hex::encode(rand::random::<[u8; 8]>());
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                // Builtins only: no child shares its argv for a moment.
                "echo ready; read line",
                &format!("banger-x,process=banger-{id}"),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Once it speaks it has exec'd: its argv is sh's, no longer the test's.
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();

        let found = vmm_pids(&id);
        kill_and_wait(&found).await;

        assert_eq!(found, vec![child.id()]);
        let _ = child.wait();
        assert!(vmm_pids(&id).is_empty());
    }

    #[test]
    fn pss_is_read_from_the_rollup() {
        let rollup =
            "55-7f ---p 0 00:00 0 [rollup]\nRss: 167104 kB\nPss: 112080 kB\nPss_Anon: 104552 kB\n";

        assert_eq!(parse_pss(rollup), Some(112080));
        assert!(pss_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        fs_err::write(&p, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&p, 2), "c\nd");
    }
}
