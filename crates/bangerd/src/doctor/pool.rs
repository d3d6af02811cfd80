//! The hot pool: each pool of the running daemon, as its `daemon status` shows it
//! (`GET /api/v1/status`), and a warning when one is below its size because the host's
//! memory bound stopped its refill or its refills fail.

use std::path::Path;

use banger_wire::api::DaemonInfo;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{Check, Ctx, COMMAND_TIMEOUT};

const ID: &str = "pool";
const NAME: &str = "hot pool";

/// The pools of the daemon on `ctx.paths.socket`; nothing to check when none answers.
pub(super) fn pools(ctx: &Ctx<'_>) -> Check {
    match daemon_status(&ctx.paths.socket) {
        Some(info) => verdict(&info),
        None => Check::pass(ID, NAME, "no daemon answers; it keeps no pool"),
    }
}

/// One line per pool; WARN when one is short for a reason a user can act on.
fn verdict(info: &DaemonInfo) -> Check {
    if info.pools.is_empty() {
        return Check::pass(
            ID,
            NAME,
            "no pool: no image is warm, or its pool size is 0 (see `banger image warm --pool N`)",
        );
    }
    let detail = info
        .pools
        .iter()
        .map(|p| {
            format!(
                "{}: {}/{} ready, {} MiB (PSS)",
                p.machine(),
                p.ready,
                p.target,
                p.pss_kib >> 10
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let short = info.pools.iter().filter(|p| p.ready < p.target);
    let mut fixes = Vec::new();
    for p in short {
        if p.short_of_memory {
            fixes.push(format!(
                "# {}: the host's memory stops its refill; free memory, or lower the pool: banger image warm {} --pool {}",
                p.image, p.image, p.ready
            ));
        } else if p.refill_failures > 0 {
            fixes.push(format!(
                "# {}: {} refills failed, the last with: {}; see banger daemon logs",
                p.image,
                p.refill_failures,
                p.last_error.as_deref().unwrap_or("an unknown error")
            ));
        }
    }
    if fixes.is_empty() {
        Check::pass(ID, NAME, detail)
    } else {
        Check::warn(ID, NAME, detail, fixes.join("; "))
    }
}

/// `daemon status` of the daemon on `socket`, or `None` when none answers in time.
fn daemon_status(socket: &Path) -> Option<DaemonInfo> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        tokio::time::timeout(COMMAND_TIMEOUT, get_status(socket))
            .await
            .ok()
            .flatten()
    })
}

async fn get_status(socket: &Path) -> Option<DaemonInfo> {
    let stream = UnixStream::connect(socket).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::get("/api/v1/status")
        .header(hyper::header::HOST, "bangerd")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;
    use banger_wire::api::{Backend, PoolInfo};

    fn status(pools: Vec<PoolInfo>) -> DaemonInfo {
        DaemonInfo {
            version: "0".into(),
            pid: 1,
            socket: "/run/banger/bangerd.sock".into(),
            state_dir: "/var/lib/banger".into(),
            uptime_secs: 1,
            vms_running: 0,
            vms_total: 0,
            pool_vms: 0,
            pool_pss_kib: 0,
            pool_shared_kib: 0,
            pools,
        }
    }

    fn pool(ready: u32, target: u32) -> PoolInfo {
        PoolInfo {
            image: "default".into(),
            backend: Backend::Qemu,
            vcpu: 2,
            memory_mib: 1024,
            custom_policy: false,
            ready,
            target,
            pss_kib: 45 << 10,
            short_of_memory: false,
            refill_failures: 0,
            last_error: None,
        }
    }

    #[test]
    fn a_full_pool_passes_with_its_clones_and_memory() {
        let check = verdict(&status(vec![pool(1, 1)]));

        assert_eq!(check.status, Status::Pass);
        assert_eq!(
            check.detail,
            "default (qemu, 2 vcpu, 1024 MiB): 1/1 ready, 45 MiB (PSS)"
        );
    }

    #[test]
    fn a_pool_short_of_memory_warns_with_a_smaller_size() {
        let short = PoolInfo {
            short_of_memory: true,
            ..pool(1, 4)
        };

        let check = verdict(&status(vec![short]));

        assert_eq!(check.status, Status::Warn);
        assert!(check
            .fix
            .unwrap()
            .contains("banger image warm default --pool 1"));
    }

    #[test]
    fn a_pool_whose_refills_fail_warns_with_the_error() {
        let failing = PoolInfo {
            refill_failures: 2,
            last_error: Some("vm \"pool-1\": qemu exited".into()),
            ..pool(0, 2)
        };

        let check = verdict(&status(vec![failing]));

        assert_eq!(check.status, Status::Warn);
        assert!(check.fix.unwrap().contains("2 refills failed"));
    }

    #[test]
    fn the_pools_come_from_the_daemon_on_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bangerd.sock");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let listener = rt
            .block_on(async { tokio::net::UnixListener::bind(&socket) })
            .unwrap();
        let answer = status(vec![pool(1, 1)]);
        let served = answer.clone();
        let app = axum::Router::new().route(
            "/api/v1/status",
            axum::routing::get(move || async move { axum::Json(served) }),
        );
        rt.spawn(async move { axum::serve(listener, app).await });

        assert_eq!(daemon_status(&socket), Some(answer));
        assert_eq!(daemon_status(&dir.path().join("none.sock")), None);
    }

    #[test]
    fn a_pool_still_filling_passes() {
        let check = verdict(&status(vec![pool(0, 2)]));

        assert_eq!(check.status, Status::Pass);
    }
}
