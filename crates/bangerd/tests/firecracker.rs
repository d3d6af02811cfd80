//! The Firecracker backend against the real `firecracker` binary.
//!
//! Each test skips (with the reason on stderr) unless firecracker is on `PATH` or in
//! `BANGER_FIRECRACKER`, the test runs as root, and `/dev/kvm` exists. Most run twice:
//! unjailed, and `jailed_*` under the jailer (beside firecracker or `BANGER_JAILER`),
//! which also needs the `banger-vmm` user.
//!
//! The guest kernel is `BANGER_TEST_VMLINUX` when set (e.g. an image's ELF vmlinux);
//! otherwise a 4-byte ELF "kernel" that halts its vCPU forever. Both exercise the
//! whole API and the process lifecycle; no guest userspace is needed (and on hosts
//! without hardware virtualisation none would run).

// Fixture helpers outside #[test] fns unwrap too, and skips are reported on stderr.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_wire::Diagnostic;
use bangerd::vmm::firecracker::{models::InstanceState, Firecracker};
use bangerd::vmm::{AgentEndpoint, LaunchSpec, Launched, NetAttach, SnapshotFiles, Vmm, VmmError};

/// Firecracker without its jailer, or `None` after saying why the test cannot run here.
fn firecracker_or_skip(test: &str) -> Option<Firecracker> {
    let reason = if !nix::unistd::geteuid().is_root() {
        "not root".to_string()
    } else if !Path::new("/dev/kvm").exists() {
        "/dev/kvm is missing".to_string()
    } else {
        match Firecracker::locate() {
            Ok(fc) => return Some(Firecracker { jail: None, ..fc }),
            Err(e) => e.to_string(),
        }
    };
    eprintln!("skipping {test}: {reason}");
    None
}

/// Firecracker under its jailer, or `None` after saying why the test cannot run here.
fn jailed_or_skip(test: &str) -> Option<Firecracker> {
    let fc = Firecracker::locate().ok();
    let jail = fc.as_ref().and_then(|fc| fc.jail.as_ref());
    let reason = match (jail, jail.map(|j| j.user())) {
        (None, _) => "no jailer beside firecracker and BANGER_JAILER unset".to_string(),
        (Some(_), Some(Err(e))) => format!("{e} ({})", e.hint().unwrap_or_default()),
        _ => return firecracker_or_skip(test).and(fc),
    };
    eprintln!("skipping {test}: {reason}");
    None
}

/// A VM's files in a temp dir, with the agent socket bound the way the daemon does.
struct Fixture {
    dir: tempfile::TempDir,
    spec: LaunchSpec,
    fc: Firecracker,
    _agent: std::os::unix::net::UnixListener,
}

impl Fixture {
    fn new(fc: &Firecracker, vm_id: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let runtime_dir = dir.path().join("run");
        Fixture::with_runtime_dir(fc, vm_id, dir, runtime_dir)
    }

    fn with_runtime_dir(
        fc: &Firecracker,
        vm_id: &str,
        dir: tempfile::TempDir,
        runtime_dir: PathBuf,
    ) -> Fixture {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("bangerd=debug")
            .with_test_writer()
            .try_init();
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
        fs_err::write(path("firecracker.log"), b"").unwrap();
        fs_err::create_dir_all(&runtime_dir).unwrap();
        let agent_path = fc.agent_listen_path(&runtime_dir, vm_id).unwrap();
        fs_err::create_dir_all(agent_path.parent().unwrap()).unwrap();
        let agent = std::os::unix::net::UnixListener::bind(&agent_path).unwrap();
        fc.share_agent_socket(&agent_path).unwrap();
        let spec = LaunchSpec {
            vm_id: vm_id.into(),
            name: vm_id.into(),
            vcpu: 1,
            memory_mib: 128,
            kernel_elf,
            kernel_bzimage: path("unused-bzimage"),
            initrd: path("initrd"),
            boot_args: format!("banger.id={vm_id} banger.token={}", token(vm_id)),
            root_disk: path("root.ext4"),
            upper_disk: path("upper.ext4"),
            net: None,
            runtime_dir,
            serial_log: path("serial.log"),
            vmm_log: path("firecracker.log"),
        };
        Fixture {
            dir,
            spec,
            fc: fc.clone(),
            _agent: agent,
        }
    }

    /// The directory firecracker creates its sockets in (the jail's root when jailed).
    fn socket_dir(&self) -> PathBuf {
        let agent = self
            .fc
            .agent_listen_path(&self.spec.runtime_dir, &self.spec.vm_id)
            .unwrap();
        agent.parent().unwrap().to_path_buf()
    }

    /// Names of the sockets in [`Fixture::socket_dir`], sorted; empty once it is gone.
    fn sockets(&self) -> Vec<String> {
        let Ok(entries) = fs_err::read_dir(self.socket_dir()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_socket())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn vmm_log(&self) -> String {
        fs_err::read_to_string(self.dir.path().join("firecracker.log")).unwrap_or_default()
    }

    /// Kills the VMM and removes what its run left, as the daemon's supervisor does.
    fn kill(&self, launched: &Launched) {
        kill_and_wait(launched.pid);
        self.fc.release(&self.spec.runtime_dir, &self.spec.vm_id);
    }
}

use std::os::unix::fs::FileTypeExt;

/// A stand-in agent token, unique to the VM.
fn token(vm_id: &str) -> String {
    format!("tok3n-{vm_id}-not-on-argv")
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

/// Pids of live processes whose command line carries `--id <vm_id>` (firecracker,
/// the jailer) or `--id=<vm_id>` (firecracker exec'd by the jailer).
fn processes_for(vm_id: &str) -> Vec<u32> {
    let joined = format!("--id={vm_id}");
    fs_err::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = fs_err::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let separate = args
                .windows(2)
                .any(|w| w[0] == b"--id" && w[1] == vm_id.as_bytes());
            (separate || args.contains(&joined.as_bytes())) && alive(*pid)
        })
        .collect()
}

/// Pids of processes whose command line contains `needle`.
fn processes_with_arg(needle: &str) -> Vec<u32> {
    fs_err::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = fs_err::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect()
}

/// The daemon refused to talk to a socket the VMM could have replaced.
fn assert_refused(err: &VmmError) {
    let VmmError::Control { source, .. } = err else {
        panic!("expected Control, got {err:?}");
    };
    assert_eq!(
        source.kind(),
        std::io::ErrorKind::PermissionDenied,
        "{source}"
    );
}

fn unique_id(tag: &str) -> String {
    format!("fctest-{tag}-{}", std::process::id())
}

async fn state(fc: &Firecracker, launched: &Launched) -> InstanceState {
    fc.api(launched).instance_info().await.unwrap().state
}

/// A `Key:\tvalue` line of `/proc/<pid>/status`.
fn status_line(pid: u32, key: &str) -> String {
    let status = fs_err::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap()
        .trim()
        .to_string()
}

fn outlives_the_launching_task_and_runtime(fc: Firecracker, tag: &str) {
    let fixture = Fixture::new(&fc, &unique_id(tag));
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
        AgentEndpoint::Listen(fixture.socket_dir().join("vsock.sock_10789"))
    );
    fixture.kill(&launched);
}

#[test]
fn the_vmm_outlives_the_launching_task_and_runtime() {
    let Some(fc) = firecracker_or_skip("the_vmm_outlives_the_launching_task_and_runtime") else {
        return;
    };
    outlives_the_launching_task_and_runtime(fc, "outlive");
}

#[test]
fn jailed_the_vmm_outlives_the_launching_task_and_runtime() {
    let Some(fc) = jailed_or_skip("jailed_the_vmm_outlives_the_launching_task_and_runtime") else {
        return;
    };
    outlives_the_launching_task_and_runtime(fc, "joutlive");
}

async fn pause_and_resume(fc: Firecracker, tag: &str) {
    let fixture = Fixture::new(&fc, &unique_id(tag));
    let launched = fc.launch(&fixture.spec).await.unwrap();

    fc.pause(&launched).await.unwrap();
    let paused = state(&fc, &launched).await;
    fc.resume(&launched).await.unwrap();
    let resumed = state(&fc, &launched).await;

    assert_eq!(
        (paused, resumed),
        (InstanceState::Paused, InstanceState::Running)
    );
    fixture.kill(&launched);
}

#[tokio::test]
async fn pause_and_resume_change_the_instance_state() {
    let Some(fc) = firecracker_or_skip("pause_and_resume_change_the_instance_state") else {
        return;
    };
    pause_and_resume(fc, "pause").await;
}

#[tokio::test]
async fn jailed_pause_and_resume_change_the_instance_state() {
    let Some(fc) = jailed_or_skip("jailed_pause_and_resume_change_the_instance_state") else {
        return;
    };
    pause_and_resume(fc, "jpause").await;
}

/// Shuts down, kills and releases a VM; returns its sockets while it ran.
async fn shutdown_then_kill(fc: &Firecracker, fixture: &Fixture) -> (Launched, Vec<String>) {
    let launched = fc.launch(&fixture.spec).await.unwrap();
    let running_sockets = fixture.sockets();

    fc.request_shutdown(&launched).await.unwrap();
    fixture.kill(&launched);

    assert_eq!(
        running_sockets,
        ["fc.sock", "vsock.sock", "vsock.sock_10789"]
    );
    assert!(!alive(launched.pid));
    assert!(fixture.vmm_log().contains("SendCtrlAltDel"));
    (launched, running_sockets)
}

#[tokio::test]
async fn shutdown_request_then_kill_leaves_nothing_behind() {
    let Some(fc) = firecracker_or_skip("shutdown_request_then_kill_leaves_nothing_behind") else {
        return;
    };
    let fixture = Fixture::new(&fc, &unique_id("shutdown"));

    shutdown_then_kill(&fc, &fixture).await;

    // The agent socket is the daemon's to remove.
    assert_eq!(fixture.sockets(), ["vsock.sock_10789"]);
}

#[tokio::test]
async fn jailed_shutdown_request_then_kill_leaves_nothing_behind() {
    let Some(fc) = jailed_or_skip("jailed_shutdown_request_then_kill_leaves_nothing_behind") else {
        return;
    };
    let fixture = Fixture::new(&fc, &unique_id("jshutdown"));

    shutdown_then_kill(&fc, &fixture).await;

    assert!(!fixture.spec.runtime_dir.join("jail").exists());
    assert!(fixture.spec.upper_disk.exists());
}

async fn zero_vcpus_refused(fc: Firecracker, tag: &str) -> Fixture {
    let mut fixture = Fixture::new(&fc, &unique_id(tag));
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
    assert_eq!(fixture.sockets(), ["vsock.sock_10789"]);
    fixture
}

#[tokio::test]
async fn zero_vcpus_are_refused_in_firecrackers_words() {
    let Some(fc) = firecracker_or_skip("zero_vcpus_are_refused_in_firecrackers_words") else {
        return;
    };
    zero_vcpus_refused(fc, "vcpu0").await;
}

#[tokio::test]
async fn jailed_zero_vcpus_are_refused_in_firecrackers_words() {
    let Some(fc) = jailed_or_skip("jailed_zero_vcpus_are_refused_in_firecrackers_words") else {
        return;
    };
    let fixture = zero_vcpus_refused(fc.clone(), "jvcpu0").await;

    fc.release(&fixture.spec.runtime_dir, &fixture.spec.vm_id);

    assert!(!fixture.spec.runtime_dir.join("jail").exists());
}

async fn missing_kernel_refused(fc: Firecracker, tag: &str) {
    let mut fixture = Fixture::new(&fc, &unique_id(tag));
    fixture.spec.kernel_elf = fixture.dir.path().join("no-such-vmlinux");

    let err = fc.launch(&fixture.spec).await.unwrap_err();

    assert_eq!(
        err.to_string(),
        "firecracker refused the request: Boot source error: The kernel file cannot be \
         opened: No such file or directory (os error 2)"
    );
    assert_eq!(processes_for(&fixture.spec.vm_id), Vec::<u32>::new());
    assert_eq!(fixture.sockets(), ["vsock.sock_10789"]);
    fc.release(&fixture.spec.runtime_dir, &fixture.spec.vm_id);
}

#[tokio::test]
async fn a_missing_kernel_is_refused_and_nothing_is_left_running() {
    let Some(fc) = firecracker_or_skip("a_missing_kernel_is_refused_and_nothing_is_left_running")
    else {
        return;
    };
    missing_kernel_refused(fc, "nokernel").await;
}

#[tokio::test]
async fn jailed_a_missing_kernel_is_refused_and_nothing_is_left_running() {
    let Some(fc) = jailed_or_skip("jailed_a_missing_kernel_is_refused_and_nothing_is_left_running")
    else {
        return;
    };
    missing_kernel_refused(fc, "jnokernel").await;
}

async fn tap_attached(fc: Firecracker, tag: &str, tap_prefix: &str) {
    let tap = Tap::create(&format!("{tap_prefix}{}", std::process::id() % 100_000));
    let mut fixture = Fixture::new(&fc, &unique_id(tag));
    fixture.spec.net = Some(NetAttach {
        tap: tap.0.clone(),
        mac: "06:00:ac:10:00:02".into(),
    });

    let launched = fc.launch(&fixture.spec).await.unwrap();
    let carrier = fs_err::read_to_string(format!("/sys/class/net/{}/carrier", tap.0)).unwrap();

    // A tap has carrier only while a process holds it open.
    assert_eq!(carrier.trim(), "1");
    fixture.kill(&launched);
}

#[tokio::test]
async fn a_tap_is_attached_to_the_guest_nic() {
    let Some(fc) = firecracker_or_skip("a_tap_is_attached_to_the_guest_nic") else {
        return;
    };
    tap_attached(fc, "tap", "bgfc").await;
}

#[tokio::test]
async fn jailed_a_tap_is_attached_to_the_guest_nic() {
    let Some(fc) = jailed_or_skip("jailed_a_tap_is_attached_to_the_guest_nic") else {
        return;
    };
    tap_attached(fc, "jtap", "bgjf").await;
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

/// `(dev, inode)` of a file.
fn inode(path: &Path) -> (u64, u64) {
    let meta = fs_err::metadata(path).unwrap();
    (meta.dev(), meta.ino())
}

/// `(dev, inode)` of the files the process has open, and the inodes it maps. By inode,
/// since a jailed VMM reaches the same files through links in its jail.
fn open_files(pid: u32) -> (Vec<(u64, u64)>, Vec<u64>) {
    let fds = fs_err::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| fs_err::metadata(e.ok()?.path()).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    let maps = fs_err::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mapped = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4)?.parse().ok())
        .collect();
    (fds, mapped)
}

/// Snapshots a running VM of `fc` and restores it as a clone; checks what both have
/// open. Returns the snapshot's files.
async fn snapshot_and_clone(fc: Firecracker, tag: &str) -> (Fixture, SnapshotFiles) {
    let source = Fixture::new(&fc, &unique_id(&format!("{tag}src")));
    let launched = fc.launch(&source.spec).await.unwrap();
    let dir = source.dir.path().join("snapshot");
    fs_err::create_dir(&dir).unwrap();
    let snap = SnapshotFiles {
        disk: dir.join("upper.ext4"),
        dir,
    };
    let clone = Fixture::new(&fc, &unique_id(&format!("{tag}clone")));

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
    let clone_sockets = clone.sockets();
    let memory = inode(&snap.dir.join("firecracker.memory"));
    clone.kill(&restored);
    source.kill(&launched);

    assert_eq!(states, (InstanceState::Running, InstanceState::Running));
    // Each VM writes its own disk; neither writes the snapshot's copy.
    let (source_disk, clone_disk) = (
        inode(&source.spec.upper_disk),
        inode(&clone.spec.upper_disk),
    );
    assert!(source_fds.contains(&source_disk), "{source_fds:?}");
    assert!(clone_fds.contains(&clone_disk), "{clone_fds:?}");
    assert!(!clone_fds.contains(&inode(&snap.disk)), "{clone_fds:?}");
    assert!(!source_fds.contains(&inode(&snap.disk)), "{source_fds:?}");
    // Guest memory is the snapshot's file, mapped (not read into anonymous memory).
    assert!(clone_maps.contains(&memory.1), "memory file not mapped");
    // The clone's vsock device listens in the clone's own runtime dir (or jail).
    assert_eq!(clone_sockets, ["fc.sock", "vsock.sock", "vsock.sock_10789"]);
    (source, snap)
}

#[tokio::test]
async fn a_snapshot_resumes_as_a_clone_with_its_own_disk_and_mapped_memory() {
    let Some(fc) =
        firecracker_or_skip("a_snapshot_resumes_as_a_clone_with_its_own_disk_and_mapped_memory")
    else {
        return;
    };
    snapshot_and_clone(fc, "snap").await;
}

#[tokio::test]
async fn jailed_a_snapshot_resumes_as_a_clone_and_its_files_are_taken_back() {
    let Some(fc) =
        jailed_or_skip("jailed_a_snapshot_resumes_as_a_clone_and_its_files_are_taken_back")
    else {
        return;
    };
    let (uid, gid) = fc.jail.as_ref().unwrap().user().unwrap();

    let (_source, snap) = snapshot_and_clone(fc, "jsnap").await;

    // Written by the jailed VMM, then the daemon's: root's, readable by the jail group
    // (restores map it), with no link left in a jail.
    let owner = |name: &str| {
        let meta = fs_err::metadata(snap.dir.join(name)).unwrap();
        (meta.uid(), meta.gid(), meta.mode() & 0o777, meta.nlink())
    };
    assert_ne!(uid, 0);
    assert_eq!(owner("firecracker.memory"), (0, gid, 0o640, 1));
    assert_eq!(owner("firecracker.vmstate"), (0, gid, 0o640, 1));
    assert_eq!(owner("upper.ext4"), (0, 0, 0o600, 1));
}

#[tokio::test]
async fn a_jailed_vmm_runs_unprivileged_in_its_chroot_under_seccomp() {
    let Some(fc) = jailed_or_skip("a_jailed_vmm_runs_unprivileged_in_its_chroot_under_seccomp")
    else {
        return;
    };
    let (uid, gid) = fc.jail.as_ref().unwrap().user().unwrap();
    let fixture = Fixture::new(&fc, &unique_id("jprivs"));

    let launched = fc.launch(&fixture.spec).await.unwrap();
    let uids = status_line(launched.pid, "Uid");
    let gids = status_line(launched.pid, "Gid");
    let seccomp = status_line(launched.pid, "Seccomp");
    // Its `/` (a link that reads "/" from outside its mount namespace) is the jail.
    let root = inode(Path::new(&format!("/proc/{}/root", launched.pid)));
    let exe = inode(Path::new(&format!("/proc/{}/exe", launched.pid)));
    let (jail_root, jail_exe) = (
        inode(&fixture.socket_dir()),
        inode(&fixture.socket_dir().join("firecracker")),
    );
    let with_token = processes_with_arg(&token(&fixture.spec.vm_id));
    fixture.kill(&launched);

    assert_eq!(uids, format!("{uid}\t{uid}\t{uid}\t{uid}"));
    assert_eq!(gids, format!("{gid}\t{gid}\t{gid}\t{gid}"));
    // 2: a seccomp filter (firecracker's default one) is installed.
    assert_eq!(seccomp, "2");
    assert_eq!(root, jail_root);
    // The jailer's own copy of firecracker, inside the jail.
    assert_eq!(exe, jail_exe);
    assert_eq!(launched.vmm_uid, Some(uid));
    // The boot arguments (and the agent token in them) went over the API, not argv.
    assert_eq!(with_token, Vec::<u32>::new());
}

#[tokio::test]
async fn a_symlink_in_place_of_a_jailed_api_socket_is_refused() {
    let Some(fc) = jailed_or_skip("a_symlink_in_place_of_a_jailed_api_socket_is_refused") else {
        return;
    };
    let fixture = Fixture::new(&fc, &unique_id("jsymlink"));
    let launched = fc.launch(&fixture.spec).await.unwrap();
    // What a compromised VMM could do in its jail: point its API socket elsewhere.
    let moved = fixture.socket_dir().join("real.sock");
    fs_err::rename(&launched.control_socket, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &launched.control_socket).unwrap();

    let err = fc.pause(&launched).await.unwrap_err();
    let state_after = fc
        .api(&Launched {
            control_socket: moved,
            ..launched.clone()
        })
        .instance_info()
        .await
        .unwrap()
        .state;
    fixture.kill(&launched);

    assert_refused(&err);
    assert_eq!(state_after, InstanceState::Running);
}

#[tokio::test]
async fn a_jailed_api_socket_replaced_by_another_owners_socket_is_refused() {
    let Some(fc) =
        jailed_or_skip("a_jailed_api_socket_replaced_by_another_owners_socket_is_refused")
    else {
        return;
    };
    let fixture = Fixture::new(&fc, &unique_id("jforeign"));
    let launched = fc.launch(&fixture.spec).await.unwrap();
    fs_err::remove_file(&launched.control_socket).unwrap();
    // A root-owned listener where the VMM's socket was.
    let _impostor = std::os::unix::net::UnixListener::bind(&launched.control_socket).unwrap();

    let err = fc.pause(&launched).await.unwrap_err();
    fixture.kill(&launched);

    assert_refused(&err);
}

#[tokio::test]
async fn a_jailed_vm_is_attached_again_after_a_daemon_restart() {
    let Some(fc) = jailed_or_skip("a_jailed_vm_is_attached_again_after_a_daemon_restart") else {
        return;
    };
    let fixture = Fixture::new(&fc, &unique_id("jattach"));
    let launched = fc.launch(&fixture.spec).await.unwrap();

    // A new daemon knows only the runtime dir, the VM id and the pid it recorded.
    let again = Firecracker::locate().unwrap().attach(
        &fixture.spec.runtime_dir,
        &fixture.spec.vm_id,
        launched.pid,
    );
    let paused = fc.pause(&again).await;
    let state = state(&fc, &again).await;
    fixture.kill(&launched);

    assert_eq!(
        (&again.control_socket, &again.agent, again.vmm_uid),
        (&launched.control_socket, &launched.agent, launched.vmm_uid)
    );
    assert!(paused.is_ok(), "{paused:?}");
    assert_eq!(state, InstanceState::Paused);
}

/// Whether a mount point under `dir` is in this mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs_err::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_jail_on_another_filesystem_gets_bind_mounts_that_its_release_removes() {
    let Some(fc) =
        jailed_or_skip("a_jail_on_another_filesystem_gets_bind_mounts_that_its_release_removes")
    else {
        return;
    };
    // The VM's files on the temp dir's filesystem, its runtime dir on tmpfs.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let fixture = Fixture::with_runtime_dir(
        &fc,
        &unique_id("jbind"),
        tempfile::tempdir().unwrap(),
        shm.path().join("run"),
    );
    let launched = fc.launch(&fixture.spec).await.unwrap();

    let mut mounted = mounts_under(shm.path());
    mounted.sort();
    fc.pause(&launched).await.unwrap();
    let paused = state(&fc, &launched).await;
    fixture.kill(&launched);

    let jail = fixture.socket_dir();
    let expected: Vec<String> = [
        "firecracker.log",
        "initrd",
        "root.ext4",
        "upper.ext4",
        "vmlinux",
    ]
    .map(|name| jail.join(name).display().to_string())
    .into();
    assert_eq!(mounted, expected);
    assert_eq!(paused, InstanceState::Paused);
    assert_eq!(mounts_under(shm.path()), Vec::<String>::new());
    assert!(!fixture.spec.runtime_dir.join("jail").exists());
    assert!(fixture.spec.upper_disk.exists() && fixture.spec.root_disk.exists());
}

#[tokio::test]
async fn a_jailed_vmm_that_swapped_its_snapshot_dir_for_a_symlink_gets_no_snapshot() {
    let Some(fc) =
        jailed_or_skip("a_jailed_vmm_that_swapped_its_snapshot_dir_for_a_symlink_gets_no_snapshot")
    else {
        return;
    };
    let fixture = Fixture::new(&fc, &unique_id("jswap"));
    let launched = fc.launch(&fixture.spec).await.unwrap();
    let dir = fixture.dir.path().join("snap");
    fs_err::create_dir(&dir).unwrap();
    let snap = SnapshotFiles {
        disk: dir.join("upper.ext4"),
        dir,
    };
    fs_err::copy(&fixture.spec.upper_disk, &snap.disk).unwrap();
    // What a compromised VMM could do: its root is its own, so it can move the
    // root-owned snapshot dir away and point the name at a directory of its choice.
    let lure = fixture.dir.path().join("lure");
    fs_err::create_dir(&lure).unwrap();
    let jail = fixture.socket_dir();
    fs_err::rename(jail.join("snapshot"), jail.join("moved")).unwrap();
    std::os::unix::fs::symlink(&lure, jail.join("snapshot")).unwrap();

    fc.pause(&launched).await.unwrap();
    let err = fc
        .snapshot(&launched, &fixture.spec.upper_disk, &snap)
        .await
        .unwrap_err();
    let lured = fs_err::read_dir(&lure).unwrap().count();
    fixture.kill(&launched);

    assert_eq!(lured, 0);
    assert!(matches!(err, VmmError::Jail { .. }), "{err:?}");
    assert_eq!(fs_err::metadata(&snap.disk).unwrap().uid(), 0);
}

#[test]
fn releasing_a_jail_does_not_unmount_through_a_symlink_left_in_it() {
    let Some(fc) = jailed_or_skip("releasing_a_jail_does_not_unmount_through_a_symlink_left_in_it")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (runtime_dir, vm_id) = (dir.path().join("run"), unique_id("jrelease"));
    let jail = fc.jail_dir(&runtime_dir, &vm_id).unwrap();
    // A host mount point, and a symlink to it where the VMM could have left one.
    let (source, target) = (dir.path().join("source"), dir.path().join("target"));
    fs_err::write(&source, "host file").unwrap();
    fs_err::write(&target, "").unwrap();
    nix::mount::mount(
        Some(&source),
        &target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    fs_err::create_dir_all(&jail.root).unwrap();
    std::os::unix::fs::symlink(&target, jail.root.join("upper.ext4")).unwrap();

    fc.release(&runtime_dir, &vm_id);
    let still_mounted = mounts_under(dir.path());
    let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);

    assert_eq!(still_mounted, [target.display().to_string()]);
    assert!(!jail.base.exists());
}
