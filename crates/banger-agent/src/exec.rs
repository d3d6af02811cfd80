//! `AgentRequest::Exec`: validate the spec, spawn the process ([`crate::spawn`]: pipes
//! or a pty) and hand it to [`crate::run`] for the frame loop.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use banger_wire::agent::{ExecSpec, GuestFrame};
use banger_wire::{Diagnostic, ErrorCode, WireError};
use tokio::process::Command;

use crate::accounts::{AccountError, Accounts};
use crate::frame::{FrameReader, FrameWriter};
use crate::run;
use crate::spawn::{self, SpawnFailure, Spawned};

/// Settings every exec starts from.
#[derive(Debug, Clone)]
pub struct ExecDefaults {
    /// Working directory when the spec names none (and runs as root).
    pub cwd: PathBuf,
    /// Where the users of `ExecSpec::user` are found or created.
    pub accounts: Accounts,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("empty argv: nothing to run")]
    EmptyArgv,
    #[error("working directory {dir} does not exist in the guest")]
    CwdMissing { dir: String },
    #[error("working directory {dir} is not a directory")]
    CwdNotDir { dir: String },
    #[error("command not found: {program}")]
    NotFound { program: String },
    #[error("permission denied running {program}")]
    PermissionDenied {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open a pseudo-terminal")]
    Pty(#[source] nix::Error),
    #[error(transparent)]
    User(#[from] AccountError),
}

impl Diagnostic for ExecError {
    fn code(&self) -> ErrorCode {
        match self {
            ExecError::EmptyArgv | ExecError::CwdMissing { .. } | ExecError::CwdNotDir { .. } => {
                ErrorCode::InvalidArgument
            }
            ExecError::NotFound { .. } => ErrorCode::NotFound,
            ExecError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            ExecError::Spawn { .. } | ExecError::Pty(_) => ErrorCode::AgentFailed,
            ExecError::User(e) => e.code(),
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ExecError::NotFound { program } => Some(format!(
                "check that {program} is installed in the guest and on its PATH"
            )),
            ExecError::User(e) => e.hint(),
            _ => None,
        }
    }
}

impl ExecError {
    fn from_spawn(program: &str, source: io::Error) -> ExecError {
        let program = program.to_string();
        match source.kind() {
            io::ErrorKind::NotFound => ExecError::NotFound { program },
            io::ErrorKind::PermissionDenied => ExecError::PermissionDenied { program, source },
            _ => ExecError::Spawn { program, source },
        }
    }
}

/// Serves one exec request to completion on its stream.
pub async fn serve(
    spec: ExecSpec,
    defaults: &ExecDefaults,
    reader: FrameReader,
    mut writer: FrameWriter,
) {
    let timeout = spec.timeout_ms.map(Duration::from_millis);
    match start(&spec, defaults) {
        Ok(spawned) => run::run(spawned, timeout, reader, writer).await,
        Err(e) => {
            tracing::info!(argv0 = spec.argv.first().map(String::as_str), cause = %crate::logging::chain(&e), "exec refused");
            run::reply_once(
                &mut writer,
                &GuestFrame::Error(WireError::from_diagnostic(&e)),
            )
            .await;
        }
    }
}

/// Spawns `spec` as a group leader: on a pty when it asks for one, else on pipes.
pub(crate) fn start(spec: &ExecSpec, defaults: &ExecDefaults) -> Result<Spawned, ExecError> {
    let (program, args) = spec.argv.split_first().ok_or(ExecError::EmptyArgv)?;
    let account = match &spec.user {
        Some(user) if !user.is_root() => Some(defaults.accounts.ensure(user)?),
        _ => None,
    };
    let cwd = match (&spec.cwd, &account) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(account)) if account.home.is_dir() => account.home.clone(),
        (None, Some(_)) => PathBuf::from("/"),
        (None, None) => defaults.cwd.clone(),
    };
    check_cwd(&cwd)?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(account) = &account {
        spawn::as_user(&mut cmd, account);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd);
    let spawned = match spec.tty {
        Some(size) => {
            if !spec.env.iter().any(|(k, _)| k == "TERM") {
                cmd.env("TERM", "xterm-256color");
            }
            spawn::on_pty(cmd, size)
        }
        None => spawn::piped(cmd),
    };
    spawned.map_err(|e| match e {
        SpawnFailure::Io(e) => ExecError::from_spawn(program, e),
        SpawnFailure::Pty(e) => ExecError::Pty(e),
    })
}

fn check_cwd(dir: &Path) -> Result<(), ExecError> {
    let shown = || dir.display().to_string();
    match fs_err::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ExecError::CwdNotDir { dir: shown() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(ExecError::CwdMissing { dir: shown() })
        }
        // Anything else (e.g. EACCES) surfaces from the spawn itself.
        Err(_) => Ok(()),
    }
}
