//! Firecracker backend: one `firecracker` process per VM, configured over its HTTP API.
//!
//! With a `jailer` (`$BANGER_JAILER`, or beside `firecracker`), firecracker runs under it
//! ([`jail`]): chroot, the `banger-vmm` user, its default seccomp filter; its files then
//! live in the VM's jail and it names them chroot-relative. Without one it runs as root.
//!
//! Files firecracker uses, in the VM's runtime dir or, jailed, at the jail's root:
//! * `fc.sock`: the API socket, created by firecracker.
//! * `vsock.sock`: the vsock device's host socket, created by firecracker for
//!   host-initiated connections (unused by banger).
//! * `vsock.sock_<VSOCK_PORT>`: where the guest agent's outgoing vsock connection lands
//!   ([`Vmm::agent_listen_path`]). The daemon binds it, **before** [`Vmm::launch`]:
//!   firecracker refuses a guest connection nobody listens for, and a restored
//!   snapshot's agent can connect right after start.
//! * jailed only: links to the kernel, initrd, disks and log (see [`inputs`]).
//!
//! Once launched, firecracker runs in its own process group with its stdio on files: it
//! is not tied to the launching future, the request, or the daemon.

pub mod api;
pub mod jail;
pub mod models;
mod process;
pub mod snapshot;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use banger_wire::agent::VSOCK_PORT;
use banger_wire::api::Backend;

use self::api::ApiClient;
use self::jail::{Jail, JailDir};
use self::models::{
    ActionType, BootSource, CacheType, Drive, MachineConfig, NetworkInterface, VmState, Vsock,
};
use self::process::Starting;
use super::{AgentEndpoint, LaunchSpec, Launched, SnapshotFiles, Vmm, VmmError};

const BACKEND: &str = "firecracker";
/// Environment variable naming the firecracker binary; overrides `PATH`.
pub const BINARY_ENV: &str = "BANGER_FIRECRACKER";
/// Guest vsock context id; 2 is the host, so every VM can use 3.
const GUEST_CID: u32 = 3;
/// Arguments banger always passes the guest kernel before the `banger.*` ones.
const BASE_BOOT_ARGS: &str = "console=ttyS0 reboot=k panic=-1 pci=off";
const API_SOCKET: &str = "fc.sock";
const VSOCK_UDS: &str = "vsock.sock";
/// Names of the jailed VM's inputs at the jail's root.
const KERNEL: &str = "vmlinux";
const INITRD: &str = "initrd";
const ROOT_DISK: &str = "root.ext4";
const UPPER_DISK: &str = "upper.ext4";
const VMM_LOG: &str = "firecracker.log";

/// Where one VM's firecracker files are: `host` is the daemon's path, `api` the name
/// firecracker is given (the same path unjailed; chroot-relative in a jail).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    runtime_dir: PathBuf,
    jail: Option<JailDir>,
}

impl Layout {
    fn host(&self, name: &str) -> PathBuf {
        match &self.jail {
            Some(jail) => jail.host(name),
            None => self.runtime_dir.join(name),
        }
    }

    fn api(&self, name: &str) -> PathBuf {
        match &self.jail {
            Some(_) => jail::inside(name),
            None => self.runtime_dir.join(name),
        }
    }

    /// Firecracker's name for an input file linked into the jail as `name`.
    fn input(&self, path: &Path, name: &str) -> PathBuf {
        match &self.jail {
            Some(_) => jail::inside(name),
            None => path.to_path_buf(),
        }
    }

    /// Firecracker's name for a file lent in the jail's [`jail::LEND_DIR`] as `name`.
    fn lent(&self, path: &Path, name: &str) -> PathBuf {
        match &self.jail {
            Some(_) => jail::inside(jail::LEND_DIR).join(name),
            None => path.to_path_buf(),
        }
    }

    fn agent_socket(&self) -> PathBuf {
        let mut path = self.host(VSOCK_UDS).into_os_string();
        path.push(format!("_{VSOCK_PORT}"));
        PathBuf::from(path)
    }
}

/// Where the guest agent connects to an unjailed VM; bind it before [`Vmm::launch`].
pub fn agent_listen_path(runtime_dir: &Path) -> PathBuf {
    Layout {
        runtime_dir: runtime_dir.to_path_buf(),
        jail: None,
    }
    .agent_socket()
}

/// The Firecracker backend.
#[derive(Debug, Clone)]
pub struct Firecracker {
    pub binary: PathBuf,
    /// Runs each VMM under the jailer when set.
    pub jail: Option<Jail>,
}

impl Firecracker {
    /// Finds the binary: `$BANGER_FIRECRACKER` if set, else `firecracker` on `PATH`;
    /// and the jailer (see [`Jail::locate`]).
    pub fn locate() -> Result<Firecracker, VmmError> {
        Firecracker::locate_with(&|k| std::env::var_os(k))
    }

    /// [`Firecracker::locate`] with an explicit environment lookup.
    pub fn locate_with(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Firecracker, VmmError> {
        let binary = match env(BINARY_ENV).map(PathBuf::from) {
            Some(binary) if is_executable(&binary) => binary,
            Some(binary) => {
                return Err(VmmError::BinaryMissing {
                    binary: binary.display().to_string(),
                })
            }
            None => env("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|dir| dir.join("firecracker"))
                .find(|candidate| is_executable(candidate))
                .ok_or_else(|| VmmError::BinaryMissing {
                    binary: "firecracker".into(),
                })?,
        };
        let jail = Jail::locate(&binary, env).map(Jail::new);
        if jail.is_none() {
            tracing::warn!(
                firecracker = %binary.display(),
                "no jailer beside firecracker and {} unset: VMMs run as root, unconfined",
                jail::JAILER_ENV
            );
        }
        Ok(Firecracker { binary, jail })
    }

    /// The version the binary reports, e.g. `1.16.1`.
    pub async fn version(&self) -> Result<String, VmmError> {
        let output = tokio::process::Command::new(&self.binary)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|source| VmmError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        parse_version(&String::from_utf8_lossy(&output.stdout)).ok_or_else(|| {
            VmmError::Unsupported(format!(
                "{} --version printed no firecracker version",
                self.binary.display()
            ))
        })
    }

    /// An API client for a launched VM (snapshots and other calls beyond the trait).
    pub fn api(&self, launched: &Launched) -> ApiClient {
        ApiClient::new(&launched.control_socket).owned_by(launched.vmm_uid)
    }

    /// The jail of `vm_id` (whether or not it exists yet), when jailed.
    pub fn jail_dir(&self, runtime_dir: &Path, vm_id: &str) -> Option<JailDir> {
        self.jail.as_ref()?;
        let exec_name = self.binary.file_name()?.to_string_lossy();
        Some(JailDir::new(runtime_dir, &exec_name, vm_id))
    }

    pub(crate) fn layout(&self, runtime_dir: &Path, vm_id: &str) -> Layout {
        Layout {
            runtime_dir: runtime_dir.to_path_buf(),
            jail: self.jail_dir(runtime_dir, vm_id),
        }
    }

    /// The jail user when jailed (an error if it is missing), else `None`.
    fn jail_user(&self) -> Result<Option<(u32, u32)>, VmmError> {
        self.jail.as_ref().map(Jail::user).transpose()
    }

    /// Spawns firecracker, or the jailer with a fresh jail holding the VM's files.
    fn spawn(
        &self,
        spec: &LaunchSpec,
        layout: &Layout,
        restoring: Option<&SnapshotFiles>,
    ) -> Result<Starting, VmmError> {
        let fc_args: Vec<OsString> = vec![
            "--api-sock".into(),
            layout.api(API_SOCKET).into(),
            "--log-path".into(),
            layout.input(&spec.vmm_log, VMM_LOG).into(),
            "--level".into(),
            "Info".into(),
            "--boot-timer".into(),
        ];
        let (Some(jail), Some(user)) = (&layout.jail, self.jail_user()?) else {
            // The jailer passes `--id` itself.
            let mut args = fc_args;
            args.splice(2..2, ["--id".into(), spec.vm_id.clone().into()]);
            return Starting::spawn(&self.binary, &args, spec, layout);
        };
        let jail_error = |source| VmmError::Jail {
            path: jail.root.clone(),
            source,
        };
        process::rotate_log(&spec.vmm_log).map_err(jail_error)?;
        jail::create(jail).map_err(jail_error)?;
        inputs(spec, jail, user, restoring.is_none()).map_err(jail_error)?;
        if let Some(snap) = restoring {
            snapshot::link_for_load(jail, user, spec, snap).map_err(jail_error)?;
        }
        let args = jail::argv(
            &self.binary,
            &spec.vm_id,
            user,
            jail,
            jail::cgroup_v2_available(),
            &fc_args,
        );
        let jailer = &self.jail.as_ref().expect("jailed layout has a jail").jailer;
        Starting::spawn(jailer, &args, spec, layout)
    }
}

/// Links what firecracker opens into the jail: kernel and initrd (when booting), the
/// shared base read-only, this VM's disk and log owned by the jail user.
fn inputs(
    spec: &LaunchSpec,
    jail: &JailDir,
    user: (u32, u32),
    booting: bool,
) -> std::io::Result<()> {
    let mut shared = vec![(&spec.root_disk, ROOT_DISK)];
    if booting {
        shared.extend([(&spec.kernel_elf, KERNEL), (&spec.initrd, INITRD)]);
    }
    for (path, name) in shared {
        if path.exists() {
            jail::grant_read(path, user.1)?;
            jail::link_in(&jail.root, path, name, false)?;
        }
    }
    for (path, name) in [(&spec.upper_disk, UPPER_DISK), (&spec.vmm_log, VMM_LOG)] {
        jail::give(path, user)?;
        jail::link_in(&jail.root, path, name, true)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl Vmm for Firecracker {
    fn backend(&self) -> Backend {
        Backend::Firecracker
    }

    /// Spawns, configures and starts one VM. Cancel-safe: dropping the future before it
    /// returns kills the process; after it returns, the process is on its own.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, VmmError> {
        let layout = self.layout(&spec.runtime_dir, &spec.vm_id);
        let agent_socket = layout.agent_socket();
        if !agent_socket.exists() {
            tracing::warn!(
                vm = %spec.vm_id,
                socket = %agent_socket.display(),
                "agent socket not bound before launch; the guest's first connection will be refused"
            );
        }
        let t0 = Instant::now();
        let mut starting = self.spawn(spec, &layout, None)?;
        let vmm_uid = self.jail_user()?.map(|(uid, _)| uid);
        let api = ApiClient::new(layout.host(API_SOCKET)).owned_by(vmm_uid);
        let outcome = async {
            starting.wait_for_api(vmm_uid).await?;
            let t_socket = t0.elapsed();
            configure(&api, spec, &layout).await?;
            let t_configured = t0.elapsed();
            api.action(ActionType::InstanceStart).await?;
            Ok::<_, VmmError>((t_socket, t_configured, t0.elapsed()))
        }
        .await;
        let (pid, (socket, configured, started)) =
            settle(starting, outcome, spec, "launch").await?;
        tracing::info!(
            vm = %spec.vm_id,
            pid,
            jailed = vmm_uid.is_some(),
            socket_ms = socket.as_millis() as u64,
            configure_ms = (configured - socket).as_millis() as u64,
            start_ms = (started - configured).as_millis() as u64,
            "firecracker started the guest"
        );
        Ok(launched(pid, &layout, vmm_uid))
    }

    fn agent_listen_path(&self, runtime_dir: &Path, vm_id: &str) -> Option<PathBuf> {
        Some(self.layout(runtime_dir, vm_id).agent_socket())
    }

    /// A jailed VMM runs as the jail user, which must be able to connect.
    fn share_agent_socket(&self, path: &Path) -> Result<(), VmmError> {
        let Some(user) = self.jail_user()? else {
            return Ok(());
        };
        jail::give(path, user).map_err(|source| VmmError::Jail {
            path: path.to_path_buf(),
            source,
        })
    }

    fn attach(&self, runtime_dir: &Path, vm_id: &str, pid: u32) -> Launched {
        let mut layout = self.layout(runtime_dir, vm_id);
        // A VMM started before the jailer was installed runs unjailed.
        layout.jail = layout.jail.filter(|jail| jail.root.exists());
        let vmm_uid = match &layout.jail {
            Some(_) => self.jail.as_ref().and_then(|j| j.user).map(|(uid, _)| uid),
            None => None,
        };
        launched(pid, &layout, vmm_uid)
    }

    fn release(&self, runtime_dir: &Path, vm_id: &str) {
        if let Some(jail) = self.jail_dir(runtime_dir, vm_id) {
            jail::remove(&jail);
            jail::remove_cgroup(vm_id);
        }
        // Sockets of an unjailed run (also after the jailer was installed).
        let plain = Layout {
            runtime_dir: runtime_dir.to_path_buf(),
            jail: None,
        };
        process::remove_files(&[plain.host(API_SOCKET), plain.host(VSOCK_UDS)]);
    }

    async fn request_shutdown(&self, launched: &Launched) -> Result<(), VmmError> {
        self.api(launched).action(ActionType::SendCtrlAltDel).await
    }

    async fn pause(&self, launched: &Launched) -> Result<(), VmmError> {
        self.api(launched).set_vm_state(VmState::Paused).await
    }

    async fn resume(&self, launched: &Launched) -> Result<(), VmmError> {
        self.api(launched).set_vm_state(VmState::Resumed).await
    }

    async fn snapshot(
        &self,
        launched: &Launched,
        upper_disk: &Path,
        snap: &SnapshotFiles,
    ) -> Result<(), VmmError> {
        let api = self.api(launched);
        match (launched_jail(launched), self.jail_user()?) {
            (Some(jail), Some(user)) => snapshot::save_jailed(&api, &jail, user, snap).await,
            _ => snapshot::save(&api, upper_disk, snap).await,
        }
    }

    /// Spawns firecracker and loads the snapshot into it. Cancel-safe like `launch`.
    async fn restore(&self, spec: &LaunchSpec, snap: &SnapshotFiles) -> Result<Launched, VmmError> {
        let layout = self.layout(&spec.runtime_dir, &spec.vm_id);
        let t0 = Instant::now();
        let mut starting = self.spawn(spec, &layout, Some(snap))?;
        let vmm_uid = self.jail_user()?.map(|(uid, _)| uid);
        let api = ApiClient::new(layout.host(API_SOCKET)).owned_by(vmm_uid);
        let outcome = async {
            starting.wait_for_api(vmm_uid).await?;
            snapshot::load(&api, spec, snap, &layout).await
        }
        .await;
        let (pid, ()) = settle(starting, outcome, spec, "restore").await?;
        tracing::info!(vm = %spec.vm_id, pid, jailed = vmm_uid.is_some(), ms = t0.elapsed().as_millis() as u64, "firecracker restored the guest");
        Ok(launched(pid, &layout, vmm_uid))
    }
}

/// The jail a launched VMM runs in: its API socket sits at the jail's root.
fn launched_jail(launched: &Launched) -> Option<JailDir> {
    launched.vmm_uid?;
    let root = launched.control_socket.parent()?.to_path_buf();
    let base = root.parent()?.parent()?.parent()?.to_path_buf();
    Some(JailDir { base, root })
}

/// The end of a start: on success the process is let go (its pid returned with the
/// outcome); on failure the error is explained in the process's own words and the
/// process killed, reaped and its sockets removed (the caller releases its jail).
async fn settle<T>(
    mut starting: Starting,
    outcome: Result<T, VmmError>,
    spec: &LaunchSpec,
    what: &str,
) -> Result<(u32, T), VmmError> {
    match outcome {
        Ok(value) => Ok((starting.detach(), value)),
        Err(error) => {
            let error = starting.explain(error).await;
            tracing::warn!(vm = %spec.vm_id, pid = starting.pid(), error = %error, "firecracker {what} failed");
            starting.abort().await;
            Err(error)
        }
    }
}

fn launched(pid: u32, layout: &Layout, vmm_uid: Option<u32>) -> Launched {
    Launched {
        pid,
        control_socket: layout.host(API_SOCKET),
        agent: AgentEndpoint::Listen(layout.agent_socket()),
        vmm_uid,
    }
}

/// Everything before `InstanceStart`, in the order Firecracker's docs use.
async fn configure(api: &ApiClient, spec: &LaunchSpec, layout: &Layout) -> Result<(), VmmError> {
    api.put_machine_config(&MachineConfig {
        vcpu_count: spec.vcpu,
        mem_size_mib: spec.memory_mib,
        smt: None,
        track_dirty_pages: None,
    })
    .await?;
    api.put_boot_source(&boot_source(spec, layout)).await?;
    for drive in drives(spec, layout) {
        api.put_drive(&drive).await?;
    }
    if let Some(net) = &spec.net {
        api.put_network_interface(&NetworkInterface {
            iface_id: "eth0".into(),
            host_dev_name: net.tap.clone(),
            guest_mac: Some(net.mac.clone()),
        })
        .await?;
    }
    api.put_vsock(&Vsock {
        guest_cid: GUEST_CID,
        uds_path: layout.api(VSOCK_UDS),
    })
    .await
}

fn boot_source(spec: &LaunchSpec, layout: &Layout) -> BootSource {
    let boot_args = match spec.boot_args.trim() {
        "" => BASE_BOOT_ARGS.to_string(),
        extra => format!("{BASE_BOOT_ARGS} {extra}"),
    };
    BootSource {
        kernel_image_path: layout.input(&spec.kernel_elf, KERNEL),
        initrd_path: Some(layout.input(&spec.initrd, INITRD)),
        boot_args: Some(boot_args),
    }
}

/// The shared base image read-only and the VM's own upper layer read-write; the
/// initramfs mounts them as an overlay, so neither is the kernel's root device.
fn drives(spec: &LaunchSpec, layout: &Layout) -> [Drive; 2] {
    [
        Drive {
            drive_id: "root".into(),
            path_on_host: layout.input(&spec.root_disk, ROOT_DISK),
            is_root_device: false,
            is_read_only: true,
            cache_type: None,
        },
        Drive {
            drive_id: "upper".into(),
            path_on_host: layout.input(&spec.upper_disk, UPPER_DISK),
            is_root_device: false,
            is_read_only: false,
            // The guest's flushes reach the disk: this layer holds the user's data.
            cache_type: Some(CacheType::Writeback),
        },
    ]
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs_err::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `Firecracker v1.16.1` → `1.16.1`.
fn parse_version(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Firecracker v"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
