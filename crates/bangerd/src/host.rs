//! Host capability probes: can this machine run guests on KVM, which VMM binaries are
//! installed, and which backend a new VM gets by default.
//!
//! Every probe goes through a [`Host`], which names the filesystem root that `/dev`,
//! `/proc` and `/sys` are read under and the `PATH` searched for binaries, so tests run
//! the real probe code against a fake tree.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use banger_host::config::Config;
use banger_wire::api::Backend;
use rustix::fs::{Access, AtFlags};

/// Environment variable naming the firecracker binary; overrides `PATH`.
pub const FIRECRACKER_ENV: &str = "BANGER_FIRECRACKER";
pub use crate::vmm::firecracker::jail::JAILER_ENV;

/// What KVM can do for guests on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmStatus {
    /// Hardware-assisted KVM on bare metal: guests run at full speed.
    Usable,
    /// Hardware-assisted KVM inside another VM: guests run, more slowly.
    Nested { reason: String },
    /// `/dev/kvm` answers, but it is a software emulator (e.g. `kvm_pvm`) that cannot
    /// run an unmodified guest.
    Emulated { reason: String },
    /// No `/dev/kvm`.
    Missing { reason: String },
    /// `/dev/kvm` exists but this process may not open it read-write.
    NoAccess { reason: String },
}

impl KvmStatus {
    /// Whether an unmodified guest kernel can run on this KVM.
    pub fn runs_guests(&self) -> bool {
        matches!(self, KvmStatus::Usable | KvmStatus::Nested { .. })
    }
}

/// Where probes look. [`Host::from_env`] is the real machine.
#[derive(Debug, Clone)]
pub struct Host {
    /// Prefix for `/dev`, `/proc` and `/sys` (`/` on the real machine).
    pub root: PathBuf,
    /// Directories searched for binaries, in `PATH` syntax.
    pub path_var: Option<OsString>,
    /// Value of [`FIRECRACKER_ENV`], if set.
    pub firecracker_env: Option<PathBuf>,
    /// Value of [`JAILER_ENV`], if set.
    pub jailer_env: Option<PathBuf>,
    /// Whether probes run with root privileges.
    pub is_root: bool,
}

impl Host {
    /// The machine this process runs on.
    pub fn from_env() -> Host {
        Host {
            root: PathBuf::from("/"),
            path_var: std::env::var_os("PATH"),
            firecracker_env: std::env::var_os(FIRECRACKER_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            jailer_env: std::env::var_os(JAILER_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            is_root: rustix::process::geteuid().is_root(),
        }
    }

    /// `abs` (an absolute host path such as `/proc/cpuinfo`) under [`Host::root`].
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// Probes `/dev/kvm` and the kernel modules and CPU flags behind it.
    pub fn kvm_status(&self) -> KvmStatus {
        let dev = self.path("/dev/kvm");
        if !dev.exists() {
            return KvmStatus::Missing {
                reason: "/dev/kvm does not exist (kvm module not loaded, or no virtualization)"
                    .into(),
            };
        }
        if let Err(e) = rustix::fs::accessat(
            rustix::fs::CWD,
            &dev,
            Access::READ_OK | Access::WRITE_OK,
            AtFlags::EACCESS,
        ) {
            return KvmStatus::NoAccess {
                reason: format!(
                    "/dev/kvm is not readable and writable by uid {}: {e}",
                    rustix::process::geteuid().as_raw()
                ),
            };
        }
        if self.path("/sys/module/kvm_pvm").exists() {
            return KvmStatus::Emulated {
                reason: "kvm_pvm".into(),
            };
        }
        let flags = self.cpu_flags();
        let hw = flags.iter().any(|f| f == "vmx" || f == "svm");
        if !hw {
            return KvmStatus::Emulated {
                reason: "cpu has no vmx/svm flag".into(),
            };
        }
        let vendor_module = ["kvm_intel", "kvm_amd"]
            .iter()
            .any(|m| self.path("/sys/module").join(m).exists());
        if !vendor_module {
            return KvmStatus::Emulated {
                reason: "neither kvm_intel nor kvm_amd is loaded".into(),
            };
        }
        if flags.iter().any(|f| f == "hypervisor") {
            return KvmStatus::Nested {
                reason: "this host is itself a VM (hypervisor cpu flag)".into(),
            };
        }
        KvmStatus::Usable
    }

    /// Flags of the first CPU in `/proc/cpuinfo`; empty when unreadable.
    fn cpu_flags(&self) -> Vec<String> {
        let text = fs_err::read_to_string(self.path("/proc/cpuinfo")).unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with("flags"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// First executable file called `name` in [`Host::path_var`].
    pub fn which(&self, name: &str) -> Option<PathBuf> {
        let path_var = self.path_var.as_deref()?;
        std::env::split_paths(path_var)
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    }

    /// The firecracker binary: [`FIRECRACKER_ENV`] when set (even if it is not
    /// executable, then `None`), else `PATH`.
    pub fn firecracker(&self) -> Option<PathBuf> {
        match &self.firecracker_env {
            Some(p) => is_executable(p).then(|| p.clone()),
            None => self.which("firecracker"),
        }
    }

    /// Firecracker's jailer: [`JAILER_ENV`] when set, else `jailer` beside `firecracker`;
    /// `None` unless it is an executable file (as the backend finds it).
    pub fn jailer(&self, firecracker: &Path) -> Option<PathBuf> {
        let candidate = match &self.jailer_env {
            Some(p) => p.clone(),
            None => firecracker.with_file_name("jailer"),
        };
        is_executable(&candidate).then_some(candidate)
    }

    /// `config.backend` when set; else Firecracker when its binary is found and KVM
    /// runs guests; else QEMU.
    pub fn default_backend(&self, config: &Config) -> Backend {
        if let Some(b) = config.backend {
            return b;
        }
        if self.firecracker().is_some() && self.kvm_status().runs_guests() {
            Backend::Firecracker
        } else {
            Backend::Qemu
        }
    }

    /// QEMU's `-accel` value: `kvm` when KVM runs guests, else `tcg`.
    pub fn qemu_accel(&self) -> &'static str {
        if self.kvm_status().runs_guests() {
            "kvm"
        } else {
            "tcg"
        }
    }
}

/// [`Host::kvm_status`] on this machine.
pub fn kvm_status() -> KvmStatus {
    Host::from_env().kvm_status()
}

/// [`Host::default_backend`] on this machine.
pub fn default_backend(config: &Config) -> Backend {
    Host::from_env().default_backend(config)
}

/// [`Host::qemu_accel`] on this machine.
pub fn qemu_accel() -> &'static str {
    Host::from_env().qemu_accel()
}

fn is_executable(p: &Path) -> bool {
    fs_err::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    /// First non-empty line of stdout, else of stderr (tools differ on where
    /// `--version` goes).
    pub fn first_line(&self) -> &str {
        [&self.stdout, &self.stderr]
            .into_iter()
            .flat_map(|s| s.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
    }
}

/// Failure to run a short host command.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run {program}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {} ms", timeout.as_millis())]
    Timeout { program: PathBuf, timeout: Duration },
    #[error("cannot wait for {program}")]
    Wait {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `program args…` with `LC_ALL=C` and no stdin; kills it after `timeout`.
pub fn run_command(
    program: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<CommandOutput, CommandError> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                // Already exited or unkillable: either way there is nothing more to do.
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Timeout {
                    program: program.to_path_buf(),
                    timeout,
                });
            }
            Err(source) => {
                return Err(CommandError::Wait {
                    program: program.to_path_buf(),
                    source,
                })
            }
        }
    };
    // A grandchild may keep a pipe open; never wait on it past the deadline.
    let collect = |rx: Option<mpsc::Receiver<String>>| {
        rx.and_then(|rx| {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()
        })
        .unwrap_or_default()
    };
    Ok(CommandOutput {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error leaves what was read so far; the caller only wants text.
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

/// Name of a process (`/proc/<pid>/comm`) under `host`.
pub fn process_name(host: &Host, pid: u32) -> Option<String> {
    let comm = host.path("/proc").join(pid.to_string()).join("comm");
    fs_err::read_to_string(comm)
        .ok()
        .map(|s| s.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_with(root: &Path) -> Host {
        Host {
            root: root.to_path_buf(),
            path_var: Some(root.join("bin").into_os_string()),
            firecracker_env: None,
            jailer_env: None,
            is_root: false,
        }
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs_err::create_dir_all(p.parent().unwrap()).unwrap();
        fs_err::write(p, text).unwrap();
    }

    fn executable(root: &Path, rel: &str, script: &str) {
        crate::test_support::write_script(&root.join(rel), script);
    }

    #[test]
    fn kvm_pvm_is_emulated() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "dev/kvm", "");
        write(t.path(), "proc/cpuinfo", "flags\t\t: fpu sse hypervisor\n");
        fs_err::create_dir_all(t.path().join("sys/module/kvm_pvm")).unwrap();

        let status = host_with(t.path()).kvm_status();

        assert_eq!(
            status,
            KvmStatus::Emulated {
                reason: "kvm_pvm".into()
            }
        );
    }

    #[test]
    fn no_vmx_is_emulated() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "dev/kvm", "");
        write(t.path(), "proc/cpuinfo", "flags\t\t: fpu sse\n");

        let status = host_with(t.path()).kvm_status();

        assert!(matches!(status, KvmStatus::Emulated { .. }), "{status:?}");
    }

    #[test]
    fn vmx_with_kvm_intel_is_usable_and_hypervisor_flag_is_nested() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "dev/kvm", "");
        write(t.path(), "proc/cpuinfo", "flags\t\t: fpu vmx\n");
        fs_err::create_dir_all(t.path().join("sys/module/kvm_intel")).unwrap();
        let host = host_with(t.path());

        assert_eq!(host.kvm_status(), KvmStatus::Usable);
        write(t.path(), "proc/cpuinfo", "flags\t\t: fpu vmx hypervisor\n");
        assert!(matches!(host.kvm_status(), KvmStatus::Nested { .. }));
    }

    #[test]
    fn missing_dev_kvm() {
        let t = tempfile::tempdir().unwrap();

        let status = host_with(t.path()).kvm_status();

        assert!(matches!(status, KvmStatus::Missing { .. }), "{status:?}");
    }

    #[test]
    fn default_backend_prefers_config_then_firecracker_on_usable_kvm() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "dev/kvm", "");
        write(t.path(), "proc/cpuinfo", "flags\t\t: vmx\n");
        fs_err::create_dir_all(t.path().join("sys/module/kvm_intel")).unwrap();
        let host = host_with(t.path());
        let mut config = Config::default();

        assert_eq!(host.default_backend(&config), Backend::Qemu);
        executable(t.path(), "bin/firecracker", "#!/bin/sh\n");
        assert_eq!(host.default_backend(&config), Backend::Firecracker);
        assert_eq!(host.qemu_accel(), "kvm");
        config.backend = Some(Backend::Qemu);
        assert_eq!(host.default_backend(&config), Backend::Qemu);
    }

    #[test]
    fn emulated_kvm_picks_qemu_tcg_even_with_firecracker() {
        let t = tempfile::tempdir().unwrap();
        write(t.path(), "dev/kvm", "");
        fs_err::create_dir_all(t.path().join("sys/module/kvm_pvm")).unwrap();
        executable(t.path(), "bin/firecracker", "#!/bin/sh\n");
        let host = host_with(t.path());

        assert_eq!(host.default_backend(&Config::default()), Backend::Qemu);
        assert_eq!(host.qemu_accel(), "tcg");
    }

    #[test]
    fn firecracker_env_overrides_path_and_must_be_executable() {
        let t = tempfile::tempdir().unwrap();
        executable(t.path(), "bin/firecracker", "#!/bin/sh\n");
        let mut host = host_with(t.path());
        host.firecracker_env = Some(t.path().join("nope"));

        assert_eq!(host.firecracker(), None);
    }

    #[test]
    fn run_command_captures_output_and_times_out() {
        let t = tempfile::tempdir().unwrap();
        executable(t.path(), "v", "#!/bin/sh\necho 'tool 1.2' >&2\n");
        executable(t.path(), "slow", "#!/bin/sh\nexec sleep 5\n");

        let out = run_command(&t.path().join("v"), &[], Duration::from_secs(5)).unwrap();
        let slow = run_command(&t.path().join("slow"), &[], Duration::from_millis(100));

        assert_eq!(out.first_line(), "tool 1.2");
        assert!(
            matches!(slow, Err(CommandError::Timeout { .. })),
            "{slow:?}"
        );
    }
}
