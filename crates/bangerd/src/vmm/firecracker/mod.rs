//! Firecracker backend: one `firecracker` process per VM, configured over its HTTP API.
//!
//! Files in a VM's runtime dir:
//! * `fc.sock`: the API socket ([`api_socket_path`]), created by firecracker.
//! * `vsock.sock`: the vsock device's host socket ([`vsock_uds_path`]), created by
//!   firecracker for host-initiated connections (unused by banger).
//! * `vsock.sock_<VSOCK_PORT>`: where the guest agent's outgoing vsock connection lands
//!   ([`agent_listen_path`]). The daemon binds it, **before** [`Vmm::launch`]: firecracker
//!   refuses a guest connection nobody listens for, and a restored snapshot's agent can
//!   connect right after start.
//!
//! Once launched, firecracker runs in its own process group with its stdio on files: it
//! is not tied to the launching future, the request, or the daemon.

pub mod api;
pub mod models;
mod process;
pub mod snapshot;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use banger_wire::agent::VSOCK_PORT;
use banger_wire::api::Backend;

use self::api::ApiClient;
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

/// The API socket of the VM whose runtime dir is `runtime_dir`.
pub fn api_socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("fc.sock")
}

/// The vsock device's host-side socket.
pub fn vsock_uds_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("vsock.sock")
}

/// Where the guest agent connects; bind it before calling [`Vmm::launch`].
pub fn agent_listen_path(runtime_dir: &Path) -> PathBuf {
    let mut path = vsock_uds_path(runtime_dir).into_os_string();
    path.push(format!("_{VSOCK_PORT}"));
    PathBuf::from(path)
}

/// Removes the sockets firecracker created in `runtime_dir` (it never removes them
/// itself). Call once the process is gone. The agent socket is the caller's to remove.
pub fn remove_sockets(runtime_dir: &Path) {
    process::remove_files(&[api_socket_path(runtime_dir), vsock_uds_path(runtime_dir)]);
}

/// The Firecracker backend.
#[derive(Debug, Clone)]
pub struct Firecracker {
    pub binary: PathBuf,
}

impl Firecracker {
    /// Finds the binary: `$BANGER_FIRECRACKER` if set, else `firecracker` on `PATH`.
    pub fn locate() -> Result<Firecracker, VmmError> {
        Firecracker::locate_with(&|k| std::env::var_os(k))
    }

    /// [`Firecracker::locate`] with an explicit environment lookup.
    pub fn locate_with(env: &dyn Fn(&str) -> Option<OsString>) -> Result<Firecracker, VmmError> {
        if let Some(binary) = env(BINARY_ENV).map(PathBuf::from) {
            return match is_executable(&binary) {
                true => Ok(Firecracker { binary }),
                false => Err(VmmError::BinaryMissing {
                    binary: binary.display().to_string(),
                }),
            };
        }
        env("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("firecracker"))
            .find(|candidate| is_executable(candidate))
            .map(|binary| Firecracker { binary })
            .ok_or_else(|| VmmError::BinaryMissing {
                binary: "firecracker".into(),
            })
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
        ApiClient::new(&launched.control_socket)
    }
}

#[async_trait::async_trait]
impl Vmm for Firecracker {
    fn backend(&self) -> Backend {
        Backend::Firecracker
    }

    /// Spawns, configures and starts one VM. Cancel-safe: dropping the future before it
    /// returns kills the process; after it returns, the process is on its own.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, VmmError> {
        let api_socket = api_socket_path(&spec.runtime_dir);
        let agent_socket = agent_listen_path(&spec.runtime_dir);
        if !agent_socket.exists() {
            tracing::warn!(
                vm = %spec.vm_id,
                socket = %agent_socket.display(),
                "agent socket not bound before launch; the guest's first connection will be refused"
            );
        }
        let t0 = Instant::now();
        let mut starting = Starting::spawn(&self.binary, spec)?;
        let api = ApiClient::new(&api_socket);
        let outcome = async {
            starting.wait_for_api().await?;
            let t_socket = t0.elapsed();
            configure(&api, spec).await?;
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
            socket_ms = socket.as_millis() as u64,
            configure_ms = (configured - socket).as_millis() as u64,
            start_ms = (started - configured).as_millis() as u64,
            "firecracker started the guest"
        );
        Ok(launched(pid, api_socket, agent_socket))
    }

    fn agent_listen_path(&self, runtime_dir: &Path) -> Option<PathBuf> {
        Some(agent_listen_path(runtime_dir))
    }

    fn attach(&self, runtime_dir: &Path, pid: u32) -> Launched {
        Launched {
            pid,
            control_socket: api_socket_path(runtime_dir),
            agent: AgentEndpoint::Listen(agent_listen_path(runtime_dir)),
        }
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
        snapshot::save(&self.api(launched), upper_disk, snap).await
    }

    /// Spawns firecracker and loads the snapshot into it. Cancel-safe like `launch`.
    async fn restore(&self, spec: &LaunchSpec, snap: &SnapshotFiles) -> Result<Launched, VmmError> {
        let api_socket = api_socket_path(&spec.runtime_dir);
        let agent_socket = agent_listen_path(&spec.runtime_dir);
        let t0 = Instant::now();
        let mut starting = Starting::spawn(&self.binary, spec)?;
        let api = ApiClient::new(&api_socket);
        let outcome = async {
            starting.wait_for_api().await?;
            snapshot::load(&api, spec, snap).await
        }
        .await;
        let (pid, ()) = settle(starting, outcome, spec, "restore").await?;
        tracing::info!(vm = %spec.vm_id, pid, ms = t0.elapsed().as_millis() as u64, "firecracker restored the guest");
        Ok(launched(pid, api_socket, agent_socket))
    }
}

/// The end of a start: on success the process is let go (its pid returned with the
/// outcome); on failure the error is explained in the process's own words and the
/// process killed, reaped and its sockets removed.
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

fn launched(pid: u32, api_socket: PathBuf, agent_socket: PathBuf) -> Launched {
    Launched {
        pid,
        control_socket: api_socket,
        agent: AgentEndpoint::Listen(agent_socket),
    }
}

/// Everything before `InstanceStart`, in the order Firecracker's docs use.
async fn configure(api: &ApiClient, spec: &LaunchSpec) -> Result<(), VmmError> {
    api.put_machine_config(&MachineConfig {
        vcpu_count: spec.vcpu,
        mem_size_mib: spec.memory_mib,
        smt: None,
        track_dirty_pages: None,
    })
    .await?;
    api.put_boot_source(&boot_source(spec)).await?;
    for drive in drives(spec) {
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
        uds_path: vsock_uds_path(&spec.runtime_dir),
    })
    .await
}

fn boot_source(spec: &LaunchSpec) -> BootSource {
    let boot_args = match spec.boot_args.trim() {
        "" => BASE_BOOT_ARGS.to_string(),
        extra => format!("{BASE_BOOT_ARGS} {extra}"),
    };
    BootSource {
        kernel_image_path: spec.kernel_elf.clone(),
        initrd_path: Some(spec.initrd.clone()),
        boot_args: Some(boot_args),
    }
}

/// The shared base image read-only and the VM's own upper layer read-write; the
/// initramfs mounts them as an overlay, so neither is the kernel's root device.
fn drives(spec: &LaunchSpec) -> [Drive; 2] {
    [
        Drive {
            drive_id: "root".into(),
            path_on_host: spec.root_disk.clone(),
            is_root_device: false,
            is_read_only: true,
            cache_type: None,
        },
        Drive {
            drive_id: "upper".into(),
            path_on_host: spec.upper_disk.clone(),
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
