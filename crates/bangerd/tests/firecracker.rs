//! The Firecracker backend against the real `firecracker` binary.
//!
//! Each test skips (with the reason on stderr) unless firecracker is on `PATH` or in
//! `BANGER_FIRECRACKER`, the test runs as root, and `/dev/kvm` exists.
//!
//! The guest kernel is `BANGER_TEST_VMLINUX` when set (e.g. an image's ELF vmlinux);
//! otherwise a 4-byte ELF "kernel" that halts its vCPU forever. Both exercise the
//! whole API and the process lifecycle; no guest userspace is needed (and on hosts
//! without hardware virtualisation none would run).

// Fixture helpers outside #[test] fns unwrap too, and skips are reported on stderr.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bangerd::vmm::firecracker::{self, models::InstanceState, Firecracker};
use bangerd::vmm::{AgentEndpoint, LaunchSpec, Launched, NetAttach, SnapshotFiles, Vmm, VmmError};

/// Firecracker, or `None` after saying why the test cannot run here.
fn firecracker_or_skip(test: &str) -> Option<Firecracker> {
    let reason = if !nix::unistd::geteuid().is_root() {
        "not root".to_string()
    } else if !Path::new("/dev/kvm").exists() {
        "/dev/kvm is missing".to_string()
    } else {
        match Firecracker::locate() {
            Ok(fc) => return Some(fc),
            Err(e) => e.to_string(),
        }
    };
    eprintln!("skipping {test}: {reason}");
    None
}

/// A VM's files in a temp dir, with the agent socket bound the way the daemon does.
struct Fixture {
    dir: tempfile::TempDir,
    spec: LaunchSpec,
    _agent: std::os::unix::net::UnixListener,
}

impl Fixture {
    fn new(vm_id: &str) -> Fixture {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("bangerd=debug")
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let kernel_elf = std::env::var_os("BANGER_TEST_VMLINUX")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                fs_err::write(path("vmlinux"), halting_elf()).unwrap();
                path("vmlinux")
            });
        fs_err::write(path("initrd"), b"not a real initramfs").unwrap();
        for disk in ["root.ext4", "upper.ext4"] {
            fs_err::File::create(path(disk))
                .unwrap()
                .set_len(8 << 20)
                .unwrap();
        }
        fs_err::create_dir(path("run")).unwrap();
        let agent =
            std::os::unix::net::UnixListener::bind(firecracker::agent_listen_path(&path("run")))
                .unwrap();
        let spec = LaunchSpec {
            vm_id: vm_id.into(),
            name: vm_id.into(),
            vcpu: 1,
            memory_mib: 128,
            kernel_elf,
            kernel_bzimage: path("unused-bzimage"),
            initrd: path("initrd"),
            boot_args: format!("banger.id={vm_id}"),
            root_disk: path("root.ext4"),
            upper_disk: path("upper.ext4"),
            net: None,
            runtime_dir: path("run"),
            serial_log: path("serial.log"),
            vmm_log: path("firecracker.log"),
        };
        Fixture {
            dir,
            spec,
            _agent: agent,
        }
    }

    /// Names in the runtime dir, sorted.
    fn runtime_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(&self.spec.runtime_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn vmm_log(&self) -> String {
        fs_err::read_to_string(self.dir.path().join("firecracker.log")).unwrap_or_default()
    }
}

/// An x86_64 ELF whose only code, at 1 MiB, is `cli; hlt; jmp hlt`.
fn halting_elf() -> Vec<u8> {
    const ENTRY: u64 = 0x10_0000;
    const CODE: [u8; 4] = [0xfa, 0xf4, 0xeb, 0xfd];
    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86_64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&ENTRY.to_le_bytes()); // e_entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R+X
    let code_offset = 64 + 56;
    for word in [code_offset, ENTRY, ENTRY, 4, 4, 0x1000] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(&CODE);
    elf
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    fs_err::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// SIGKILLs `pid` and blocks until it has exited (its pidfd turns readable).
fn kill_and_wait(pid: u32) {
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .unwrap();
    nix::sys::signal::kill(self::pid(pid), nix::sys::signal::SIGKILL).unwrap();
    let mut fds = [nix::poll::PollFd::new(
        pidfd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16)).unwrap();
    assert_eq!(ready, 1, "firecracker {pid} did not exit after SIGKILL");
}

fn pid(pid: u32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(pid as i32)
}

/// Pids of processes whose command line carries `--id <vm_id>`.
fn processes_for(vm_id: &str) -> Vec<u32> {
    fs_err::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.windows(2)
                .any(|w| w[0] == b"--id" && w[1] == vm_id.as_bytes())
                && alive(*pid)
        })
        .collect()
}

fn unique_id(tag: &str) -> String {
    format!("fctest-{tag}-{}", std::process::id())
}

async fn state(fc: &Firecracker, launched: &Launched) -> InstanceState {
    fc.api(launched).instance_info().await.unwrap().state
}

#[test]
fn the_vmm_outlives_the_launching_task_and_runtime() {
    let Some(fc) = firecracker_or_skip("the_vmm_outlives_the_launching_task_and_runtime") else {
        return;
    };
    let fixture = Fixture::new(&unique_id("outlive"));
    let launcher = tokio::runtime::Runtime::new().unwrap();
    let (vmm, spec) = (fc.clone(), fixture.spec.clone());
    let started = std::time::Instant::now();

    // The launch runs in a task of a runtime that is then shut down: the request and
    // the daemon that started the VM are both gone.
    let launched = launcher
        .block_on(launcher.spawn(async move { vmm.launch(&spec).await }))
        .unwrap()
        .unwrap();
    eprintln!("launch took {:?}", started.elapsed());
    drop(launcher);
    std::thread::sleep(Duration::from_secs(3));
    let after = tokio::runtime::Runtime::new().unwrap();
    let state = after.block_on(state(&fc, &launched));

    assert!(alive(launched.pid), "firecracker {} died", launched.pid);
    assert_eq!(state, InstanceState::Running);
    // Its own process group: a signal to the daemon's group does not reach it.
    assert_eq!(
        nix::unistd::getpgid(Some(pid(launched.pid))).unwrap(),
        pid(launched.pid)
    );
    assert_eq!(
        launched.agent,
        AgentEndpoint::Listen(fixture.spec.runtime_dir.join("vsock.sock_10789"))
    );
    kill_and_wait(launched.pid);
    firecracker::remove_sockets(&fixture.spec.runtime_dir);
}

#[tokio::test]
async fn pause_and_resume_change_the_instance_state() {
    let Some(fc) = firecracker_or_skip("pause_and_resume_change_the_instance_state") else {
        return;
    };
    let fixture = Fixture::new(&unique_id("pause"));
    let launched = fc.launch(&fixture.spec).await.unwrap();

    fc.pause(&launched).await.unwrap();
    let paused = state(&fc, &launched).await;
    fc.resume(&launched).await.unwrap();
    let resumed = state(&fc, &launched).await;

    assert_eq!(
        (paused, resumed),
        (InstanceState::Paused, InstanceState::Running)
    );
    kill_and_wait(launched.pid);
    firecracker::remove_sockets(&fixture.spec.runtime_dir);
}

#[tokio::test]
async fn shutdown_request_then_kill_leaves_nothing_behind() {
    let Some(fc) = firecracker_or_skip("shutdown_request_then_kill_leaves_nothing_behind") else {
        return;
    };
    let fixture = Fixture::new(&unique_id("shutdown"));
    let launched = fc.launch(&fixture.spec).await.unwrap();
    let running_files = fixture.runtime_files();

    fc.request_shutdown(&launched).await.unwrap();
    kill_and_wait(launched.pid);
    firecracker::remove_sockets(&fixture.spec.runtime_dir);

    assert_eq!(running_files, ["fc.sock", "vsock.sock", "vsock.sock_10789"]);
    assert!(!alive(launched.pid));
    assert_eq!(fixture.runtime_files(), ["vsock.sock_10789"]);
    assert!(fixture.vmm_log().contains("SendCtrlAltDel"));
}

#[tokio::test]
async fn zero_vcpus_are_refused_in_firecrackers_words() {
    let Some(fc) = firecracker_or_skip("zero_vcpus_are_refused_in_firecrackers_words") else {
        return;
    };
    let mut fixture = Fixture::new(&unique_id("vcpu0"));
    fixture.spec.vcpu = 0;

    let err = fc.launch(&fixture.spec).await.unwrap_err();

    let VmmError::Refused { message, .. } = &err else {
        panic!("expected Refused, got {err:?}");
    };
    assert!(
        message.contains("The number of vCPUs must be greater than 0"),
        "{message}"
    );
    assert_eq!(processes_for(&fixture.spec.vm_id), Vec::<u32>::new());
    assert_eq!(fixture.runtime_files(), ["vsock.sock_10789"]);
}

#[tokio::test]
async fn a_missing_kernel_is_refused_and_nothing_is_left_running() {
    let Some(fc) = firecracker_or_skip("a_missing_kernel_is_refused_and_nothing_is_left_running")
    else {
        return;
    };
    let mut fixture = Fixture::new(&unique_id("nokernel"));
    fixture.spec.kernel_elf = fixture.dir.path().join("no-such-vmlinux");

    let err = fc.launch(&fixture.spec).await.unwrap_err();

    assert_eq!(
        err.to_string(),
        "firecracker refused the request: Boot source error: The kernel file cannot be \
         opened: No such file or directory (os error 2)"
    );
    assert_eq!(processes_for(&fixture.spec.vm_id), Vec::<u32>::new());
    assert_eq!(fixture.runtime_files(), ["vsock.sock_10789"]);
}

#[tokio::test]
async fn a_tap_is_attached_to_the_guest_nic() {
    let Some(fc) = firecracker_or_skip("a_tap_is_attached_to_the_guest_nic") else {
        return;
    };
    let tap = Tap::create(&format!("bgfc{}", std::process::id() % 100_000));
    let mut fixture = Fixture::new(&unique_id("tap"));
    fixture.spec.net = Some(NetAttach {
        tap: tap.0.clone(),
        mac: "06:00:ac:10:00:02".into(),
    });

    let launched = fc.launch(&fixture.spec).await.unwrap();
    let carrier = fs_err::read_to_string(format!("/sys/class/net/{}/carrier", tap.0)).unwrap();

    // A tap has carrier only while a process holds it open.
    assert_eq!(carrier.trim(), "1");
    kill_and_wait(launched.pid);
    firecracker::remove_sockets(&fixture.spec.runtime_dir);
}

/// A host tap device, deleted on drop.
struct Tap(String);

impl Tap {
    fn create(name: &str) -> Tap {
        let ip = |args: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "ip {args:?} failed");
        };
        ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        let tap = Tap(name.into());
        ip(&["link", "set", name, "up"]);
        tap
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .status();
    }
}

/// Paths the process has open, and the files it maps.
fn open_files(pid: u32) -> (Vec<PathBuf>, String) {
    let fds = fs_err::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect();
    let maps = fs_err::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    (fds, maps)
}

#[tokio::test]
async fn a_snapshot_resumes_as_a_clone_with_its_own_disk_and_mapped_memory() {
    let Some(fc) =
        firecracker_or_skip("a_snapshot_resumes_as_a_clone_with_its_own_disk_and_mapped_memory")
    else {
        return;
    };
    let source = Fixture::new(&unique_id("snapsrc"));
    let launched = fc.launch(&source.spec).await.unwrap();
    let dir = source.dir.path().join("snapshot");
    fs_err::create_dir(&dir).unwrap();
    let snap = SnapshotFiles {
        disk: dir.join("upper.ext4"),
        dir,
    };
    let clone = Fixture::new(&unique_id("snapclone"));

    fc.pause(&launched).await.unwrap();
    // The daemon's sparse copy of the paused VM's disk.
    fs_err::copy(&source.spec.upper_disk, &snap.disk).unwrap();
    let started = std::time::Instant::now();
    fc.snapshot(&launched, &source.spec.upper_disk, &snap)
        .await
        .unwrap();
    eprintln!("snapshot create took {:?}", started.elapsed());
    fc.resume(&launched).await.unwrap();
    let started = std::time::Instant::now();
    let restored = fc.restore(&clone.spec, &snap).await.unwrap();
    eprintln!("snapshot restore took {:?}", started.elapsed());
    let states = (state(&fc, &launched).await, state(&fc, &restored).await);
    let (source_fds, _) = open_files(launched.pid);
    let (clone_fds, clone_maps) = open_files(restored.pid);
    let clone_runtime = clone.runtime_files();
    kill_and_wait(restored.pid);
    kill_and_wait(launched.pid);
    firecracker::remove_sockets(&source.spec.runtime_dir);
    firecracker::remove_sockets(&clone.spec.runtime_dir);

    assert_eq!(states, (InstanceState::Running, InstanceState::Running));
    // Each VM writes its own disk; neither writes the snapshot's copy.
    assert!(
        source_fds.contains(&source.spec.upper_disk),
        "{source_fds:?}"
    );
    assert!(clone_fds.contains(&clone.spec.upper_disk), "{clone_fds:?}");
    assert!(!clone_fds.contains(&snap.disk), "{clone_fds:?}");
    assert!(!source_fds.contains(&snap.disk), "{source_fds:?}");
    // Guest memory is the snapshot's file, mapped (not read into anonymous memory).
    let memory = snap.dir.join("firecracker.memory");
    assert!(
        clone_maps.contains(&*memory.to_string_lossy()),
        "memory file not mapped:\n{clone_maps}"
    );
    // The clone's vsock device listens in the clone's own runtime dir.
    assert_eq!(clone_runtime, ["fc.sock", "vsock.sock", "vsock.sock_10789"]);
}
