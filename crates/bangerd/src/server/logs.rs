//! `vm logs`: the guest serial console, streamed.

use std::io::SeekFrom;
use std::time::Duration;

use banger_wire::api::{Response, StreamEvent};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::ndjson::{event_line, Tx};
use crate::error::DaemonError;
use crate::vm::Manager;

/// Streams the console log; with `follow`, keeps streaming until the VM stops and the
/// log is drained, or the client goes away.
pub async fn stream(
    m: &Manager,
    name: &str,
    follow: bool,
    tx: Tx,
) -> Result<Option<Response>, DaemonError> {
    let rec = m.record(name)?;
    let path = m.paths.vm_dir(&rec.id).join("serial.log");
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(DaemonError::Io {
                what: "reading console log",
                path,
                source,
            })
        }
    };
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(f) = file.as_mut() {
            f.seek(SeekFrom::Start(pos)).await.ok();
            loop {
                let n = f.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                pos += n as u64;
                let ev = StreamEvent::Log {
                    text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                };
                if tx.send(Ok(event_line(&ev))).await.is_err() {
                    return Ok(None);
                }
            }
        }
        if !follow || tx.is_closed() {
            return Ok(None);
        }
        let running = m.record(&rec.id).map(|r| r.pid.is_some()).unwrap_or(false);
        if !running && file.is_some() {
            return Ok(None);
        }
        // A log file has no readiness to wait on; a short poll keeps `-f` cheap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if file.is_none() {
            file = tokio::fs::File::open(&path).await.ok();
        }
    }
}
