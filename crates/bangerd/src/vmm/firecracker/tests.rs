use std::os::fd::AsFd;
use std::time::Duration;

use banger_wire::Diagnostic;

use super::*;
use crate::vmm::NetAttach;

fn spec(dir: &Path) -> LaunchSpec {
    LaunchSpec {
        vm_id: "0123abcd".into(),
        name: "box".into(),
        vcpu: 2,
        memory_mib: 512,
        kernel_elf: dir.join("vmlinux"),
        kernel_bzimage: dir.join("vmlinuz"),
        initrd: dir.join("initrd"),
        boot_args: "banger.id=0123abcd".into(),
        root_disk: dir.join("root.ext4"),
        upper_disk: dir.join("upper.ext4"),
        net: Some(NetAttach {
            tap: "bgtap0".into(),
            mac: "06:00:00:00:00:01".into(),
        }),
        runtime_dir: dir.join("run"),
        serial_log: dir.join("serial.log"),
        vmm_log: dir.join("firecracker.log"),
    }
}

fn plain(dir: &Path) -> Layout {
    Layout {
        runtime_dir: dir.join("run"),
        jail: None,
    }
}

fn jailed(dir: &Path, vm_id: &str) -> Layout {
    Firecracker {
        binary: "/usr/local/bin/firecracker".into(),
        jail: Some(Jail {
            jailer: "/usr/local/bin/jailer".into(),
            user: Some((999, 995)),
        }),
    }
    .layout(&dir.join("run"), vm_id)
}

fn executable(path: &Path, text: &str) {
    crate::test_support::write_script(path, text);
}

#[test]
fn the_agent_listens_on_the_vsock_port_suffix() {
    let path = agent_listen_path(Path::new("/run/banger/vms/abc"));

    assert_eq!(path, Path::new("/run/banger/vms/abc/vsock.sock_10789"));
}

#[test]
fn boot_args_start_with_console_and_reboot_policy() {
    let dir = Path::new("/x");

    let boot = boot_source(&spec(dir), &plain(dir));

    assert_eq!(
        boot.boot_args.as_deref(),
        Some("console=ttyS0 reboot=k panic=-1 pci=off banger.id=0123abcd")
    );
    assert_eq!(boot.kernel_image_path, Path::new("/x/vmlinux"));
    assert_eq!(boot.initrd_path.as_deref(), Some(Path::new("/x/initrd")));
}

#[test]
fn base_is_read_only_and_upper_is_writable() {
    let [root, upper] = drives(&spec(Path::new("/x")), &plain(Path::new("/x")));

    assert_eq!(
        (
            root.drive_id.as_str(),
            root.is_read_only,
            root.is_root_device
        ),
        ("root", true, false)
    );
    assert_eq!(
        (
            upper.drive_id.as_str(),
            upper.is_read_only,
            upper.is_root_device
        ),
        ("upper", false, false)
    );
    assert_eq!(upper.path_on_host, Path::new("/x/upper.ext4"));
}

#[test]
fn a_jailed_vm_names_its_files_relative_to_the_chroot() {
    let dir = Path::new("/x");
    let layout = jailed(dir, "0123abcd");

    let boot = boot_source(&spec(dir), &layout);
    let [root, upper] = drives(&spec(dir), &layout);

    assert_eq!(boot.kernel_image_path, Path::new("/vmlinux"));
    assert_eq!(boot.initrd_path.as_deref(), Some(Path::new("/initrd")));
    assert_eq!(
        (root.path_on_host, upper.path_on_host),
        ("/root.ext4".into(), "/upper.ext4".into())
    );
    assert_eq!(layout.api(API_SOCKET), Path::new("/fc.sock"));
}

#[test]
fn a_jailed_vm_has_its_sockets_at_the_jail_root_on_the_host() {
    let layout = jailed(Path::new("/x"), "0123abcd");

    assert_eq!(
        layout.host(API_SOCKET),
        Path::new("/x/run/jail/firecracker/0123abcd/root/fc.sock")
    );
    assert_eq!(
        layout.agent_socket(),
        Path::new("/x/run/jail/firecracker/0123abcd/root/vsock.sock_10789")
    );
}

#[test]
fn the_jail_of_a_launched_vm_is_found_from_its_api_socket() {
    let layout = jailed(Path::new("/x"), "0123abcd");
    let launched = launched(42, &layout, Some(999));

    let jail = launched_jail(&launched);

    assert_eq!(jail, layout.jail);
}

#[test]
fn version_is_read_from_the_first_matching_line() {
    let output = "Firecracker v1.16.1\n\n";

    assert_eq!(parse_version(output).as_deref(), Some("1.16.1"));
}

#[test]
fn locate_prefers_the_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("fc-custom");
    executable(&binary, "#!/bin/sh\n");
    let env_binary = binary.clone().into_os_string();

    let found = Firecracker::locate_with(&|k| match k {
        BINARY_ENV => Some(env_binary.clone()),
        _ => Some("/nonexistent".into()),
    })
    .unwrap();

    assert_eq!(found.binary, binary);
}

#[test]
fn locate_reports_a_missing_override_by_its_path() {
    let err = Firecracker::locate_with(&|k| (k == BINARY_ENV).then(|| "/nope/firecracker".into()))
        .unwrap_err();

    assert_eq!(err.to_string(), "/nope/firecracker not found");
    assert!(err.hint().unwrap().contains("BANGER_FIRECRACKER"));
}

#[test]
fn locate_finds_the_jailer_beside_firecracker_or_in_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let (beside, custom) = (dir.path().join("jailer"), dir.path().join("my-jailer"));
    executable(&dir.path().join("firecracker"), "#!/bin/sh\n");
    executable(&beside, "#!/bin/sh\n");
    executable(&custom, "#!/bin/sh\n");
    let path = dir.path().as_os_str().to_owned();
    let custom_env = custom.clone().into_os_string();

    let found = Firecracker::locate_with(&|k| (k == "PATH").then(|| path.clone())).unwrap();
    let overridden = Firecracker::locate_with(&|k| match k {
        "PATH" => Some(path.clone()),
        jail::JAILER_ENV => Some(custom_env.clone()),
        _ => None,
    })
    .unwrap();

    assert_eq!(found.jail.map(|j| j.jailer), Some(beside));
    assert_eq!(overridden.jail.map(|j| j.jailer), Some(custom));
}

#[test]
fn without_a_jailer_firecracker_runs_unjailed() {
    let dir = tempfile::tempdir().unwrap();
    executable(&dir.path().join("firecracker"), "#!/bin/sh\n");
    let path = dir.path().as_os_str().to_owned();

    let found = Firecracker::locate_with(&|k| (k == "PATH").then(|| path.clone())).unwrap();

    assert_eq!(found.jail, None);
}

#[test]
fn a_missing_jail_user_is_an_error_that_says_how_to_create_it() {
    let jail = Jail {
        jailer: "/usr/local/bin/jailer".into(),
        user: None,
    };

    let err = jail.user().unwrap_err();

    assert_eq!(
        err.to_string(),
        "the VMM user \"banger-vmm\" does not exist"
    );
    assert!(err.hint().unwrap().contains("useradd --system"));
}

#[test]
fn locate_searches_path_for_an_executable() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    fs_err::create_dir_all(&a).unwrap();
    fs_err::create_dir_all(&b).unwrap();
    fs_err::write(a.join("firecracker"), "not executable").unwrap();
    executable(&b.join("firecracker"), "#!/bin/sh\n");
    let path = std::env::join_paths([&a, &b]).unwrap();

    let found = Firecracker::locate_with(&|k| (k == "PATH").then(|| path.clone())).unwrap();

    assert_eq!(found.binary, b.join("firecracker"));
}

#[tokio::test]
async fn a_vmm_that_exits_at_once_is_reported_with_its_output_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    fs_err::create_dir_all(&spec.runtime_dir).unwrap();
    fs_err::write(&spec.serial_log, "previous boot\n").unwrap();
    let binary = dir.path().join("firecracker");
    executable(
        &binary,
        "#!/bin/sh\necho \"Error: bad option $1\" >&2\nexit 3\n",
    );
    let vmm = Firecracker { binary, jail: None };

    let err = vmm.launch(&spec).await.unwrap_err();

    let VmmError::DiedDuringStart { detail, .. } = &err else {
        panic!("expected DiedDuringStart, got {err:?}");
    };
    assert!(detail.contains("exit status: 3"), "{detail}");
    assert!(detail.ends_with("Error: bad option --api-sock"), "{detail}");
    assert_eq!(fs_err::read_dir(&spec.runtime_dir).unwrap().count(), 0);
}

#[tokio::test]
async fn cancelling_a_launch_kills_the_vmm() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path());
    fs_err::create_dir_all(&spec.runtime_dir).unwrap();
    let pid_file = dir.path().join("pid");
    let binary = dir.path().join("firecracker");
    // Never opens an API socket, so the launch waits until it is dropped.
    executable(
        &binary,
        &format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 60\n",
            pid_file.display()
        ),
    );
    let vmm = Firecracker { binary, jail: None };

    let outcome = tokio::time::timeout(Duration::from_millis(300), vmm.launch(&spec)).await;
    let pid: i32 = fs_err::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let exited = wait_exit(pid);

    assert!(outcome.is_err(), "launch finished: {outcome:?}");
    assert!(exited, "the cancelled launch left {pid} running");
}

/// Whether `pid` exits (or is already gone) within 5 s.
fn wait_exit(pid: i32) -> bool {
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).unwrap(),
        rustix::process::PidfdFlags::empty(),
    );
    match pidfd {
        Err(e) => e == rustix::io::Errno::SRCH,
        Ok(fd) => {
            let mut fds = [nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap() == 1
        }
    }
}
