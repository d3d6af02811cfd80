//! Images and snapshots: each endpoint is one [`Request`], dispatched to the same
//! handler `POST /v1/rpc` uses.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use banger_wire::api::{ImageInfo, Request, SnapshotInfo, VmCreateSpec};
use banger_wire::public::{SnapshotBody, WarmBody};
use banger_wire::WireError;

use super::error::{ApiError, ApiJson, ApiPath};
use super::{dispatch, ApiState};

/// Every image.
#[utoipa::path(get, path = "/images", operation_id = "list_images", tag = "images",
    responses(
        (status = 200, description = "the images", body = [ImageInfo]),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn list(State(s): State<ApiState>) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::ImageList, StatusCode::OK).await
}

/// One image.
#[utoipa::path(get, path = "/images/{name}", operation_id = "get_image", tag = "images",
    params(("name" = String, Path, description = "image name")),
    responses(
        (status = 200, description = "the image", body = ImageInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn show(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::ImageShow { name }, StatusCode::OK).await
}

/// Deletes an image no VM uses.
#[utoipa::path(delete, path = "/images/{name}", operation_id = "delete_image", tag = "images",
    params(("name" = String, Path, description = "image name")),
    responses(
        (status = 204, description = "deleted"),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn delete(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::ImageDelete { name }, StatusCode::NO_CONTENT).await
}

/// Warms an image: boots it for the machine asked, lets it settle and keeps the
/// snapshot warm creates resume; with `pool`, sets the image's pool size (and only
/// that when the machine is warm already).
#[utoipa::path(post, path = "/images/{name}/warm", operation_id = "warm_image", tag = "images",
    params(("name" = String, Path, description = "image name")),
    request_body(content = WarmBody, description = "an empty body is `{}`"),
    responses(
        (status = 200, description = "the image's warm snapshot", body = SnapshotInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn warm(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<WarmBody>,
) -> Result<HttpResponse, ApiError> {
    let spec = VmCreateSpec {
        image: Some(name),
        vcpu: body.vcpu,
        memory_mib: body.memory_mib,
        disk_size_mib: body.disk_size_mib,
        backend: body.backend,
        no_network: body.no_network,
        ..Default::default()
    };
    let req = Request::ImageWarm {
        spec,
        pool: body.pool,
    };
    dispatch(&s, req, StatusCode::OK).await
}

/// Snapshots a running VM: it pauses for the copy, then runs on.
#[utoipa::path(post, path = "/vms/{name}/snapshots", operation_id = "create_snapshot", tag = "snapshots",
    params(("name" = String, Path, description = "VM name")),
    request_body(content = SnapshotBody, description = "an empty body is `{}`"),
    responses(
        (status = 201, description = "the snapshot", body = SnapshotInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn snapshot(
    State(s): State<ApiState>,
    ApiPath(vm): ApiPath<String>,
    ApiJson(body): ApiJson<SnapshotBody>,
) -> Result<HttpResponse, ApiError> {
    let req = Request::VmSnapshot {
        vm,
        name: body.name,
    };
    dispatch(&s, req, StatusCode::CREATED).await
}

/// Every snapshot.
#[utoipa::path(get, path = "/snapshots", operation_id = "list_snapshots", tag = "snapshots",
    responses(
        (status = 200, description = "the snapshots", body = [SnapshotInfo]),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn snapshots(State(s): State<ApiState>) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::SnapshotList, StatusCode::OK).await
}

/// Deletes a snapshot.
#[utoipa::path(delete, path = "/snapshots/{name}", operation_id = "delete_snapshot", tag = "snapshots",
    params(("name" = String, Path, description = "snapshot name")),
    responses(
        (status = 204, description = "deleted"),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn delete_snapshot(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::SnapshotDelete { name }, StatusCode::NO_CONTENT).await
}
