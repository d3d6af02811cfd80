//! One handler per verb of [`Request`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response as HttpResponse};
use banger_wire::api::{DaemonInfo, Request, Response, StreamEvent, REQUEST_HEADER, UPLOAD_PATH};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::caller::{self, Caller};
use super::ndjson::{event_line, Tx};
use super::{error_response, image, logs, prune, AppState};
use crate::error::DaemonError;

pub(crate) async fn handle(state: &Arc<AppState>, req: Request) -> Result<Response, DaemonError> {
    let vms = &state.deps.manager;
    // A request naming a VM uses it: its idle clock restarts when the request ends.
    let _busy = named_vm(&req).and_then(|name| vms.busy(name));
    Ok(match req {
        Request::Ping => Response::Pong,
        Request::DaemonStatus => Response::Daemon(daemon_info(state)?),
        Request::DaemonShutdown => {
            state.shutdown.notify_one();
            Response::Ok
        }
        Request::VmCreate { spec } => Response::Vm(vms.create(spec).await?),
        Request::VmStart { name } => Response::Vm(vms.start(&name).await?),
        Request::VmStop { name, force } => Response::Vm(vms.stop(&name, force).await?),
        Request::VmRestart { name } => Response::Vm(vms.restart(&name).await?),
        Request::VmDelete { name, detach, .. } => {
            let rec = vms.record(&name)?;
            // Only an ephemeral VM: a restart deletes it if this daemon dies first.
            if !(detach && rec.ephemeral) {
                vms.delete(&rec.id).await?;
                vms.refill_all();
                return Ok(Response::Ok);
            }
            vms.delete_detached(rec);
            Response::Ok
        }
        Request::VmList => Response::Vms(vms.list()?),
        Request::VmShow { name } => Response::Vm(vms.show(&name)?),
        Request::VmSet { name, spec } => Response::Vm(vms.set(&name, spec).await?),
        Request::ImageList => Response::Images(image::list(vms)?),
        Request::ImageShow { name } => Response::Image(image::show(vms, &name)?),
        Request::ImageDelete { name } => {
            image::delete(vms, &name).await?;
            Response::Ok
        }
        Request::VmSnapshot { vm, name } => {
            Response::Snapshot(vms.snapshot(&vm, name, false).await?)
        }
        Request::SnapshotList => Response::Snapshots(vms.snapshot_list()?),
        Request::ImageWarm { spec, pool } => Response::Snapshot(vms.warm(spec, pool).await?),
        Request::SnapshotDelete { name } => {
            vms.snapshot_delete(&name).await?;
            Response::Ok
        }
        Request::Prune { dry_run } => Response::Pruned(prune::prune(vms, dry_run).await?),
        Request::VmPortAdd { name, port } => Response::Ports(vms.port_add(&name, &port).await?),
        Request::VmPortRemove { name, port } => {
            Response::Ports(vms.port_remove(&name, &port).await?)
        }
        Request::VmPortList { name } => Response::Ports(vms.port_list(&name)?),
        Request::VmExecDetach { name, spec } => Response::Detached(vms.detach(&name, spec).await?),
        Request::VmPs { name } => Response::DetachedList(vms.detached_list(&name).await?),
        Request::VmKill { name, id, signal } => {
            Response::Detached(vms.detached_kill(&name, id, signal).await?)
        }
        Request::VmLogs { .. }
        | Request::ImageBuild { .. }
        | Request::ImageImport { .. }
        | Request::ImagePull { .. }
        | Request::ImagePullRegistry { .. }
        | Request::ImageExportFile { .. } => {
            return Err(DaemonError::invalid("this request streams its answer"))
        }
    })
}

/// The VM a request names, if any.
fn named_vm(req: &Request) -> Option<&str> {
    match req {
        Request::VmStart { name }
        | Request::VmStop { name, .. }
        | Request::VmRestart { name }
        | Request::VmDelete { name, .. }
        | Request::VmShow { name }
        | Request::VmSet { name, .. }
        | Request::VmPortAdd { name, .. }
        | Request::VmPortRemove { name, .. }
        | Request::VmPortList { name }
        | Request::VmExecDetach { name, .. }
        | Request::VmPs { name }
        | Request::VmKill { name, .. }
        | Request::VmSnapshot { vm: name, .. } => Some(name),
        _ => None,
    }
}

fn daemon_info(state: &AppState) -> Result<DaemonInfo, DaemonError> {
    let m = &state.deps.manager;
    let pool = m.pool_status();
    Ok(DaemonInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        socket: state.deps.socket.display().to_string(),
        state_dir: m.paths.state_dir.display().to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        vms_running: m.running_count().saturating_sub(pool.vms),
        vms_total: m.list()?.len() as u32,
        pool_vms: pool.vms,
        pool_pss_kib: pool.pss_kib,
        pool_shared_kib: crate::vmm::qemu::memory::templates_bytes() >> 10,
        pools: pool.pools,
    })
}

/// `POST /v1/upload`: a request (in the [`REQUEST_HEADER`] header) whose input is the
/// body. Answers like [`stream`].
pub(crate) async fn upload(
    State(state): State<Arc<AppState>>,
    ConnectInfo(caller): ConnectInfo<Caller>,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let parsed = headers
        .get(REQUEST_HEADER)
        .map(|v| serde_json::from_slice::<Request>(v.as_bytes()));
    let req = match parsed {
        Some(Ok(req @ Request::ImageImport { .. })) => req,
        Some(Ok(other)) => {
            return error_response(
                &DaemonError::invalid(format!("{other:?} takes no body; post it to /v1/rpc"))
                    .to_wire(),
            )
        }
        Some(Err(e)) => {
            return error_response(
                &DaemonError::invalid(format!("bad {REQUEST_HEADER} header: {e}")).to_wire(),
            )
        }
        None => {
            return error_response(
                &DaemonError::invalid(format!("no {REQUEST_HEADER} header")).to_wire(),
            )
        }
    };
    if let Err(e) = caller::authorize(caller, state.owner, &req) {
        return error_response(&e.to_wire());
    }
    stream(state, req, Some(body)).await
}

/// A verb whose answer is raw bytes (`image export`'s files).
pub(crate) async fn download(state: &AppState, req: Request) -> HttpResponse {
    let Request::ImageExportFile { name, digest, file } = req else {
        return error_response(&DaemonError::invalid("this request does not download").to_wire());
    };
    match image::export_file(&state.deps.manager, &name, &digest, &file).await {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            body,
        )
            .into_response(),
        Err(e) => error_response(&e.to_wire()),
    }
}

/// Streaming verbs answer newline-delimited [`StreamEvent`]s; the work runs in its own
/// task and finishes even if the client goes away. `body` is the input of an upload.
pub(crate) async fn stream(state: Arc<AppState>, req: Request, body: Option<Body>) -> HttpResponse {
    let (tx, rx): (Tx, _) = mpsc::channel(64);
    tokio::spawn(async move {
        let send = |ev: StreamEvent| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Ok(event_line(&ev))).await;
            }
        };
        let result = match req {
            Request::VmLogs { name, follow } => {
                logs::stream(&state.deps.manager, &name, follow, tx.clone()).await
            }
            Request::ImageBuild { spec } => {
                let agent = state.deps.agent.as_deref();
                image::build(&state.deps.manager, agent, spec, tx.clone()).await
            }
            Request::ImageImport { source, name } => match body {
                Some(body) => {
                    let agent = state.deps.agent.as_deref();
                    let m = &state.deps.manager;
                    image::import(m, agent, source, name, body, tx.clone()).await
                }
                None => Err(DaemonError::Invalid {
                    message: "image import takes the tarball as the request body".into(),
                    hint: Some(format!("post it to {UPLOAD_PATH}")),
                }),
            },
            Request::ImagePull { url, name } => {
                image::pull(&state.deps.manager, url, name, tx.clone()).await
            }
            Request::ImagePullRegistry { spec } => {
                let agent = state.deps.agent.as_deref();
                image::pull_registry(&state.deps.manager, agent, spec, tx.clone()).await
            }
            other => Err(DaemonError::invalid(format!("{other:?} does not stream"))),
        };
        match result {
            Ok(Some(response)) => {
                send(StreamEvent::Done {
                    response: Box::new(response),
                })
                .await
            }
            Ok(None) => {
                send(StreamEvent::Done {
                    response: Box::new(Response::Ok),
                })
                .await
            }
            Err(e) => send(StreamEvent::Error { error: e.to_wire() }).await,
        }
    });
    let body = Body::from_stream(ReceiverStream::new(rx));
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response()
}
