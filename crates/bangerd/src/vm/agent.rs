//! A VM's agent session: its socket bound, the guest reached and authenticated, the
//! session kept while the VMM lives, and waited for by the requests that need it.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use banger_wire::agent::HOST_KNOCK;
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};

use super::files::io_err;
use super::{Manager, Runtime};
use crate::agent_conn::{self, AgentConn, AgentError};
use crate::error::DaemonError;
use crate::store::VmRecord;
use crate::vmm::{AgentEndpoint, Vmm, VmmError};

impl Manager {
    /// The VM's agent session. A VM that is running but whose agent is (re)connecting,
    /// e.g. right after a daemon restart adopted it, is waited for, up to the boot
    /// timeout.
    pub(super) async fn agent(&self, rec: &VmRecord) -> Result<AgentConn, DaemonError> {
        let Some(rt) = self.slot(&rec.id).runtime() else {
            return Err(DaemonError::WrongState {
                name: rec.name.clone(),
                state: rec.state.as_str(),
                hint: format!("start it with `banger vm start {}`", rec.name),
            });
        };
        let mut agent = rt.agent.subscribe();
        let mut exited = rt.exited.subscribe();
        let limit = Duration::from_secs(self.config.boot_timeout_secs);
        let ready = tokio::select! {
            r = tokio::time::timeout(limit, agent.wait_for(|a| a.as_ref().is_some_and(|a| !a.is_closed()))) => {
                r.ok().and_then(|r| r.ok()).and_then(|a| a.clone())
            }
            _ = exited.wait_for(|e| *e) => None,
        };
        ready.ok_or_else(|| DaemonError::WrongState {
            name: rec.name.clone(),
            state: "running without a connected guest agent",
            hint: format!("see `banger vm logs {}`", rec.name),
        })
    }

    /// Waits until the guest's sshd accepts connections (the agent knows when), so a
    /// VM is answered as ready only when `ssh` works. An agent too old to tell, or a
    /// guest without sshd, is not waited for.
    pub(super) async fn wait_ssh(&self, id: &str) {
        let t0 = std::time::Instant::now();
        let Ok(rec) = self.record(id) else { return };
        let Ok(agent) = self.agent(&rec).await else {
            return;
        };
        match agent.ssh_ready().await {
            Ok(listening) => {
                let ssh_ready_ms = t0.elapsed().as_millis() as u64;
                tracing::info!(vm = %rec.name, listening, ssh_ready_ms, "sshd ready");
            }
            Err(e) => {
                tracing::debug!(vm = %rec.name, cause = %e, "agent cannot tell when sshd is ready")
            }
        }
    }
}

/// Why the agent socket could not be bound.
pub(super) enum BindError {
    Io(std::io::Error),
    Vmm(VmmError),
}

impl BindError {
    pub(super) fn into_daemon(self, rec: &VmRecord, path: PathBuf) -> DaemonError {
        match self {
            BindError::Io(e) => io_err("binding agent socket", &path)(e),
            BindError::Vmm(source) => DaemonError::Vmm {
                vm: rec.name.clone(),
                source,
            },
        }
    }
}

/// Binds the agent socket (creating its directory, e.g. a jail) and lets the VMM reach it.
pub(super) fn bind_agent(vmm: &dyn Vmm, path: &Path) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir).map_err(BindError::Io)?;
    }
    let listener = UnixListener::bind(path).map_err(BindError::Io)?;
    vmm.share_agent_socket(path).map_err(BindError::Vmm)?;
    Ok(listener)
}

/// Reconnects to the agent whenever its session drops while the VMM lives on (the
/// guest agent restarted, or the channel hiccuped), unless a stop was asked for.
pub(super) fn keep_agent(rt: Arc<Runtime>, token: String, vm: String) {
    let AgentEndpoint::Connect(_) = rt.launched.agent else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let current = rt.agent.borrow().clone();
            let Some(agent) = current else { return };
            let mut exited = rt.exited.subscribe();
            tokio::select! {
                _ = agent.closed() => {}
                _ = exited.wait_for(|e| *e) => return,
            }
            if rt.stop_requested.load(Ordering::SeqCst) || *rt.exited.borrow() {
                return;
            }
            tracing::info!(vm = %vm, "agent session dropped; reconnecting");
            match connect_agent(&rt.launched.agent, None, &token, true).await {
                Ok(a) => {
                    rt.agent.send_replace(Some(a));
                }
                Err(e) => {
                    tracing::warn!(vm = %vm, cause = %e, "agent reconnect failed");
                    rt.agent.send_replace(None);
                    return;
                }
            }
        }
    });
}

/// Reaches the guest agent and authenticates. The guest speaks first, so this returns
/// the moment the agent is up: no polling.
///
/// `knock` is for reconnecting to a guest that was already up (after a daemon restart);
/// a fresh guest needs none, and a knock racing its first hello would only garble it.
pub(super) async fn connect_agent(
    endpoint: &AgentEndpoint,
    listener: Option<UnixListener>,
    token: &str,
    knock: bool,
) -> Result<AgentConn, AgentError> {
    match (endpoint, listener) {
        (_, Some(l)) => accept_agent(l, token).await,
        (AgentEndpoint::Listen(path), None) => accept_agent(UnixListener::bind(path)?, token).await,
        (AgentEndpoint::Connect(path), None) => {
            // A guest can be mid-session with a previous daemon (it reconnected before
            // the guest noticed the hang-up); the knock makes it start over, and a
            // garbled first frame (that session's leftovers) is worth one more try.
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut stream = UnixStream::connect(path).await?;
                if knock || attempt > 1 {
                    stream.write_all(&HOST_KNOCK).await?;
                }
                let result = match agent_conn::read_hello(&mut stream).await {
                    Ok(hello) => agent_conn::authenticate(stream, hello, token).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(conn) => return Ok(conn),
                    Err(e @ (AgentError::Closed | AgentError::Remote(_))) => return Err(e),
                    Err(e) if attempt < 5 => {
                        tracing::debug!(attempt, cause = %e, "no clean hello; reconnecting");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

async fn accept_agent(l: UnixListener, token: &str) -> Result<AgentConn, AgentError> {
    let (mut stream, _) = l.accept().await?;
    let hello = agent_conn::read_hello(&mut stream).await?;
    agent_conn::authenticate(stream, hello, token).await
}
