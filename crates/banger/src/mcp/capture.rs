//! Running a command in a guest and keeping its output for a tool answer: stdin from
//! memory, stdout and stderr each kept up to a cap (the head; the rest is counted and
//! dropped), and a guest-side timeout reported as such, with the output so far.
//!
//! `workspace::exec::pump` streams stdout to a writer and keeps only a stderr tail, and
//! a timeout there is an error that loses the output; a tool answer needs both streams
//! and the partial output of a killed command, hence this loop.

use banger_wire::agent::ExecSpec;
use banger_wire::api::ExecRequest;
use banger_wire::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::Client;
use crate::error::CliError;
use crate::exec_stream::Event;

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
    let (mut sink, mut events) = crate::exec_stream::open(io);
    // The sink lives until the command ends: the agent kills a command whose host
    // side closes.
    let feed = sink.send_stdin(stdin);
    let drain = async {
        let mut stdout = Capped::new(cap);
        let mut stderr = Capped::new(cap);
        loop {
            let ending = match events.next().await? {
                Event::Stdout(d) => {
                    stdout.push(&d);
                    continue;
                }
                Event::Stderr(d) => {
                    stderr.push(&d);
                    continue;
                }
                Event::Exit(status) => Ending::Exited(status.shell_code()),
                Event::Failed(e) if e.code == ErrorCode::Timeout => Ending::TimedOut(e.message),
                Event::Failed(e) => return Err(CliError::Remote(e)),
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
    use banger_wire::agent::{ExitStatus, GuestFrame, HostFrame, CHUNK};
    use banger_wire::WireError;

    use super::*;
    use crate::exec_stream::testing::{agent_pair, recv, send};

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
