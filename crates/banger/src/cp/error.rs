//! What can go wrong in `banger vm cp`.

use std::path::PathBuf;

use banger_wire::{Diagnostic, ErrorCode};

use crate::error::CliError;
use crate::workspace::exec::{CaptureError, GuestFailed};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{path} does not exist")]
    SourceMissing { path: String },
    #[error("directory {path} does not exist")]
    DirMissing { path: String },
    #[error("cannot copy directory {src} over {dst}, which is not a directory")]
    DirOverFile { src: String, dst: String },
    #[error("{path} is not a directory")]
    NotADir { path: String },
    #[error("two sources are named {name:?}; they would land on the same path")]
    SameName { name: String },
    #[error("{path} names no single file or directory")]
    NoName { path: String },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} shrank while it was being copied")]
    Shrank { path: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the archive from vm {vm} is malformed")]
    Malformed {
        vm: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing entry {entry:?} from vm {vm}: {reason}")]
    Unsafe {
        vm: String,
        entry: String,
        reason: &'static str,
    },
    #[error("vm {vm} has no tar")]
    NoTar { vm: String },
    #[error(transparent)]
    Guest(#[from] GuestFailed),
    /// The consumer of the stream went away; the reason is reported by the other side.
    #[error("the copy stream closed early")]
    Closed,
    #[error("the copy worker failed")]
    Worker(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
}

impl Diagnostic for CopyError {
    fn code(&self) -> ErrorCode {
        match self {
            CopyError::SourceMissing { .. } | CopyError::DirMissing { .. } => ErrorCode::NotFound,
            CopyError::DirOverFile { .. }
            | CopyError::NoName { .. }
            | CopyError::NotADir { .. }
            | CopyError::SameName { .. } => ErrorCode::InvalidArgument,
            CopyError::Unsafe { .. } => ErrorCode::PermissionDenied,
            CopyError::NoTar { .. } | CopyError::Malformed { .. } => ErrorCode::AgentFailed,
            CopyError::Guest(e) => e.code(),
            CopyError::Read { .. }
            | CopyError::Shrank { .. }
            | CopyError::Write { .. }
            | CopyError::Closed => ErrorCode::HostFailed,
            CopyError::Worker(_) => ErrorCode::Internal,
            CopyError::Capture(e) => e.code(),
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            CopyError::NoTar { .. } => "use an image that has GNU tar installed".into(),
            CopyError::Shrank { .. } => "run the copy again".into(),
            CopyError::Unsafe { .. } => {
                "the guest sent a path that would land outside the destination; files before it \
                 were written"
                    .into()
            }
            CopyError::NoName { .. } => "name the file or directory itself".into(),
            CopyError::NotADir { .. } => {
                "with several sources the destination must be an existing directory".into()
            }
            CopyError::SameName { .. } => {
                "copy them one at a time, to different destinations".into()
            }
            CopyError::Capture(e) => return e.hint(),
            _ => return None,
        })
    }

    fn chain(&self) -> Vec<String> {
        match self {
            CopyError::Capture(e) => e.chain(),
            _ => banger_wire::error::causes(std::error::Error::source(self)),
        }
    }
}

impl From<CopyError> for CliError {
    fn from(e: CopyError) -> CliError {
        match e {
            CopyError::Capture(CaptureError::Cli(e)) => e,
            other => CliError::failed(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::render_error;

    #[test]
    fn a_guest_failure_renders_its_stderr_as_the_cause() {
        let err = CopyError::Guest(GuestFailed::new(
            "web",
            "tar -x",
            2,
            b"tar: /x: Cannot open: No space left on device\n",
        ));

        let cli = CliError::from(err);

        assert_eq!(
            render_error(&cli, false),
            "error: vm web: tar -x failed in the guest (exit code 2)\n\
             caused by: tar: /x: Cannot open: No space left on device\n"
        );
        assert_eq!(cli.code().exit_code(), ErrorCode::AgentFailed.exit_code());
    }

    #[test]
    fn a_missing_source_is_not_found() {
        let cli = CliError::from(CopyError::SourceMissing {
            path: "web:/nope".into(),
        });
        assert!(matches!(cli, CliError::Failed(_)), "{cli:?}");
        assert_eq!(cli.to_string(), "web:/nope does not exist");
        assert_eq!(cli.code().exit_code(), ErrorCode::NotFound.exit_code());
    }
}
