//! Who is calling. Membership of the socket's group lets a user talk to the daemon, not
//! act as root: a request that would make the daemon open a host path of the caller's
//! choosing is for root callers only. Files the user imports or exports travel as
//! request and answer bodies instead, read and written by the CLI as the user.

use axum::serve::IncomingStream;
use banger_wire::api::Request;
use tokio::net::UnixListener;

use crate::error::DaemonError;

/// The peer of a connection, from `SO_PEERCRED` when it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// `None` when the kernel did not say; such a caller is not root.
    pub uid: Option<u32>,
}

impl Caller {
    /// Root, or the user the daemon runs as (a user's own daemon opens only what that
    /// user could).
    pub fn is_trusted(self, daemon_uid: u32) -> bool {
        self.uid == Some(0) || self.uid == Some(daemon_uid)
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, UnixListener>> for Caller {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Caller {
        Caller {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// Refuses, for callers other than root and the daemon's own user (`daemon_uid`),
/// requests that name a path on the daemon's host.
pub fn authorize(caller: Caller, daemon_uid: u32, req: &Request) -> Result<(), DaemonError> {
    if caller.is_trusted(daemon_uid) {
        return Ok(());
    }
    let refuse = |what: &str, hint: &str| {
        Err(DaemonError::RootOnly {
            what: what.to_string(),
            hint: hint.to_string(),
        })
    };
    match req {
        Request::ImagePull { url, .. } if !is_http(url) => refuse(
            "pulling from a path on the daemon's host",
            "serve the bundle over HTTP (e.g. `python3 -m http.server` in its parent \
             directory) and pull its http:// URL, or run the pull as root",
        ),
        Request::ImageBuild { spec } if spec.agent_path.is_some() => refuse(
            "choosing the guest agent binary",
            "leave agent_path out: the daemon installs its own banger-agent",
        ),
        Request::ImageBuild { spec } if spec.mirror.as_deref().is_some_and(|m| !is_http(m)) => {
            refuse(
                "building from a mirror on the daemon's host",
                "give an http:// or https:// mirror, or run the build as root",
            )
        }
        _ => Ok(()),
    }
}

fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_wire::api::ImageBuildSpec;
    use banger_wire::{Diagnostic, ErrorCode};

    const USER: Caller = Caller { uid: Some(1000) };
    const ROOT: Caller = Caller { uid: Some(0) };
    const UNKNOWN: Caller = Caller { uid: None };

    fn pull(url: &str) -> Request {
        Request::ImagePull {
            url: url.into(),
            name: None,
        }
    }

    fn build(agent_path: Option<&str>, mirror: Option<&str>) -> Request {
        Request::ImageBuild {
            spec: ImageBuildSpec {
                agent_path: agent_path.map(String::from),
                mirror: mirror.map(String::from),
                ..Default::default()
            },
        }
    }

    #[test]
    fn non_root_callers_may_not_name_host_paths() {
        for req in [
            pull("file:///root/bundle"),
            pull("/root/bundle"),
            build(Some("/root/agent"), None),
            build(None, Some("file:///srv/mirror")),
        ] {
            let err = authorize(USER, 0, &req).unwrap_err();
            assert_eq!(err.code(), ErrorCode::PermissionDenied, "{req:?}");
            assert!(err.hint().is_some(), "{req:?}");
            assert!(authorize(UNKNOWN, 0, &req).is_err(), "{req:?}");
            assert!(authorize(ROOT, 0, &req).is_ok(), "{req:?}");
            assert!(authorize(USER, 1000, &req).is_ok(), "own daemon: {req:?}");
        }
    }

    #[test]
    fn non_root_callers_keep_network_sources() {
        for req in [
            pull("http://example.org/bundle/"),
            pull("https://example.org/bundle/manifest.json"),
            build(None, Some("http://deb.debian.org/debian")),
            build(None, None),
            Request::VmList,
        ] {
            assert!(authorize(USER, 0, &req).is_ok(), "{req:?}");
        }
    }
}
