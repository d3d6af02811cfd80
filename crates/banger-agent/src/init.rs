//! PID 1: split into a minimal init (this process) and the agent (a child).
//!
//! The init half stays single-threaded, reaps every orphan, turns Ctrl-Alt-Del
//! (SIGINT from the kernel, e.g. Firecracker's `SendCtrlAltDel`) into a clean shutdown,
//! and shuts the machine down when the agent dies. The agent half returns from
//! [`become_init`] and goes on to set up the guest and serve the host.

use nix::errno::Errno;
use nix::sys::reboot::set_cad_enabled;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, ForkResult, Pid};

use crate::shutdown;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("`banger-agent init` must run as pid 1, but this is pid {pid}")]
    NotPid1 { pid: i32 },
    #[error("cannot block signals in init")]
    SignalMask(#[source] nix::Error),
    #[error("cannot fork the agent from init")]
    Fork(#[source] nix::Error),
}

impl InitError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            InitError::NotPid1 { .. } => {
                Some("use `banger-agent serve` to run the agent under another init")
            }
            _ => None,
        }
    }
}

fn init_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGINT);
    set
}

/// Must be called first thing in `main`, while the process is single-threaded. Returns
/// only in the agent child; the PID 1 parent never returns.
pub fn become_init() -> Result<(), InitError> {
    let pid = getpid();
    if pid.as_raw() != 1 {
        return Err(InitError::NotPid1 { pid: pid.as_raw() });
    }
    // Ctrl-Alt-Del now sends SIGINT to PID 1 instead of rebooting on the spot.
    if let Err(e) = set_cad_enabled(false) {
        tracing::warn!(cause = %e, "cannot disable hard Ctrl-Alt-Del reboot");
    }
    // Blocked before the fork, so no SIGCHLD can be lost; `sigwait` picks them up.
    let signals = init_signals();
    signals.thread_block().map_err(InitError::SignalMask)?;
    match fork_agent()? {
        ForkResult::Parent { child } => reap_forever(child, &signals),
        ForkResult::Child => {
            signals.thread_unblock().map_err(InitError::SignalMask)?;
            Ok(())
        }
    }
}

#[allow(unsafe_code)]
fn fork_agent() -> Result<ForkResult, InitError> {
    // SAFETY: called from `become_init` at the top of `main`, before any thread (tokio
    // runtime or otherwise) exists, so the child may run arbitrary code after the fork.
    unsafe { fork() }.map_err(InitError::Fork)
}

fn reap_forever(agent: Pid, signals: &SigSet) -> ! {
    tracing::info!(agent = %agent, "init: agent started");
    loop {
        match signals.wait() {
            Ok(Signal::SIGINT) => shutdown::shut_down("ctrl-alt-del or shutdown request"),
            Ok(_) => {
                if let Some(status) = reap_all(agent) {
                    tracing::error!(?status, "init: the agent exited; shutting the guest down");
                    shutdown::shut_down("agent exited");
                }
            }
            Err(e) => tracing::warn!(cause = %e, "init: sigwait failed"),
        }
    }
}

/// Reaps every exited child; returns the agent's status if it was among them.
fn reap_all(agent: Pid) -> Option<WaitStatus> {
    let mut agent_status = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return agent_status,
            Ok(status) => {
                if status.pid() == Some(agent) {
                    agent_status = Some(status);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(cause = %e, "init: waitpid failed");
                return agent_status;
            }
        }
    }
}

/// Asks PID 1 for the clean shutdown (the same path as Ctrl-Alt-Del).
pub fn request_shutdown() {
    if let Err(e) = kill(Pid::from_raw(1), Signal::SIGINT) {
        tracing::error!(cause = %e, "cannot signal init to shut down");
    }
}
