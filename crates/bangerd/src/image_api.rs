//! Image verbs: glue between the API and [`crate::image`].

use std::sync::Arc;

use banger_wire::api::{ImageBuildSpec, ImageInfo, Response, StreamEvent};
use banger_wire::ErrorCode;
use tokio::sync::mpsc;

use crate::error::DaemonError;
use crate::image::{self, ImageError};
use crate::server::event_line;
use crate::vm::Manager;

type Tx = mpsc::Sender<Result<String, std::io::Error>>;

/// The wire code for an image failure.
pub(crate) fn image_code(e: &ImageError) -> ErrorCode {
    match e {
        ImageError::InvalidName { .. }
        | ImageError::InvalidInput { .. }
        | ImageError::TooSmall { .. }
        | ImageError::Shrink { .. }
        | ImageError::UnsafeEntry { .. }
        | ImageError::AgentNotElf { .. }
        | ImageError::AgentNotStatic { .. } => ErrorCode::InvalidArgument,
        ImageError::NotFound { .. } => ErrorCode::NotFound,
        ImageError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
        ImageError::Busy { .. } => ErrorCode::FailedPrecondition,
        ImageError::NeedsRoot => ErrorCode::PermissionDenied,
        ImageError::NoBootFiles => ErrorCode::FailedPrecondition,
        ImageError::DigestMismatch { .. }
        | ImageError::Bundle { .. }
        | ImageError::Import { .. }
        | ImageError::NotAnImage { .. }
        | ImageError::NotRegular { .. }
        | ImageError::TooLarge { .. } => ErrorCode::InvalidArgument,
        _ => ErrorCode::HostFailed,
    }
}

pub(crate) fn image_err(name: &str, e: ImageError) -> DaemonError {
    DaemonError::Image {
        name: name.to_string(),
        code: image_code(&e),
        hint: e.hint(),
        source: Box::new(e),
    }
}

pub fn list(m: &Manager) -> Result<Vec<ImageInfo>, DaemonError> {
    let images = image::list(&m.paths).map_err(|e| image_err("*", e))?;
    Ok(images.iter().map(|i| i.info()).collect())
}

pub fn show(m: &Manager, name: &str) -> Result<ImageInfo, DaemonError> {
    Ok(image::get(&m.paths, name)
        .map_err(|e| image_err(name, e))?
        .info())
}

/// Refuses to replace or remove an image that VMs are built on: their writable layers
/// would end up over a different base.
fn refuse_if_used(m: &Manager, name: &str) -> Result<(), DaemonError> {
    let users: Vec<String> = m
        .store
        .list_vms()?
        .into_iter()
        .filter(|v| v.image == name)
        .map(|v| v.name)
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    Err(DaemonError::ImageInUse {
        name: name.to_string(),
        hint: format!("delete the VMs that use it first ({})", users.join(", ")),
    })
}

/// Deletes an image unless a VM or a snapshot uses it. Its warm snapshots are caches of
/// it and go with it.
pub async fn delete(m: &Manager, name: &str) -> Result<(), DaemonError> {
    refuse_if_used(m, name)?;
    let (warm, kept): (Vec<_>, Vec<_>) = m
        .store
        .list_snapshots()?
        .into_iter()
        .filter(|s| s.image == name)
        .partition(|s| s.warm);
    if !kept.is_empty() {
        let names: Vec<String> = kept.into_iter().map(|s| s.name).collect();
        return Err(DaemonError::ImageInUse {
            name: name.to_string(),
            hint: format!(
                "snapshots of it exist; delete them first: banger vm snapshot delete {}",
                names.join(" ")
            ),
        });
    }
    image::get(&m.paths, name).map_err(|e| image_err(name, e))?;
    for snap in warm {
        m.snapshot_delete(&snap.id).await?;
    }
    image::delete(&m.paths, name).map_err(|e| image_err(name, e))
}

fn progress_sender(tx: &Tx) -> impl Fn(image::Progress) + Send + Sync + 'static {
    let tx = tx.clone();
    move |p: image::Progress| {
        let ev = StreamEvent::Progress {
            phase: p.phase.to_string(),
            done: p.done,
            total: p.total,
            message: p.message,
        };
        let _ = tx.try_send(Ok(event_line(&ev)));
    }
}

/// Finds the guest agent binary to install into images: `BANGER_AGENT`, else next to
/// the daemon's own executable.
pub fn agent_binary(spec_path: Option<&str>) -> Result<std::path::PathBuf, DaemonError> {
    let candidates = spec_path
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("BANGER_AGENT").map(Into::into))
        .chain(
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(|d| d.join("banger-agent"))),
        );
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
    }
    Err(DaemonError::Invalid {
        message: "guest agent binary banger-agent not found".into(),
        hint: Some("build it with `make agent` or set BANGER_AGENT=/path/to/banger-agent".into()),
    })
}

pub async fn build(
    m: &Arc<Manager>,
    mut spec: ImageBuildSpec,
    tx: Tx,
) -> Result<Option<Response>, DaemonError> {
    let agent = agent_binary(spec.agent_path.as_deref())?;
    let name = spec
        .name
        .clone()
        .unwrap_or_else(|| m.config.default_image.clone());
    spec.name = Some(name.clone());
    if spec.force {
        refuse_if_used(m, &name)?;
    }
    let paths = m.paths.clone();
    let progress = progress_sender(&tx);
    let img = blocking(name, move || image::build(&paths, &spec, &agent, &progress)).await?;
    Ok(Some(Response::Image(img.info())))
}

async fn blocking<T: Send + 'static>(
    label: String,
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::invalid(format!("image task failed: {e}")))?
        .map_err(|e| image_err(&label, e))
}

pub async fn import(
    m: &Arc<Manager>,
    path: String,
    name: Option<String>,
    tx: Tx,
) -> Result<Option<Response>, DaemonError> {
    let agent = agent_binary(None)?;
    if let Some(n) = &name {
        refuse_if_used(m, n)?;
    }
    let paths = m.paths.clone();
    let limits = m.config.image_limits();
    let progress = progress_sender(&tx);
    let label = name.clone().unwrap_or_else(|| path.clone());
    let img = blocking(label, move || {
        image::import(
            &paths,
            std::path::Path::new(&path),
            name.as_deref(),
            &agent,
            limits,
            &progress,
        )
    })
    .await?;
    Ok(Some(Response::Image(img.info())))
}

pub async fn pull(
    m: &Arc<Manager>,
    url: String,
    name: Option<String>,
    tx: Tx,
) -> Result<Option<Response>, DaemonError> {
    if let Some(n) = &name {
        refuse_if_used(m, n)?;
    }
    let paths = m.paths.clone();
    let limits = m.config.image_limits();
    let progress = progress_sender(&tx);
    let label = name.clone().unwrap_or_else(|| url.clone());
    let img = blocking(label, move || {
        image::pull(&paths, &url, name.as_deref(), limits, &progress)
    })
    .await?;
    Ok(Some(Response::Image(img.info())))
}

pub async fn export(
    m: &Arc<Manager>,
    name: String,
    dir: String,
    tx: Tx,
) -> Result<Option<Response>, DaemonError> {
    let paths = m.paths.clone();
    let progress = progress_sender(&tx);
    let label = name.clone();
    let info = blocking(label, move || {
        let img = image::get(&paths, &name)?;
        image::export(&img, std::path::Path::new(&dir), &progress)?;
        Ok(img.info())
    })
    .await?;
    Ok(Some(Response::Image(info)))
}
