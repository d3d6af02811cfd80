//! The public HTTP API, `/api/v1` on the daemon's socket: what it adds to the types of
//! [`crate::api`] (request bodies, exec events). Any HTTP client can use it; the daemon
//! serves its OpenAPI document at [`OPENAPI_PATH`], and `docs/api.md` describes it.
//!
//! Request bodies of the API's own types refuse unknown fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::agent::TtySize;
use crate::user::GuestUser;
use crate::WireError;

/// Prefix of every public route. Bumped only on a breaking change.
pub const PREFIX: &str = "/api/v1";
/// The OpenAPI document of the public API.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// A command to run in a VM (`POST /api/v1/vms/{name}/exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecBody {
    /// Reaches `execve` exactly as given: no shell, no joining. Not empty.
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub argv: Vec<String>,
    /// Added to the guest's default environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the user's home (`/root` for root) when absent.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the command's process group after this many seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Base64 bytes given to the command's stdin, which then closes.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Keep stdin open for `POST /api/v1/execs/{id}/stdin`. Otherwise stdin closes at
    /// once (after `stdin`, when given).
    #[serde(default)]
    pub interactive: bool,
    /// Run under a pseudo-terminal of this size; stderr is merged into stdout then.
    #[serde(default)]
    pub tty: Option<TtySize>,
    /// `NAME[:UID]`: run as this user (created in the guest when missing); the VM's
    /// default user when absent. Working directory then defaults to its home.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "dev", pattern = "^[a-z_][a-z0-9_-]{0,31}(:[0-9]{1,5})?$"))]
    pub user: Option<GuestUser>,
}

/// A new terminal size for an exec under a tty (`POST /api/v1/execs/{id}/resize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResizeBody {
    pub rows: u16,
    pub cols: u16,
}

/// `POST /api/v1/vms/{name}/snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotBody {
    /// Generated from the VM's name when absent.
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /api/v1/images/{name}/warm`: the machine to warm (unset fields take the
/// daemon's defaults) and the image's own pool size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WarmBody {
    #[serde(default)]
    pub vcpu: Option<u32>,
    #[serde(default)]
    pub memory_mib: Option<u32>,
    #[serde(default)]
    pub disk_size_mib: Option<u64>,
    #[serde(default)]
    pub backend: Option<crate::api::Backend>,
    /// For VMs created without a network interface.
    #[serde(default)]
    pub no_network: bool,
    /// Paused clones kept ready for the image's warm creates (0: no pool), over the
    /// daemon's `pool_size`; `"default"` puts the image back on `pool_size`. With the
    /// machine already warm, only the pool changes.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(inline))]
    pub pool: Option<crate::api::PoolSize>,
}

/// What `POST /api/v1/vms/{name}/workspace` prepared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceInfo {
    /// The workspace's directory in the guest.
    pub path: String,
    /// Files in its baseline commit.
    pub files: u64,
}

/// One line of an exec's `application/x-ndjson` answer: `started` first, then output,
/// then `exit` (or `error` when the exec failed after it started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ExecEvent {
    /// The command runs; `id` addresses it under `/api/v1/execs/{id}`.
    Started { id: String },
    /// Base64 bytes the command wrote to stdout (or to its terminal).
    Stdout { data: String },
    /// Base64 bytes the command wrote to stderr.
    Stderr { data: String },
    /// The command ended: its exit code (128+n for signal n, as shells report it), and
    /// whether `timeout_secs` killed it.
    Exit { code: i32, timed_out: bool },
    /// The exec failed after it started (e.g. the VM stopped).
    Error(WireError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn exec_events_are_tagged_by_type() {
        let exit = serde_json::to_value(ExecEvent::Exit {
            code: 3,
            timed_out: false,
        })
        .unwrap();
        let error = serde_json::to_value(ExecEvent::Error(WireError::new(
            ErrorCode::Unavailable,
            "vm stopped",
        )))
        .unwrap();

        assert_eq!(
            exit,
            serde_json::json!({"type": "exit", "code": 3, "timed_out": false})
        );
        assert_eq!(error["type"], "error");
        assert_eq!(error["code"], "unavailable");
        assert_eq!(error["message"], "vm stopped");
    }

    #[test]
    fn exec_body_refuses_unknown_fields() {
        let err =
            serde_json::from_str::<ExecBody>(r#"{"argv":["true"],"shell":"sh"}"#).unwrap_err();

        assert!(err.to_string().contains("shell"), "{err}");
    }
}
