//! QEMU backend: `-M microvm,acpi=on`, KVM when usable and TCG otherwise, QMP for control.
//!
//! QEMU is confined: it runs as the unprivileged VMM user (see [`crate::vmm::user`])
//! under its own seccomp sandbox, and is handed every socket, disk, log and tap as a
//! file descriptor (see [`handoff`]), so it opens no banger path. Its command line
//! carries no secret: the agent token reaches the guest through fw_cfg.
//!
//! QEMU is the daemon's child in its own process group: its pid comes from the fork,
//! never from a file QEMU wrote. It is ready once QMP greets on the socket the daemon
//! bound; a QEMU that refuses its configuration exits first, and its own words are in
//! its log. It keeps running when the daemon exits, and a new daemon adopts it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use banger_wire::agent::{BootConfig, FW_CFG_BOOT_NAME, SERIAL_PORT_NAME};
use banger_wire::api::Backend;
use command_fds::CommandFdExt;
use serde_json::Value;

use super::qmp::Qmp;
use super::user::{VmmUser, VMM_USER};
use super::{AgentEndpoint, LaunchSpec, Launched, SnapshotFiles, Vmm, VmmError};
use handoff::fd;
use memory::Memory;

mod handoff;
pub mod memory;
mod snapshot;
#[cfg(test)]
mod spawn_tests;

const NAME: &str = "qemu";

/// QEMU's seccomp filter: no obsolete system calls, no privilege changes, no new
/// processes, no scheduler or resource changes.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

pub struct Qemu {
    pub binary: PathBuf,
    /// `kvm` or `tcg`.
    pub accel: &'static str,
    /// The system user QEMU runs as; it must exist and not be root.
    pub user: String,
}

impl Qemu {
    /// Finds `qemu-system-x86_64` (`BANGER_QEMU` overrides).
    pub fn locate(accel: &'static str) -> Result<Qemu, VmmError> {
        let binary = std::env::var_os("BANGER_QEMU")
            .map(PathBuf::from)
            .or_else(|| find_on_path("qemu-system-x86_64"))
            .ok_or(VmmError::BinaryMissing {
                binary: "qemu-system-x86_64".into(),
            })?;
        Ok(Qemu {
            binary,
            accel,
            user: VMM_USER.into(),
        })
    }

    /// QEMU's arguments for `spec`, whose boot config has had its secret part split
    /// off. Resources are the descriptors of [`handoff::fd`].
    pub fn args(&self, spec: &LaunchSpec, public_boot_args: &str) -> Vec<String> {
        let cpu = if self.accel == "kvm" { "host" } else { "max" };
        let proc_fd = |n: i32| format!("/proc/self/fd/{n}");
        let mut a: Vec<String> = vec![
            "-name".into(),
            format!("banger-{},process=banger-{}", spec.name, spec.vm_id),
            "-sandbox".into(),
            SANDBOX.into(),
            "-M".into(),
            // Under TCG the guest needs the emulated PIT and PIC for a reliable boot.
            if self.accel == "tcg" {
                "microvm,acpi=on,pit=on,pic=on"
            } else {
                "microvm,acpi=on"
            }
            .into(),
            "-accel".into(),
            // TCG's translated code is every VM's own memory: kept small, an idle clone
            // costs little beyond the pages it wrote.
            if self.accel == "tcg" {
                "tcg,tb-size=16"
            } else {
                self.accel
            }
            .into(),
            "-cpu".into(),
            cpu.into(),
            "-m".into(),
            format!("{}M", spec.memory_mib),
            "-smp".into(),
            spec.vcpu.to_string(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            proc_fd(fd::KERNEL),
            "-initrd".into(),
            proc_fd(fd::INITRD),
            "-append".into(),
            format!(
                "console=ttyS0 reboot=k panic=-1 quiet loglevel=4 {}{}",
                self.tsc_arg(),
                public_boot_args
            ),
            "-fw_cfg".into(),
            format!("name={FW_CFG_BOOT_NAME},file={}", proc_fd(fd::BOOT_SECRET)),
            // Block devices and the console file open `/dev/fdset/N`: fd sets 1-3.
            "-add-fd".into(),
            format!("fd={},set=1", fd::ROOT_DISK),
            "-add-fd".into(),
            format!("fd={},set=2", fd::UPPER_DISK),
            "-add-fd".into(),
            format!("fd={},set=3", fd::SERIAL_LOG),
            "-drive".into(),
            "id=root,file=/dev/fdset/1,format=raw,if=none,readonly=on".into(),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
            "-drive".into(),
            // Opened read-write at once: a read-only first open would need a second fd.
            "id=upper,file=/dev/fdset/2,format=raw,if=none,discard=unmap,auto-read-only=off".into(),
            "-device".into(),
            "virtio-blk-device,drive=upper".into(),
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!("socket,id=agent,fd={},server=on,wait=off", fd::AGENT_SOCKET),
            "-device".into(),
            format!("virtserialport,chardev=agent,name={SERIAL_PORT_NAME}"),
            "-chardev".into(),
            "file,id=console,path=/dev/fdset/3,append=on".into(),
            "-serial".into(),
            "chardev:console".into(),
            "-chardev".into(),
            format!("socket,id=qmp,fd={},server=on,wait=off", fd::QMP_SOCKET),
            "-mon".into(),
            "chardev=qmp,mode=control".into(),
        ];
        if let Some(net) = &spec.net {
            a.extend([
                "-netdev".into(),
                format!("tap,id=net0,fd={}", fd::TAP),
                "-device".into(),
                format!("virtio-net-device,netdev=net0,mac={}", net.mac),
            ]);
        }
        a
    }

    /// The VMM user, or why QEMU cannot be started.
    fn vmm_user(&self) -> Result<VmmUser, VmmError> {
        super::user::lookup(Path::new("/etc/passwd"), &self.user).ok_or_else(|| {
            VmmError::NoVmmUser {
                user: self.user.clone(),
            }
        })
    }
}

impl Qemu {
    /// Under TCG the guest kernel's TSC calibration against the emulated PIT can hang
    /// the boot ("Marking TSC unstable" and no more); telling it the frequency skips
    /// the calibration.
    fn tsc_arg(&self) -> String {
        if self.accel != "tcg" {
            return String::new();
        }
        match host_cpu_khz() {
            Some(khz) => format!("tsc_early_khz={khz} "),
            None => String::new(),
        }
    }
}

/// The host CPU clock in kHz, from `/proc/cpuinfo`.
fn host_cpu_khz() -> Option<u64> {
    let info = fs_err::read_to_string("/proc/cpuinfo").ok()?;
    parse_cpu_khz(&info)
}

fn parse_cpu_khz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some((mhz * 1000.0) as u64)
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[async_trait::async_trait]
impl Vmm for Qemu {
    fn backend(&self) -> Backend {
        Backend::Qemu
    }

    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, VmmError> {
        let memory = Memory::fresh(spec.memory_mib).map_err(memory_err)?;
        self.spawn(spec, &memory, &[]).await
    }

    fn attach(&self, runtime_dir: &Path, _vm_id: &str, pid: u32) -> Launched {
        Launched {
            pid,
            control_socket: runtime_dir.join("qmp.sock"),
            agent: AgentEndpoint::Connect(runtime_dir.join("agent.sock")),
            vmm_uid: None,
        }
    }

    async fn request_shutdown(&self, launched: &Launched) -> Result<(), VmmError> {
        qmp(&launched.control_socket, "system_powerdown")
            .await
            .map(drop)
    }

    async fn pause(&self, launched: &Launched) -> Result<(), VmmError> {
        qmp(&launched.control_socket, "stop").await.map(drop)
    }

    async fn resume(&self, launched: &Launched) -> Result<(), VmmError> {
        qmp(&launched.control_socket, "cont").await.map(drop)
    }

    async fn snapshot(
        &self,
        launched: &Launched,
        _upper_disk: &Path,
        snap: &SnapshotFiles,
    ) -> Result<(), VmmError> {
        snapshot::save(launched, snap).await
    }

    async fn restore(&self, spec: &LaunchSpec, snap: &SnapshotFiles) -> Result<Launched, VmmError> {
        let (files, mib) = (snap.clone(), spec.memory_mib);
        let memory = tokio::task::spawn_blocking(move || memory::for_restore(&files, mib))
            .await
            .map_err(std::io::Error::other)
            .and_then(|loaded| loaded)
            .map_err(memory_err)?;
        let launched = self.spawn(spec, &memory, &snapshot::INCOMING_ARGS).await?;
        match snapshot::load(&launched, snap, memory.is_template()).await {
            Ok(()) => Ok(launched),
            Err(e) => {
                crate::vm::process::signal(launched.pid, nix::sys::signal::Signal::SIGKILL);
                Err(e)
            }
        }
    }

    fn forget_snapshot(&self, snap: &SnapshotFiles) {
        memory::forget(snap);
    }
}

fn memory_err(source: std::io::Error) -> VmmError {
    VmmError::Handoff {
        what: "the guest's memory".into(),
        source,
    }
}

impl Qemu {
    /// Starts QEMU with `spec`'s arguments, guest `memory` and `extra` arguments as the
    /// VMM user, and waits until it has initialised (QMP answers).
    async fn spawn(
        &self,
        spec: &LaunchSpec,
        memory: &Memory,
        extra: &[&str],
    ) -> Result<Launched, VmmError> {
        let user = self.vmm_user()?;
        let (public, secret) = BootConfig::from_cmdline(&spec.boot_args).split_secret();
        let mem_fd = memory.fd().map_err(memory_err)?;
        let mut handoff = handoff::prepare(spec, &secret.to_cmdline(), mem_fd)?;
        let spawn_err = |source| VmmError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        };
        let out = handoff.log.file().try_clone().map_err(spawn_err)?;
        let err = handoff.log.file().try_clone().map_err(spawn_err)?;
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(self.args(spec, &public.to_cmdline()))
            .args(memory.args(spec.memory_mib))
            .args(extra)
            // With root's supplementary groups dropped (std does so when uid is set).
            .uid(user.uid)
            .gid(user.gid)
            .current_dir("/")
            // Outside the daemon's process group: a terminal's ^C is not for it.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        cmd.fd_mappings(std::mem::take(&mut handoff.fds))
            .map_err(|e| spawn_err(std::io::Error::other(e)))?;
        let mut child = cmd.spawn().map_err(spawn_err)?;
        // Closes the daemon's copies of the descriptors.
        drop(cmd);
        let pid = child.id().ok_or_else(|| VmmError::DiedDuringStart {
            backend: NAME,
            detail: "it exited at once".into(),
        })?;
        // Until QEMU is handed to the VM manager, dropping this future kills it.
        let mut guard = KillUnlessReady(Some(pid));
        let qmp_socket = spec.runtime_dir.join("qmp.sock");
        let ready = tokio::select! {
            r = Qmp::connect(&qmp_socket) => r.map(drop),
            _ = child.wait() => Err(VmmError::DiedDuringStart {
                backend: NAME,
                detail: "it exited before QMP answered".into(),
            }),
        };
        match ready {
            // The child is not waited for: it outlives this call (and the daemon), and
            // the VM manager watches its pid.
            Ok(()) => {
                guard.0 = None;
                Ok(self.attach(&spec.runtime_dir, &spec.vm_id, pid))
            }
            Err(e) => {
                drop(guard);
                let _ = child.wait().await;
                let said = handoff::log_since(&mut handoff.log, handoff.log_start);
                Err(match said.is_empty() {
                    true => e,
                    false => VmmError::Refused {
                        backend: NAME,
                        message: said,
                    },
                })
            }
        }
    }
}

/// Kills the QEMU with this pid when dropped, unless it was taken out.
struct KillUnlessReady(Option<u32>);

impl Drop for KillUnlessReady {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            crate::vm::process::signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Runs one QMP command on a fresh session. QMP errors come back as
/// [`VmmError::Refused`] with QEMU's `desc` verbatim.
pub async fn qmp(socket: &Path, cmd: &str) -> Result<Value, VmmError> {
    Qmp::connect(socket).await?.execute(cmd, None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::NetAttach;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn spec() -> LaunchSpec {
        LaunchSpec {
            vm_id: "abc".into(),
            name: "web".into(),
            vcpu: 4,
            memory_mib: 512,
            kernel_elf: "/img/vmlinux".into(),
            kernel_bzimage: "/img/bzImage".into(),
            initrd: "/img/initrd.img".into(),
            boot_args: "banger.hostname=web banger.token=sekrit".into(),
            root_disk: "/img/rootfs.ext4".into(),
            upper_disk: "/vm/upper.ext4".into(),
            net: Some(NetAttach {
                tap: "bgtap0".into(),
                mac: "02:00:00:00:00:02".into(),
            }),
            runtime_dir: "/run/banger/vms/abc".into(),
            serial_log: "/vm/serial.log".into(),
            vmm_log: "/vm/vmm.log".into(),
        }
    }

    fn qemu() -> Qemu {
        Qemu {
            binary: "q".into(),
            accel: "tcg",
            user: VMM_USER.into(),
        }
    }

    #[test]
    fn base_disk_is_read_only_and_upper_is_writable() {
        let args = qemu().args(&spec(), "");

        assert!(args.contains(&"id=root,file=/dev/fdset/1,format=raw,if=none,readonly=on".into()));
        assert!(args.contains(&format!("fd={},set=1", fd::ROOT_DISK)));
        assert!(args
            .iter()
            .any(|a| a.starts_with("id=upper,file=/dev/fdset/2") && !a.contains("readonly")));
        assert!(args.contains(&format!("fd={},set=2", fd::UPPER_DISK)));
    }

    #[test]
    fn resources_accel_and_network_reach_the_command_line() {
        let args = qemu().args(&spec(), "").join(" ");

        assert!(args.contains("-smp 4"), "{args}");
        assert!(args.contains("-m 512M"), "{args}");
        assert!(args.contains("-accel tcg,tb-size=16 -cpu max"), "{args}");
        assert!(args.contains("-no-reboot"), "{args}");
        assert!(
            args.contains(&format!("tap,id=net0,fd={}", fd::TAP)),
            "{args}"
        );
        assert!(args.contains("mac=02:00:00:00:00:02"), "{args}");
        assert!(args.contains(&format!("name={SERIAL_PORT_NAME}")), "{args}");
    }

    #[test]
    fn qemu_is_sandboxed_and_never_daemonizes_or_runs_helpers() {
        let args = qemu().args(&spec(), "");

        let sandbox = args.iter().position(|a| a == "-sandbox").unwrap();
        assert_eq!(
            args[sandbox + 1],
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        );
        assert!(!args.iter().any(|a| a == "-daemonize" || a == "-runas"));
    }

    #[test]
    fn no_host_path_reaches_the_command_line() {
        let args = qemu().args(&spec(), "").join(" ");

        for path in ["/img/", "/vm/", "/run/banger", "bgtap0"] {
            assert!(!args.contains(path), "{path} in {args}");
        }
        assert!(
            args.contains(&format!("-kernel /proc/self/fd/{}", fd::KERNEL)),
            "{args}"
        );
        assert!(
            args.contains(&format!("socket,id=agent,fd={}", fd::AGENT_SOCKET)),
            "{args}"
        );
        assert!(
            args.contains(&format!("socket,id=qmp,fd={}", fd::QMP_SOCKET)),
            "{args}"
        );
    }

    #[test]
    fn the_token_goes_through_fw_cfg_not_the_command_line() {
        let (public, secret) = BootConfig::from_cmdline(&spec().boot_args).split_secret();

        let args = qemu().args(&spec(), &public.to_cmdline()).join(" ");

        assert!(!args.contains("banger.token"), "{args}");
        assert!(!args.contains("sekrit"), "{args}");
        assert!(args.contains("banger.hostname=web"), "{args}");
        assert!(args.contains(&format!(
            "-fw_cfg name={FW_CFG_BOOT_NAME},file=/proc/self/fd/{}",
            fd::BOOT_SECRET
        )));
        assert_eq!(secret.to_cmdline(), "banger.token=sekrit");
    }

    #[test]
    fn cpu_khz_comes_from_cpuinfo() {
        assert_eq!(
            parse_cpu_khz("model name : AMD EPYC\ncpu MHz\t\t: 2596.096\n"),
            Some(2596096)
        );
        assert_eq!(parse_cpu_khz("model name : x\n"), None);
    }

    #[tokio::test]
    async fn qmp_error_is_reported_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\": {}}\n").await.unwrap();
            lines.next_line().await.unwrap();
            w.write_all(b"{\"return\": {}}\n").await.unwrap();
            lines.next_line().await.unwrap();
            w.write_all(b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no way\"}}\n")
                .await
                .unwrap();
        });
        let err = qmp(&sock, "stop").await.unwrap_err();
        assert!(matches!(err, VmmError::Refused { message, .. } if message == "no way"));
    }
}
