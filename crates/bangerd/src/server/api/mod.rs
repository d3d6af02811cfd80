//! The public HTTP API, `/api/v1` on the daemon's socket (see `docs/api.md`): JSON
//! resources for the daemon, VMs, images and snapshots, exec as an NDJSON event stream,
//! files, archives and workspaces as plain bodies. Its OpenAPI document is generated from
//! the same declarations the router is built from ([`api`]), and served at
//! [`OPENAPI_PATH`](banger_wire::public::OPENAPI_PATH).
//!
//! Like `POST /v1/rpc`, it only decodes, dispatches and encodes: a verb the CLI has too
//! is the same [`Request`] through the same handler ([`dispatch`]); guest work goes
//! through [`crate::vm::Manager::exec`]. No endpoint takes a path on the daemon's host.

mod detached;
mod error;
mod exec;
mod files;
mod guest;
mod images;
mod openapi;
mod ports;
mod vms;
mod workspace;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::{Json, Router};
use banger_wire::api::{Request, Response};
use banger_wire::public::PREFIX;
use banger_wire::{ErrorCode, WireError};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{caller, handlers, AppState, Caller};
use error::ApiError;

pub use openapi::document_json;

/// What the API's handlers share.
#[derive(Clone)]
pub(crate) struct ApiState {
    app: Arc<AppState>,
    execs: Arc<exec::Execs>,
    /// The OpenAPI document, as served.
    doc: Arc<String>,
}

/// The API's routes and, from the same declarations, its OpenAPI document.
fn api() -> OpenApiRouter<ApiState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(vms::status))
        .routes(routes!(openapi::serve))
        .routes(routes!(vms::list, vms::create))
        .routes(routes!(vms::show, vms::delete))
        .routes(routes!(vms::start))
        .routes(routes!(vms::stop))
        .routes(routes!(vms::restart))
        .routes(routes!(ports::list, ports::add))
        .routes(routes!(ports::remove))
        .routes(routes!(exec::exec))
        .routes(routes!(exec::stdin))
        .routes(routes!(exec::resize))
        .routes(routes!(exec::kill))
        .routes(routes!(detached::start, detached::list))
        .routes(routes!(detached::output))
        .routes(routes!(detached::kill))
        .routes(routes!(files::write, files::read))
        .routes(routes!(files::unpack, files::pack))
        .routes(routes!(workspace::prepare))
        .routes(routes!(workspace::patch))
        .routes(routes!(images::snapshot))
        .routes(routes!(images::snapshots))
        .routes(routes!(images::delete_snapshot))
        .routes(routes!(images::list))
        .routes(routes!(images::warm))
        .routes(routes!(images::show, images::delete));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).nest(PREFIX, v1)
}

/// The API's router, for `server::serve` to merge. It answers unknown routes and wrong
/// methods too, with the API's error body.
pub(crate) fn router(app: Arc<AppState>) -> Router {
    let (router, doc) = api().split_for_parts();
    let state = ApiState {
        app,
        execs: Arc::default(),
        doc: Arc::new(openapi::to_json(doc)),
    };
    router
        .method_not_allowed_fallback(error::wrong_method)
        .fallback(error::no_route)
        .with_state(state)
}

/// Runs `work` in its own task, so that a client that goes away never abandons half
/// an operation, and waits for it.
async fn detached<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::spawn(work)
        .await
        .map_err(|e| ApiError::new(WireError::new(ErrorCode::Internal, e.to_string())))?
}

/// Refuses `req` when `caller` may not make it (see [`caller::authorize`]).
fn authorize(s: &ApiState, caller: Caller, req: &Request) -> Result<(), ApiError> {
    caller::authorize(caller, s.app.owner, req).map_err(ApiError::from)
}

/// Runs `req` through the handler `POST /v1/rpc` uses, in its own task (a client that
/// goes away never abandons half an operation), and answers its result with `ok`, or
/// 204 when it has none.
async fn dispatch(s: &ApiState, req: Request, ok: StatusCode) -> Result<HttpResponse, ApiError> {
    let app = s.app.clone();
    let answer =
        detached(async move { handlers::handle(&app, req).await.map_err(ApiError::from) }).await?;
    Ok(match answer {
        Response::Pong | Response::Ok => StatusCode::NO_CONTENT.into_response(),
        Response::Daemon(d) => (ok, Json(d)).into_response(),
        Response::Vm(v) => (ok, Json(v)).into_response(),
        Response::Vms(v) => (ok, Json(v)).into_response(),
        Response::Image(i) => (ok, Json(i)).into_response(),
        Response::Images(i) => (ok, Json(i)).into_response(),
        Response::Snapshot(s) => (ok, Json(s)).into_response(),
        Response::Snapshots(s) => (ok, Json(s)).into_response(),
        Response::Pruned(p) => (ok, Json(p)).into_response(),
        Response::Pulled(p) => (ok, Json(p)).into_response(),
        Response::Ports(p) => (ok, Json(p)).into_response(),
        Response::Detached(d) => (ok, Json(d)).into_response(),
        Response::DetachedList(d) => (ok, Json(d)).into_response(),
    })
}
