//! Detached commands under `/api/v1/vms/{name}/detached`: start one, list them, fetch a
//! command's output (NDJSON [`ExecEvent`]s, as an exec's), signal one. The guest's
//! agent keeps them (`vm exec -d`, `vm ps`, `vm logs --exec`, `vm kill` in the CLI).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use banger_wire::agent::{AgentRequest, DetachedInfo, DetachedState, GuestFrame};
use banger_wire::api::Request;
use banger_wire::public::{ExecBody, ExecEvent};
use banger_wire::{ErrorCode, WireError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::{dispatch, exec, ApiState};
use crate::agent_conn;

/// Starts a command detached: it runs on without any client, its output kept in the
/// guest.
#[utoipa::path(post, path = "/vms/{name}/detached", operation_id = "detach", tag = "exec",
    params(("name" = String, Path, description = "VM name")),
    request_body(content = ExecBody, description = "an exec's body; `stdin`, `interactive` and `tty` are refused"),
    responses(
        (status = 201, description = "the command, running", body = DetachedInfo),
        (status = "default", description = "an error (the command did not start)", body = WireError),
    ))]
pub(crate) async fn start(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<ExecBody>,
) -> Result<Response, ApiError> {
    if body.stdin.is_some() || body.interactive || body.tty.is_some() {
        return Err(ApiError::new(
            WireError::new(
                ErrorCode::InvalidArgument,
                "a detached command takes no stdin and has no terminal",
            )
            .with_hint("drop stdin, interactive and tty; its stdin reads end-of-file"),
        ));
    }
    let (spec, _) = exec::spec_of(&body)?;
    dispatch(
        &s,
        Request::VmExecDetach { name, spec },
        StatusCode::CREATED,
    )
    .await
}

/// The VM's detached commands, oldest first: running ones, and ended ones whose output
/// was not fetched yet.
#[utoipa::path(get, path = "/vms/{name}/detached", operation_id = "list_detached", tag = "exec",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 200, description = "the commands", body = [DetachedInfo]),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn list(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    dispatch(&s, Request::VmPs { name }, StatusCode::OK).await
}

/// `?follow=true`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct OutputQuery {
    /// Stream until the command has ended, rather than what it wrote so far.
    #[serde(default)]
    follow: bool,
}

/// A detached command's kept output; `exit` last once it has ended, after which it is
/// forgotten. Without `exit` the command still runs.
#[utoipa::path(get, path = "/vms/{name}/detached/{id}/output", operation_id = "detached_output", tag = "exec",
    params(
        ("name" = String, Path, description = "VM name"),
        ("id" = String, Path, description = "the detached command's id"),
        OutputQuery,
    ),
    responses(
        (status = 200, description = "`stdout`/`stderr` events, then `exit` when the command has ended \
            (or `error`)", content_type = "application/x-ndjson", body = ExecEvent),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn output(
    State(s): State<ApiState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<OutputQuery>,
) -> Result<Response, ApiError> {
    let m = s.app.deps.manager.clone();
    // Asked first, so an unknown id is a 404 rather than an error event.
    if !m.detached_list(&name).await?.iter().any(|d| d.id == id) {
        return Err(ApiError::new(
            WireError::new(
                ErrorCode::NotFound,
                format!("no detached command {id} in vm {name}"),
            )
            .with_hint("an ended command is forgotten once its output was fetched"),
        ));
    }
    let req = AgentRequest::DetachedOutput {
        id,
        follow: q.follow,
    };
    let mut stream = m.agent_stream(&name, &req).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        loop {
            let frame = tokio::select! {
                frame = agent_conn::next_frame(&mut stream) => frame,
                // The client left: dropping the stream ends the agent's side too.
                () = tx.closed() => return,
            };
            let (event, last) = match frame {
                Ok(GuestFrame::Stdout(d)) => (
                    Some(ExecEvent::Stdout {
                        data: BASE64.encode(d),
                    }),
                    false,
                ),
                Ok(GuestFrame::Stderr(d)) => (
                    Some(ExecEvent::Stderr {
                        data: BASE64.encode(d),
                    }),
                    false,
                ),
                Ok(GuestFrame::Detached(info)) => (exit_event(&info), true),
                Ok(_) => continue,
                Err(e) => (Some(ExecEvent::Error(WireError::from_diagnostic(&e))), true),
            };
            if let Some(event) = event {
                if tx.send(Ok(exec::line(&event))).await.is_err() {
                    return;
                }
            }
            if last {
                return;
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// `?signal=N`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct KillQuery {
    /// The signal number (default 9, SIGKILL).
    #[serde(default)]
    signal: Option<i32>,
}

/// Signals a detached command's process group (nothing once it has ended).
#[utoipa::path(post, path = "/vms/{name}/detached/{id}/kill", operation_id = "detached_kill", tag = "exec",
    params(
        ("name" = String, Path, description = "VM name"),
        ("id" = String, Path, description = "the detached command's id"),
        KillQuery,
    ),
    responses(
        (status = 200, description = "the command", body = DetachedInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn kill(
    State(s): State<ApiState>,
    ApiPath((name, id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<KillQuery>,
) -> Result<Response, ApiError> {
    let signal = q.signal.unwrap_or(nix::libc::SIGKILL);
    dispatch(&s, Request::VmKill { name, id, signal }, StatusCode::OK).await
}

/// The `exit` event of a command that has ended.
fn exit_event(info: &DetachedInfo) -> Option<ExecEvent> {
    match (info.state, info.exit_code) {
        (DetachedState::Exited, Some(code)) => Some(ExecEvent::Exit {
            code,
            timed_out: info.timed_out,
        }),
        (DetachedState::Exited, None) => Some(ExecEvent::Error(WireError::new(
            ErrorCode::AgentFailed,
            "the command ended without an exit status",
        ))),
        (DetachedState::Running, _) => None,
    }
}
