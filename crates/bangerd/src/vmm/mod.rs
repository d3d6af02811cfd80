//! VMM backends. A backend turns a [`LaunchSpec`] into a running VMM process and
//! controls it afterwards; the VM manager owns the process's lifecycle (supervision,
//! adoption, cleanup), so a backend never ties a VMM to a request or to the daemon.

pub mod firecracker;
pub mod qemu;
mod qmp;
pub mod user;

/// The Firecracker backend, when its binary is on this host.
pub fn firecracker_backend() -> Option<std::sync::Arc<dyn Vmm>> {
    firecracker::Firecracker::locate()
        .ok()
        .map(|f| std::sync::Arc::new(f) as std::sync::Arc<dyn Vmm>)
}

use std::path::PathBuf;

use banger_wire::api::Backend;
use banger_wire::{Diagnostic, ErrorCode};

/// Everything a backend needs to start one VM.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub vm_id: String,
    pub name: String,
    pub vcpu: u32,
    pub memory_mib: u32,
    /// Uncompressed ELF kernel (Firecracker).
    pub kernel_elf: PathBuf,
    /// bzImage kernel (QEMU).
    pub kernel_bzimage: PathBuf,
    pub initrd: PathBuf,
    /// `banger.*` arguments (see `banger_wire::agent::BootConfig`); the backend adds
    /// its own console and reboot arguments, and keeps the secret ones (the token) off
    /// every host command line.
    pub boot_args: String,
    /// Shared base root filesystem, attached read-only.
    pub root_disk: PathBuf,
    /// This VM's sparse writable disk (overlay upper layer).
    pub upper_disk: PathBuf,
    /// Host tap device and guest MAC, when the VM has a network.
    pub net: Option<NetAttach>,
    /// Directory for this VM's sockets; exists and is empty.
    pub runtime_dir: PathBuf,
    /// Guest serial console output goes here (appended).
    pub serial_log: PathBuf,
    /// The VMM's own log goes here (QEMU appends; Firecracker rotates the previous one
    /// to `<vmm_log>.prev` because it cannot append).
    pub vmm_log: PathBuf,
}

/// Where one snapshot's files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFiles {
    /// The backend's own files (device state, memory) go here; it exists.
    pub dir: PathBuf,
    /// The copy of the VM's writable disk taken with the snapshot, while it was
    /// paused. A restore may open it before switching to the clone's own disk, so it
    /// must stay where it is for as long as the snapshot exists.
    pub disk: PathBuf,
}

#[derive(Debug, Clone)]
pub struct NetAttach {
    pub tap: String,
    pub mac: String,
}

/// How the daemon reaches the guest agent of a launched VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// Connect to this Unix socket (QEMU virtio-serial chardev, server side is QEMU).
    /// The agent speaks first once it opens its port.
    Connect(PathBuf),
    /// Listen on this Unix socket; the agent connects out through Firecracker's vsock
    /// (`<vsock uds>_<port>`). Must be bound before the guest boots.
    Listen(PathBuf),
}

/// A VMM process that has been started.
#[derive(Debug, Clone)]
pub struct Launched {
    pub pid: u32,
    /// The VMM's control socket (Firecracker API or QMP).
    pub control_socket: PathBuf,
    pub agent: AgentEndpoint,
    /// The uid a jailed VMM runs as; its sockets must be owned by it. `None`: root.
    pub vmm_uid: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("{binary} not found")]
    BinaryMissing { binary: String },
    #[error("failed to spawn {binary}")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    /// The VMM refused the configuration; `message` is its own words, verbatim
    /// (Firecracker's `fault_message`, QMP's `desc`).
    #[error("{backend} refused the request: {message}")]
    Refused {
        backend: &'static str,
        message: String,
    },
    #[error("{backend} exited during start: {detail}")]
    DiedDuringStart {
        backend: &'static str,
        detail: String,
    },
    #[error("{backend} control socket {path} did not appear")]
    NoControlSocket {
        backend: &'static str,
        path: PathBuf,
    },
    #[error("talking to {backend} over {path} failed")]
    Control {
        backend: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing the VMM's jail {path} failed")]
    Jail {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("the VMM user {user:?} does not exist")]
    NoVmmUser { user: String },
    #[error("cannot open {what} for the VMM")]
    Handoff {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Diagnostic for VmmError {
    fn code(&self) -> ErrorCode {
        ErrorCode::VmmFailed
    }

    fn hint(&self) -> Option<String> {
        match self {
            VmmError::BinaryMissing { binary } if binary.contains("qemu") => {
                Some("install it: apt-get install qemu-system-x86".into())
            }
            VmmError::BinaryMissing { .. } => Some(
                "put firecracker on PATH or set BANGER_FIRECRACKER, or use --backend qemu".into(),
            ),
            VmmError::DiedDuringStart { .. } => Some("see `banger vm logs NAME`".into()),
            VmmError::NoVmmUser { .. } => Some(format!(
                "VMMs never run as root; create the user with `make install` or `{}`",
                user::CREATE_VMM_USER
            )),
            _ => None,
        }
    }
}

/// One VMM implementation.
#[async_trait::async_trait]
pub trait Vmm: Send + Sync {
    fn backend(&self) -> Backend;

    /// Spawns and configures the VMM and boots the guest. Returns once the guest has
    /// been started (not once it is ready: the agent's hello says that). The process
    /// must not be tied to the caller: it keeps running when the future is dropped after
    /// success, and when the daemon exits. On error nothing is left running.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Launched, VmmError>;

    /// Asks the guest to shut down (Ctrl-Alt-Del / ACPI power button). The caller
    /// falls back to a kill after its timeout.
    async fn request_shutdown(&self, launched: &Launched) -> Result<(), VmmError>;

    /// Where the daemon must listen for the agent before launch, for backends whose
    /// guest dials out (Firecracker vsock). `None` when the daemon connects instead.
    /// Its directory may not exist yet.
    fn agent_listen_path(&self, _runtime_dir: &std::path::Path, _vm_id: &str) -> Option<PathBuf> {
        None
    }

    /// Lets the VMM reach the agent socket the daemon bound (a jailed VMM is not root).
    fn share_agent_socket(&self, _path: &std::path::Path) -> Result<(), VmmError> {
        Ok(())
    }

    /// Rebuilds the handle of a VMM that is still running after a daemon restart.
    fn attach(&self, runtime_dir: &std::path::Path, vm_id: &str, pid: u32) -> Launched;

    /// Removes what a VMM's run left on the host (sockets, jail, mounts, cgroup). Call
    /// once the process is gone, before removing the runtime dir.
    fn release(&self, _runtime_dir: &std::path::Path, _vm_id: &str) {}

    async fn pause(&self, launched: &Launched) -> Result<(), VmmError>;
    async fn resume(&self, launched: &Launched) -> Result<(), VmmError>;

    /// Saves a paused guest's device and memory state into `snap.dir`; the guest stays
    /// paused. `snap.disk` already holds the copy of the disk that `upper_disk` (the
    /// VM's own writable disk) was at this instant.
    async fn snapshot(
        &self,
        launched: &Launched,
        upper_disk: &std::path::Path,
        snap: &SnapshotFiles,
    ) -> Result<(), VmmError>;

    /// Like [`Vmm::launch`], but the guest resumes from `snap` instead of booting,
    /// on `spec`'s writable disk, network and sockets. `spec`'s vcpu, memory and
    /// device set must be the snapshotted VM's. On error nothing is left running.
    async fn restore(&self, spec: &LaunchSpec, snap: &SnapshotFiles) -> Result<Launched, VmmError>;

    /// Drops what the backend keeps of snapshot `snap` for its clones; the snapshot is
    /// being deleted.
    fn forget_snapshot(&self, _snap: &SnapshotFiles) {}
}
