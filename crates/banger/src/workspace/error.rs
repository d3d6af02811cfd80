//! What can go wrong while shipping a workspace in or bringing its changes back.

use std::path::PathBuf;

use banger_wire::{Diagnostic, ErrorCode};

use super::exec::{GuestFailed, Stderr};
use super::patch::Refusal;
use crate::error::CliError;

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("guest directory {dest:?} {reason}")]
    BadDest { dest: String, reason: &'static str },
    #[error("{path} is not inside a git repository")]
    NotARepo { path: PathBuf },
    #[error("{path} is a bare git repository, which has no working tree to ship")]
    BareRepo { path: PathBuf },
    #[error("cannot run git")]
    GitMissing(#[source] std::io::Error),
    #[error("`git {command}` failed in {dir}")]
    Git {
        command: String,
        dir: PathBuf,
        #[source]
        stderr: Stderr,
    },
    #[error("{repo} has submodules, which banger does not ship: {}", .paths.join(", "))]
    Submodules { repo: PathBuf, paths: Vec<String> },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} changed while it was being shipped")]
    Changed { path: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the stream to vm {vm} failed")]
    Stream {
        vm: String,
        #[source]
        source: std::io::Error,
    },
    #[error("vm {vm}: {dest} already exists in the guest and is not empty")]
    DestNotEmpty { vm: String, dest: String },
    #[error("vm {vm} has no {tool}")]
    GuestToolMissing { vm: String, tool: &'static str },
    #[error(transparent)]
    Guest(#[from] GuestFailed),
    #[error("vm {vm}: {dest} holds no workspace shipped by banger")]
    NoWorkspace { vm: String, dest: String },
    #[error("refusing the patch from vm {vm}")]
    Refused {
        vm: String,
        #[source]
        refusal: Refusal,
    },
    #[error("the patch from vm {vm} is larger than {} MiB", .limit >> 20)]
    PatchTooLarge { vm: String, limit: u64 },
    #[error("the patch from vm {vm} does not apply to {repo}")]
    DoesNotApply {
        vm: String,
        repo: PathBuf,
        #[source]
        stderr: Stderr,
    },
    /// The daemon or the exec stream failed; already a CLI error.
    #[error(transparent)]
    Cli(#[from] CliError),
}

impl Diagnostic for WorkspaceError {
    fn code(&self) -> ErrorCode {
        match self {
            WorkspaceError::BadDest { .. }
            | WorkspaceError::NotARepo { .. }
            | WorkspaceError::BareRepo { .. }
            | WorkspaceError::Submodules { .. } => ErrorCode::InvalidArgument,
            WorkspaceError::DestNotEmpty { .. }
            | WorkspaceError::NoWorkspace { .. }
            | WorkspaceError::DoesNotApply { .. } => ErrorCode::FailedPrecondition,
            WorkspaceError::Refused { .. } => ErrorCode::PermissionDenied,
            WorkspaceError::PatchTooLarge { .. } => ErrorCode::FailedPrecondition,
            WorkspaceError::GuestToolMissing { .. } => ErrorCode::AgentFailed,
            WorkspaceError::Guest(e) => e.code(),
            WorkspaceError::GitMissing(_)
            | WorkspaceError::Git { .. }
            | WorkspaceError::Read { .. }
            | WorkspaceError::Changed { .. }
            | WorkspaceError::Write { .. }
            | WorkspaceError::Stream { .. } => ErrorCode::HostFailed,
            WorkspaceError::Cli(e) => e.code(),
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            WorkspaceError::BadDest { .. } => {
                "give an absolute directory below /, e.g. /root/repo".into()
            }
            WorkspaceError::NotARepo { .. } => {
                "pass a directory inside a git repository, or run `git init` there first".into()
            }
            WorkspaceError::GitMissing(_) => "install git on this host".into(),
            WorkspaceError::Submodules { .. } => {
                "ship a checkout without submodules, or copy them in with `banger vm exec`".into()
            }
            WorkspaceError::Changed { .. } => "run the command again".into(),
            WorkspaceError::DestNotEmpty { vm, dest } => format!(
                "choose another --dest, or empty it: `banger vm exec {vm} -- rm -rf {dest}`"
            ),
            WorkspaceError::GuestToolMissing { tool, .. } => {
                format!("use an image that has {tool} installed")
            }
            WorkspaceError::NoWorkspace { vm, .. } => {
                format!("ship one first: `banger workspace prepare {vm} PATH`")
            }
            WorkspaceError::Refused { vm, .. } => format!(
                "nothing was written; inspect the patch with `banger workspace export {vm} -o FILE`"
            ),
            WorkspaceError::PatchTooLarge { vm, .. } => format!(
                "nothing was applied or saved; bring large files out with `banger vm cp {vm}:PATH .`"
            ),
            WorkspaceError::DoesNotApply { vm, .. } => format!(
                "nothing was written; save the patch with `banger workspace export {vm} -o FILE` \
                 and apply it by hand"
            ),
            WorkspaceError::Cli(e) => return e.hint(),
            _ => return None,
        })
    }

    fn chain(&self) -> Vec<String> {
        match self {
            WorkspaceError::Cli(e) => e.chain(),
            _ => banger_wire::error::causes(std::error::Error::source(self)),
        }
    }
}

impl From<WorkspaceError> for CliError {
    fn from(e: WorkspaceError) -> CliError {
        match e {
            WorkspaceError::Cli(e) => e,
            other => CliError::failed(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::render_error;

    #[test]
    fn a_refused_patch_renders_cause_and_hint_with_its_exit_code() {
        let err = WorkspaceError::Refused {
            vm: "dev".into(),
            refusal: Refusal::DotDot {
                path: "../x".into(),
            },
        };

        let cli = CliError::from(err);

        assert_eq!(
            render_error(&cli, false),
            "error: refusing the patch from vm dev\n\
             caused by: path \"../x\" climbs out with `..`\n\
             hint: nothing was written; inspect the patch with `banger workspace export dev -o FILE`\n"
        );
        assert_eq!(
            cli.code().exit_code(),
            ErrorCode::PermissionDenied.exit_code()
        );
    }
}
