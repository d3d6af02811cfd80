//! CLI errors and their exit codes.

use banger_wire::api::Response;
use banger_wire::{Diagnostic, ErrorCode, WireError};

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
    #[error("bangerd sent an unexpected answer: {answer}")]
    Unexpected { answer: String },
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
    /// A failure in one of the CLI's own parts (a copy, ssh, a workspace, the MCP
    /// server), which says its own code and hint.
    #[error("{0}")]
    Failed(Box<dyn Diagnostic + Send + Sync>),
}

impl CliError {
    pub fn usage(message: impl Into<String>, hint: Option<&str>) -> CliError {
        CliError::Usage {
            message: message.into(),
            hint: hint.map(String::from),
        }
    }

    /// A daemon answer of the wrong kind for the request.
    pub fn unexpected(resp: Response) -> CliError {
        CliError::Unexpected {
            answer: format!("{resp:?}"),
        }
    }

    /// A failure of the CLI's own.
    pub fn failed(e: impl Diagnostic + Send + Sync + 'static) -> CliError {
        CliError::Failed(Box::new(e))
    }

    /// The error this one only wraps, if it does.
    fn wrapped(&self) -> Option<&dyn Diagnostic> {
        match self {
            CliError::Remote(e) => Some(e),
            CliError::Failed(e) => Some(&**e),
            _ => None,
        }
    }
}

impl Diagnostic for CliError {
    fn code(&self) -> ErrorCode {
        match self {
            CliError::Remote(e) => e.code,
            CliError::Failed(e) => e.code(),
            CliError::Unreachable { .. }
            | CliError::DaemonStart { .. }
            | CliError::NoDaemonBinary { .. } => ErrorCode::Unavailable,
            CliError::Usage { .. } => ErrorCode::InvalidArgument,
            CliError::Http(_)
            | CliError::Protocol(_)
            | CliError::Unexpected { .. }
            | CliError::Decode(_) => ErrorCode::Internal,
            CliError::Io(_) => ErrorCode::HostFailed,
            CliError::Local { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                ErrorCode::PermissionDenied
            }
            CliError::Local { .. } => ErrorCode::HostFailed,
            CliError::RuntimeDir(e) => e.code(),
        }
    }

    fn chain(&self) -> Vec<String> {
        if let Some(e) = self.wrapped() {
            return e.chain();
        }
        match self {
            CliError::DaemonStart { detail } => vec![detail.clone()],
            _ => banger_wire::error::causes(std::error::Error::source(self)),
        }
    }

    fn hint(&self) -> Option<String> {
        if let Some(e) = self.wrapped() {
            return e.hint();
        }
        match self {
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
