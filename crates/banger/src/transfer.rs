//! `image import` and `image export` move the user's files, not paths: the CLI reads
//! the source and writes the bundle with the user's own permissions, and the root
//! daemon only ever sees bytes. A member of the socket group is not root.

use std::io::Write;
use std::path::{Path, PathBuf};

use banger_wire::api::{ImageInfo, Request, Response, StreamEvent};
use banger_wire::bundle;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::CliError;

/// Sends `path` (a tarball as is, a directory as a tar of it) as image `name`.
pub async fn import(
    client: &Client,
    path: &Path,
    name: Option<String>,
    on_event: impl FnMut(StreamEvent),
) -> Result<Response, CliError> {
    let path = std::path::absolute(path).map_err(|e| read_err(path, e))?;
    let source = open_source(&path)?;
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let sender = tokio::task::spawn_blocking({
        let path = path.clone();
        move || send_source(source, &path, tx)
    });
    let req = Request::ImageImport {
        source: path.display().to_string(),
        name,
    };
    let answer = client.upload(&req, rx, on_event).await;
    // What went wrong reading the user's files says more than the aborted upload.
    match sender.await {
        Ok(Err(local)) => Err(local),
        _ => answer,
    }
}

/// What is sent: a file's bytes or a directory's tree.
enum Source {
    File(fs_err::File),
    Dir,
}

/// Checks up front that the user may read `path`, so a refusal names it.
fn open_source(path: &Path) -> Result<Source, CliError> {
    let meta = fs_err::metadata(path).map_err(|e| read_err(path, e))?;
    if meta.is_dir() {
        fs_err::read_dir(path).map_err(|e| read_err(path, e))?;
        Ok(Source::Dir)
    } else if meta.is_file() {
        Ok(Source::File(
            fs_err::File::open(path).map_err(|e| read_err(path, e))?,
        ))
    } else {
        Err(CliError::usage(
            format!("{} is neither a file nor a directory", path.display()),
            Some("import a .tar/.tar.gz, a `docker save` archive, an OCI layout or a directory"),
        ))
    }
}

/// Writes the source into `tx`; on failure sends an error, which aborts the upload
/// (the daemon never takes a cut stream for a shorter tar).
fn send_source(
    source: Source,
    path: &Path,
    tx: mpsc::Sender<std::io::Result<Bytes>>,
) -> Result<(), CliError> {
    let mut out = std::io::BufWriter::with_capacity(256 << 10, ChannelWriter(tx.clone()));
    let sent = match source {
        Source::File(mut file) => std::io::copy(&mut file, &mut out).map(drop),
        Source::Dir => {
            let mut tar = tar::Builder::new(&mut out);
            tar.follow_symlinks(false);
            tar.append_dir_all(".", path).and_then(|()| tar.finish())
        }
    }
    .and_then(|()| out.flush());
    match sent {
        Ok(()) => Ok(()),
        // The daemon stopped reading (it refused the import): its answer says why.
        Err(_) if tx.is_closed() => Ok(()),
        Err(e) => {
            let _ = tx.blocking_send(Err(std::io::Error::other("the import source failed")));
            Err(read_err(path, e))
        }
    }
}

fn read_err(path: &Path, source: std::io::Error) -> CliError {
    CliError::Local {
        what: "read",
        path: path.to_path_buf(),
        source,
    }
}

/// Sends what is written, chunk by chunk, to a request body.
struct ChannelWriter(mpsc::Sender<std::io::Result<Bytes>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "bangerd went away")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes image `name` as a bundle into `dir` (created if missing): each image file as
/// `<file>.gz`, then `manifest.json`. Nothing is left behind on failure. `on_bytes` is
/// told of each file's progress.
pub async fn export(
    client: &Client,
    name: &str,
    dir: &Path,
    mut on_bytes: impl FnMut(&str, u64),
) -> Result<PathBuf, CliError> {
    let digest = match client
        .rpc(&Request::ImageShow {
            name: name.to_string(),
        })
        .await?
    {
        Response::Image(ImageInfo { digest, .. }) => digest,
        other => {
            return Err(CliError::usage(
                format!("unexpected answer {other:?}"),
                None,
            ))
        }
    };
    let dir = std::path::absolute(dir).map_err(|e| write_err(dir, e))?;
    let created = !dir.exists();
    fs_err::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
    let mut written = Vec::new();
    let fetched = fetch(client, name, &digest, &dir, &mut written, &mut on_bytes).await;
    let kept = fetched.and_then(|()| {
        for partial in &written {
            let done = partial.with_extension("");
            fs_err::rename(partial, &done).map_err(|e| write_err(&done, e))?;
        }
        Ok(())
    });
    if let Err(e) = kept {
        for partial in &written {
            let _ = fs_err::remove_file(partial);
        }
        if created {
            let _ = fs_err::remove_dir(&dir);
        }
        return Err(e);
    }
    Ok(dir)
}

/// Downloads each bundle file into `<dir>/<file>.partial`, recording it in `written`.
async fn fetch(
    client: &Client,
    name: &str,
    digest: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
    on_bytes: &mut impl FnMut(&str, u64),
) -> Result<(), CliError> {
    let files = bundle::FILES
        .iter()
        .map(|f| (*f, format!("{f}.gz")))
        .chain([(bundle::MANIFEST, bundle::MANIFEST.into())]);
    for (file, out) in files {
        let req = Request::ImageExportFile {
            name: name.to_string(),
            digest: digest.to_string(),
            file: file.to_string(),
        };
        let mut body = client.download(&req).await?;
        let partial = dir.join(format!("{out}.partial"));
        written.push(partial.clone());
        let mut dst = fs_err::File::create(&partial).map_err(|e| write_err(&partial, e))?;
        let mut bytes = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                dst.write_all(&data).map_err(|e| write_err(&partial, e))?;
                bytes += data.len() as u64;
                on_bytes(&out, bytes);
            }
        }
        dst.sync_all().map_err(|e| write_err(&partial, e))?;
    }
    Ok(())
}

fn write_err(path: &Path, source: std::io::Error) -> CliError {
    CliError::Local {
        what: "write",
        path: path.to_path_buf(),
        source,
    }
}
