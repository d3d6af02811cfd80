//! The one client of an exec stream: host frames go in ([`Frames::send`]), the guest
//! process's output and end come out ([`Events::next`]). The fronts on top of it are
//! `exec::pump` (interactive: a terminal, signals, resize), `workspace::exec` (a
//! streaming sink) and `mcp::capture` (capped buffers for a tool answer).

use banger_wire::agent::{self, ExitStatus, GuestFrame, HostFrame, MAX_FRAME};
use banger_wire::WireError;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::error::CliError;

/// What the guest process did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// It ended; no more events follow.
    Exit(ExitStatus),
    /// The exec failed in the guest (e.g. the agent's timeout killed it); no more
    /// events follow.
    Failed(WireError),
}

/// Splits an open exec stream into its sending and receiving halves. The sending half
/// must live until the process ends: the agent kills a process whose host side closed.
pub fn open<S>(io: S) -> (Frames<S>, Events<S>)
where
    S: AsyncRead + AsyncWrite,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    let (sink, frames) = Framed::new(io, codec).split();
    (Frames { sink }, Events { frames })
}

/// The host's half: stdin, signals, resizes.
pub struct Frames<S> {
    sink: SplitSink<Framed<S, LengthDelimitedCodec>, Bytes>,
}

impl<S: AsyncRead + AsyncWrite> Frames<S> {
    pub async fn send(&mut self, frame: &HostFrame) -> std::io::Result<()> {
        self.sink.send(Bytes::from(agent::encode(frame))).await
    }

    /// Sends `input` as stdin, then its end.
    pub async fn send_stdin(&mut self, input: &[u8]) -> std::io::Result<()> {
        for chunk in input.chunks(agent::CHUNK) {
            self.send(&HostFrame::Stdin(chunk.to_vec())).await?;
        }
        self.send(&HostFrame::StdinEof).await
    }
}

/// The guest's half.
pub struct Events<S> {
    frames: SplitStream<Framed<S, LengthDelimitedCodec>>,
}

impl<S: AsyncRead + AsyncWrite> Events<S> {
    /// The next event; an error when the stream broke or ended before the process did.
    pub async fn next(&mut self) -> Result<Event, CliError> {
        loop {
            let Some(bytes) = self.frames.next().await else {
                return Err(CliError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the exec stream ended before the command exited (did the VM stop?)",
                )));
            };
            return Ok(match agent::decode::<GuestFrame>(&bytes?)? {
                GuestFrame::Stdout(d) => Event::Stdout(d),
                GuestFrame::Stderr(d) => Event::Stderr(d),
                GuestFrame::Exit(status) => Event::Exit(status),
                GuestFrame::Error(e) => Event::Failed(e),
                GuestFrame::Started { .. }
                | GuestFrame::Pong { .. }
                | GuestFrame::Ok
                | GuestFrame::Ssh { .. }
                | GuestFrame::Detached(_)
                | GuestFrame::DetachedList(_) => continue,
            });
        }
    }
}

/// The agent's end of an exec stream, for tests of the fronts.
#[cfg(test)]
pub mod testing {
    #![allow(clippy::unwrap_used)]
    use tokio::io::DuplexStream;

    use super::*;

    pub type AgentSide = Framed<DuplexStream, LengthDelimitedCodec>;

    /// Our end and the agent's end of an exec stream.
    pub fn agent_pair() -> (DuplexStream, AgentSide) {
        let (ours, theirs) = tokio::io::duplex(agent::CHUNK);
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME)
            .new_codec();
        (ours, Framed::new(theirs, codec))
    }

    pub async fn send(agent: &mut AgentSide, frame: GuestFrame) {
        agent
            .send(Bytes::from(agent::encode(&frame)))
            .await
            .unwrap();
    }

    pub async fn recv(agent: &mut AgentSide) -> HostFrame {
        agent::decode(&agent.next().await.unwrap().unwrap()).unwrap()
    }
}
