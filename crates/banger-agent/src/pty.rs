//! Pseudo-terminal primitives: open one, make it a child's controlling terminal, resize it.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use banger_wire::agent::TtySize;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::libc;
use nix::pty::{openpty, OpenptyResult, Winsize};
use tokio::process::Command;

use crate::fdio::FdStream;

fn winsize(size: TtySize) -> Winsize {
    Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// A fresh pty of `size`, both ends close-on-exec.
pub fn open(size: TtySize) -> nix::Result<OpenptyResult> {
    let pty = openpty(&winsize(size), None)?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    }
    Ok(pty)
}

/// Makes the child of `cmd` a session leader whose controlling terminal is its stdin.
#[allow(unsafe_code)]
pub fn become_session_leader_on_tty(cmd: &mut Command) {
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
