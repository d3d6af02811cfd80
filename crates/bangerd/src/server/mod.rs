//! The HTTP+JSON API over a Unix socket. Transports only decode, dispatch and encode:
//! every verb is one [`Request`] variant with one handler in [`handlers`].

mod api;
mod caller;
mod exec;
mod handlers;
mod image;
mod logs;
mod ndjson;
mod prune;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use axum::{Json, Router};
use banger_wire::api::{Request, EXEC_OUTPUT_PATH, EXEC_PATH, RPC_PATH, UPLOAD_PATH};
use banger_wire::{ErrorCode, WireError};
use tokio::net::UnixListener;
use tokio::sync::Notify;

use crate::error::DaemonError;
use crate::vm::Manager;

pub use api::document_json;
pub use caller::Caller;

/// What a running daemon is made of. Tests build one around a temp dir.
pub struct Deps {
    pub manager: Arc<Manager>,
    pub socket: std::path::PathBuf,
    /// The guest agent binary images get; found next to the daemon when absent (see
    /// [`image::agent_binary`]).
    pub agent: Option<std::path::PathBuf>,
}

pub(crate) struct AppState {
    pub deps: Deps,
    pub started: Instant,
    /// Notified by `daemon stop`.
    pub shutdown: Notify,
    /// The uid the daemon runs as.
    pub owner: u32,
}

/// Serves the API on `listener` until `shutdown` resolves or a client asks the daemon
/// to stop. Running VMs are left running: they are not tied to the daemon.
pub async fn serve(
    listener: UnixListener,
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(AppState {
        deps,
        started: Instant::now(),
        shutdown: Notify::new(),
        owner: nix::unistd::geteuid().as_raw(),
    });
    let app = Router::new()
        .route(RPC_PATH, post(rpc))
        .route(EXEC_PATH, post(exec::exec))
        .route(EXEC_OUTPUT_PATH, post(exec::output))
        .route(UPLOAD_PATH, post(handlers::upload))
        .with_state(state.clone())
        .merge(api::router(state.clone()));
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = state.shutdown.notified() => {}
        }
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<Caller>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

async fn rpc(
    State(state): State<Arc<AppState>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    Json(req): Json<Request>,
) -> HttpResponse {
    let span = tracing::info_span!("request", op = ?std::mem::discriminant(&req));
    let _enter = span.enter();
    drop(_enter);
    if let Err(e) = caller::authorize(caller, state.owner, &req) {
        tracing::warn!(uid = ?caller.uid, cause = %e, "request refused");
        return error_response(&e.to_wire());
    }
    if req.is_streaming() {
        return handlers::stream(state, req, None).await;
    }
    if req.is_download() {
        return handlers::download(&state, req).await;
    }
    // Each request runs as its own task, so a client that goes away mid-request never
    // cancels half an operation (a create is finished or rolled back, never abandoned).
    let task = tokio::spawn(async move { handlers::handle(&state, req).await });
    match task.await {
        Ok(Ok(resp)) => Json(resp).into_response(),
        Ok(Err(e)) => error_response(&e.to_wire()),
        Err(join) => error_response(&WireError::new(ErrorCode::Internal, join.to_string())),
    }
}

pub(crate) fn error_response(err: &WireError) -> HttpResponse {
    let status = match err.code {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition => StatusCode::CONFLICT,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(err)).into_response()
}

impl From<DaemonError> for WireError {
    fn from(e: DaemonError) -> WireError {
        e.to_wire()
    }
}
