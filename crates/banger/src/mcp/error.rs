//! Tool failures, answered as MCP tool errors (`isError: true`) whose text is the
//! same `error:` / `caused by:` / `hint:` rendering the CLI prints.

use banger_wire::{ErrorCode, WireError};
use rmcp::model::{ContentBlock, IntoContents};

use super::roots::PathError;
use crate::error::CliError;
use crate::workspace::WorkspaceError;

/// What a guest command wrote on stderr, as the cause of an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GuestStderr(pub String);

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
    #[error("vm {vm}: {what} failed in the guest (exit code {code})")]
    Guest {
        vm: String,
        what: String,
        code: i32,
        #[source]
        stderr: GuestStderr,
    },
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
    #[error("cannot write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
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

    pub fn guest(vm: &str, what: impl Into<String>, code: i32, stderr: &[u8]) -> ToolError {
        ToolError::Guest {
            vm: vm.into(),
            what: what.into(),
            code,
            stderr: GuestStderr(String::from_utf8_lossy(stderr).trim().to_string()),
        }
    }

    /// The structured form every banger process speaks.
    pub fn wire(&self) -> WireError {
        let (code, hint) = match self {
            ToolError::Cli(e) => {
                return WireError {
                    code: e.code(),
                    message: e.to_string(),
                    chain: e.chain(),
                    hint: e.hint(),
                }
            }
            ToolError::Path(e) => (e.code(), e.hint()),
            ToolError::Invalid { hint, .. } => (ErrorCode::InvalidArgument, hint.clone()),
            ToolError::Guest { .. } => (ErrorCode::AgentFailed, None),
            ToolError::Unresponsive { vm, .. } => (
                ErrorCode::Timeout,
                Some(format!("check the VM with the vm_list tool or `banger vm logs {vm}`")),
            ),
            ToolError::PatchTooLarge { .. } => (
                ErrorCode::FailedPrecondition,
                Some("pass `output` (a .patch file inside an allowed directory) to write the patch there".into()),
            ),
            ToolError::Cancelled { .. } => (ErrorCode::Unavailable, None),
            ToolError::OutOfScope { vm } => (
                ErrorCode::PermissionDenied,
                Some(format!(
                    "create VMs with vm_create; to act on {vm}, start the server with `banger mcp --allow-vm {vm}` (or --all-vms)"
                )),
            ),
            ToolError::RepoOutside { .. } => (
                ErrorCode::PermissionDenied,
                Some("restart the server with --allow-path naming the repository's top directory".into()),
            ),
            ToolError::Write { .. } => (ErrorCode::HostFailed, None),
        };
        WireError::from_error(code, self, hint)
    }

    /// The text a model reads.
    pub fn render(&self) -> String {
        crate::output::render_error(&CliError::Remote(self.wire()), false)
            .trim_end()
            .to_string()
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
        let err = ToolError::Cli(CliError::Remote(WireError {
            code: ErrorCode::NotFound,
            message: "vm \"web\" not found".into(),
            chain: vec!["no such row".into()],
            hint: Some("list VMs with `banger vm list`".into()),
        }));

        assert_eq!(
            err.render(),
            "error: vm \"web\" not found\ncaused by: no such row\nhint: list VMs with `banger vm list`"
        );
        assert_eq!(err.wire().code, ErrorCode::NotFound);
    }

    #[test]
    fn a_failed_guest_step_carries_its_stderr() {
        let err = ToolError::guest("dev", "writing /etc/x", 1, b"sh: permission denied\n");

        assert_eq!(
            err.render(),
            "error: vm dev: writing /etc/x failed in the guest (exit code 1)\ncaused by: sh: permission denied"
        );
    }
}
