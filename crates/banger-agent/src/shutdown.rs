//! The guest's clean shutdown, run by PID 1: stop every process, flush and unmount
//! (or remount read-only) every disk filesystem, then reboot, which makes the VMM exit
//! (QEMU runs with `-no-reboot`; Firecracker exits on a guest reboot).

use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, sync, Pid};

use crate::mounts::{self, MountEntry};

const TERM_GRACE: Duration = Duration::from_secs(2);
const KILL_GRACE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

/// Filesystem types with nothing to flush.
const VIRTUAL_FS: &[&str] = &[
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "tmpfs",
    "cgroup",
    "cgroup2",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "ramfs",
    "rootfs",
    "nsfs",
];

pub fn shut_down(reason: &str) -> ! {
    tracing::info!(reason, "shutting down the guest");
    terminate_everything();
    sync();
    unmount_disks();
    sync();
    let err = match reboot(RebootMode::RB_AUTOBOOT) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    tracing::error!(cause = %err, "reboot failed; halting here");
    loop {
        sleep(Duration::from_secs(3600));
    }
}

fn terminate_everything() {
    // kill(-1) reaches every process except PID 1 (and kernel threads).
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    if wait_until_alone(TERM_GRACE) {
        return;
    }
    tracing::warn!(
        left = live_processes().len(),
        "processes ignored SIGTERM; killing them"
    );
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    if !wait_until_alone(KILL_GRACE) {
        tracing::warn!(left = ?live_processes(), "processes survived SIGKILL");
    }
}

fn wait_until_alone(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        reap();
        if live_processes().is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(POLL);
    }
}

fn reap() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Pids of user processes other than this one that are still running (not zombies).
fn live_processes() -> Vec<i32> {
    let me = getpid().as_raw();
    let Ok(entries) = fs_err::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            fs_err::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, ppid)| is_live_user_process(pid, state, ppid))
        })
        .collect()
}

/// State letter and parent pid from a `/proc/<pid>/stat` line (the command name may
/// contain spaces and parentheses, so parse after the last `)`).
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

fn is_live_user_process(pid: i32, state: char, ppid: i32) -> bool {
    let kernel_thread = pid == 2 || ppid == 2;
    !kernel_thread && state != 'Z' && state != 'X'
}

fn unmount_disks() {
    let entries = match mounts::read_mountinfo() {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(cause = %e, "cannot read the mount table; only remounting / read-only");
            Vec::new()
        }
    };
    // The overlay root first: remounting it read-only syncs its upper layer.
    remount_ro("/");
    for entry in disk_mounts(&entries).into_iter().rev() {
        match umount2(entry.target.as_str(), MntFlags::empty()) {
            Ok(()) => tracing::info!(target = %entry.target, "unmounted"),
            Err(_) => remount_ro(&entry.target),
        }
    }
}

fn disk_mounts(entries: &[MountEntry]) -> Vec<&MountEntry> {
    entries
        .iter()
        .filter(|e| e.target != "/" && !VIRTUAL_FS.contains(&e.fstype.as_str()))
        .collect()
}

fn remount_ro(target: &str) {
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    match mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
        Ok(()) => tracing::info!(target, "remounted read-only"),
        Err(e) => tracing::warn!(target, cause = %e, "cannot unmount or remount read-only"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name_parses() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100";
        assert_eq!(parse_stat(line), Some(('S', 1)));
    }

    #[test]
    fn kernel_threads_and_zombies_are_not_live() {
        assert!(!is_live_user_process(17, 'I', 2));
        assert!(!is_live_user_process(99, 'Z', 1));
        assert!(is_live_user_process(99, 'S', 1));
    }

    #[test]
    fn only_disk_filesystems_are_unmounted() {
        let entries = mounts::parse_mountinfo(
            "22 1 0:21 / / rw - overlay overlay rw\n\
             23 22 0:5 / /proc rw - proc proc rw\n\
             24 22 254:16 / /mnt/upper rw - ext4 /dev/vdb rw\n",
        );

        let got: Vec<&str> = disk_mounts(&entries)
            .iter()
            .map(|e| e.target.as_str())
            .collect();

        assert_eq!(got, ["/mnt/upper"]);
    }
}
