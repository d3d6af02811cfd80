//! A VM's port forwards: listed, added and removed while it runs (`banger vm port`),
//! each the same [`Request`] as the CLI's.

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use banger_wire::api::{PortInfo, PortProto, Request};
use banger_wire::WireError;
use serde::Deserialize;

use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::{authorize, dispatch, ApiState};
use crate::server::Caller;

/// The VM's port forwards.
#[utoipa::path(get, path = "/vms/{name}/ports", operation_id = "list_ports", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    responses(
        (status = 200, description = "the VM's forwards", body = [PortInfo]),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn list(
    State(s): State<ApiState>,
    ApiPath(name): ApiPath<String>,
) -> Result<HttpResponse, ApiError> {
    dispatch(&s, Request::VmPortList { name }, StatusCode::OK).await
}

/// Forwards a host port to the VM (on every host address, 127.0.0.1 included); kept
/// with the VM, and live at once when it runs. Refused when the host port is already
/// forwarded or in use.
#[utoipa::path(post, path = "/vms/{name}/ports", operation_id = "add_port", tag = "vms",
    params(("name" = String, Path, description = "VM name")),
    request_body(content = PortInfo, description = "the forward"),
    responses(
        (status = 201, description = "the VM's forwards", body = [PortInfo]),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn add(
    State(s): State<ApiState>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    ApiPath(name): ApiPath<String>,
    ApiJson(fwd): ApiJson<PortInfo>,
) -> Result<HttpResponse, ApiError> {
    let port = format!("{}:{}/{}", fwd.host, fwd.guest, fwd.proto.as_str());
    let req = Request::VmPortAdd { name, port };
    authorize(&s, caller, &req)?;
    dispatch(&s, req, StatusCode::CREATED).await
}

/// `?guest=80&proto=udp`: what else the forward to remove must match.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RemoveQuery {
    /// Only the forward to this guest port.
    guest: Option<u16>,
    /// Only the forward of this protocol.
    proto: Option<PortProto>,
}

/// Removes the VM's forwards of a host port.
#[utoipa::path(delete, path = "/vms/{name}/ports/{host}", operation_id = "remove_port", tag = "vms",
    params(
        ("name" = String, Path, description = "VM name"),
        ("host" = u16, Path, description = "the forwarded host port"),
        RemoveQuery,
    ),
    responses(
        (status = 200, description = "the VM's forwards left", body = [PortInfo]),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn remove(
    State(s): State<ApiState>,
    ApiPath((name, host)): ApiPath<(String, u16)>,
    ApiQuery(q): ApiQuery<RemoveQuery>,
) -> Result<HttpResponse, ApiError> {
    let mut port = host.to_string();
    if let Some(guest) = q.guest {
        port.push_str(&format!(":{guest}"));
    }
    if let Some(proto) = q.proto {
        port.push_str(&format!("/{}", proto.as_str()));
    }
    dispatch(&s, Request::VmPortRemove { name, port }, StatusCode::OK).await
}
