//! One handler per verb of [`Request`].

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response as HttpResponse};
use banger_wire::api::{DaemonInfo, Request, Response, StreamEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{event_line, AppState};
use crate::error::DaemonError;

pub(crate) async fn handle(state: &Arc<AppState>, req: Request) -> Result<Response, DaemonError> {
    let vms = &state.deps.manager;
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
        Request::VmDelete { name, force: _ } => {
            vms.delete(&name).await?;
            Response::Ok
        }
        Request::VmList => Response::Vms(vms.list()?),
        Request::VmShow { name } => Response::Vm(vms.show(&name)?),
        Request::VmSet { name, spec } => Response::Vm(vms.set(&name, spec).await?),
        Request::ImageList => Response::Images(crate::image_api::list(vms)?),
        Request::ImageShow { name } => Response::Image(crate::image_api::show(vms, &name)?),
        Request::ImageDelete { name } => {
            crate::image_api::delete(vms, &name).await?;
            Response::Ok
        }
        Request::VmSnapshot { vm, name } => {
            Response::Snapshot(vms.snapshot(&vm, name, false).await?)
        }
        Request::SnapshotList => Response::Snapshots(vms.snapshot_list()?),
        Request::ImageWarm { spec } => Response::Snapshot(vms.warm(spec).await?),
        Request::SnapshotDelete { name } => {
            vms.snapshot_delete(&name).await?;
            Response::Ok
        }
        Request::VmLogs { .. }
        | Request::ImageBuild { .. }
        | Request::ImageImport { .. }
        | Request::ImagePull { .. }
        | Request::ImageExport { .. } => {
            return Err(DaemonError::invalid("this request streams its answer"))
        }
    })
}

fn daemon_info(state: &AppState) -> Result<DaemonInfo, DaemonError> {
    let m = &state.deps.manager;
    Ok(DaemonInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        socket: state.deps.socket.display().to_string(),
        state_dir: m.paths.state_dir.display().to_string(),
        uptime_secs: state.started.elapsed().as_secs(),
        vms_running: m.running_count(),
        vms_total: m.store.list_vms()?.len() as u32,
    })
}

/// Streaming verbs answer newline-delimited [`StreamEvent`]s; the work runs in its own
/// task and finishes even if the client goes away.
pub(crate) async fn stream(state: Arc<AppState>, req: Request) -> HttpResponse {
    let (tx, rx) = mpsc::channel::<Result<String, std::io::Error>>(64);
    tokio::spawn(async move {
        let send = |ev: StreamEvent| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Ok(event_line(&ev))).await;
            }
        };
        let result = match req {
            Request::VmLogs { name, follow } => {
                crate::logs::stream(&state.deps.manager, &name, follow, tx.clone()).await
            }
            Request::ImageBuild { spec } => {
                crate::image_api::build(&state.deps.manager, spec, tx.clone()).await
            }
            Request::ImageImport { path, name } => {
                crate::image_api::import(&state.deps.manager, path, name, tx.clone()).await
            }
            Request::ImagePull { url, name } => {
                crate::image_api::pull(&state.deps.manager, url, name, tx.clone()).await
            }
            Request::ImageExport { name, dir } => {
                crate::image_api::export(&state.deps.manager, name, dir, tx.clone()).await
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
