//! A small typed client for Firecracker's HTTP API on its Unix socket.
//!
//! One HTTP/1.1 connection per request: Firecracker's API is a handful of calls per VM,
//! and a fresh connection can never inherit a half-read answer from an earlier call
//! that was cancelled.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::time::Duration;

use futures::future::{self, Either};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::UnixStream;

use super::models::{
    ActionType, BootSource, Drive, DrivePatch, Fault, InstanceAction, InstanceInfo, MachineConfig,
    NetworkInterface, SnapshotCreate, SnapshotLoad, VmState, VmStateChange, Vsock,
};
use crate::vmm::VmmError;

const BACKEND: &str = "firecracker";
/// Configuration calls answer in milliseconds; this only catches a wedged VMM.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Snapshots write or map all of guest memory.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);

/// Client for one Firecracker API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
    timeout: Duration,
    /// The uid that must own the socket (a jailed VMM's); any owner when `None`.
    owner: Option<u32>,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> ApiClient {
        ApiClient {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            owner: None,
        }
    }

    /// Only talks over a socket owned by `owner` (see [`super::jail::connect_owned`]).
    pub fn owned_by(mut self, owner: Option<u32>) -> ApiClient {
        self.owner = owner;
        self
    }

    /// Overrides the per-request timeout of non-snapshot calls.
    pub fn with_timeout(mut self, timeout: Duration) -> ApiClient {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn put_machine_config(&self, config: &MachineConfig) -> Result<(), VmmError> {
        self.send(Method::PUT, "/machine-config", config).await
    }

    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<(), VmmError> {
        self.send(Method::PUT, "/boot-source", boot).await
    }

    pub async fn put_drive(&self, drive: &Drive) -> Result<(), VmmError> {
        let path = format!("/drives/{}", drive.drive_id);
        self.send(Method::PUT, &path, drive).await
    }

    pub async fn patch_drive(&self, patch: &DrivePatch) -> Result<(), VmmError> {
        let path = format!("/drives/{}", patch.drive_id);
        self.send(Method::PATCH, &path, patch).await
    }

    pub async fn put_network_interface(&self, iface: &NetworkInterface) -> Result<(), VmmError> {
        let path = format!("/network-interfaces/{}", iface.iface_id);
        self.send(Method::PUT, &path, iface).await
    }

    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<(), VmmError> {
        self.send(Method::PUT, "/vsock", vsock).await
    }

    pub async fn action(&self, action_type: ActionType) -> Result<(), VmmError> {
        self.send(Method::PUT, "/actions", &InstanceAction { action_type })
            .await
    }

    pub async fn set_vm_state(&self, state: VmState) -> Result<(), VmmError> {
        self.send(Method::PATCH, "/vm", &VmStateChange { state })
            .await
    }

    pub async fn instance_info(&self) -> Result<InstanceInfo, VmmError> {
        let body = self
            .exchange(Method::GET, "/", Bytes::new(), self.timeout)
            .await?;
        serde_json::from_slice(&body).map_err(|e| self.control_error(io::Error::other(e)))
    }

    pub async fn create_snapshot(&self, snapshot: &SnapshotCreate) -> Result<(), VmmError> {
        let body = self.encode(snapshot)?;
        self.exchange(Method::PUT, "/snapshot/create", body, SNAPSHOT_TIMEOUT)
            .await
            .map(drop)
    }

    pub async fn load_snapshot(&self, snapshot: &SnapshotLoad) -> Result<(), VmmError> {
        let body = self.encode(snapshot)?;
        self.exchange(Method::PUT, "/snapshot/load", body, SNAPSHOT_TIMEOUT)
            .await
            .map(drop)
    }

    async fn send<T: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &T,
    ) -> Result<(), VmmError> {
        let body = self.encode(body)?;
        self.exchange(method, path, body, self.timeout)
            .await
            .map(drop)
    }

    fn encode<T: Serialize>(&self, body: &T) -> Result<Bytes, VmmError> {
        serde_json::to_vec(body)
            .map(Bytes::from)
            .map_err(|e| self.control_error(io::Error::other(e)))
    }

    /// Sends one request and returns the body of a 2xx answer. Any other status is
    /// [`VmmError::Refused`] carrying Firecracker's `fault_message` verbatim.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, VmmError> {
        tracing::debug!(socket = %self.socket.display(), %method, path, "firecracker api request");
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::ACCEPT, "application/json");
        let request = if body.is_empty() {
            request
        } else {
            request.header(hyper::header::CONTENT_TYPE, "application/json")
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| self.control_error(io::Error::other(e)))?;
        let (status, body) = tokio::time::timeout(timeout, self.round_trip(request))
            .await
            .map_err(|_| {
                self.control_error(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer to {path} within {timeout:?}"),
                ))
            })?
            .map_err(|e| self.control_error(e))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(VmmError::Refused {
            backend: BACKEND,
            message: fault_message(status, &body),
        })
    }

    async fn round_trip(&self, request: Request<Full<Bytes>>) -> io::Result<(StatusCode, Bytes)> {
        let stream = match self.owner {
            Some(uid) => super::jail::connect_owned(&self.socket, uid).await?,
            None => UnixStream::connect(&self.socket).await?,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        let exchange = async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        // The connection future does the actual I/O; drive it alongside the exchange.
        match future::select(pin!(exchange), pin!(conn)).await {
            Either::Left((result, _conn)) => result.map_err(io::Error::other),
            Either::Right((conn_result, exchange)) => {
                conn_result.map_err(io::Error::other)?;
                exchange.await.map_err(io::Error::other)
            }
        }
    }

    fn control_error(&self, source: io::Error) -> VmmError {
        VmmError::Control {
            backend: BACKEND,
            path: self.socket.clone(),
            source,
        }
    }
}

/// Firecracker's own words for a refusal; the raw body when it is not a fault object.
fn fault_message(status: StatusCode, body: &[u8]) -> String {
    match serde_json::from_slice::<Fault>(body) {
        Ok(fault) => fault.fault_message,
        Err(_) if body.is_empty() => format!("http status {status}"),
        Err(_) => format!(
            "http status {status}: {}",
            String::from_utf8_lossy(body).trim()
        ),
    }
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
