//! Daemon status and VM lifecycle: each endpoint is one [`Request`], dispatched to the
//! same handler `POST /v1/rpc` uses.

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use banger_wire::api::{DaemonInfo, Request, VmCreateSpec, VmInfo};
use banger_wire::WireError;

use super::error::{ApiError, ApiJson, ApiPath};
use super::{authorize, dispatch, ApiState};
use crate::server::Caller;

/// Daemon facts: version, socket, uptime, VM counts.
#[utoipa::path(get, path = "/status", operation_id = "daemon_status", tag = "daemon",
    responses(
        (status = 200, description = "the daemon", body = DaemonInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn status(State(s): State<ApiState>) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::DaemonStatus, StatusCode::OK).await
}

/// Every VM.
#[utoipa::path(get, path = "/vms", operation_id = "list_vms", tag = "vms",
    responses(
        (status = 200, description = "the VMs", body = [VmInfo]),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn list(State(s): State<ApiState>) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::VmList, StatusCode::OK).await
}

/// Creates a VM (and starts it unless `no_start`); answers once it is up.
#[utoipa::path(post, path = "/vms", operation_id = "create_vm", tag = "vms",
    request_body(content = VmCreateSpec, description = "unset fields take the daemon's defaults; an empty body is `{}`"),
    responses(
        (status = 201, description = "the new VM", body = VmInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn create(
    State(s): State<ApiState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    ApiJson(spec): ApiJson<VmCreateSpec>,
) -> Result<HttpResponse, ApiError> {
    let req = Request::VmCreate { spec };
    authorize(&s, caller, &req)?;
    dispatch(&s, req, StatusCode::CREATED).await
}

/// One VM.
#[utoipa::path(get, path = "/vms/{name}", operation_id = "get_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 200, description = "the VM", body = VmInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn show(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::VmShow { name }, StatusCode::OK).await
}

/// Deletes a VM, running or not, with its disk and network.
#[utoipa::path(delete, path = "/vms/{name}", operation_id = "delete_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 204, description = "deleted"),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn delete(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<HttpResponse, ApiError> {
    let req = Request::VmDelete {
        name,
        force: true,
        detach: false,
    };
    dispatch(&s, req, StatusCode::NO_CONTENT).await
}

/// Starts a stopped VM; answers once it is up.
#[utoipa::path(post, path = "/vms/{name}/start", operation_id = "start_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 200, description = "the VM", body = VmInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn start(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::VmStart { name }, StatusCode::OK).await
}

/// Stops a VM: the guest shuts down cleanly, or is killed after the stop timeout.
#[utoipa::path(post, path = "/vms/{name}/stop", operation_id = "stop_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 200, description = "the VM", body = VmInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn stop(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<HttpResponse, ApiError> {
    let req = Request::VmStop { name, force: false };
    dispatch(&s, req, StatusCode::OK).await
}

/// Stops and starts a VM.
#[utoipa::path(post, path = "/vms/{name}/restart", operation_id = "restart_vm", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 200, description = "the VM", body = VmInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn restart(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::VmRestart { name }, StatusCode::OK).await
}
