//! `Qemu::launch` against a fake `qemu-system-x86_64` script: who it runs as, what it
//! is handed, and what is left when it refuses or the launch is dropped. Needs root and
//! the VMM user; each test says why it skips.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::*;

/// Root and the VMM user, or why not.
fn can_switch_users() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("needs root to start a process as the VMM user".into());
    }
    match super::super::user::lookup(Path::new("/etc/passwd"), VMM_USER) {
        Some(_) => Ok(()),
        None => Err(format!(
            "needs the user {VMM_USER}: {}",
            super::super::user::CREATE_VMM_USER
        )),
    }
}

/// A spec over empty files in `dir`, and a fake QEMU running `script`.
fn fixture(dir: &Path, script: &str) -> (Qemu, LaunchSpec) {
    // The VMM user must reach the fake binary.
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["bzImage", "initrd.img", "rootfs.ext4", "upper.ext4"] {
        fs_err::write(dir.join(f), b"").unwrap();
    }
    fs_err::create_dir(dir.join("run")).unwrap();
    let binary = dir.join("qemu");
    crate::test_support::write_script(&binary, &format!("#!/bin/sh\n{script}\n"));
    let spec = LaunchSpec {
        vm_id: "abc".into(),
        name: "web".into(),
        vcpu: 1,
        memory_mib: 128,
        kernel_elf: dir.join("vmlinux"),
        kernel_bzimage: dir.join("bzImage"),
        initrd: dir.join("initrd.img"),
        boot_args: "banger.token=sekrit".into(),
        root_disk: dir.join("rootfs.ext4"),
        upper_disk: dir.join("upper.ext4"),
        net: None,
        runtime_dir: dir.join("run"),
        serial_log: dir.join("serial.log"),
        vmm_log: dir.join("vmm.log"),
    };
    let qemu = Qemu {
        binary,
        accel: "tcg",
        user: VMM_USER.into(),
    };
    (qemu, spec)
}

#[tokio::test]
async fn qemu_runs_as_the_vmm_user_with_its_descriptors_and_its_refusal_is_reported() {
    if let Err(why) = can_switch_users() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (qemu, spec) = fixture(
        dir.path(),
        "echo \"uid=$(id -u) groups=$(id -G)\" >&2\n\
         cat /proc/self/fd/8 >&2; echo >&2\n\
         ls /proc/self/fd | sort -n | tr '\\n' ' ' >&2\n\
         exit 1",
    );
    let user = super::super::user::lookup(Path::new("/etc/passwd"), VMM_USER).unwrap();
    // As the daemon does at start: what the test runner inherited stays here.
    crate::vm::process::close_inherited_on_exec();

    let err = qemu.launch(&spec).await.unwrap_err();

    let VmmError::Refused { message, .. } = err else {
        panic!("expected a refusal, got {err:?}");
    };
    assert!(
        message.starts_with(&format!("uid={} groups={}\n", user.uid, user.gid)),
        "{message}"
    );
    assert!(message.contains("banger.token=sekrit"), "{message}");
    // stdio, the nine handed-over descriptors (the guest's memory at 12), and `ls`'s
    // own directory.
    assert!(
        message.ends_with("0 1 2 3 4 5 6 7 8 9 10 11 12"),
        "{message}"
    );
}

#[tokio::test]
async fn dropping_a_launch_kills_qemu() {
    if let Err(why) = can_switch_users() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Never greets on QMP, so the launch waits until it is dropped.
    let (qemu, spec) = fixture(dir.path(), "echo $$ >&2\nexec sleep 60");

    let outcome = tokio::time::timeout(Duration::from_millis(500), qemu.launch(&spec)).await;

    assert!(outcome.is_err(), "launch finished: {outcome:?}");
    let pid: u32 = fs_err::read_to_string(&spec.vmm_log)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Dead: gone, or a zombie nobody has reaped yet.
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        fs_err::read_to_string(format!("/proc/{pid}/stat"))
            .map_or(true, |stat| stat.contains(") Z "))
    });
    assert!(gone, "the dropped launch left qemu {pid} running");
}
