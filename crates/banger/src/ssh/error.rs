//! What can go wrong in `banger vm ssh` and `banger vm ssh-config`.

use std::path::PathBuf;

use banger_wire::{Diagnostic, ErrorCode};

use crate::error::CliError;
use crate::workspace::exec::{CaptureError, GuestFailed};

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("vm {vm} is {state}, not running")]
    NotRunning { vm: String, state: &'static str },
    #[error("banger's SSH key {path} does not exist")]
    NoKey { path: PathBuf },
    #[error("vm {vm} has no sshd")]
    NoSshd { vm: String },
    #[error("sshd in vm {vm} did not come up with a host key in time")]
    SshdTimeout { vm: String },
    #[error("vm {vm} offered a malformed SSH host key: {text:?}")]
    BadHostKey { vm: String, text: String },
    #[error("the SSH host key of vm {vm} changed since it was pinned in {file}")]
    HostKeyChanged { vm: String, file: PathBuf },
    #[error(transparent)]
    Guest(#[from] GuestFailed),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run ssh")]
    SshMissing(#[source] std::io::Error),
    #[error("cannot find the banger executable for the ProxyCommand")]
    NoExe(#[source] std::io::Error),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    Cli(#[from] CliError),
}

impl Diagnostic for SshError {
    fn code(&self) -> ErrorCode {
        match self {
            SshError::NotRunning { .. } | SshError::NoSshd { .. } => ErrorCode::FailedPrecondition,
            SshError::NoKey { .. }
            | SshError::Write { .. }
            | SshError::SshMissing(_)
            | SshError::NoExe(_) => ErrorCode::HostFailed,
            SshError::SshdTimeout { .. } => ErrorCode::Timeout,
            SshError::BadHostKey { .. } => ErrorCode::AgentFailed,
            SshError::Guest(e) => e.code(),
            SshError::HostKeyChanged { .. } => ErrorCode::PermissionDenied,
            SshError::Capture(e) => e.code(),
            SshError::Cli(e) => e.code(),
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            SshError::NotRunning { vm, .. } => format!("start it with `banger vm start {vm}`"),
            SshError::NoKey { .. } => {
                "bangerd creates it when it starts: `banger daemon stop && banger daemon start`"
                    .into()
            }
            SshError::NoSshd { vm } => format!(
                "use an image with openssh-server, or run commands with `banger vm exec {vm}`"
            ),
            SshError::SshdTimeout { vm } => format!("see `banger vm logs {vm}`"),
            SshError::HostKeyChanged { file, .. } => format!(
                "if the guest's key was changed on purpose, remove {} and connect again",
                file.display()
            ),
            SshError::SshMissing(_) => {
                "install the OpenSSH client: apt-get install openssh-client".into()
            }
            SshError::Capture(e) => return e.hint(),
            SshError::Cli(e) => return e.hint(),
            _ => return None,
        })
    }

    fn chain(&self) -> Vec<String> {
        match self {
            SshError::Capture(e) => e.chain(),
            SshError::Cli(e) => e.chain(),
            _ => banger_wire::error::causes(std::error::Error::source(self)),
        }
    }
}

impl From<SshError> for CliError {
    fn from(e: SshError) -> CliError {
        match e {
            SshError::Capture(CaptureError::Cli(e)) | SshError::Cli(e) => e,
            other => CliError::failed(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::render_error;

    #[test]
    fn a_changed_key_is_refused_with_the_file_to_remove() {
        let err = SshError::HostKeyChanged {
            vm: "web".into(),
            file: "/s/ssh/known_hosts/0a1b".into(),
        };

        let cli = CliError::from(err);

        assert_eq!(
            render_error(&cli, false),
            "error: the SSH host key of vm web changed since it was pinned in /s/ssh/known_hosts/0a1b\n\
             hint: if the guest's key was changed on purpose, remove /s/ssh/known_hosts/0a1b and connect again\n"
        );
        assert_eq!(
            cli.code().exit_code(),
            ErrorCode::PermissionDenied.exit_code()
        );
    }
}
