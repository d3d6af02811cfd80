use std::os::unix::fs::MetadataExt;

use super::*;

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[test]
fn the_jailer_gets_the_vm_the_user_and_the_chroot_and_firecracker_the_rest() {
    let jail = JailDir::new(Path::new("/run/banger/vms/ab12"), "firecracker", "ab12");
    let fc_args = ["--api-sock", "/fc.sock"].map(OsString::from);

    let args = argv(
        Path::new("/usr/local/bin/firecracker"),
        "ab12",
        (999, 995),
        &jail,
        false,
        &fc_args,
    );

    assert_eq!(
        args,
        [
            "--id",
            "ab12",
            "--exec-file",
            "/usr/local/bin/firecracker",
            "--uid",
            "999",
            "--gid",
            "995",
            "--chroot-base-dir",
            "/run/banger/vms/ab12/jail",
            "--",
            "--api-sock",
            "/fc.sock",
        ]
        .map(OsString::from)
    );
}

#[test]
fn with_cgroup_v2_the_vm_gets_a_cgroup_under_banger() {
    let jail = JailDir::new(Path::new("/r"), "firecracker", "ab12");

    let args = argv(Path::new("/fc"), "ab12", (1, 1), &jail, true, &[]);

    let tail: Vec<&str> = args[10..].iter().map(|a| a.to_str().unwrap()).collect();
    assert_eq!(
        tail,
        [
            "--cgroup-version",
            "2",
            "--parent-cgroup",
            "banger",
            "--cgroup",
            "cpu.weight=100",
            "--"
        ]
    );
}

#[test]
fn the_chroot_is_where_the_jailer_builds_it_and_names_are_chroot_relative() {
    let jail = JailDir::new(Path::new("/run/banger/vms/ab12"), "firecracker", "ab12");

    assert_eq!(
        jail.root,
        Path::new("/run/banger/vms/ab12/jail/firecracker/ab12/root")
    );
    assert_eq!(
        jail.host("upper.ext4"),
        Path::new("/run/banger/vms/ab12/jail/firecracker/ab12/root/upper.ext4")
    );
    assert_eq!(inside("upper.ext4"), Path::new("/upper.ext4"));
}

#[test]
fn the_jailer_variable_wins_over_the_one_beside_firecracker() {
    let dir = tempfile::tempdir().unwrap();
    let custom = dir.path().join("custom-jailer");
    crate::test_support::write_script(&custom, "#!/bin/sh\n");
    let env = custom.clone().into_os_string();

    let found = Jail::locate(&dir.path().join("firecracker"), &|k| {
        (k == JAILER_ENV).then(|| env.clone())
    });
    let beside = Jail::locate(&dir.path().join("firecracker"), &|_| None);

    assert_eq!(found, Some(custom));
    assert_eq!(beside, None);
}

#[test]
fn a_file_on_the_same_filesystem_is_hard_linked_into_the_jail() {
    let dir = tempfile::tempdir().unwrap();
    let jail = JailDir::new(dir.path(), "firecracker", "vm1");
    let disk = dir.path().join("upper.ext4");
    fs_err::write(&disk, "disk").unwrap();
    create(&jail).unwrap();

    link_in(&jail.root, &disk, "upper.ext4", true).unwrap();

    let linked = fs_err::metadata(jail.host("upper.ext4")).unwrap();
    assert_eq!(linked.ino(), fs_err::metadata(&disk).unwrap().ino());
    remove(&jail);
    assert!(!jail.base.exists());
    assert_eq!(fs_err::read_to_string(&disk).unwrap(), "disk");
}

#[test]
fn a_file_with_a_second_link_is_not_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("firecracker.memory");
    fs_err::write(&file, "memory").unwrap();
    fs_err::hard_link(&file, dir.path().join("kept-by-the-vmm")).unwrap();

    let err = take_back(&file, euid(), 0, 0o640).unwrap_err();

    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("2 links"), "{err}");
}

#[test]
fn a_symlink_is_not_taken_back() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    fs_err::write(&target, "x").unwrap();
    let file = dir.path().join("firecracker.vmstate");
    std::os::unix::fs::symlink(&target, &file).unwrap();

    let err = take_back(&file, euid(), 0, 0o640).unwrap_err();

    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
}

#[tokio::test]
async fn a_socket_of_the_jail_user_is_connected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fc.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();

    let connected = connect_owned(&path, euid()).await;

    assert!(connected.is_ok(), "{connected:?}");
}

#[tokio::test]
async fn a_symlink_in_place_of_the_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("elsewhere.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&real).unwrap();
    let path = dir.path().join("fc.sock");
    std::os::unix::fs::symlink(&real, &path).unwrap();

    let err = connect_owned(&path, euid()).await.unwrap_err();

    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
}

#[tokio::test]
async fn a_socket_of_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fc.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();

    let err = connect_owned(&path, euid() + 1).await.unwrap_err();

    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("not a socket owned by"), "{err}");
}

#[test]
fn a_symlink_in_place_of_the_lend_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jail = JailDir::new(dir.path(), "firecracker", "vm1");
    fs_err::create_dir_all(&jail.root).unwrap();
    std::os::unix::fs::symlink(dir.path(), jail.host(LEND_DIR)).unwrap();

    let opened = LendDir::open(&jail);

    assert_eq!(
        opened.err().map(|e| e.kind()),
        Some(io::ErrorKind::PermissionDenied)
    );
}

#[test]
fn giving_a_symlink_away_leaves_its_target_alone() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    fs_err::write(&target, "x").unwrap();
    let link = dir.path().join("vsock.sock_10789");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let before = fs_err::metadata(&target).unwrap().uid();

    let _ = give(&link, (euid(), 12345));

    assert_eq!(fs_err::metadata(&target).unwrap().uid(), before);
    assert_ne!(fs_err::metadata(&target).unwrap().gid(), 12345);
}
