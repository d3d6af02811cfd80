//! Detached commands (`vm exec -d`, `vm ps`, `vm kill`, `vm logs --exec`) as typed
//! calls, for the commands and MCP alike. The guest's agent runs and keeps them.

use banger_wire::agent::{self, DetachedInfo, ExecSpec, GuestFrame, MAX_FRAME};
use banger_wire::api::{ExecOutputRequest, Request, Response};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use nix::sys::signal::Signal;
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

/// A signal as `vm kill --signal` takes it: `TERM`, `SIGTERM`, `term` or `15`. A
/// clap value parser, so a bad one is refused before any daemon work.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let upper = text.to_ascii_uppercase();
    let parsed: Option<Signal> = match upper.parse::<i32>() {
        Ok(n) => Signal::try_from(n).ok(),
        Err(_) if upper.starts_with("SIG") => upper.parse().ok(),
        Err(_) => format!("SIG{upper}").parse().ok(),
    };
    parsed.map(|s| s as i32).ok_or_else(|| {
        format!("unknown signal {text:?} (give a name such as TERM, INT, KILL, or a number)")
    })
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

/// What a detached command's output stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command's state after its output; nothing follows.
    End(DetachedInfo),
}

/// A detached command's kept output, read with [`Outputs::next`].
pub struct Outputs {
    frames: Framed<TokioIo<hyper::upgrade::Upgraded>, LengthDelimitedCodec>,
}

/// Opens the output of command `id`; with `follow`, it runs until the command has
/// ended. An ended command whose output was read to its end is forgotten by the guest.
pub async fn output(
    client: &Client,
    vm: &str,
    id: &str,
    follow: bool,
) -> Result<Outputs, CliError> {
    let req = ExecOutputRequest {
        vm: vm.to_string(),
        id: id.to_string(),
        follow,
    };
    let io = client.exec_output(&req).await?;
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    Ok(Outputs {
        frames: Framed::new(io, codec),
    })
}

impl Outputs {
    /// The next piece; [`Output::End`] is the last.
    pub async fn next(&mut self) -> Result<Output, CliError> {
        loop {
            let Some(bytes) = self.frames.next().await else {
                return Err(CliError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the output stream ended early (did the VM stop?)",
                )));
            };
            return Ok(match agent::decode::<GuestFrame>(&bytes?)? {
                GuestFrame::Stdout(d) => Output::Stdout(d),
                GuestFrame::Stderr(d) => Output::Stderr(d),
                GuestFrame::Detached(info) => Output::End(info),
                GuestFrame::Error(e) => return Err(CliError::Remote(e)),
                _ => continue,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigint"), Ok(2));
        assert_eq!(parse_signal("9"), Ok(9));
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
