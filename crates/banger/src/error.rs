//! CLI errors and their exit codes.

use banger_wire::{ErrorCode, WireError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon (or the agent behind it) answered with an error.
    #[error("{}", .0.message)]
    Remote(WireError),
    #[error("cannot reach bangerd at {socket}")]
    Unreachable {
        socket: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bangerd did not start")]
    DaemonStart { detail: String },
    #[error("cannot run {}", path.display())]
    NoDaemonBinary {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to bangerd failed")]
    Http(#[from] hyper::Error),
    #[error("bangerd sent an answer this CLI does not understand")]
    Protocol(#[from] serde_json::Error),
    #[error("i/o failed")]
    Io(#[from] std::io::Error),
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },
    #[error("agent stream failed")]
    Decode(#[from] banger_wire::agent::DecodeError),
    #[error(transparent)]
    RuntimeDir(#[from] banger_host::private_dir::PrivateDirError),
    /// The CLI's own access to the user's files, with the user's permissions.
    #[error("cannot {what} {}", path.display())]
    Local {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub fn usage(message: impl Into<String>, hint: Option<&str>) -> CliError {
        CliError::Usage {
            message: message.into(),
            hint: hint.map(String::from),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            CliError::Remote(e) => e.code,
            CliError::Unreachable { .. }
            | CliError::DaemonStart { .. }
            | CliError::NoDaemonBinary { .. } => ErrorCode::Unavailable,
            CliError::Usage { .. } => ErrorCode::InvalidArgument,
            CliError::Http(_) | CliError::Protocol(_) | CliError::Decode(_) => ErrorCode::Internal,
            CliError::Io(_) => ErrorCode::HostFailed,
            CliError::Local { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                ErrorCode::PermissionDenied
            }
            CliError::Local { .. } => ErrorCode::HostFailed,
            CliError::RuntimeDir(banger_host::private_dir::PrivateDirError::Io { .. }) => {
                ErrorCode::HostFailed
            }
            CliError::RuntimeDir(_) => ErrorCode::PermissionDenied,
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.code().exit_code()
    }

    /// The causes below the message, outermost first.
    pub fn chain(&self) -> Vec<String> {
        match self {
            CliError::Remote(e) => e.chain.clone(),
            CliError::DaemonStart { detail } => vec![detail.clone()],
            _ => {
                let mut out = Vec::new();
                let mut cur = std::error::Error::source(self);
                while let Some(e) = cur {
                    out.push(e.to_string());
                    cur = e.source();
                }
                out
            }
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            CliError::Remote(e) => e.hint.clone(),
            CliError::Unreachable { .. } => {
                Some("start it with `banger daemon start`, or check `banger daemon status`".into())
            }
            CliError::DaemonStart { .. } => Some("see `banger daemon logs`".into()),
            CliError::NoDaemonBinary { .. } => Some(
                "install bangerd next to banger or on PATH, or point BANGER_DAEMON at it".into(),
            ),
            CliError::Usage { hint, .. } => hint.clone(),
            CliError::RuntimeDir(e) => e.hint(),
            CliError::Local { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                Some(
                    "banger reads and writes your files with your own permissions; \
                     use a path you may access, or run it as its owner"
                        .into(),
                )
            }
            _ => None,
        }
    }
}
