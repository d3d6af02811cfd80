//! The image verbs: glue between the API and [`crate::image`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use banger_wire::api::{ImageBuildSpec, ImageInfo, RegistryPullSpec, Response, StreamEvent};
use banger_wire::bundle;
use bytes::Bytes;
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::ndjson::{event_line, Tx};
use crate::error::DaemonError;
use crate::image::{self, ImageError};
use crate::vm::Manager;

pub fn list(m: &Manager) -> Result<Vec<ImageInfo>, DaemonError> {
    let images = image::list(&m.paths).map_err(|e| DaemonError::image("*", e))?;
    images.iter().map(|i| info(m, i)).collect()
}

pub fn show(m: &Manager, name: &str) -> Result<ImageInfo, DaemonError> {
    let image = image::get(&m.paths, name).map_err(|e| DaemonError::image(name, e))?;
    info(m, &image)
}

/// An image as the daemon shows it: its files, and the pool size it set for itself.
fn info(m: &Manager, image: &image::Image) -> Result<ImageInfo, DaemonError> {
    Ok(ImageInfo {
        pool_size: m.store.image_pool_size(image.name())?,
        ..image.info()
    })
}

/// Refuses to replace or remove an image that VMs are built on: their writable layers
/// would end up over a different base. The pool's clones do not count: they go with
/// the image's warm snapshots, or retire once these are not current.
fn refuse_if_used(m: &Manager, name: &str) -> Result<(), DaemonError> {
    let users: Vec<String> = m
        .list()?
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
    image::get(&m.paths, name).map_err(|e| DaemonError::image(name, e))?;
    for snap in warm {
        m.snapshot_delete(&snap.id).await?;
    }
    image::delete(&m.paths, name).map_err(|e| DaemonError::image(name, e))?;
    Ok(m.store.set_image_pool_size(name, None)?)
}

fn progress_sender(tx: &Tx) -> impl Fn(image::Progress) + Send + Sync + 'static {
    let tx = tx.clone();
    move |p: image::Progress| {
        let ev = StreamEvent::Progress {
            phase: p.phase.into_owned(),
            done: p.done,
            total: p.total,
            message: p.message,
        };
        let _ = tx.try_send(Ok(event_line(&ev)));
    }
}

/// Finds the guest agent binary to install into images: `explicit`, else
/// `BANGER_AGENT`, else next to the daemon's own executable.
pub fn agent_binary(explicit: Option<&Path>) -> Result<PathBuf, DaemonError> {
    let candidates = explicit
        .map(Path::to_path_buf)
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

/// Builds an image; `agent` is the daemon's agent binary when configured (a caller's
/// `agent_path` wins, and only root may give one: see `server::caller`).
pub async fn build(
    m: &Arc<Manager>,
    agent: Option<&Path>,
    mut spec: ImageBuildSpec,
    tx: Tx,
) -> Result<Option<Response>, DaemonError> {
    let agent = agent_binary(spec.agent_path.as_deref().map(Path::new).or(agent))?;
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
        .map_err(|e| DaemonError::image(&label, e))
}

/// Imports the tar stream that is the request `body`; `source` only names it.
pub async fn import(
    m: &Arc<Manager>,
    agent: Option<&Path>,
    source: String,
    name: Option<String>,
    body: Body,
    tx: Tx,
) -> Result<Option<Response>, DaemonError> {
    let limits = m.config.image_limits();
    // A body cut short (the CLI failed or went away) is an error, never a shorter tar.
    let reader = Drained::new(
        SyncIoBridge::new(StreamReader::new(
            body.into_data_stream().map_err(std::io::Error::other),
        )),
        limits.max_bytes,
    );
    let checked = agent_binary(agent).and_then(|agent| match &name {
        Some(n) => refuse_if_used(m, n).map(|()| agent),
        None => Ok(agent),
    });
    let agent = match checked {
        Ok(agent) => agent,
        Err(e) => {
            // The bridge reads on a blocking thread.
            let _ = tokio::task::spawn_blocking(move || drop(reader)).await;
            return Err(e);
        }
    };
    let paths = m.paths.clone();
    let progress = progress_sender(&tx);
    let label = name.clone().unwrap_or_else(|| source.clone());
    let img = blocking(label, move || {
        image::import(
            &paths,
            reader,
            &source,
            name.as_deref(),
            &agent,
            limits,
            &progress,
        )
    })
    .await?;
    Ok(Some(Response::Image(img.info())))
}

/// An upload's body that is read to its end (at most `left` more bytes) when dropped.
/// A refused upload's unread bytes would make the daemon close the connection under
/// the client while it still sends, and the client would lose the answer saying why.
struct Drained<R: std::io::Read> {
    inner: R,
    left: u64,
}

impl<R: std::io::Read> Drained<R> {
    fn new(inner: R, left: u64) -> Self {
        Self { inner, left }
    }
}

impl<R: std::io::Read> std::io::Read for Drained<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

impl<R: std::io::Read> Drop for Drained<R> {
    fn drop(&mut self) {
        let mut rest = <&mut R as std::io::Read>::take(&mut self.inner, self.left);
        let _ = std::io::copy(&mut rest, &mut std::io::sink());
    }
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

/// Pulls an image from an OCI registry (see `image::pull_registry`).
pub async fn pull_registry(
    m: &Arc<Manager>,
    agent: Option<&Path>,
    spec: RegistryPullSpec,
    tx: Tx,
) -> Result<Option<Response>, DaemonError> {
    let agent = agent_binary(agent)?;
    if let Some(n) = &spec.name {
        refuse_if_used(m, n)?;
    }
    let label = spec.name.clone().unwrap_or_else(|| spec.reference.clone());
    let progress: image::SharedProgress = Arc::new(progress_sender(&tx));
    let limits = m.config.image_limits();
    let report = image::pull_registry(&m.paths, spec, agent, limits, progress)
        .await
        .map_err(|e| DaemonError::image(&label, e))?;
    Ok(Some(Response::Pulled(report)))
}

/// One file of image `name`'s bundle as an answer body (see
/// `Request::ImageExportFile`): the manifest as is, an image file gzip-compressed on
/// a blocking thread as the client reads it.
pub async fn export_file(
    m: &Manager,
    name: &str,
    digest: &str,
    file: &str,
) -> Result<Body, DaemonError> {
    let img = image::get(&m.paths, name).map_err(|e| DaemonError::image(name, e))?;
    let dir = img.dir().to_path_buf();
    if file == bundle::MANIFEST {
        let bytes = fs_err::read(dir.join(file)).map_err(|source| DaemonError::Io {
            what: "read",
            path: dir.join(file),
            source,
        })?;
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        check_unchanged(name, digest, &actual)?;
        return Ok(Body::from(bytes));
    }
    if !bundle::FILES.contains(&file) {
        return Err(DaemonError::Invalid {
            message: format!("{file:?} is not a file of an image bundle"),
            hint: Some(format!(
                "ask for {} or {}",
                bundle::FILES.join(", "),
                bundle::MANIFEST
            )),
        });
    }
    // Opened before the digest check: the file read is one of the image checked.
    let src = fs_err::File::open(dir.join(file)).map_err(|source| DaemonError::Io {
        what: "read",
        path: dir.join(file),
        source,
    })?;
    check_unchanged(name, digest, img.digest())?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = image::compress(src, ChannelWriter(tx.clone())) {
            // Ends the answer with an error: the client sees a cut body, not a short file.
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok(Body::from_stream(ReceiverStream::new(rx)))
}

fn check_unchanged(name: &str, wanted: &str, actual: &str) -> Result<(), DaemonError> {
    if wanted == actual {
        return Ok(());
    }
    Err(DaemonError::image(
        name,
        ImageError::Changed {
            name: name.to_string(),
        },
    ))
}

/// Sends what is written, in the chunks it is written in, to an answer body.
struct ChannelWriter(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
