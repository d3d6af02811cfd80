//! A started process as the frame loop drives it: its process group, its output streams
//! and where host stdin goes, whether it runs on pipes or under a pty.

use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use banger_wire::agent::{GuestFrame, TtySize};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{setgid, setgroups, setuid, Gid, Pid, Uid};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::accounts::Account;
use crate::fdio::{FdStream, Kind};
use crate::pty;

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

/// Makes `cmd` run as `account`: its environment names the user, and the child drops
/// root right before exec (supplementary groups, then GID, then UID, so none of root's
/// stays); a terminal on its stdin becomes the user's first, as a login's does.
/// `cmd`'s own environment, set after this, still wins.
#[allow(unsafe_code)]
pub fn as_user(cmd: &mut Command, account: &Account) {
    cmd.env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name)
        .env("SHELL", &account.shell);
    let groups: Vec<Gid> = account.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    let (uid, gid) = (Uid::from_raw(account.uid), Gid::from_raw(account.gid));
    // SAFETY: the closure runs in the forked child before exec. It calls only
    // isatty(3) (an ioctl), fchown(2), setgroups(2), setgid(2) and setuid(2), which are
    // async-signal-safe, on data moved into it before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::isatty(0) == 1 && nix::libc::fchown(0, uid.as_raw(), gid.as_raw()) < 0 {
                return Err(io::Error::last_os_error());
            }
            setgroups(&groups)?;
            setgid(gid)?;
            setuid(uid)?;
            Ok(())
        });
    }
}

/// Why a spawn failed, before it is tied to the program's name.
pub enum SpawnFailure {
    Io(io::Error),
    Pty(nix::Error),
}

/// Spawns `cmd` as a group leader with its stdio on pipes.
pub fn piped(mut cmd: Command) -> Result<Spawned, SpawnFailure> {
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

/// Spawns `cmd` as a session leader whose controlling terminal (and stdin, stdout,
/// stderr) is a fresh pty of `size`. Output, stderr included, is read from the master
/// until it reports `EIO`, i.e. every slave end is closed.
pub fn on_pty(mut cmd: Command, size: TtySize) -> Result<Spawned, SpawnFailure> {
    let pty = pty::open(size).map_err(SpawnFailure::Pty)?;
    let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(SpawnFailure::Io);
    cmd.stdin(slave(&pty.slave)?)
        .stdout(slave(&pty.slave)?)
        .stderr(slave(&pty.slave)?);
    pty::become_session_leader_on_tty(&mut cmd);
    let child = cmd.spawn().map_err(SpawnFailure::Io)?;
    // The parent must hold no slave end, or the master never reports EIO.
    drop(cmd);
    drop(pty.slave);
    let group = ProcessGroup::led_by(&child);
    let master = FdStream::new(pty.master, Kind::PtyMaster).map_err(SpawnFailure::Io)?;
    Ok(Spawned {
        child,
        group,
        outputs: vec![(Box::new(master.clone()), OutKind::Stdout)],
        input: Input::Pty(master),
    })
}
