//! Tool failures, answered as MCP tool errors (`isError: true`) whose text is the
//! same `error:` / `caused by:` / `hint:` rendering the CLI prints.

use banger_wire::{Diagnostic, ErrorCode};
use rmcp::model::{ContentBlock, IntoContents};

use super::roots::PathError;
use crate::error::CliError;
use crate::workspace::exec::GuestFailed;
use crate::workspace::WorkspaceError;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The daemon, the agent or the exec stream failed.
    #[error(transparent)]
    Cli(#[from] CliError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("{message}")]
    Invalid {
        message: String,
        hint: Option<String>,
    },
    #[error(transparent)]
    Guest(#[from] GuestFailed),
    #[error("vm {vm} stopped answering {secs}s after the command's own timeout")]
    Unresponsive { vm: String, secs: u64 },
    #[error("the patch from vm {vm} is {bytes} bytes, more than the {cap} an answer may carry")]
    PatchTooLarge { vm: String, bytes: u64, cap: usize },
    #[error("the call was cancelled (by the client, or the server is stopping); the command in vm {vm} was killed")]
    Cancelled { vm: String },
    #[error("the repository around {path} has its top at {root}, outside the allowed directories")]
    RepoOutside {
        path: std::path::PathBuf,
        root: std::path::PathBuf,
    },
    #[error("vm {vm} was not created by this MCP server")]
    OutOfScope { vm: String },
    #[error("the run's task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl From<WorkspaceError> for ToolError {
    fn from(e: WorkspaceError) -> ToolError {
        ToolError::Cli(e.into())
    }
}

impl ToolError {
    pub fn invalid(message: impl Into<String>, hint: Option<&str>) -> ToolError {
        ToolError::Invalid {
            message: message.into(),
            hint: hint.map(String::from),
        }
    }

    /// The text a model reads.
    pub fn render(&self) -> String {
        crate::output::render_error(self, false)
            .trim_end()
            .to_string()
    }
}

impl Diagnostic for ToolError {
    fn code(&self) -> ErrorCode {
        match self {
            ToolError::Cli(e) => e.code(),
            ToolError::Path(e) => e.code(),
            ToolError::Invalid { .. } => ErrorCode::InvalidArgument,
            ToolError::Guest(e) => e.code(),
            ToolError::Unresponsive { .. } => ErrorCode::Timeout,
            ToolError::PatchTooLarge { .. } => ErrorCode::FailedPrecondition,
            ToolError::Cancelled { .. } => ErrorCode::Unavailable,
            ToolError::OutOfScope { .. } | ToolError::RepoOutside { .. } => {
                ErrorCode::PermissionDenied
            }
            ToolError::Task(_) => ErrorCode::Internal,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ToolError::Cli(e) => e.hint(),
            ToolError::Path(e) => e.hint(),
            ToolError::Invalid { hint, .. } => hint.clone(),
            ToolError::Unresponsive { vm, .. } => Some(format!(
                "check the VM with the vm_list tool or `banger vm logs {vm}`"
            )),
            ToolError::PatchTooLarge { .. } => Some(
                "pass `output` (a .patch file inside an allowed directory) to write the patch there"
                    .into(),
            ),
            ToolError::OutOfScope { vm } => Some(format!(
                "create VMs with vm_create; to act on {vm}, start the server with `banger mcp --allow-vm {vm}` (or --all-vms)"
            )),
            ToolError::RepoOutside { .. } => Some(
                "restart the server with --allow-path naming the repository's top directory"
                    .into(),
            ),
            ToolError::Guest(_) | ToolError::Cancelled { .. } | ToolError::Task(_) => None,
        }
    }

    fn chain(&self) -> Vec<String> {
        match self {
            ToolError::Cli(e) => e.chain(),
            _ => banger_wire::error::causes(std::error::Error::source(self)),
        }
    }
}

impl IntoContents for ToolError {
    fn into_contents(self) -> Vec<ContentBlock> {
        tracing::debug!(error = %self, "tool failed");
        vec![ContentBlock::text(self.render())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_error_keeps_its_message_chain_and_hint() {
        let err = ToolError::Cli(CliError::Remote(banger_wire::WireError {
            code: ErrorCode::NotFound,
            message: "vm \"web\" not found".into(),
            chain: vec!["no such row".into()],
            hint: Some("list VMs with `banger vm list`".into()),
        }));

        assert_eq!(
            err.render(),
            "error: vm \"web\" not found\ncaused by: no such row\nhint: list VMs with `banger vm list`"
        );
        assert_eq!(err.code(), ErrorCode::NotFound);
    }

    #[test]
    fn a_failed_guest_step_carries_its_stderr() {
        let err = ToolError::from(GuestFailed::new(
            "dev",
            "writing /etc/x",
            1,
            b"sh: permission denied\n",
        ));

        assert_eq!(
            err.render(),
            "error: vm dev: writing /etc/x failed in the guest (exit code 1)\ncaused by: sh: permission denied"
        );
    }
}
