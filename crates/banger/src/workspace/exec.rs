//! Programmatic exec: run an argv in a VM with stdin fed from an [`AsyncRead`] and
//! stdout written to an [`AsyncWrite`], capturing stderr.
//!
//! Backpressure: one [`CHUNK`] of input is read only after the previous frame left, and
//! the exec stream carries no more than the agent accepts, so input of any size is never
//! held in memory. Output is written out as frames arrive.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use banger_wire::agent::{ExecSpec, HostFrame, CHUNK};
use banger_wire::api::ExecRequest;
use banger_wire::user::GuestUser;
use banger_wire::{Diagnostic, ErrorCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::error::CliError;
use crate::exec_stream::{self, Event, Events, Frames};

/// Keep at most this much of a command's stderr (its tail).
const STDERR_KEEP: usize = 64 * 1024;

/// Lines of a failed command's stderr kept in an error (its last ones).
const STDERR_LINES: usize = 12;

/// How a captured command ended.
#[derive(Debug)]
pub struct Captured {
    /// Shell convention: the exit code, or 128+N for signal N.
    pub code: i32,
    /// The last [`STDERR_KEEP`] bytes of its stderr.
    pub stderr: Vec<u8>,
}

impl Captured {
    /// `Ok` for exit code 0; otherwise the failure of `step` in `vm`, with its stderr.
    pub fn success(self, vm: &str, step: &str) -> Result<(), GuestFailed> {
        match self.code {
            0 => Ok(()),
            code => Err(GuestFailed::new(vm, step, code, &self.stderr)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Reading the input failed; the guest process was killed (the stream dropped).
    #[error("reading the command's input failed")]
    Input(#[source] std::io::Error),
    #[error("writing the command's output failed")]
    Output(#[source] std::io::Error),
    #[error(transparent)]
    Cli(#[from] CliError),
}

impl Diagnostic for CaptureError {
    fn code(&self) -> ErrorCode {
        match self {
            CaptureError::Cli(e) => e.code(),
            CaptureError::Input(_) | CaptureError::Output(_) => ErrorCode::HostFailed,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            CaptureError::Cli(e) => e.hint(),
            CaptureError::Input(_) | CaptureError::Output(_) => None,
        }
    }

    fn chain(&self) -> Vec<String> {
        match self {
            CaptureError::Cli(e) => e.chain(),
            CaptureError::Input(_) | CaptureError::Output(_) => {
                banger_wire::error::causes(std::error::Error::source(self))
            }
        }
    }
}

/// A guest command that exited with a non-zero code.
#[derive(Debug, thiserror::Error)]
#[error("vm {vm}: {step} failed in the guest (exit code {code})")]
pub struct GuestFailed {
    pub vm: String,
    pub step: String,
    pub code: i32,
    #[source]
    pub stderr: Stderr,
}

impl GuestFailed {
    pub fn new(vm: &str, step: impl Into<String>, code: i32, stderr: &[u8]) -> GuestFailed {
        GuestFailed {
            vm: vm.into(),
            step: step.into(),
            code,
            stderr: Stderr::from_bytes(stderr),
        }
    }
}

impl Diagnostic for GuestFailed {
    fn code(&self) -> ErrorCode {
        ErrorCode::AgentFailed
    }
}

/// Text a failed command wrote on stderr, carried as the cause of an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Stderr(pub String);

impl Stderr {
    /// The last [`STDERR_LINES`] lines, with a marker if more came before.
    pub fn from_bytes(bytes: &[u8]) -> Stderr {
        let text = String::from_utf8_lossy(bytes);
        let lines: Vec<&str> = text.trim().lines().collect();
        let skip = lines.len().saturating_sub(STDERR_LINES);
        let mut out = if skip > 0 {
            format!("({skip} earlier lines left out)\n")
        } else {
            String::new()
        };
        out.push_str(&lines[skip..].join("\n"));
        Stderr(out)
    }
}

/// A plain command spec: no tty, no environment, cwd `/`, as the VM's default user.
pub fn spec(argv: &[&str]) -> ExecSpec {
    ExecSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: Some("/".into()),
        ..ExecSpec::default()
    }
}

/// Somewhere commands run with streamed stdio: a VM through the daemon ([`Vm`]), or
/// this host in tests.
pub trait Runner {
    /// Names the target in messages.
    fn name(&self) -> &str;

    /// Runs `spec`, streaming `stdin` in and `stdout` out; returns the exit code and
    /// stderr. A failure to read `stdin` aborts the command: it sees its input vanish,
    /// never a clean end of input.
    async fn run<R, W>(
        &self,
        spec: ExecSpec,
        stdin: R,
        stdout: &mut W,
    ) -> Result<Captured, CaptureError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin;
}

/// A running VM, reached through the daemon's exec stream.
pub struct Vm<'a> {
    pub client: &'a Client,
    pub name: &'a str,
}

impl Runner for Vm<'_> {
    fn name(&self) -> &str {
        self.name
    }

    async fn run<R, W>(
        &self,
        spec: ExecSpec,
        stdin: R,
        stdout: &mut W,
    ) -> Result<Captured, CaptureError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let io = self
            .client
            .exec(&ExecRequest {
                vm: self.name.to_string(),
                spec,
            })
            .await?;
        pump(io, stdin, stdout).await
    }
}

/// A VM whose commands run as `user` unless they name one (`vm run --user` in a VM
/// made earlier); with `None`, as the VM's default user.
pub struct VmAs<'a> {
    pub vm: Vm<'a>,
    pub user: Option<GuestUser>,
}

impl Runner for VmAs<'_> {
    fn name(&self) -> &str {
        self.vm.name
    }

    async fn run<R, W>(
        &self,
        mut spec: ExecSpec,
        stdin: R,
        stdout: &mut W,
    ) -> Result<Captured, CaptureError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if spec.user.is_none() {
            spec.user = self.user.clone();
        }
        self.vm.run(spec, stdin, stdout).await
    }
}

/// The frame loop of [`Vm::run`] over an already open exec stream.
pub async fn pump<S, R, W>(io: S, stdin: R, stdout: &mut W) -> Result<Captured, CaptureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (frames, events) = exec_stream::open(io);
    let feed = feed(stdin, frames);
    let drain = drain(events, stdout);
    tokio::pin!(feed, drain);
    // The sending half must outlive the drain: the agent kills the process when our
    // half of the stream closes. `None` while input still flows.
    let mut fed: Option<Option<Frames<S>>> = None;
    loop {
        tokio::select! {
            result = &mut feed, if fed.is_none() => match result {
                Ok(frames) => fed = Some(Some(frames)),
                Err(FeedError::Read(e)) => return Err(CaptureError::Input(e)),
                // The stream broke: the drain reports how.
                Err(FeedError::Send) => fed = Some(None),
            },
            done = &mut drain => return done,
        }
    }
}

enum FeedError {
    Read(std::io::Error),
    Send,
}

async fn feed<R, S>(mut stdin: R, mut frames: Frames<S>) -> Result<Frames<S>, FeedError>
where
    R: AsyncRead + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = stdin.read(&mut buf).await.map_err(FeedError::Read)?;
        let frame = if n == 0 {
            HostFrame::StdinEof
        } else {
            HostFrame::Stdin(buf[..n].to_vec())
        };
        frames.send(&frame).await.map_err(|_| FeedError::Send)?;
        if n == 0 {
            return Ok(frames);
        }
    }
}

async fn drain<S, W>(mut events: Events<S>, stdout: &mut W) -> Result<Captured, CaptureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut stderr = Vec::new();
    loop {
        match events.next().await? {
            Event::Stdout(d) => stdout.write_all(&d).await.map_err(CaptureError::Output)?,
            Event::Stderr(d) => {
                stderr.extend_from_slice(&d);
                if stderr.len() > STDERR_KEEP {
                    stderr.drain(..stderr.len() - STDERR_KEEP);
                }
            }
            Event::Exit(status) => {
                stdout.flush().await.map_err(CaptureError::Output)?;
                return Ok(Captured {
                    code: status.shell_code(),
                    stderr,
                });
            }
            Event::Failed(e) => return Err(CliError::Remote(e).into()),
        }
    }
}

/// A writer that fails (and remembers it) once more than its limit comes: what a
/// guest prints is not ours to trust, so every capture of it is bounded.
pub struct Capped<'a, W> {
    inner: &'a mut W,
    left: u64,
    over: bool,
}

impl<'a, W> Capped<'a, W> {
    pub fn new(inner: &'a mut W, limit: u64) -> Capped<'a, W> {
        Capped {
            inner,
            left: limit,
            over: false,
        }
    }

    /// Whether more than the limit came (and the write failed).
    pub fn over(&self) -> bool {
        self.over
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Capped<'_, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.len() as u64 > this.left {
            this.over = true;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "the guest wrote more than banger takes",
            )));
        }
        let written = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.left -= n as u64;
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use banger_wire::agent::{ExitStatus, GuestFrame};
    use futures::StreamExt;
    use tokio::io::ReadBuf;

    use super::*;
    use crate::exec_stream::testing::{agent_pair, recv, send};

    /// An endless input that counts how much was read from it.
    struct Counting(Arc<AtomicUsize>);

    impl AsyncRead for Counting {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = buf.remaining();
            buf.put_slice(&vec![b'x'; n]);
            self.0.fetch_add(n, Ordering::SeqCst);
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn long_stderr_keeps_its_tail() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();

        let kept = Stderr::from_bytes(text.as_bytes());

        assert_eq!(kept.0.lines().next(), Some("(18 earlier lines left out)"));
        assert_eq!(kept.0.lines().last(), Some("line 30"));
        assert_eq!(kept.0.lines().count(), 13);
    }

    #[tokio::test]
    async fn input_streams_in_chunks_and_output_comes_back_with_the_exit_code() {
        let (io, mut agent) = agent_pair();
        let input: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let fake_agent = async move {
            let mut echoed = 0;
            loop {
                match recv(&mut agent).await {
                    HostFrame::Stdin(d) => {
                        assert!(d.len() <= CHUNK);
                        echoed += d.len();
                        send(&mut agent, GuestFrame::Stdout(d)).await;
                    }
                    HostFrame::StdinEof => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            send(&mut agent, GuestFrame::Stderr(b"warning\n".to_vec())).await;
            send(&mut agent, GuestFrame::Exit(ExitStatus::Code(3))).await;
            echoed
        };
        let mut out = Vec::new();

        let (captured, echoed) = tokio::join!(pump(io, &input[..], &mut out), fake_agent);

        let captured = captured.unwrap();
        assert_eq!(echoed, input.len());
        assert_eq!(out, input);
        assert_eq!((captured.code, captured.stderr), (3, b"warning\n".to_vec()));
    }

    #[tokio::test]
    async fn input_is_read_only_as_fast_as_the_guest_takes_it() {
        let (io, mut agent) = agent_pair();
        let read = Arc::new(AtomicUsize::new(0));
        let stalled_agent = async {
            // Take nothing for a while, then end the process.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            let read_while_stalled = read.load(Ordering::SeqCst);
            send(&mut agent, GuestFrame::Exit(ExitStatus::Signal(9))).await;
            read_while_stalled
        };
        let mut out = Vec::new();

        let (captured, read_while_stalled) =
            tokio::join!(pump(io, Counting(read.clone()), &mut out), stalled_agent);

        assert_eq!(captured.unwrap().code, 137);
        assert!(
            read_while_stalled <= 4 * CHUNK,
            "read {read_while_stalled} bytes ahead of the guest"
        );
    }

    struct Failing;

    impl AsyncRead for Failing {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Err(std::io::Error::other("producer died")))
        }
    }

    #[tokio::test]
    async fn an_input_failure_aborts_instead_of_sending_eof() {
        let (io, mut agent) = agent_pair();
        let mut out = Vec::new();

        let err = pump(io, Failing, &mut out).await.unwrap_err();

        assert!(matches!(err, CaptureError::Input(_)), "{err:?}");
        // The stream closed without an end-of-input frame.
        assert!(agent.next().await.is_none());
    }

    #[tokio::test]
    async fn a_guest_error_frame_is_the_error() {
        let (io, mut agent) = agent_pair();
        let wire = banger_wire::WireError {
            code: banger_wire::ErrorCode::NotFound,
            message: "command not found: gti".into(),
            chain: vec!["no such file".into()],
            hint: Some("install it".into()),
        };
        send(&mut agent, GuestFrame::Error(wire.clone())).await;
        let mut out = Vec::new();

        let err = pump(io, tokio::io::empty(), &mut out).await.unwrap_err();

        assert!(
            matches!(err, CaptureError::Cli(CliError::Remote(ref e)) if *e == wire),
            "{err:?}"
        );
    }
}
