//! Running a command in a guest and keeping its output for a tool answer: stdin from
//! memory, stdout and stderr each kept up to a cap (the head; the rest is counted and
//! dropped), and a guest-side timeout reported as such, with the output so far.
//!
//! `workspace::exec::pump` streams stdout to a writer and keeps only a stderr tail, and
//! a timeout there is an error that loses the output; a tool answer needs both streams
//! and the partial output of a killed command, hence this loop.

use banger_wire::agent::{self, ExecSpec, GuestFrame, HostFrame, CHUNK, MAX_FRAME};
use banger_wire::api::ExecRequest;
use banger_wire::ErrorCode;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::client::Client;
use crate::error::CliError;

/// One output stream, kept up to `cap` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped {
    pub kept: Vec<u8>,
    /// Every byte the stream carried, kept or not.
    pub total: u64,
    pub cap: usize,
}

impl Capped {
    pub fn new(cap: usize) -> Capped {
        Capped {
            kept: Vec::new(),
            total: 0,
            cap,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let room = self.cap.saturating_sub(self.kept.len());
        self.kept.extend_from_slice(&data[..room.min(data.len())]);
    }

    pub fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    /// The kept bytes as text; invalid UTF-8 becomes U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Shell convention: the exit code, or 128+N for signal N.
    Exited(i32),
    /// The agent killed it at the spec's timeout; its message says after how long.
    TimedOut(String),
}

#[derive(Debug)]
pub struct Collected {
    pub ending: Ending,
    pub stdout: Capped,
    pub stderr: Capped,
}

/// Runs `spec` in VM `vm`, feeding `stdin` and keeping up to `cap` bytes per stream.
pub async fn run(
    client: &Client,
    vm: &str,
    spec: ExecSpec,
    stdin: &[u8],
    cap: usize,
) -> Result<Collected, CliError> {
    let io = client
        .exec(&ExecRequest {
            vm: vm.to_string(),
            spec,
        })
        .await?;
    collect(io, stdin, cap).await
}

/// The frame loop of [`run`] over an open exec stream.
pub async fn collect<S>(io: S, stdin: &[u8], cap: usize) -> Result<Collected, CliError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    let (mut sink, mut frames) = Framed::new(io, codec).split();
    // The sink lives until the command ends: the agent kills a command whose host
    // side closes.
    let feed = async {
        for chunk in stdin.chunks(CHUNK) {
            let frame = HostFrame::Stdin(chunk.to_vec());
            sink.send(Bytes::from(agent::encode(&frame))).await?;
        }
        sink.send(Bytes::from(agent::encode(&HostFrame::StdinEof)))
            .await
    };
    let drain = async {
        let mut stdout = Capped::new(cap);
        let mut stderr = Capped::new(cap);
        loop {
            let Some(bytes) = frames.next().await else {
                return Err(CliError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the exec stream ended before the command exited (did the VM stop?)",
                )));
            };
            let ending = match agent::decode::<GuestFrame>(&bytes?)? {
                GuestFrame::Stdout(d) => {
                    stdout.push(&d);
                    continue;
                }
                GuestFrame::Stderr(d) => {
                    stderr.push(&d);
                    continue;
                }
                GuestFrame::Exit(status) => Ending::Exited(status.shell_code()),
                GuestFrame::Error(e) if e.code == ErrorCode::Timeout => Ending::TimedOut(e.message),
                GuestFrame::Error(e) => return Err(CliError::Remote(e)),
                GuestFrame::Started { .. }
                | GuestFrame::Pong { .. }
                | GuestFrame::Ok
                | GuestFrame::Ssh { .. } => continue,
            };
            return Ok(Collected {
                ending,
                stdout,
                stderr,
            });
        }
    };
    tokio::pin!(feed, drain);
    let mut fed = false;
    loop {
        tokio::select! {
            // A failed send means the stream broke: the drain says how.
            _ = &mut feed, if !fed => fed = true,
            done = &mut drain => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use banger_wire::agent::ExitStatus;
    use banger_wire::WireError;
    use tokio::io::DuplexStream;

    use super::*;

    type AgentSide = Framed<DuplexStream, LengthDelimitedCodec>;

    fn agent_pair() -> (DuplexStream, AgentSide) {
        let (ours, theirs) = tokio::io::duplex(CHUNK);
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME)
            .new_codec();
        (ours, Framed::new(theirs, codec))
    }

    async fn send(agent: &mut AgentSide, frame: GuestFrame) {
        agent
            .send(Bytes::from(agent::encode(&frame)))
            .await
            .unwrap();
    }

    async fn recv(agent: &mut AgentSide) -> HostFrame {
        agent::decode(&agent.next().await.unwrap().unwrap()).unwrap()
    }

    #[test]
    fn capped_keeps_the_head_and_counts_everything() {
        let mut c = Capped::new(5);

        c.push(b"abc");
        c.push(b"defgh");
        c.push(b"ij");

        assert_eq!(
            (c.kept.as_slice(), c.total, c.truncated()),
            (&b"abcde"[..], 10, true)
        );
    }

    #[test]
    fn capped_at_exactly_the_cap_is_not_truncated() {
        let mut c = Capped::new(4);

        c.push(b"abcd");

        assert_eq!((c.text(), c.truncated()), ("abcd".to_string(), false));
    }

    #[tokio::test]
    async fn stdin_goes_in_and_both_streams_come_back_capped() {
        let (io, mut agent) = agent_pair();
        let input = vec![b'i'; CHUNK + 10];
        let fake_agent = async move {
            let mut got = Vec::new();
            loop {
                match recv(&mut agent).await {
                    HostFrame::Stdin(d) => got.extend(d),
                    HostFrame::StdinEof => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            send(&mut agent, GuestFrame::Stdout(b"0123456789".to_vec())).await;
            send(&mut agent, GuestFrame::Stderr(b"warn".to_vec())).await;
            send(&mut agent, GuestFrame::Exit(ExitStatus::Code(3))).await;
            got
        };

        let (collected, got) = tokio::join!(collect(io, &input, 8), fake_agent);

        let c = collected.unwrap();
        assert_eq!(got, input);
        assert_eq!(c.ending, Ending::Exited(3));
        assert_eq!((c.stdout.text(), c.stdout.total), ("01234567".into(), 10));
        assert!(c.stdout.truncated());
        assert_eq!(
            (c.stderr.text(), c.stderr.truncated()),
            ("warn".into(), false)
        );
    }

    #[tokio::test]
    async fn a_timeout_keeps_the_output_so_far() {
        let (io, mut agent) = agent_pair();
        let fake_agent = async move {
            send(&mut agent, GuestFrame::Stdout(b"partial".to_vec())).await;
            let err = WireError::new(
                ErrorCode::Timeout,
                "command timed out after 1s and was killed",
            );
            send(&mut agent, GuestFrame::Error(err)).await;
            agent
        };

        let (collected, _agent) = tokio::join!(collect(io, b"", 1024), fake_agent);

        let c = collected.unwrap();
        assert_eq!(
            c.ending,
            Ending::TimedOut("command timed out after 1s and was killed".into())
        );
        assert_eq!(c.stdout.text(), "partial");
    }

    #[tokio::test]
    async fn another_guest_error_is_the_error() {
        let (io, mut agent) = agent_pair();
        let wire = WireError::new(ErrorCode::NotFound, "command not found: nope");
        send(&mut agent, GuestFrame::Error(wire.clone())).await;

        let err = collect(io, b"", 1024).await.unwrap_err();

        assert!(
            matches!(err, CliError::Remote(ref e) if *e == wire),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_early_is_an_error() {
        let (io, agent) = agent_pair();
        drop(agent);

        let err = collect(io, b"", 1024).await.unwrap_err();

        assert!(matches!(err, CliError::Io(_)), "{err:?}");
    }
}
