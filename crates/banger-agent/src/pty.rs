//! Running a process under a pseudo-terminal.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Stdio;

use banger_wire::agent::TtySize;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::libc;
use nix::pty::{openpty, Winsize};
use tokio::process::Command;

use crate::exec::{Input, OutKind, ProcessGroup, SpawnFailure, Spawned};
use crate::fdio::{FdStream, Kind};

fn winsize(size: TtySize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Spawns `cmd` as a session leader whose controlling terminal (and stdin, stdout,
/// stderr) is a fresh pty of `size`. Output, stderr included, is read from the master
/// until it reports `EIO`, i.e. every slave end is closed.
pub fn spawn(mut cmd: Command, size: TtySize) -> Result<Spawned, SpawnFailure> {
    let pty = openpty(&winsize(size), None).map_err(SpawnFailure::Pty)?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(SpawnFailure::Pty)?;
    }
    let slave = |fd: &OwnedFd| fd.try_clone().map(Stdio::from).map_err(SpawnFailure::Io);
    cmd.stdin(slave(&pty.slave)?)
        .stdout(slave(&pty.slave)?)
        .stderr(slave(&pty.slave)?);
    become_session_leader_on_tty(&mut cmd);
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

#[allow(unsafe_code)]
fn become_session_leader_on_tty(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec. It only calls setsid(2)
    // and ioctl(2), which are async-signal-safe, and touches no memory shared with the
    // parent. TIOCSCTTY takes an int argument, so passing 0 is well-formed.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets the terminal size on the master; the kernel sends SIGWINCH to the foreground
/// process group.
#[allow(unsafe_code)]
pub fn resize(master: &FdStream, size: TtySize) -> io::Result<()> {
    let ws = winsize(size);
    // SAFETY: TIOCSWINSZ reads one `struct winsize` through the pointer, which points to
    // a live, initialised value for the duration of the call; the fd is a pty master.
    let rc = unsafe { libc::ioctl(master.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
