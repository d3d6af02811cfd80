//! The structured error that crosses every process boundary in banger.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A closed set of failure classes. The CLI maps each to an exit code, so scripts can
/// branch on *why* banger failed without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    /// The request was malformed or a value was out of range.
    InvalidArgument,
    /// The named VM, image or snapshot does not exist.
    NotFound,
    /// The name is taken.
    AlreadyExists,
    /// The object is in the wrong state for this verb (e.g. `vm set` on a running VM).
    FailedPrecondition,
    /// The daemon is not running or could not be reached.
    Unavailable,
    /// The VMM or the guest failed.
    VmmFailed,
    /// The guest agent answered with an error.
    AgentFailed,
    /// An operation took longer than allowed.
    Timeout,
    /// The caller may not do this (bad token, path outside an allowed root).
    PermissionDenied,
    /// A host resource is missing (binary, device, image file) or a host call failed.
    HostFailed,
    /// A bug or an unclassified failure.
    Internal,
}

impl ErrorCode {
    /// Process exit code for this failure class. Documented in `banger --help`.
    /// 1 is left for "the command ran and failed" (e.g. doctor found a FAIL); 2 is clap's
    /// usage error. Codes stay below 64 so they never collide with a guest command's
    /// exit code when a script can tell the two apart by verb.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::InvalidArgument => 3,
            ErrorCode::NotFound => 4,
            ErrorCode::AlreadyExists => 5,
            ErrorCode::FailedPrecondition => 6,
            ErrorCode::Unavailable => 7,
            ErrorCode::VmmFailed => 8,
            ErrorCode::AgentFailed => 9,
            ErrorCode::Timeout => 10,
            ErrorCode::PermissionDenied => 11,
            ErrorCode::HostFailed => 12,
            ErrorCode::Internal => 13,
        }
    }

    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::Unavailable,
        ErrorCode::VmmFailed,
        ErrorCode::AgentFailed,
        ErrorCode::Timeout,
        ErrorCode::PermissionDenied,
        ErrorCode::HostFailed,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::VmmFailed => "vmm_failed",
            ErrorCode::AgentFailed => "agent_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::HostFailed => "host_failed",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels between processes: `{code, message, chain, hint}`.
///
/// `message` is the top-level failure, `chain` the causes below it (outermost first),
/// `hint` what the user can do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    // No `skip_serializing_if`: postcard (the agent channel) is not self-describing
    // and cannot read a struct with fields left out.
    #[serde(default)]
    pub chain: Vec<String>,
    #[serde(default)]
    pub hint: Option<String>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            chain: Vec::new(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Builds a wire error from any error, walking its `source()` chain.
    pub fn from_error(
        code: ErrorCode,
        err: &(dyn std::error::Error + 'static),
        hint: Option<String>,
    ) -> Self {
        let mut chain = Vec::new();
        let mut cur = err.source();
        while let Some(e) = cur {
            chain.push(e.to_string());
            cur = e.source();
        }
        WireError {
            code,
            message: err.to_string(),
            chain,
            hint,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_avoid_reserved_values() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let exit = code.exit_code();
            assert!(
                exit > 2 && exit < 64,
                "{code} maps to reserved exit code {exit}"
            );
            assert!(seen.insert(exit), "{code} reuses exit code {exit}");
        }
    }

    #[test]
    fn error_code_serializes_as_its_documented_name() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn wire_error_round_trips_through_postcard() {
        let err = WireError::new(
            ErrorCode::Timeout,
            "command timed out after 1s and was killed",
        );
        let bytes = postcard::to_stdvec(&err).unwrap();
        assert_eq!(postcard::from_bytes::<WireError>(&bytes).unwrap(), err);
    }

    #[test]
    fn wire_error_round_trips_through_json() {
        let err = WireError {
            code: ErrorCode::NotFound,
            message: "vm \"web\" not found".into(),
            chain: vec!["no row in store".into()],
            hint: Some("list VMs with `banger vm list`".into()),
        };
        let json = serde_json::to_string(&err).unwrap();
        let back: WireError = serde_json::from_str(&json).unwrap();
        assert_eq!(back, err);
    }
}
