//! Detached commands (`vm exec -d`, `vm ps`, `vm kill`, `vm logs --exec`) as typed
//! calls, for the commands and MCP alike. The guest's agent runs and keeps them.

use banger_wire::agent::{self, DetachedInfo, ExecSpec, GuestFrame, MAX_FRAME};
use banger_wire::api::{ExecOutputRequest, Request, Response};
use futures::StreamExt;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::client::Client;
use crate::error::CliError;

/// Starts `spec` detached in VM `vm`; answers once it runs.
pub async fn start(client: &Client, vm: &str, spec: ExecSpec) -> Result<DetachedInfo, CliError> {
    let name = vm.to_string();
    expect_one(client.rpc(&Request::VmExecDetach { name, spec }).await?)
}

/// The VM's detached commands, oldest first.
pub async fn list(client: &Client, vm: &str) -> Result<Vec<DetachedInfo>, CliError> {
    let name = vm.to_string();
    match client.rpc(&Request::VmPs { name }).await? {
        Response::DetachedList(list) => Ok(list),
        other => Err(CliError::unexpected(other)),
    }
}

/// Signals a detached command's process group.
pub async fn kill(
    client: &Client,
    vm: &str,
    id: &str,
    signal: i32,
) -> Result<DetachedInfo, CliError> {
    let req = Request::VmKill {
        name: vm.to_string(),
        id: id.to_string(),
        signal,
    };
    expect_one(client.rpc(&req).await?)
}

fn expect_one(resp: Response) -> Result<DetachedInfo, CliError> {
    match resp {
        Response::Detached(info) => Ok(info),
        other => Err(CliError::unexpected(other)),
    }
}

/// A piece of a detached command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// Hands a detached command's kept output to `sink` as it arrives and answers the
/// command's state after it; with `follow`, until the command has ended. An ended
/// command whose output was read to its end is forgotten by the guest.
pub async fn output(
    client: &Client,
    vm: &str,
    id: &str,
    follow: bool,
    mut sink: impl AsyncFnMut(Output) -> Result<(), CliError>,
) -> Result<DetachedInfo, CliError> {
    let req = ExecOutputRequest {
        vm: vm.to_string(),
        id: id.to_string(),
        follow,
    };
    let io = client.exec_output(&req).await?;
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    // Our half stays open while reading: the agent stops when the host side closes.
    let mut frames = Framed::new(io, codec);
    loop {
        let Some(bytes) = frames.next().await else {
            return Err(CliError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the output stream ended early (did the VM stop?)",
            )));
        };
        match agent::decode::<GuestFrame>(&bytes?)? {
            GuestFrame::Stdout(d) => sink(Output::Stdout(d)).await?,
            GuestFrame::Stderr(d) => sink(Output::Stderr(d)).await?,
            GuestFrame::Detached(info) => return Ok(info),
            GuestFrame::Error(e) => return Err(CliError::Remote(e)),
            _ => continue,
        }
    }
}
