//! The daemon client: HTTP+JSON over the Unix socket, plus daemon autostart.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use banger_host::config::{Paths, SYSTEM_SOCKET};
use banger_wire::api::{
    ExecOutputRequest, ExecRequest, Request, Response, StreamEvent, EXEC_OUTPUT_PATH, EXEC_PATH,
    EXEC_UPGRADE_PROTOCOL, REQUEST_HEADER, RPC_PATH, UPLOAD_PATH,
};
use banger_wire::WireError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixStream;

use crate::error::CliError;
use crate::output;

pub struct Client {
    pub socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    async fn connect<B>(&self) -> Result<SendRequest<B>, CliError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| CliError::Unreachable {
                    socket: self.socket.display().to_string(),
                    source,
                })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    fn post(path: &str, body: Vec<u8>) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post(path)
            .header(header::HOST, "bangerd")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    }

    /// One request, one answer.
    pub async fn rpc(&self, req: &Request) -> Result<Response, CliError> {
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(Self::post(RPC_PATH, serde_json::to_vec(req)?))
            .await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status.is_success() {
            Ok(serde_json::from_slice(&body)?)
        } else {
            Err(CliError::Remote(serde_json::from_slice::<WireError>(
                &body,
            )?))
        }
    }

    /// `GET path` of the public API (`/api/v1`): the answer's body.
    pub async fn get(&self, path: &str) -> Result<Bytes, CliError> {
        let mut sender = self.connect().await?;
        let req = hyper::Request::get(path)
            .header(header::HOST, "bangerd")
            .body(Full::new(Bytes::new()))
            .map_err(|e| CliError::usage(format!("cannot send the request: {e}"), None))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status.is_success() {
            Ok(body)
        } else {
            Err(CliError::Remote(serde_json::from_slice::<WireError>(
                &body,
            )?))
        }
    }

    /// A streamed answer: calls `on_event` for each progress/log event and returns the
    /// final response.
    pub async fn stream(
        &self,
        req: &Request,
        on_event: impl FnMut(StreamEvent),
    ) -> Result<Response, CliError> {
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(Self::post(RPC_PATH, serde_json::to_vec(req)?))
            .await?;
        Self::events(resp, on_event).await
    }

    /// Like [`Client::stream`], with `body` (chunks; an `Err` aborts the request) as the
    /// request's input ([`UPLOAD_PATH`]).
    pub async fn upload(
        &self,
        req: &Request,
        body: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
        on_event: impl FnMut(StreamEvent),
    ) -> Result<Response, CliError> {
        let frames = futures::stream::unfold(body, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
        });
        let http = hyper::Request::post(UPLOAD_PATH)
            .header(header::HOST, "bangerd")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(
                REQUEST_HEADER,
                header::HeaderValue::from_bytes(&serde_json::to_vec(req)?)
                    .map_err(|e| CliError::usage(format!("cannot send the request: {e}"), None))?,
            )
            .body(StreamBody::new(frames))
            .map_err(|e| CliError::usage(format!("cannot send the request: {e}"), None))?;
        let mut sender = self.connect().await?;
        let resp = sender.send_request(http).await?;
        Self::events(resp, on_event).await
    }

    /// A raw answer ([`Request::is_download`]): its body, to read as it arrives.
    pub async fn download(&self, req: &Request) -> Result<Incoming, CliError> {
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(Self::post(RPC_PATH, serde_json::to_vec(req)?))
            .await?;
        if !resp.status().is_success() {
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(CliError::Remote(serde_json::from_slice::<WireError>(
                &body,
            )?));
        }
        Ok(resp.into_body())
    }

    async fn events(
        resp: hyper::Response<Incoming>,
        mut on_event: impl FnMut(StreamEvent),
    ) -> Result<Response, CliError> {
        if !resp.status().is_success() {
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(CliError::Remote(serde_json::from_slice::<WireError>(
                &body,
            )?));
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                buf.extend_from_slice(&data);
            }
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                match serde_json::from_slice::<StreamEvent>(&line)? {
                    StreamEvent::Done { response } => return Ok(*response),
                    StreamEvent::Error { error } => return Err(CliError::Remote(error)),
                    ev => on_event(ev),
                }
            }
        }
        Err(CliError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "bangerd ended the stream without a result",
        )))
    }

    /// Opens an exec stream: after the upgrade the connection carries agent frames.
    pub async fn exec(
        &self,
        req: &ExecRequest,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, CliError> {
        self.upgrade(EXEC_PATH, serde_json::to_vec(req)?).await
    }

    /// Opens the stream of a detached command's output (agent frames, like an exec's).
    pub async fn exec_output(
        &self,
        req: &ExecOutputRequest,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, CliError> {
        self.upgrade(EXEC_OUTPUT_PATH, serde_json::to_vec(req)?)
            .await
    }

    async fn upgrade(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, CliError> {
        let mut sender = self.connect().await?;
        let mut http = Self::post(path, body);
        http.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("upgrade"),
        );
        http.headers_mut().insert(
            header::UPGRADE,
            header::HeaderValue::from_static(EXEC_UPGRADE_PROTOCOL),
        );
        let resp = sender.send_request(http).await?;
        if resp.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(CliError::Remote(serde_json::from_slice::<WireError>(
                &body,
            )?));
        }
        Ok(TokioIo::new(hyper::upgrade::on(resp).await?))
    }
}

/// Which daemon the CLI talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// Root's `bangerd` on [`SYSTEM_SOCKET`].
    System,
    /// The user's own `bangerd`, in the user's runtime dir.
    User,
    /// The one `BANGER_SOCKET` names.
    Configured,
}

impl Daemon {
    pub fn describe(self) -> &'static str {
        match self {
            Daemon::System => "system (root's bangerd)",
            Daemon::User => "per-user (yours)",
            Daemon::Configured => "the one BANGER_SOCKET names",
        }
    }
}

/// Picks the daemon: `BANGER_SOCKET` when set; for root, the system one; for a user,
/// the system daemon when it answers them, else their own, in a runtime dir that must
/// be theirs and private (see [`banger_host::private_dir`]).
pub async fn locate(mut paths: Paths) -> Result<(Paths, Daemon), CliError> {
    let uid = nix::unistd::geteuid();
    let system_answers = async {
        system_socket_is_roots()
            && Client::new(Path::new(SYSTEM_SOCKET))
                .rpc(&Request::Ping)
                .await
                .is_ok()
    };
    let daemon = if std::env::var_os("BANGER_SOCKET").is_some() {
        Daemon::Configured
    } else if uid.is_root() {
        Daemon::System
    } else if std::env::var_os("BANGER_RUNTIME_DIR").is_none() && system_answers.await {
        paths.socket = PathBuf::from(SYSTEM_SOCKET);
        Daemon::System
    } else {
        banger_host::private_dir::ensure(&paths.runtime_dir, uid.as_raw())?;
        Daemon::User
    };
    Ok((paths, daemon))
}

/// The system socket and its directory are root's (a socket elsewhere is not trusted).
fn system_socket_is_roots() -> bool {
    use std::os::unix::fs::MetadataExt;
    let socket = Path::new(SYSTEM_SOCKET);
    [Some(socket), socket.parent()].into_iter().all(|p| {
        p.and_then(|p| fs_err::symlink_metadata(p).ok())
            .is_some_and(|m| m.uid() == 0)
    })
}

/// Returns a client for a running daemon, starting one (and saying so) if none answers.
pub async fn ensure_daemon(paths: &Paths) -> Result<Client, CliError> {
    let client = Client::new(&paths.socket);
    match client.rpc(&Request::Ping).await {
        Ok(_) => Ok(client),
        // A connection dropped mid-ping: a daemon that is dying, not serving.
        Err(CliError::Unreachable { .. } | CliError::Http(_)) => {
            let pid = start_daemon(paths).await?;
            output::info(&format!(
                "started bangerd (pid {pid}); stop it with `banger daemon stop`"
            ));
            Ok(client)
        }
        Err(e) => Err(e),
    }
}

/// Finds the `bangerd` binary: `BANGER_DAEMON`, next to this executable, or PATH.
pub fn daemon_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BANGER_DAEMON") {
        return p.into();
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("bangerd")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("bangerd"))
}

/// What the daemon log says about a failed start: bangerd's closing `error:` and
/// `caused by:` lines when it wrote them, else the last lines.
fn start_failure(log: &str) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    match lines.iter().rposition(|l| l.starts_with("error: ")) {
        Some(i) => lines[i..].to_vec(),
        None => lines[lines.len().saturating_sub(5)..].to_vec(),
    }
}

/// Spawns bangerd detached, logging to the daemon log, and waits until it says it is
/// ready (a line on its stdout), so no polling of the socket is needed.
pub async fn start_daemon(paths: &Paths) -> Result<u32, CliError> {
    fs_err::create_dir_all(&paths.state_dir)?;
    let log = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.daemon_log())?;
    let mut child = tokio::process::Command::new(daemon_binary())
        .env("BANGER_NOTIFY_STDOUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.into_parts().0)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| CliError::DaemonStart {
            detail: format!("cannot run bangerd: {e}"),
        })?;
    let pid = child.id().unwrap_or_default();
    let stdout = child.stdout.take().ok_or_else(|| CliError::DaemonStart {
        detail: "no stdout pipe".into(),
    })?;
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
    match ready {
        Ok(Ok(Some(line))) if line.trim() == "READY" => Ok(pid),
        _ => {
            let status = child.try_wait().ok().flatten();
            let log = fs_err::read_to_string(paths.daemon_log()).unwrap_or_default();
            let tail = start_failure(&log);
            Err(CliError::DaemonStart {
                detail: format!(
                    "bangerd {} before it was ready: {}",
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "hung".into()),
                    tail.join(" | ")
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::start_failure;

    #[test]
    fn start_failure_shows_the_daemons_error_not_older_log_lines() {
        let log = "INFO starting\nerror: old failure\nINFO started\nINFO dns listening\n\
                   error: another bangerd (pid 7) owns the state dir /s\ncaused by: x\n";
        assert_eq!(
            start_failure(log),
            [
                "error: another bangerd (pid 7) owns the state dir /s",
                "caused by: x"
            ]
        );
        let log = "a\nb\nc\nd\ne\nf\n";
        assert_eq!(start_failure(log), ["b", "c", "d", "e", "f"]);
    }
}
