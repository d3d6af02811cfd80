//! Detached commands (`vm exec -d`, `vm ps`, `vm kill`, their output): requests to the
//! VM's agent, which runs and keeps them (the daemon keeps nothing).

use banger_wire::agent::{AgentRequest, DetachedInfo, ExecSpec, GuestFrame};

use super::{Manager, VmStream};
use crate::agent_conn;
use crate::error::DaemonError;

impl Manager {
    /// Opens a stream to the VM's agent and sends `req` on it; the VM is in use while
    /// the stream is open (see [`super::idle`]).
    pub async fn agent_stream(
        &self,
        name: &str,
        req: &AgentRequest,
    ) -> Result<VmStream, DaemonError> {
        let rec = self.record(name)?;
        let agent = self.agent(&rec).await?;
        let stream = agent
            .request(req)
            .await
            .map_err(|source| DaemonError::Agent {
                vm: rec.name.clone(),
                source,
            })?;
        Ok(self.in_use(&rec, stream))
    }

    /// Starts `spec` detached in the guest; answers once it runs.
    pub async fn detach(&self, name: &str, spec: ExecSpec) -> Result<DetachedInfo, DaemonError> {
        let spec = self.exec_defaults(name, spec)?;
        match self.ask(name, &AgentRequest::ExecDetached(spec)).await? {
            GuestFrame::Detached(info) => Ok(info),
            other => Err(self.unexpected(name, other)),
        }
    }

    /// The VM's detached commands, oldest first.
    pub async fn detached_list(&self, name: &str) -> Result<Vec<DetachedInfo>, DaemonError> {
        match self.ask(name, &AgentRequest::DetachedList).await? {
            GuestFrame::DetachedList(list) => Ok(list),
            other => Err(self.unexpected(name, other)),
        }
    }

    /// Signals a detached command's process group (nothing once it has ended).
    pub async fn detached_kill(
        &self,
        name: &str,
        id: String,
        signal: i32,
    ) -> Result<DetachedInfo, DaemonError> {
        match self
            .ask(name, &AgentRequest::DetachedKill { id, signal })
            .await?
        {
            GuestFrame::Detached(info) => Ok(info),
            other => Err(self.unexpected(name, other)),
        }
    }

    /// One request, one answer frame.
    async fn ask(&self, name: &str, req: &AgentRequest) -> Result<GuestFrame, DaemonError> {
        let mut stream = self.agent_stream(name, req).await?;
        agent_conn::next_frame(&mut stream)
            .await
            .map_err(|source| DaemonError::Agent {
                vm: name.to_string(),
                source,
            })
    }

    fn unexpected(&self, name: &str, frame: GuestFrame) -> DaemonError {
        DaemonError::Agent {
            vm: name.to_string(),
            source: agent_conn::unexpected(frame),
        }
    }
}
