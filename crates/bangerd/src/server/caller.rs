//! Who is calling. Membership of the socket's group lets a user talk to the daemon, not
//! act as root: a request that would make the daemon open a host path of the caller's
//! choosing, or take a host port only root may bind, is for root callers only. Files
//! the user imports or exports travel as request and answer bodies instead, read and
//! written by the CLI as the user.

use axum::serve::IncomingStream;
use banger_wire::api::Request;
use tokio::net::UnixListener;

use crate::error::DaemonError;
use crate::net::PortForward;

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
        Request::VmCreate { spec } | Request::ImageWarm { spec, .. } => {
            authorize_ports(caller, daemon_uid, spec.publish.iter().map(String::as_str))
        }
        Request::VmPortAdd { port, .. } => authorize_ports(caller, daemon_uid, [port.as_str()]),
        _ => Ok(()),
    }
}

/// Refuses, for callers other than root and the daemon's own user, forwards of host
/// ports below `net.ipv4.ip_unprivileged_port_start`: a forward answers on every host
/// address, so it would let the caller stand in for a host service (sshd, a database)
/// whenever that service is not listening. Specs that do not parse are left to the
/// verb, which says why.
pub fn authorize_ports<'a>(
    caller: Caller,
    daemon_uid: u32,
    specs: impl IntoIterator<Item = &'a str>,
) -> Result<(), DaemonError> {
    if caller.is_trusted(daemon_uid) {
        return Ok(());
    }
    let start = unprivileged_port_start();
    let low = specs
        .into_iter()
        .filter_map(|s| s.parse::<PortForward>().ok())
        .find(|f| f.host < start);
    match low {
        Some(f) => Err(DaemonError::RootOnly {
            what: format!(
                "forwarding host port {} (below {start}, which only root may bind)",
                f.host
            ),
            hint: format!(
                "forward a host port of {start} or more (e.g. {}:{}), or have root add it",
                u32::from(f.host) + 8000,
                f.guest
            ),
        }),
        None => Ok(()),
    }
}

/// The lowest port any user may bind, as the kernel says (1024 when it does not).
fn unprivileged_port_start() -> u16 {
    fs_err::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
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

    fn create(publish: &[&str]) -> Request {
        Request::VmCreate {
            spec: banger_wire::api::VmCreateSpec {
                publish: publish.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn non_root_callers_may_not_forward_ports_only_root_may_bind() {
        let port_add = |port: &str| Request::VmPortAdd {
            name: "web".into(),
            port: port.into(),
        };
        let start = unprivileged_port_start();
        let low = format!("{}:22", start - 1);
        for req in [
            port_add(&low),
            port_add("22:22/udp"),
            create(&["8080:80", "443:443"]),
        ] {
            let err = authorize(USER, 0, &req).unwrap_err();
            assert_eq!(err.code(), ErrorCode::PermissionDenied, "{req:?}");
            assert!(err.hint().unwrap().contains(&start.to_string()), "{req:?}");
            assert!(authorize(UNKNOWN, 0, &req).is_err(), "{req:?}");
            assert!(authorize(ROOT, 0, &req).is_ok(), "{req:?}");
            assert!(authorize(USER, 1000, &req).is_ok(), "own daemon: {req:?}");
        }
        let high = format!("{start}:22");
        for req in [
            port_add(&high),
            create(&["8080:80", "9000:22/udp"]),
            port_add("nonsense"),
        ] {
            assert!(authorize(USER, 0, &req).is_ok(), "{req:?}");
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
