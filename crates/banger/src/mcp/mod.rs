//! `banger mcp`: a Model Context Protocol server on stdin/stdout that offers banger's
//! VMs as tools to a model, through the same daemon API as the CLI.
//!
//! * [`server`]: the server object, its shared state and instructions;
//! * `vm_tools`, `exec_tools`, `detached_tools`, `workspace_tools`, `port_tools`: one
//!   `#[tool_router]` block each;
//! * [`params`] / [`results`]: tool arguments and answers (their JSON schemas are what
//!   `tools/list` shows);
//! * [`capture`]: a guest command's output, capped per stream;
//! * [`roots`]: the host directories tools may touch (`--allow-path`);
//! * [`error`]: failures as MCP tool errors carrying the daemon's message and hint.
//!
//! stdout carries protocol messages only: diagnostics go to stderr, as everywhere in
//! the CLI.

mod capture;
mod detached_tools;
mod error;
mod exec_tools;
mod params;
mod port_tools;
mod results;
pub mod roots;
mod server;
mod vm_tools;
mod workspace_tools;

use banger_host::config::Paths;
use banger_wire::{Diagnostic, ErrorCode};
use rmcp::ServiceExt;
use tokio::signal::unix::{signal, SignalKind};

pub use roots::AllowedRoots;
use server::Sandbox;
pub use server::VmScope;

use crate::error::CliError;

/// Why the MCP session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("the MCP client did not complete the handshake")]
    Handshake(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the MCP session task failed")]
    Session(#[source] tokio::task::JoinError),
}

impl From<McpError> for CliError {
    fn from(e: McpError) -> CliError {
        CliError::failed(e)
    }
}

impl Diagnostic for McpError {
    fn code(&self) -> ErrorCode {
        ErrorCode::Internal
    }
}

/// Serves MCP on stdin/stdout until the client hangs up or SIGINT/SIGTERM arrives;
/// then deletes the throwaway VMs of `run` calls still in flight.
pub async fn serve(paths: Paths, roots: AllowedRoots, scope: VmScope) -> Result<(), McpError> {
    let sandbox = Sandbox::new(paths, roots, scope);
    let shared = sandbox.shared.clone();
    // Start the daemon now rather than on the first call; a failure here is not fatal:
    // every call tries again and reports what goes wrong.
    if let Err(e) = shared.client().await {
        tracing::warn!(cause = %e.render(), "bangerd is not available yet");
    }
    let running = sandbox
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Handshake(Box::new(e)))?;
    let stop = running.cancellation_token();
    let signals = tokio::spawn(async move {
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    let quit = running.waiting().await;
    signals.abort();
    shared.dispose_all().await;
    quit.map(|reason| tracing::debug!(?reason, "mcp session ended"))
        .map_err(McpError::Session)
}
