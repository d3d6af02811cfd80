//! The OpenAPI 3.1 document of the public API: the paths come from the handlers'
//! `#[utoipa::path]` declarations as the router registers them (`super::api`), the
//! schemas from the wire types (banger-wire's `openapi` feature).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::ApiState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "banger",
        description = "The public API of bangerd, on its Unix socket. Errors are \
            `{code, message, chain, hint}` with a status from the code; see docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "daemon", description = "the daemon itself"),
        (name = "vms", description = "VM lifecycle"),
        (name = "exec", description = "commands in a VM, streamed as NDJSON events"),
        (name = "files", description = "files and directories in a VM, as plain and tar bodies"),
        (name = "workspace", description = "a repository's files in a VM, and its changes as a patch"),
        (name = "snapshots", description = "snapshots of running VMs"),
        (name = "images", description = "the images VMs boot"),
    )
)]
pub(crate) struct ApiDoc;

/// The document as JSON, with the daemon's version.
pub(super) fn to_json(mut doc: utoipa::openapi::OpenApi) -> String {
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json().unwrap_or_default()
}

/// The document `GET /api/v1/openapi.json` serves (`bangerd openapi` prints it).
pub fn document_json() -> String {
    to_json(super::api().into_openapi())
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "daemon",
    responses((status = 200, description = "the OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)))]
pub(crate) async fn serve(State(s): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.doc.as_str().to_owned(),
    )
        .into_response()
}

// How the document describes a binary body: `type: string, format: binary`.
/// Raw bytes.
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub(crate) struct Binary(#[allow(dead_code)] Vec<u8>);
