//! Exec: `POST /api/v1/vms/{name}/exec` answers with NDJSON [`ExecEvent`]s; while the
//! command runs, its id takes stdin, resizes and kills under `/api/v1/execs/{id}`.
//!
//! An exec lives exactly as long as its answer: when the command ends, or the client
//! drops the answer first, the stream to the agent closes (the agent then kills the
//! command's process group) and the id is forgotten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use banger_wire::agent::{ExecSpec, HostFrame};
use banger_wire::public::{ExecBody, ExecEvent, ResizeBody};
use banger_wire::{ErrorCode, WireError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::guest::{self, Event, Input, Output};
use super::ApiState;

/// What the `/execs/{id}` endpoints ask of a running exec.
enum Control {
    Stdin(Bytes),
    Eof,
    Resize(ResizeBody),
    Kill,
}

/// Control messages queued per exec; a sender waits when the command is slower.
const QUEUE: usize = 16;

/// The running execs, by id.
#[derive(Default)]
pub(crate) struct Execs(Mutex<HashMap<String, Entry>>);

struct Entry {
    control: mpsc::Sender<Control>,
    stdin_open: Arc<AtomicBool>,
}

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Result<(mpsc::Sender<Control>, Arc<AtomicBool>), ApiError> {
        let execs = self.lock();
        let entry = execs.get(id).ok_or_else(|| gone(id))?;
        Ok((entry.control.clone(), entry.stdin_open.clone()))
    }
}

fn gone(id: &str) -> ApiError {
    ApiError::new(
        WireError::new(ErrorCode::NotFound, format!("exec {id} not found"))
            .with_hint("it ended, or the client that started it closed its event stream"),
    )
}

/// Forgets an exec id when the exec's task ends, however it ends.
struct Forget {
    execs: Arc<Execs>,
    id: String,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.execs.lock().remove(&self.id);
    }
}

/// Runs a command; the answer is its events, one JSON object a line.
#[utoipa::path(post, path = "/vms/{name}/exec", operation_id = "exec", tag = "exec",
    params(("name" = String, Path, description = "VM name")),
    request_body = ExecBody,
    responses(
        (status = 200, description = "the command's events, one JSON object a line: `started` first, \
            then `stdout`/`stderr`, then `exit` (or `error`). Closing the stream kills the command.",
            content_type = "application/x-ndjson", body = ExecEvent),
        (status = "default", description = "an error (the command did not start)", body = WireError),
    ))]
pub(crate) async fn exec(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<ExecBody>,
) -> Result<Response, ApiError> {
    let (spec, stdin) = spec_of(&body)?;
    let t0 = std::time::Instant::now();
    let process = guest::start(&s.app.deps.manager, &name, spec).await?;
    let id = format!("{:016x}", rand::random::<u64>());
    let (control, queue) = mpsc::channel(QUEUE);
    // The given input is queued like any later stdin, so it flows while output does.
    if let Some(data) = stdin {
        let _ = control.try_send(Control::Stdin(data.into()));
    }
    if !body.interactive {
        let _ = control.try_send(Control::Eof);
    }
    s.execs.lock().insert(
        id.clone(),
        Entry {
            control,
            stdin_open: Arc::new(AtomicBool::new(body.interactive)),
        },
    );
    let forget = Forget {
        execs: s.execs.clone(),
        id: id.clone(),
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let _ = tx.try_send(Ok(line(&ExecEvent::Started { id })));
    tokio::spawn(async move {
        let _forget = forget;
        let guest::Process { input, output } = process;
        pump(input, output, queue, tx).await;
        tracing::info!(vm = %name, exec_ms = t0.elapsed().as_millis() as u64, "api exec finished");
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// The agent's spec for `body`, and the stdin it gives.
pub(super) fn spec_of(body: &ExecBody) -> Result<(ExecSpec, Option<Vec<u8>>), ApiError> {
    if body.argv.is_empty() {
        return Err(ApiError::invalid("argv is empty: no command given"));
    }
    let timeout_ms = match body.timeout_secs {
        Some(0) => return Err(ApiError::invalid("timeout_secs must be at least 1")),
        Some(secs) => Some(
            secs.checked_mul(1000)
                .ok_or_else(|| ApiError::invalid(format!("timeout_secs {secs} is too large")))?,
        ),
        None => None,
    };
    let stdin = match &body.stdin {
        Some(text) => Some(
            BASE64
                .decode(text)
                .map_err(|e| ApiError::invalid(format!("stdin is not base64: {e}")))?,
        ),
        None => None,
    };
    let spec = ExecSpec {
        argv: body.argv.clone(),
        env: body.env.clone().into_iter().collect(),
        cwd: body.cwd.clone(),
        tty: body.tty,
        timeout_ms,
        user: body.user.clone(),
    };
    Ok((spec, stdin))
}

pub(super) fn line(ev: &ExecEvent) -> Bytes {
    let mut s = serde_json::to_vec(ev).unwrap_or_default();
    s.push(b'\n');
    Bytes::from(s)
}

type Lines = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// Moves control messages in and events out until the command ends or the client
/// leaves. Both directions flow at once: a command's output never waits for its input.
async fn pump(mut input: Input, mut output: Output, mut queue: mpsc::Receiver<Control>, tx: Lines) {
    let inputs = async {
        while let Some(c) = queue.recv().await {
            let sent = match c {
                Control::Stdin(data) => input.stdin(&data).await,
                Control::Eof => input.send(&HostFrame::StdinEof).await,
                Control::Resize(r) => {
                    let size = banger_wire::agent::TtySize {
                        rows: r.rows,
                        cols: r.cols,
                    };
                    input.send(&HostFrame::Resize(size)).await
                }
                Control::Kill => input.send(&HostFrame::Signal(nix::libc::SIGKILL)).await,
            };
            if sent.is_err() {
                // The stream broke; the output side reports it.
                break;
            }
        }
        std::future::pending::<()>().await
    };
    let outputs = async {
        loop {
            let (event, last) = match output.next().await {
                Ok(Event::Stdout(d)) => (
                    ExecEvent::Stdout {
                        data: BASE64.encode(d),
                    },
                    false,
                ),
                Ok(Event::Stderr(d)) => (
                    ExecEvent::Stderr {
                        data: BASE64.encode(d),
                    },
                    false,
                ),
                Ok(Event::Exit(status)) => (
                    ExecEvent::Exit {
                        code: status.shell_code(),
                        timed_out: false,
                    },
                    true,
                ),
                Ok(Event::Failed(e)) if e.code == ErrorCode::Timeout => (
                    // The agent killed the group; the code is timeout(1)'s, as in the CLI.
                    ExecEvent::Exit {
                        code: banger_wire::agent::TIMED_OUT,
                        timed_out: true,
                    },
                    true,
                ),
                Ok(Event::Failed(e)) => (ExecEvent::Error(e), true),
                Err(e) => (ExecEvent::Error(e.wire().clone()), true),
            };
            if tx.send(Ok(line(&event))).await.is_err() || last {
                return;
            }
        }
    };
    tokio::select! {
        () = inputs => {}
        () = outputs => {}
        () = tx.closed() => tracing::info!("exec client left before the command ended; killing it"),
    }
}

/// `?eof=true`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StdinQuery {
    /// Close the command's stdin after these bytes.
    #[serde(default)]
    eof: bool,
}

/// Writes the body to an interactive exec's stdin.
#[utoipa::path(post, path = "/execs/{id}/stdin", operation_id = "exec_stdin", tag = "exec",
    params(("id" = String, Path, description = "exec id from its `started` event"), StdinQuery),
    request_body(content = inline(super::openapi::Binary), content_type = "application/octet-stream", description = "bytes for stdin"),
    responses(
        (status = 204, description = "queued for the command"),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn stdin(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<StdinQuery>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let (control, open) = s.execs.get(&id)?;
    if !open.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            WireError::new(
                ErrorCode::FailedPrecondition,
                format!("the stdin of exec {id} is closed"),
            )
            .with_hint("start the exec with \"interactive\": true to write to its stdin"),
        ));
    }
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("cannot read the body: {e}")))?;
        control
            .send(Control::Stdin(chunk))
            .await
            .map_err(|_| gone(&id))?;
    }
    if q.eof {
        open.store(false, Ordering::SeqCst);
        control.send(Control::Eof).await.map_err(|_| gone(&id))?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Resizes the terminal of an exec started with `tty`.
#[utoipa::path(post, path = "/execs/{id}/resize", operation_id = "exec_resize", tag = "exec",
    params(("id" = String, Path, description = "exec id from its `started` event")),
    request_body = ResizeBody,
    responses(
        (status = 204, description = "sent"),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn resize(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(size): ApiJson<ResizeBody>,
) -> Result<StatusCode, ApiError> {
    let (control, _) = s.execs.get(&id)?;
    control
        .send(Control::Resize(size))
        .await
        .map_err(|_| gone(&id))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Kills the command's process group (SIGKILL); its `exit` event follows.
#[utoipa::path(post, path = "/execs/{id}/kill", operation_id = "exec_kill", tag = "exec",
    params(("id" = String, Path, description = "exec id from its `started` event")),
    responses(
        (status = 204, description = "sent"),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn kill(
    State(s): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let (control, _) = s.execs.get(&id)?;
    control.send(Control::Kill).await.map_err(|_| gone(&id))?;
    Ok(StatusCode::NO_CONTENT)
}
