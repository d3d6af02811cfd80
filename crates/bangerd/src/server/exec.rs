//! `POST /v1/exec`: upgrades the connection and relays frames between the CLI and the
//! guest agent's stream, byte for byte. The daemon never parses stdio.

use std::sync::Arc;

use axum::extract::{Request as HttpRequest, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use banger_wire::api::{ExecRequest, EXEC_UPGRADE_PROTOCOL};
use banger_wire::{ErrorCode, WireError};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::{error_response, AppState};

pub(crate) async fn exec(State(state): State<Arc<AppState>>, mut req: HttpRequest) -> HttpResponse {
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error_response(&WireError::new(ErrorCode::InvalidArgument, e.to_string()))
        }
    };
    let exec: ExecRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(&WireError::new(
                ErrorCode::InvalidArgument,
                format!("bad exec request: {e}"),
            ))
        }
    };
    if exec.spec.argv.is_empty() {
        return error_response(&WireError::new(
            ErrorCode::InvalidArgument,
            "no command given",
        ));
    }
    let t0 = std::time::Instant::now();
    let vm = exec.vm.clone();
    let stream = match state.deps.manager.exec(&exec.vm, exec.spec).await {
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
