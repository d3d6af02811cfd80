//! The public API's errors: a [`WireError`] body (`{code, message, chain, hint}`) with
//! an HTTP status taken from its code, and the extractors that turn malformed requests
//! (bad JSON, unknown fields, wrong types, oversized bodies, bad paths and queries)
//! into such errors instead of axum's plain-text rejections.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use banger_wire::{ErrorCode, WireError};
use serde::de::DeserializeOwned;

use crate::error::DaemonError;

/// The largest JSON body the API reads.
pub(crate) const JSON_LIMIT: usize = 1 << 20;

/// A failed API call.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    error: WireError,
}

impl ApiError {
    pub(crate) fn new(error: WireError) -> ApiError {
        ApiError {
            status: status(error.code),
            error,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(WireError::new(ErrorCode::InvalidArgument, message))
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> ApiError {
        self.error.hint = Some(hint.into());
        self
    }

    /// A body over `limit` bytes: 413, with the code `invalid_argument`.
    pub(crate) fn too_large(what: &str, limit: u64) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: WireError::new(
                ErrorCode::InvalidArgument,
                format!("{what} is larger than {}", size(limit)),
            ),
        }
    }

    pub(crate) fn wire(&self) -> &WireError {
        &self.error
    }
}

impl From<DaemonError> for ApiError {
    fn from(e: DaemonError) -> ApiError {
        ApiError::new(e.to_wire())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.error)).into_response()
    }
}

/// The HTTP status of each error code.
pub(crate) fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::AlreadyExists | ErrorCode::FailedPrecondition => StatusCode::CONFLICT,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::VmmFailed | ErrorCode::AgentFailed | ErrorCode::HostFailed => {
            StatusCode::BAD_GATEWAY
        }
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// The answer for a path no route serves.
pub(crate) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(WireError::new(
        ErrorCode::NotFound,
        format!("no route for {method} {}", uri.path()),
    ))
    .with_hint(format!(
        "the routes are listed in {}",
        banger_wire::public::OPENAPI_PATH
    ))
}

/// The answer for a route asked with a method it does not take.
pub(crate) async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        error: WireError::new(
            ErrorCode::InvalidArgument,
            format!("{} does not take {method}", uri.path()),
        )
        .with_hint(format!(
            "the routes are listed in {}",
            banger_wire::public::OPENAPI_PATH
        )),
    }
}

/// A JSON body of at most [`JSON_LIMIT`] bytes whose every field `T` knows (an empty
/// body reads as `{}`). The content type is not checked.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), JSON_LIMIT)
            .await
            .map_err(|e| body_error(e, "the JSON body", JSON_LIMIT as u64))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Reading a body failed: too large, or the connection broke.
pub(crate) fn body_error(e: axum::Error, what: &str, limit: u64) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return ApiError::too_large(what, limit);
        }
        source = s.source();
    }
    ApiError::invalid(format!("cannot read {what}: {e}"))
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        bytes
    };
    let mut unknown = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_ignored::deserialize(&mut de, |path| unknown.push(path.to_string()))
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))?;
    if !unknown.is_empty() {
        return Err(ApiError::invalid(format!(
            "unknown field{} in the JSON body: {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        )));
    }
    Ok(value)
}

/// Query parameters, refused with a structured error.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e: QueryRejection| ApiError::invalid(e.body_text()))
    }
}

/// Path parameters, refused with a structured error.
pub(crate) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ApiPath(p))
            .map_err(|e: PathRejection| ApiError::invalid(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_wire::api::VmCreateSpec;
    use banger_wire::public::ExecBody;

    #[test]
    fn every_code_has_a_client_or_server_error_status() {
        for code in ErrorCode::ALL {
            let s = status(code);
            assert!(s.is_client_error() || s.is_server_error(), "{code}: {s}");
        }
        assert_eq!(status(ErrorCode::HostFailed), StatusCode::BAD_GATEWAY);
        assert_eq!(status(ErrorCode::FailedPrecondition), StatusCode::CONFLICT);
    }

    #[test]
    fn unknown_fields_are_refused_even_in_nested_wire_types() {
        let err = parse_json::<VmCreateSpec>(br#"{"vcpu":1,"policy":{"mod":"open"}}"#).unwrap_err();

        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            err.error.message,
            "unknown field in the JSON body: policy.mod"
        );
    }

    #[test]
    fn wrong_types_are_invalid_arguments() {
        let err = parse_json::<VmCreateSpec>(br#"{"vcpu":"two"}"#).unwrap_err();

        assert_eq!(err.error.code, ErrorCode::InvalidArgument);
        assert!(err.error.message.contains("invalid type"), "{err:?}");
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        let spec = parse_json::<VmCreateSpec>(b"").unwrap();
        let exec = parse_json::<ExecBody>(b" \n").unwrap_err();

        assert_eq!(spec, VmCreateSpec::default());
        assert!(exec.error.message.contains("argv"), "{exec:?}");
    }
}
