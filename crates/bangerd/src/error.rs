//! The daemon's error type and its mapping onto the wire error.

use banger_wire::{Diagnostic, ErrorCode, WireError};

use crate::agent_conn::AgentError;
use crate::image::ImageError;
use crate::store::StoreError;
use crate::vmm::VmmError;

/// The last lines of a guest's serial console, carried as the cause of a failed boot.
#[derive(Debug, thiserror::Error)]
#[error("the guest console ends with:\n{0}")]
pub struct ConsoleTail(pub String);

/// Why a daemon request failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{message}")]
    Invalid {
        message: String,
        hint: Option<String>,
    },
    #[error("vm {0:?} not found")]
    VmNotFound(String),
    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),
    #[error("vm {name:?} is {state}")]
    WrongState {
        name: String,
        state: &'static str,
        hint: String,
    },
    #[error("image {name:?} is in use")]
    ImageInUse { name: String, hint: String },
    #[error("a vm named {0:?} already exists")]
    NameTaken(String),
    #[error("image {name:?} is not usable")]
    Image {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        code: ErrorCode,
        hint: Option<String>,
    },
    #[error("vm {vm:?}: the vmm failed")]
    Vmm {
        vm: String,
        #[source]
        source: VmmError,
    },
    #[error("vm {vm:?} crashed during boot: {detail}")]
    BootCrashed { vm: String, detail: String },
    #[error("vm {vm:?}: the guest agent did not answer within {secs}s")]
    BootTimeout {
        vm: String,
        secs: u64,
        #[source]
        console: ConsoleTail,
    },
    #[error("vm {vm:?}: guest agent failed")]
    Agent {
        vm: String,
        #[source]
        source: AgentError,
    },
    #[error("vm {vm:?}: host networking failed")]
    Network {
        vm: String,
        #[source]
        source: Box<crate::net::NetError>,
    },
    #[error("host networking is unavailable")]
    NoNetwork { reason: String },
    #[error("store failed")]
    Store(#[from] StoreError),
    #[error("{what} failed for {path}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("{what} is for root only")]
    RootOnly { what: String, hint: String },
    #[error(transparent)]
    Port(#[from] crate::net::PortError),
}

impl DaemonError {
    pub fn invalid(message: impl Into<String>) -> DaemonError {
        DaemonError::Invalid {
            message: message.into(),
            hint: None,
        }
    }

    /// Image `name` failed for the request.
    pub fn image(name: &str, e: ImageError) -> DaemonError {
        DaemonError::Image {
            name: name.to_string(),
            code: e.code(),
            hint: e.hint(),
            source: Box::new(e),
        }
    }

    /// A network failure outside any one VM's operation; a refused policy is bad input.
    pub fn from_net(e: crate::net::NetError) -> DaemonError {
        match e {
            crate::net::NetError::InvalidPolicy { .. } => DaemonError::Invalid {
                message: e.to_string(),
                hint: e.hint(),
            },
            e => DaemonError::Network {
                vm: "(all)".into(),
                source: Box::new(e),
            },
        }
    }

    pub fn to_wire(&self) -> WireError {
        WireError::from_diagnostic(self)
    }
}

impl Diagnostic for DaemonError {
    fn code(&self) -> ErrorCode {
        match self {
            DaemonError::Invalid { .. } => ErrorCode::InvalidArgument,
            DaemonError::VmNotFound(_) | DaemonError::SnapshotNotFound(_) => ErrorCode::NotFound,
            DaemonError::Store(StoreError::SnapshotNameTaken(_)) => ErrorCode::AlreadyExists,
            DaemonError::WrongState { .. } | DaemonError::ImageInUse { .. } => {
                ErrorCode::FailedPrecondition
            }
            DaemonError::NameTaken(_) | DaemonError::Store(StoreError::NameTaken(_)) => {
                ErrorCode::AlreadyExists
            }
            DaemonError::Image { code, .. } => *code,
            DaemonError::Vmm { source, .. } => source.code(),
            DaemonError::BootCrashed { .. } => ErrorCode::VmmFailed,
            DaemonError::BootTimeout { .. } => ErrorCode::Timeout,
            DaemonError::Agent { source, .. } => source.code(),
            DaemonError::Network { source, .. } => source.code(),
            DaemonError::Store(_) | DaemonError::Io { .. } => ErrorCode::HostFailed,
            DaemonError::NoNetwork { .. } => ErrorCode::FailedPrecondition,
            DaemonError::ShuttingDown => ErrorCode::Unavailable,
            DaemonError::RootOnly { .. } => ErrorCode::PermissionDenied,
            DaemonError::Port(e) => e.code(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            DaemonError::Invalid { hint, .. } => hint.clone(),
            DaemonError::VmNotFound(_) => Some("list VMs with `banger vm list`".into()),
            DaemonError::SnapshotNotFound(_) => {
                Some("list snapshots with `banger vm snapshot list`".into())
            }
            DaemonError::Store(StoreError::SnapshotNameTaken(_)) => Some(
                "pick another name, or delete the old one with `banger vm snapshot delete NAME`"
                    .into(),
            ),
            DaemonError::WrongState { hint, .. }
            | DaemonError::ImageInUse { hint, .. }
            | DaemonError::RootOnly { hint, .. } => {
                Some(hint.clone())
            }
            DaemonError::NameTaken(_) | DaemonError::Store(StoreError::NameTaken(_)) => {
                Some("pick another name, or delete the old VM with `banger vm delete NAME`".into())
            }
            DaemonError::Image { hint, .. } => hint.clone(),
            DaemonError::Vmm { source, .. } => source.hint(),
            DaemonError::BootCrashed { vm, .. } => {
                Some(format!("see the guest console with `banger vm logs {vm}`"))
            }
            DaemonError::BootTimeout { vm, .. } => Some(format!(
                "see the guest console with `banger vm logs {vm}`; raise boot_timeout_secs in config.toml on a slow host"
            )),
            DaemonError::Agent { source, .. } => source.hint(),
            DaemonError::Store(_) => Some("run `banger doctor`".into()),
            DaemonError::Network { source, .. } => source.hint(),
            DaemonError::NoNetwork { reason } => Some(format!(
                "{reason}; run bangerd as root, or create the VM with --no-network"
            )),
            DaemonError::Io { .. } => None,
            DaemonError::ShuttingDown => Some("start it again with `banger daemon start`".into()),
            DaemonError::Port(e) => e.hint(),
        }
    }
}

impl From<&DaemonError> for WireError {
    fn from(e: &DaemonError) -> WireError {
        e.to_wire()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_error_carries_code_chain_and_hint() {
        let err = DaemonError::Vmm {
            vm: "web".into(),
            source: VmmError::Refused {
                backend: "firecracker",
                message: "Invalid vCPU count".into(),
            },
        };
        let wire = err.to_wire();
        assert_eq!(wire.code, ErrorCode::VmmFailed);
        assert_eq!(wire.message, "vm \"web\": the vmm failed");
        assert_eq!(
            wire.chain,
            vec!["firecracker refused the request: Invalid vCPU count"]
        );
    }

    #[test]
    fn not_found_points_at_vm_list() {
        let wire = DaemonError::VmNotFound("nope".into()).to_wire();
        assert_eq!(wire.code, ErrorCode::NotFound);
        assert!(wire.hint.unwrap().contains("banger vm list"));
    }
}
