//! `AgentRequest::Exec`: validate the spec, spawn the process (pipes or a pty) and
//! hand it to [`crate::run`] for the frame loop.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use banger_wire::agent::{ExecSpec, GuestFrame, TtySize};
use banger_wire::{Diagnostic, ErrorCode, WireError};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::fdio::FdStream;
use crate::frame::{FrameReader, FrameWriter};
use crate::{pty, run};

/// Settings every exec starts from.
#[derive(Debug, Clone)]
pub struct ExecDefaults {
    /// Working directory when the spec names none.
    pub cwd: PathBuf,
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
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            ExecError::NotFound { program } => Some(format!(
                "check that {program} is installed in the guest and on its PATH"
            )),
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

/// A process group that is SIGKILLed when this guard drops while still armed, so a
/// process never outlives the request that started it (host gone, session torn down).
#[derive(Debug)]
pub struct ProcessGroup {
    /// `None` only if the child was already reaped at spawn time (never in practice);
    /// never 0, which would address the agent's own group.
    pgid: Option<Pid>,
    armed: bool,
}

impl ProcessGroup {
    /// The group led by `child`, which must have been started as a group or session leader.
    pub fn led_by(child: &Child) -> ProcessGroup {
        ProcessGroup {
            pgid: child
                .id()
                .and_then(|pid| i32::try_from(pid).ok())
                .filter(|&pid| pid > 0)
                .map(Pid::from_raw),
            armed: true,
        }
    }

    /// Delivers signal number `n` to the whole group.
    pub fn signal(&self, n: i32) {
        let Some(pgid) = self.pgid else { return };
        match Signal::try_from(n) {
            Ok(sig) => {
                if let Err(e) = killpg(pgid, sig) {
                    tracing::debug!(%pgid, signal = n, cause = %e, "signal not delivered");
                }
            }
            Err(_) => tracing::warn!(signal = n, "host asked for an unknown signal; ignored"),
        }
    }

    pub fn kill(&self) {
        self.signal(Signal::SIGKILL as i32);
    }

    /// The process finished and was reported: leave whatever it left behind alone.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let (true, Some(pgid)) = (self.armed, self.pgid) {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Where host stdin goes.
pub enum Input {
    Pipe(Option<ChildStdin>),
    Pty(FdStream),
}

impl Input {
    pub async fn write(&mut self, data: &[u8]) {
        let result = match self {
            Input::Pipe(None) => return,
            Input::Pipe(Some(stdin)) => stdin.write_all(data).await,
            Input::Pty(master) => master.write_all(data).await,
        };
        if let Err(e) = result {
            // The process closed its stdin or exited; later input has nowhere to go.
            tracing::debug!(cause = %e, "stdin write failed; dropping further input");
            *self = Input::Pipe(None);
        }
    }

    pub async fn eof(&mut self) {
        match self {
            Input::Pipe(stdin) => *stdin = None,
            // A terminal has no half-close: send the EOF character, like a keyboard ^D.
            Input::Pty(_) => self.write(&[0x04]).await,
        }
    }

    pub fn resize(&self, size: TtySize) {
        if let Input::Pty(master) = self {
            if let Err(e) = pty::resize(master, size) {
                tracing::debug!(cause = %e, "terminal resize failed");
            }
        }
    }
}

/// Which frame an output stream's bytes travel in.
#[derive(Debug, Clone, Copy)]
pub enum OutKind {
    Stdout,
    Stderr,
}

impl OutKind {
    pub fn frame(self, data: Vec<u8>) -> GuestFrame {
        match self {
            OutKind::Stdout => GuestFrame::Stdout(data),
            OutKind::Stderr => GuestFrame::Stderr(data),
        }
    }
}

pub type Output = Box<dyn AsyncRead + Send + Unpin>;

/// A started process with everything the frame loop needs.
pub struct Spawned {
    pub child: Child,
    pub group: ProcessGroup,
    pub outputs: Vec<(Output, OutKind)>,
    pub input: Input,
}

/// Serves one exec request to completion on its stream.
pub async fn serve(
    spec: ExecSpec,
    defaults: &ExecDefaults,
    reader: FrameReader,
    mut writer: FrameWriter,
) {
    let timeout = spec.timeout_ms.map(Duration::from_millis);
    match spawn(&spec, defaults) {
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

fn spawn(spec: &ExecSpec, defaults: &ExecDefaults) -> Result<Spawned, ExecError> {
    let (program, args) = spec.argv.split_first().ok_or(ExecError::EmptyArgv)?;
    let cwd = match &spec.cwd {
        Some(dir) => PathBuf::from(dir),
        None => defaults.cwd.clone(),
    };
    check_cwd(&cwd)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&cwd);
    let spawned = match spec.tty {
        Some(size) => {
            if !spec.env.iter().any(|(k, _)| k == "TERM") {
                cmd.env("TERM", "xterm-256color");
            }
            pty::spawn(cmd, size)
        }
        None => spawn_piped(cmd),
    };
    spawned.map_err(|e| match e {
        SpawnFailure::Io(e) => ExecError::from_spawn(program, e),
        SpawnFailure::Pty(e) => ExecError::Pty(e),
    })
}

fn check_cwd(dir: &Path) -> Result<(), ExecError> {
    let shown = || dir.display().to_string();
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(ExecError::CwdNotDir { dir: shown() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(ExecError::CwdMissing { dir: shown() })
        }
        // Anything else (e.g. EACCES) surfaces from the spawn itself.
        Err(_) => Ok(()),
    }
}

/// Why a spawn failed, before it is tied to the program's name.
pub enum SpawnFailure {
    Io(io::Error),
    Pty(nix::Error),
}

fn spawn_piped(mut cmd: Command) -> Result<Spawned, SpawnFailure> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().map_err(SpawnFailure::Io)?;
    let group = ProcessGroup::led_by(&child);
    let mut outputs: Vec<(Output, OutKind)> = Vec::with_capacity(2);
    if let Some(out) = child.stdout.take() {
        outputs.push((Box::new(out), OutKind::Stdout));
    }
    if let Some(err) = child.stderr.take() {
        outputs.push((Box::new(err), OutKind::Stderr));
    }
    let input = Input::Pipe(child.stdin.take());
    Ok(Spawned {
        child,
        group,
        outputs,
        input,
    })
}
