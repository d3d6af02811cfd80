//! QEMU backend: `-M microvm,acpi=on`, KVM when usable and TCG otherwise, QMP for control.
//!
//! QEMU is started with `-daemonize`: the launching process exits only once QEMU has
//! initialised (sockets bound, devices realised), so its exit is the readiness signal and
//! its stderr carries QEMU's own refusal verbatim. The daemonized VMM is not our child
//! and shares nothing with the request or the daemon that started it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use banger_wire::agent::SERIAL_PORT_NAME;
use banger_wire::api::Backend;
use serde_json::Value;

use super::qmp::Qmp;
use super::{AgentEndpoint, LaunchSpec, Launched, SnapshotFiles, Vmm, VmmError};

mod snapshot;

const NAME: &str = "qemu";

pub struct Qemu {
    pub binary: PathBuf,
    /// `kvm` or `tcg`.
    pub accel: &'static str,
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
        Ok(Qemu { binary, accel })
    }

    pub fn args(&self, spec: &LaunchSpec) -> Vec<String> {
        let rt = &spec.runtime_dir;
        let cpu = if self.accel == "kvm" { "host" } else { "max" };
        let mut a: Vec<String> = vec![
            "-name".into(),
            format!("banger-{},process=banger-{}", spec.name, spec.vm_id),
            "-M".into(),
            // Under TCG the guest needs the emulated PIT and PIC for a reliable boot.
            if self.accel == "tcg" {
                "microvm,acpi=on,pit=on,pic=on"
            } else {
                "microvm,acpi=on"
            }
            .into(),
            "-accel".into(),
            self.accel.into(),
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
            spec.kernel_bzimage.display().to_string(),
            "-initrd".into(),
            spec.initrd.display().to_string(),
            "-append".into(),
            format!(
                "console=ttyS0 reboot=k panic=-1 quiet loglevel=4 {}{}",
                self.tsc_arg(),
                spec.boot_args
            ),
            "-drive".into(),
            format!(
                "id=root,file={},format=raw,if=none,readonly=on",
                spec.root_disk.display()
            ),
            "-device".into(),
            "virtio-blk-device,drive=root".into(),
            "-drive".into(),
            format!(
                "id=upper,file={},format=raw,if=none,discard=unmap",
                spec.upper_disk.display()
            ),
            "-device".into(),
            "virtio-blk-device,drive=upper".into(),
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!(
                "socket,id=agent,path={},server=on,wait=off",
                rt.join("agent.sock").display()
            ),
            "-device".into(),
            format!("virtserialport,chardev=agent,name={SERIAL_PORT_NAME}"),
            "-chardev".into(),
            format!(
                "file,id=console,path={},append=on",
                spec.serial_log.display()
            ),
            "-serial".into(),
            "chardev:console".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", rt.join("qmp.sock").display()),
            "-pidfile".into(),
            rt.join("vmm.pid").display().to_string(),
            "-D".into(),
            spec.vmm_log.display().to_string(),
            "-daemonize".into(),
        ];
        if let Some(net) = &spec.net {
            a.extend([
                "-netdev".into(),
                format!("tap,id=net0,ifname={},script=no,downscript=no", net.tap),
                "-device".into(),
                format!("virtio-net-device,netdev=net0,mac={}", net.mac),
            ]);
        }
        a
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
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
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
        self.spawn(spec, &[]).await
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
        let launched = self.spawn(spec, &snapshot::INCOMING_ARGS).await?;
        match snapshot::load(&launched, snap).await {
            Ok(()) => Ok(launched),
            Err(e) => {
                crate::vm::process::signal(launched.pid, nix::sys::signal::Signal::SIGKILL);
                Err(e)
            }
        }
    }
}

impl Qemu {
    /// Starts QEMU with `spec`'s arguments and `extra` ones, and waits until it has
    /// daemonized (initialised, sockets bound).
    async fn spawn(&self, spec: &LaunchSpec, extra: &[&str]) -> Result<Launched, VmmError> {
        let spawn_err = |source| VmmError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        };
        let out = tokio::process::Command::new(&self.binary)
            .args(self.args(spec))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(spawn_err)?;
        if !out.status.success() {
            let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(VmmError::Refused {
                backend: NAME,
                message,
            });
        }
        let pid_path = spec.runtime_dir.join("vmm.pid");
        let pid = fs_err::read_to_string(&pid_path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .ok_or_else(|| VmmError::DiedDuringStart {
                backend: NAME,
                detail: format!("no pid in {}", pid_path.display()),
            })?;
        Ok(self.attach(&spec.runtime_dir, &spec.vm_id, pid))
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
            boot_args: "banger.token=t".into(),
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

    #[test]
    fn base_disk_is_read_only_and_upper_is_writable() {
        let args = Qemu {
            binary: "q".into(),
            accel: "tcg",
        }
        .args(&spec());
        assert!(
            args.contains(&"id=root,file=/img/rootfs.ext4,format=raw,if=none,readonly=on".into())
        );
        assert!(args
            .iter()
            .any(|a| a.starts_with("id=upper,file=/vm/upper.ext4") && !a.contains("readonly")));
    }

    #[test]
    fn resources_accel_and_network_reach_the_command_line() {
        let args = Qemu {
            binary: "q".into(),
            accel: "tcg",
        }
        .args(&spec())
        .join(" ");
        assert!(args.contains("-smp 4"), "{args}");
        assert!(args.contains("-m 512M"), "{args}");
        assert!(args.contains("-accel tcg -cpu max"), "{args}");
        assert!(args.contains("-no-reboot"), "{args}");
        assert!(args.contains("tap,id=net0,ifname=bgtap0"), "{args}");
        assert!(args.contains("mac=02:00:00:00:00:02"), "{args}");
        assert!(args.contains(&format!("name={SERIAL_PORT_NAME}")), "{args}");
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
