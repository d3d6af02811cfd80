//! Programmatic exec: run an argv in a VM with stdin fed from an [`AsyncRead`] and
//! stdout written to an [`AsyncWrite`], capturing stderr.
//!
//! Backpressure: one [`CHUNK`] of input is read only after the previous frame left, and
//! the exec stream carries no more than the agent accepts, so input of any size is never
//! held in memory. Output is written out as frames arrive.

use banger_wire::agent::{self, ExecSpec, GuestFrame, HostFrame, CHUNK, MAX_FRAME};
use banger_wire::api::ExecRequest;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::client::Client;
use crate::error::CliError;

/// Keep at most this much of a command's stderr (its tail).
const STDERR_KEEP: usize = 64 * 1024;

/// How a captured command ended.
#[derive(Debug)]
pub struct Captured {
    /// Shell convention: the exit code, or 128+N for signal N.
    pub code: i32,
    /// The last [`STDERR_KEEP`] bytes of its stderr.
    pub stderr: Vec<u8>,
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

/// A plain command spec: no tty, no environment, cwd `/`.
pub fn spec(argv: &[&str]) -> ExecSpec {
    ExecSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: Some("/".into()),
        tty: None,
        timeout_ms: None,
    }
}

/// Runs `spec` in VM `vm`, streaming `stdin` in and `stdout` out; returns the exit code
/// and stderr. A failure to read `stdin` aborts the command (the guest sees the stream
/// vanish, not a clean end of input).
pub async fn run<R, W>(
    client: &Client,
    vm: &str,
    spec: ExecSpec,
    stdin: R,
    stdout: &mut W,
) -> Result<Captured, CaptureError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let io = client.exec(&ExecRequest { vm: vm.to_string(), spec }).await?;
    pump(io, stdin, stdout).await
}

/// The frame loop of [`run`] over an already open exec stream.
pub async fn pump<S, R, W>(io: S, stdin: R, stdout: &mut W) -> Result<Captured, CaptureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let codec = LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec();
    let (sink, frames) = Framed::new(io, codec).split();

    let feed = feed(stdin, sink);
    let drain = drain(frames, stdout);
    tokio::pin!(feed, drain);
    // The sink must outlive the drain: the agent kills the process when our half of
    // the stream closes. `None` while input still flows.
    let mut fed: Option<Option<Sink<S>>> = None;
    loop {
        tokio::select! {
            result = &mut feed, if fed.is_none() => match result {
                Ok(sink) => fed = Some(Some(sink)),
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

type Sink<S> = futures::stream::SplitSink<Framed<S, LengthDelimitedCodec>, Bytes>;

async fn feed<R, S>(mut stdin: R, mut sink: Sink<S>) -> Result<Sink<S>, FeedError>
where
    R: AsyncRead + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = stdin.read(&mut buf).await.map_err(FeedError::Read)?;
        let frame = if n == 0 { HostFrame::StdinEof } else { HostFrame::Stdin(buf[..n].to_vec()) };
        sink.send(Bytes::from(agent::encode(&frame))).await.map_err(|_| FeedError::Send)?;
        if n == 0 {
            return Ok(sink);
        }
    }
}

async fn drain<S, W>(
    mut frames: futures::stream::SplitStream<Framed<S, LengthDelimitedCodec>>,
    stdout: &mut W,
) -> Result<Captured, CaptureError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut stderr = Vec::new();
    loop {
        let Some(bytes) = frames.next().await else {
            return Err(CliError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the exec stream ended before the command exited (did the VM stop?)",
            ))
            .into());
        };
        let bytes = bytes.map_err(CliError::Io)?;
        match agent::decode::<GuestFrame>(&bytes).map_err(CliError::Decode)? {
            GuestFrame::Stdout(d) => stdout.write_all(&d).await.map_err(CaptureError::Output)?,
            GuestFrame::Stderr(d) => {
                stderr.extend_from_slice(&d);
                if stderr.len() > STDERR_KEEP {
                    stderr.drain(..stderr.len() - STDERR_KEEP);
                }
            }
            GuestFrame::Exit(status) => {
                stdout.flush().await.map_err(CaptureError::Output)?;
                return Ok(Captured { code: status.shell_code(), stderr });
            }
            GuestFrame::Error(e) => return Err(CliError::Remote(e).into()),
            GuestFrame::Started { .. } | GuestFrame::Pong { .. } | GuestFrame::Ok => {}
        }
    }
}
