//! Workspaces through the API: a tar of a repository's files becomes a git repository in
//! the guest with a baseline commit, and the guest's changes since come back as a patch.
//! The guest runs the same scripts as `banger workspace` ([`banger_wire::workspace`]);
//! the baseline stands in for the host's HEAD, which the CLI ships as git objects.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use banger_wire::public::WorkspaceInfo;
use banger_wire::workspace::{
    default_dest, BASELINE, EXPORT, FILES, INIT, NOT_EMPTY, NO_GIT, NO_TAR, NO_WORKSPACE,
};
use banger_wire::{ErrorCode, WireError};
use serde::Deserialize;

use super::error::{ApiError, ApiPath, ApiQuery};
use super::files::{guest_path, upload_limit};
use super::guest::{self, Streamed};
use super::{detached, ApiState};
use crate::vm::Manager;

/// `?path=/root/repo`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WorkspaceQuery {
    /// The workspace's directory in the guest; when absent, `/root/repo`, or
    /// `/home/NAME/repo` in a VM whose default user is NAME.
    #[serde(default)]
    #[param(pattern = "^/")]
    path: Option<String>,
}

impl WorkspaceQuery {
    /// The directory asked for, else the default for `vm`'s user.
    fn dest(&self, m: &Manager, vm: &str) -> Result<String, ApiError> {
        let default = match &self.path {
            Some(_) => None,
            None => Some(default_dest(m.show(vm)?.user.as_ref())),
        };
        let dest = guest_path(self.path.as_deref().or(default.as_deref()).unwrap_or(""))?;
        if dest.trim_end_matches('/').is_empty() || dest.split('/').any(|c| c == "..") {
            return Err(ApiError::invalid(format!(
                "{dest:?} cannot hold a workspace: give a directory below /, without `..`"
            )));
        }
        Ok(dest.to_string())
    }
}

/// Unpacks a tar of a repository's files (the client builds it from `git ls-files`)
/// into an empty or new directory, `git init`s it and commits everything as the
/// baseline that the patch endpoint diffs against.
#[utoipa::path(post, path = "/vms/{name}/workspace", operation_id = "prepare_workspace", tag = "workspace",
    params(("name" = String, Path, description = "VM name"), WorkspaceQuery),
    request_body(content = inline(super::openapi::Binary), content_type = "application/x-tar", description = "a tar of the repository's tracked files"),
    responses(
        (status = 200, description = "the workspace", body = WorkspaceInfo),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn prepare(
    State(s): State<ApiState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(q): ApiQuery<WorkspaceQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let m = s.app.deps.manager.clone();
    let dest = q.dest(&m, &vm)?;
    let limit = upload_limit(&m, &headers)?;
    let path = dest.clone();
    // Its own task: a client that leaves mid-way never leaves a half-made workspace.
    let files = detached(async move { make(&m, &vm, &path, body, limit).await }).await?;
    Ok(Json(WorkspaceInfo { path: dest, files }).into_response())
}

/// `git init`s `dest`, which must be absent or empty, and fills it; removes it again if
/// that fails.
async fn make(m: &Manager, vm: &str, dest: &str, body: Body, limit: u64) -> Result<u64, ApiError> {
    let init = guest::script("banger-ws-init", INIT, &[dest, ""]);
    let init = guest::run(m, vm, init, None).await?;
    match init.code {
        0 => {}
        NO_GIT => return Err(missing(vm, "git")),
        NO_TAR => return Err(missing(vm, "tar")),
        NOT_EMPTY => {
            return Err(ApiError::new(WireError::new(
                ErrorCode::FailedPrecondition,
                format!("{dest} in vm {vm} exists and is not empty"),
            ))
            .with_hint("pick another path, or delete it first"))
        }
        _ => return Err(init.failure(vm, "git init")),
    }
    let filled = fill(m, vm, dest, body, limit).await;
    if filled.is_err() {
        // The directory was absent or empty before.
        let rm = guest::spec(&["rm", "-rf", "--", dest]);
        let _ = guest::run(m, vm, rm, None).await;
    }
    filled
}

/// Unpacks the tar and records the baseline; answers the number of files in it.
async fn fill(m: &Manager, vm: &str, dest: &str, body: Body, limit: u64) -> Result<u64, ApiError> {
    let files = guest::script("banger-ws-files", FILES, &[dest]);
    let ran = guest::run(m, vm, files, Some((body, limit))).await?;
    if ran.code != 0 {
        return Err(ran.failure(vm, "unpacking the files"));
    }
    let baseline = guest::script("banger-ws-baseline", BASELINE, &[dest]);
    let ran = guest::run(m, vm, baseline, None).await?;
    if ran.code != 0 {
        return Err(ran.failure(vm, "committing the baseline"));
    }
    let count = String::from_utf8_lossy(&ran.stdout);
    count.trim().parse().map_err(|_| {
        ApiError::new(WireError::new(
            ErrorCode::AgentFailed,
            format!("vm {vm}: the baseline counted {count:?} files"),
        ))
    })
}

fn missing(vm: &str, tool: &str) -> ApiError {
    ApiError::new(WireError::new(
        ErrorCode::FailedPrecondition,
        format!("vm {vm} has no {tool}"),
    ))
    .with_hint(format!("use an image with {tool} installed"))
}

/// The guest's changes since the baseline, as a `git diff --binary` patch (everything
/// in the working tree, untracked files included, ignored ones not); empty when
/// nothing changed.
#[utoipa::path(get, path = "/vms/{name}/workspace/patch", operation_id = "workspace_patch", tag = "workspace",
    params(("name" = String, Path, description = "VM name"), WorkspaceQuery),
    responses(
        (status = 200, description = "the patch", content_type = "text/x-diff", body = String),
        (status = "default", description = "an error", body = WireError),
    ))]
pub(crate) async fn patch(
    State(s): State<ApiState>,
    ApiPath(vm): ApiPath<String>,
    ApiQuery(q): ApiQuery<WorkspaceQuery>,
) -> Result<Response, ApiError> {
    let dest = q.dest(&s.app.deps.manager, &vm)?;
    let spec = guest::script("banger-ws-export", EXPORT, &[&dest, "head"]);
    match guest::stream(&s.app.deps.manager, &vm, spec).await? {
        Streamed::Body(body) => Ok(([(header::CONTENT_TYPE, "text/x-diff")], body).into_response()),
        Streamed::Failed(ran) if ran.code == NO_WORKSPACE => Err(ApiError::new(WireError::new(
            ErrorCode::NotFound,
            format!("no workspace at {dest} in vm {vm}"),
        ))
        .with_hint("prepare one with POST /api/v1/vms/{name}/workspace")),
        Streamed::Failed(ran) => Err(ran.failure(&vm, "making the patch")),
    }
}
