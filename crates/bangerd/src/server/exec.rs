//! `POST /v1/exec` and `POST /v1/exec/output`: upgrade the connection and relay frames
//! between the CLI and a guest agent's stream, byte for byte. The daemon never parses
//! stdio.

use std::sync::Arc;

use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use banger_wire::agent::AgentRequest;
use banger_wire::api::{ExecOutputRequest, ExecRequest, EXEC_UPGRADE_PROTOCOL};
use banger_wire::{ErrorCode, WireError};
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::{error_response, AppState};

/// A command's stdio (`vm exec`).
pub(crate) async fn exec(State(state): State<Arc<AppState>>, req: HttpRequest) -> HttpResponse {
    let (on_upgrade, exec) = match upgrade_body::<ExecRequest>(req).await {
        Ok(parts) => parts,
        Err(e) => return error_response(&e),
    };
    if exec.spec.argv.is_empty() {
        return error_response(&WireError::new(
            ErrorCode::InvalidArgument,
            "no command given",
        ));
    }
    let spec = match state.deps.manager.exec_defaults(&exec.vm, exec.spec) {
        Ok(spec) => spec,
        Err(e) => return error_response(&e.to_wire()),
    };
    relay(&state, on_upgrade, exec.vm, AgentRequest::Exec(spec)).await
}

/// A detached command's output (`vm logs --exec`).
pub(crate) async fn output(State(state): State<Arc<AppState>>, req: HttpRequest) -> HttpResponse {
    let (on_upgrade, out) = match upgrade_body::<ExecOutputRequest>(req).await {
        Ok(parts) => parts,
        Err(e) => return error_response(&e),
    };
    let request = AgentRequest::DetachedOutput {
        id: out.id,
        follow: out.follow,
    };
    relay(&state, on_upgrade, out.vm, request).await
}

/// The pending upgrade and the JSON body of an upgrade request.
async fn upgrade_body<T: DeserializeOwned>(
    mut req: HttpRequest,
) -> Result<(OnUpgrade, T), WireError> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| WireError::new(ErrorCode::InvalidArgument, e.to_string()))?
        .to_bytes();
    let parsed = serde_json::from_slice(&body).map_err(|e| {
        WireError::new(ErrorCode::InvalidArgument, format!("bad exec request: {e}"))
    })?;
    Ok((on_upgrade, parsed))
}

/// Sends `request` on a new stream to `vm`'s agent, then answers the upgrade and relays
/// bytes both ways until either side ends.
async fn relay(
    state: &AppState,
    on_upgrade: OnUpgrade,
    vm: String,
    request: AgentRequest,
) -> HttpResponse {
    let t0 = std::time::Instant::now();
    let stream = match state.deps.manager.agent_stream(&vm, &request).await {
        Ok(s) => s,
        Err(e) => return error_response(&e.to_wire()),
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(cause = %e, "exec upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        // The VM is in use until the relay ends.
        let (stream, _busy) = stream.into_parts();
        let mut guest = stream.into_inner();
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut guest).await {
            tracing::debug!(cause = %e, "exec relay ended");
        }
        let exec_ms = t0.elapsed().as_millis() as u64;
        tracing::info!(vm = %vm, exec_ms, "exec finished");
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (
                header::UPGRADE,
                HeaderValue::from_static(EXEC_UPGRADE_PROTOCOL),
            ),
        ],
    )
        .into_response()
}
