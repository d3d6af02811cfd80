//! Files and directories in a guest, as request and answer bodies: a file's bytes, or a
//! tar of a directory. Bodies stream through the agent's exec (`cat`, `tar`) and are
//! never held whole; uploads are capped at the daemon's `import_max_mib`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use banger_wire::{ErrorCode, WireError};
use serde::Deserialize;

use super::error::{ApiError, ApiPath, ApiQuery};
use super::guest::{self, Streamed};
use super::{detached, ApiState};
use crate::vm::Manager;

/// Exit code of the scripts below: the path does not exist.
const ABSENT: i32 = 104;
/// Exit code of the scripts below: the path is a directory where a file was meant, or
/// not a directory where one was.
const WRONG_KIND: i32 = 105;

/// `$1` the file, `$2` a temporary name next to it, `$3` its mode: the body lands in
/// the temporary file, which then replaces the file at once.
const WRITE: &str = r#"set -eu
trap 'rm -f -- "$2"' EXIT
mkdir -p -- "$(dirname -- "$1")"
if [ -d "$1" ]; then exit 105; fi
cat >"$2"
chmod "$3" "$2"
mv -f -- "$2" "$1"
"#;

const READ: &str = r#"[ -e "$1" ] || exit 104
[ -d "$1" ] && exit 105
exec cat -- "$1"
"#;

/// `$1` the directory, made if needed.
const UNPACK: &str = r#"set -eu
mkdir -p -- "$1"
exec tar -x --no-same-owner -C "$1"
"#;

const PACK: &str = r#"[ -e "$1" ] || exit 104
[ -d "$1" ] || exit 105
exec tar -c -C "$1" .
"#;

/// `?path=/abs/path[&mode=0644]`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FileQuery {
    /// Absolute path in the guest.
    #[param(pattern = "^/")]
    path: String,
    /// Octal mode of a written file; 0644 when absent.
    #[serde(default)]
    #[param(pattern = "^[0-7]{3,4}$")]
    mode: Option<String>,
}

/// `?path=/abs/path`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PathQuery {
    /// Absolute path in the guest.
    #[param(pattern = "^/")]
    path: String,
}

/// `?path=/abs/dir`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DirQuery {
    /// Absolute directory in the guest.
    #[param(pattern = "^/")]
    path: String,
}

/// Writes the body to a file (its directory is made if needed); the file is replaced
/// whole, at once.
#[utoipa::path(put, path = "/vms/{name}/files", operation_id = "write_file", tag = "files",
    params(("name" = String, Path, description = "VM name"), FileQuery),
    request_body(content = inline(super::openapi::Binary), content_type = "application/octet-stream", description = "the file's bytes"),
    responses(
        (status = 204, description = "written"),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn write(
    State(s): State<ApiState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(q): ApiQuery<FileQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let path = guest_path(&q.path)?;
    let mode = mode(q.mode.as_deref())?;
    let m = &s.app.deps.manager;
    let limit = upload_limit(m, &headers)?;
    let (dir, file) = path.rsplit_once('/').unwrap_or(("", path));
    if file.is_empty() {
        return Err(ApiError::invalid(format!(
            "{path} names a directory, not a file"
        )));
    }
    let tmp = format!("{dir}/.{file}.banger-{:08x}", rand::random::<u32>());
    let spec = guest::script("banger-write", WRITE, &[path, &tmp, mode]);
    let (m, name) = (s.app.deps.manager.clone(), vm.clone());
    // Its own task: a client that leaves mid-way never leaves a temporary file behind.
    let ran = detached(async move {
        let ran = guest::run(&m, &name, spec, Some((body, limit))).await;
        if ran.is_err() {
            // A body cut short killed `cat` before its trap could run.
            let rm = guest::spec(&["rm", "-f", "--", &tmp]);
            let _ = guest::run(&m, &name, rm, None).await;
        }
        ran
    })
    .await?;
    match ran.code {
        0 => Ok(StatusCode::NO_CONTENT),
        WRONG_KIND => Err(ApiError::invalid(format!(
            "{path} is a directory in vm {vm}"
        ))),
        _ => Err(ran.failure(&vm, &format!("writing {path}"))),
    }
}

/// A file's bytes.
#[utoipa::path(get, path = "/vms/{name}/files", operation_id = "read_file", tag = "files",
    params(("name" = String, Path, description = "VM name"), PathQuery),
    responses(
        (status = 200, description = "the file's bytes", content_type = "application/octet-stream", body = inline(super::openapi::Binary)),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn read(
    State(s): State<ApiState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(q): ApiQuery<PathQuery>,
) -> Result<Response, ApiError> {
    let path = guest_path(&q.path)?;
    let spec = guest::script("banger-read", READ, &[path]);
    match guest::stream(&s.app.deps.manager, &vm, spec).await? {
        Streamed::Body(body) => Ok(octets("application/octet-stream", body)),
        Streamed::Failed(ran) => Err(match ran.code {
            ABSENT => absent(&vm, path),
            WRONG_KIND => ApiError::invalid(format!("{path} is a directory in vm {vm}"))
                .with_hint("read a directory as a tar from the archive endpoint"),
            _ => ran.failure(&vm, &format!("reading {path}")),
        }),
    }
}

/// Unpacks a tar into a directory (made if needed). Owners are not kept; members that
/// would land outside the directory (absolute or `..` names) are refused by the guest's
/// `tar`, which fails the request after unpacking the rest.
#[utoipa::path(put, path = "/vms/{name}/archive", operation_id = "put_archive", tag = "files",
    params(("name" = String, Path, description = "VM name"), DirQuery),
    request_body(content = inline(super::openapi::Binary), content_type = "application/x-tar", description = "a tar archive"),
    responses(
        (status = 204, description = "unpacked"),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn unpack(
    State(s): State<ApiState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(q): ApiQuery<DirQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let path = guest_path(&q.path)?;
    let m = &s.app.deps.manager;
    let limit = upload_limit(m, &headers)?;
    let spec = guest::script("banger-unpack", UNPACK, &[path]);
    let ran = guest::run(m, &vm, spec, Some((body, limit))).await?;
    match ran.code {
        0 => Ok(StatusCode::NO_CONTENT),
        _ => Err(ran.failure(&vm, &format!("unpacking the archive into {path}"))),
    }
}

/// A tar of a directory's contents (member names relative to it).
#[utoipa::path(get, path = "/vms/{name}/archive", operation_id = "get_archive", tag = "files",
    params(("name" = String, Path, description = "VM name"), DirQuery),
    responses(
        (status = 200, description = "a tar archive", content_type = "application/x-tar", body = inline(super::openapi::Binary)),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn pack(
    State(s): State<ApiState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(q): ApiQuery<DirQuery>,
) -> Result<Response, ApiError> {
    let path = guest_path(&q.path)?;
    let spec = guest::script("banger-pack", PACK, &[path]);
    match guest::stream(&s.app.deps.manager, &vm, spec).await? {
        Streamed::Body(body) => Ok(octets("application/x-tar", body)),
        Streamed::Failed(ran) => Err(match ran.code {
            ABSENT => absent(&vm, path),
            WRONG_KIND => ApiError::invalid(format!("{path} is not a directory in vm {vm}"))
                .with_hint("read a file from the files endpoint"),
            _ => ran.failure(&vm, &format!("packing {path}")),
        }),
    }
}

fn octets(content_type: &'static str, body: Body) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn absent(vm: &str, path: &str) -> ApiError {
    ApiError::new(WireError::new(
        ErrorCode::NotFound,
        format!("no {path} in vm {vm}"),
    ))
}

/// A guest path as the API takes it: absolute, no NUL.
pub(super) fn guest_path(path: &str) -> Result<&str, ApiError> {
    if !path.starts_with('/') {
        return Err(ApiError::invalid(format!("path {path:?} is not absolute")));
    }
    if path.contains('\0') {
        return Err(ApiError::invalid("path contains a NUL byte"));
    }
    Ok(path)
}

/// An octal file mode, 0644 by default.
fn mode(mode: Option<&str>) -> Result<&str, ApiError> {
    let Some(mode) = mode else { return Ok("0644") };
    let octal = (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !octal {
        return Err(ApiError::invalid(format!(
            "mode {mode:?} is not an octal file mode such as 0644"
        )));
    }
    Ok(mode)
}

/// The most an upload may carry (`import_max_mib`); a `Content-Length` over it is
/// refused before anything runs.
pub(super) fn upload_limit(m: &Manager, headers: &HeaderMap) -> Result<u64, ApiError> {
    let limit = m.config.image_limits().max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(ApiError::too_large("the body", limit)
            .with_hint("raise import_max_mib in the daemon's config.toml")),
        _ => Ok(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_three_or_four_octal_digits() {
        assert_eq!(mode(None).unwrap(), "0644");
        assert_eq!(mode(Some("755")).unwrap(), "755");
        assert!(mode(Some("0855")).is_err());
        assert!(mode(Some("u+x")).is_err());
        assert!(mode(Some("07777")).is_err());
    }

    #[test]
    fn guest_paths_are_absolute() {
        assert!(guest_path("/etc/hosts").is_ok());
        assert!(guest_path("etc/hosts").is_err());
        assert!(guest_path("/a\0b").is_err());
    }
}
