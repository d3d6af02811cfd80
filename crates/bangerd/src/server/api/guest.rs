//! Guest processes from the daemon's side: an exec stream of [`Manager::exec`] decoded
//! into events, and the two ways the API's file and workspace endpoints run a command:
//! [`run`] (a request body streamed to its stdin, its output kept) and [`stream`] (its
//! stdout streamed out as the answer's body).
//!
//! Dropping a [`Process`] closes its stream, and the agent kills the process group of a
//! process whose host side closed: nothing outlives the request that started it.

use axum::body::{Body, Bytes};
use banger_wire::agent::{self, ExecSpec, ExitStatus, GuestFrame, HostFrame, CHUNK};
use banger_wire::{ErrorCode, WireError};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::ApiError;
use crate::vm::{Manager, VmStream};

/// Keep at most this much of a command's stderr (its tail), and of the stdout [`run`]
/// keeps.
const KEEP: usize = 64 * 1024;

/// What a guest process did.
#[derive(Debug)]
pub(crate) enum Event {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// It ended; nothing follows.
    Exit(ExitStatus),
    /// The exec failed in the guest (e.g. its timeout killed it); nothing follows.
    Failed(WireError),
}

/// A started guest process.
pub(crate) struct Process {
    pub input: Input,
    pub output: Output,
}

/// The host's half of a process: stdin, signals, resizes.
pub(crate) struct Input(SplitSink<VmStream, Bytes>);

/// The guest's half: output and the end.
pub(crate) struct Output(SplitStream<VmStream>);

/// Starts `spec` in `vm` and waits until the guest started it: a command that cannot
/// start (missing, bad working directory) is an error here, not an event.
pub(crate) async fn start(m: &Manager, vm: &str, spec: ExecSpec) -> Result<Process, ApiError> {
    let (sink, frames) = m.exec(vm, spec).await?.split();
    let mut output = Output(frames);
    match output.frame().await? {
        GuestFrame::Started { .. } => Ok(Process {
            input: Input(sink),
            output,
        }),
        GuestFrame::Error(e) => Err(ApiError::new(e)),
        other => Err(ApiError::new(WireError::new(
            ErrorCode::AgentFailed,
            format!("vm {vm}: the agent answered an exec with {other:?}"),
        ))),
    }
}

impl Input {
    pub(crate) async fn send(&mut self, frame: &HostFrame) -> Result<(), ApiError> {
        self.0
            .send(Bytes::from(agent::encode(frame)))
            .await
            .map_err(|e| broken(&e))
    }

    /// Sends `data` as stdin, in frames of at most [`CHUNK`] bytes.
    pub(crate) async fn stdin(&mut self, data: &[u8]) -> Result<(), ApiError> {
        for piece in data.chunks(CHUNK) {
            self.send(&HostFrame::Stdin(piece.to_vec())).await?;
        }
        Ok(())
    }

    /// Streams `body` into stdin, then closes it. More than `limit` bytes is an error
    /// (and the caller drops the process).
    async fn feed(&mut self, body: Body, limit: u64) -> Result<(), ApiError> {
        let mut data = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = data.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::invalid(format!("cannot read the body: {e}")))?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(ApiError::too_large("the body", limit));
            }
            self.stdin(&chunk).await?;
        }
        self.send(&HostFrame::StdinEof).await
    }
}

impl Output {
    async fn frame(&mut self) -> Result<GuestFrame, ApiError> {
        match self.0.next().await {
            Some(Ok(bytes)) => agent::decode::<GuestFrame>(&bytes).map_err(|e| {
                ApiError::new(WireError::new(
                    ErrorCode::AgentFailed,
                    format!("the agent sent a malformed frame: {e}"),
                ))
            }),
            Some(Err(e)) => Err(broken(&e)),
            None => Err(ApiError::new(
                WireError::new(
                    ErrorCode::Unavailable,
                    "the exec stream ended before the command did",
                )
                .with_hint("the VM may have stopped: check `banger vm show`"),
            )),
        }
    }

    /// The next event; an error when the stream broke or ended before the process did.
    pub(crate) async fn next(&mut self) -> Result<Event, ApiError> {
        loop {
            return Ok(match self.frame().await? {
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

fn broken(e: &std::io::Error) -> ApiError {
    ApiError::new(
        WireError::new(
            ErrorCode::AgentFailed,
            format!("the exec stream to the guest broke: {e}"),
        )
        .with_hint("the VM may have stopped: check `banger vm show`"),
    )
}

/// How a command of [`run`] or [`stream`] ended.
#[derive(Debug, Default)]
pub(crate) struct Ran {
    /// Shell convention: the exit code, or 128+n for signal n.
    pub code: i32,
    /// Its stdout (the first [`KEEP`] bytes; [`stream`] keeps none).
    pub stdout: Vec<u8>,
    /// The tail of its stderr.
    pub stderr: Vec<u8>,
}

impl Ran {
    /// The failure of a guest step that exited with a code the caller has no meaning
    /// for: `failed_precondition`, its stderr as the cause.
    pub(crate) fn failure(&self, vm: &str, step: &str) -> ApiError {
        let mut e = WireError::new(
            ErrorCode::FailedPrecondition,
            format!("vm {vm}: {step} failed with exit code {}", self.code),
        );
        let stderr = String::from_utf8_lossy(&self.stderr);
        if !stderr.trim().is_empty() {
            e.chain.push(stderr.trim().to_string());
        }
        ApiError::new(e)
    }
}

/// Runs `spec` in `vm` with `input` (at most `limit` bytes) as its stdin, or none;
/// returns how it ended. A body that breaks or runs over `limit` kills the command.
pub(crate) async fn run(
    m: &Manager,
    vm: &str,
    spec: ExecSpec,
    input: Option<(Body, u64)>,
) -> Result<Ran, ApiError> {
    let Process {
        input: mut sink,
        mut output,
    } = start(m, vm, spec).await?;
    let feed = async {
        match input {
            Some((body, limit)) => sink.feed(body, limit).await,
            None => sink.send(&HostFrame::StdinEof).await,
        }
    };
    let read = collect(&mut output);
    tokio::pin!(feed, read);
    tokio::select! {
        // Input the command left unread (it failed early) is dropped with the stream.
        ran = &mut read => ran,
        fed = &mut feed => {
            fed?;
            read.await
        }
    }
}

async fn collect(output: &mut Output) -> Result<Ran, ApiError> {
    let mut ran = Ran::default();
    loop {
        match output.next().await? {
            Event::Stdout(d) => keep_head(&mut ran.stdout, &d),
            Event::Stderr(d) => keep_tail(&mut ran.stderr, &d),
            Event::Exit(status) => {
                ran.code = status.shell_code();
                return Ok(ran);
            }
            Event::Failed(e) => return Err(ApiError::new(e)),
        }
    }
}

fn keep_head(buf: &mut Vec<u8>, data: &[u8]) {
    let room = KEEP.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

fn keep_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > KEEP {
        buf.drain(..buf.len() - KEEP);
    }
}

/// What [`stream`] answers.
pub(crate) enum Streamed {
    /// The command's stdout, as it comes. A command that fails once it has written
    /// something ends the body with an error (the client sees a cut-off transfer).
    Body(Body),
    /// It failed before writing anything.
    Failed(Ran),
}

/// Runs `spec` in `vm` with no input, and waits for its first output or its end.
pub(crate) async fn stream(m: &Manager, vm: &str, spec: ExecSpec) -> Result<Streamed, ApiError> {
    let Process {
        mut input,
        mut output,
    } = start(m, vm, spec).await?;
    input.send(&HostFrame::StdinEof).await?;
    let mut stderr = Vec::new();
    let first = loop {
        match output.next().await? {
            Event::Stdout(d) => break d,
            Event::Stderr(d) => keep_tail(&mut stderr, &d),
            Event::Exit(status) if status.shell_code() == 0 => {
                return Ok(Streamed::Body(Body::empty()))
            }
            Event::Exit(status) => {
                return Ok(Streamed::Failed(Ran {
                    code: status.shell_code(),
                    stdout: Vec::new(),
                    stderr,
                }))
            }
            Event::Failed(e) => return Err(ApiError::new(e)),
        }
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        // The process lives as long as this task: until it ends or the client leaves.
        let _input = input;
        let mut next = Ok(Event::Stdout(first));
        loop {
            let item = match next {
                Ok(Event::Stdout(d)) => Ok(Bytes::from(d)),
                Ok(Event::Stderr(_)) => {
                    next = output.next().await;
                    continue;
                }
                Ok(Event::Exit(status)) if status.shell_code() == 0 => return,
                Ok(Event::Exit(status)) => Err(std::io::Error::other(format!(
                    "the command failed with exit code {}",
                    status.shell_code()
                ))),
                Ok(Event::Failed(e)) => Err(std::io::Error::other(e.message)),
                Err(e) => Err(std::io::Error::other(e.wire().message.clone())),
            };
            let last = item.is_err();
            if tx.send(item).await.is_err() || last {
                return;
            }
            next = output.next().await;
        }
    });
    Ok(Streamed::Body(Body::from_stream(ReceiverStream::new(rx))))
}

/// A command spec as the API runs it: no tty, no environment, cwd `/`, as the VM's
/// default user.
pub(crate) fn spec(argv: &[&str]) -> ExecSpec {
    ExecSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: Some("/".into()),
        ..ExecSpec::default()
    }
}

/// `sh -c SCRIPT NAME ARGS...`: the arguments reach the script as `$1`…, unquoted.
pub(crate) fn script(name: &str, body: &str, args: &[&str]) -> ExecSpec {
    let mut argv = vec!["sh", "-c", body, name];
    argv.extend_from_slice(args);
    spec(&argv)
}
