//! The frame loop of one running process: stdio frames both ways until it exits.
//!
//! Backpressure end to end: output is read only as fast as frames leave through the
//! yamux stream (a small bounded queue sits between), and host stdin is read from the
//! stream only as fast as the process takes it.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use banger_wire::agent::{ExitStatus, GuestFrame, HostFrame, CHUNK};
use banger_wire::{ErrorCode, WireError};
use futures::future::{join, join_all};
use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::sync::{mpsc, oneshot};

use crate::frame::{
    self, feed_frame, next_frame, send_frame, FrameError, FrameReader, FrameWriter,
};
use crate::spawn::{Input, OutKind, Output, ProcessGroup, Spawned};

/// Frames queued between the output readers and the stream writer.
const QUEUE: usize = 8;
/// How long output may keep flowing after a timed-out process group was killed
/// (something that escaped the group may hold the pipes open).
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

/// Sends a single frame and closes the stream (errors mean the host left; nothing to do).
pub async fn reply_once(writer: &mut FrameWriter, frame: &GuestFrame) {
    if let Err(e) = send_frame(writer, frame).await {
        tracing::debug!(cause = %crate::logging::chain(&e), "reply not delivered");
    }
    let _ = frame::close(writer).await;
}

/// Runs `spawned` to completion: `Started`, output frames, then `Exit` (or `Error` on
/// timeout). If the host goes away first, the process group is killed.
pub async fn run(
    spawned: Spawned,
    timeout: Option<Duration>,
    mut reader: FrameReader,
    writer: FrameWriter,
) {
    let Spawned {
        mut child,
        group,
        outputs,
        mut input,
    } = spawned;
    let pid = child.id().unwrap_or_default();
    tracing::debug!(pid, "process started");
    let (tx, rx) = mpsc::channel::<GuestFrame>(QUEUE);
    let writer = write_frames(rx, writer);
    tokio::pin!(writer);

    let work = async {
        // Owned by this future, so the writer sees the queue close when it ends.
        let tx = tx;
        if tx.send(GuestFrame::Started { pid }).await.is_err() {
            return false;
        }
        let last = tokio::select! {
            last = finish(&mut child, &group, outputs, tx.clone(), timeout) => last,
            gone = host_input(&mut reader, &mut input, &group) => {
                tracing::info!(pid, cause = %crate::logging::chain(&gone), "host stream ended before the process; killing its group");
                return false;
            }
        };
        tx.send(last).await.is_ok()
    };
    let completed = tokio::select! {
        completed = work => completed,
        Err(e) = &mut writer => {
            tracing::info!(pid, cause = %crate::logging::chain(&e), "cannot write to the host; killing the process group");
            false
        }
    };
    if completed && writer.await.is_ok() {
        group.disarm();
    }
    // Otherwise `group` drops armed here and SIGKILLs whatever is left of the process.
}

/// Writes queued frames to the stream, flushing whenever the queue runs dry, and closes
/// the stream once every sender is gone.
async fn write_frames(
    mut rx: mpsc::Receiver<GuestFrame>,
    mut writer: FrameWriter,
) -> Result<(), FrameError> {
    while let Some(frame) = rx.recv().await {
        feed_frame(&mut writer, &frame).await?;
        while let Ok(frame) = rx.try_recv() {
            feed_frame(&mut writer, &frame).await?;
        }
        frame::flush(&mut writer).await?;
    }
    frame::close(&mut writer).await?;
    Ok(())
}

/// Applies host frames to the process until the host side of the stream ends.
async fn host_input(
    reader: &mut FrameReader,
    input: &mut Input,
    group: &ProcessGroup,
) -> FrameError {
    loop {
        match next_frame::<_, HostFrame>(reader).await {
            Ok(HostFrame::Stdin(data)) => input.write(&data).await,
            Ok(HostFrame::StdinEof) => input.eof().await,
            Ok(HostFrame::Resize(size)) => input.resize(size),
            Ok(HostFrame::Signal(n)) => group.signal(n),
            Err(e) => return e,
        }
    }
}

enum Waited {
    Exited(std::process::ExitStatus),
    TimedOut(Duration),
}

/// Waits for the process to exit and its output to be drained; returns the last frame.
pub(crate) async fn finish(
    child: &mut Child,
    group: &ProcessGroup,
    outputs: Vec<(Output, OutKind)>,
    tx: mpsc::Sender<GuestFrame>,
    timeout: Option<Duration>,
) -> GuestFrame {
    let (killed_tx, killed_rx) = oneshot::channel::<()>();
    let wait = async {
        let Some(limit) = timeout else {
            return child.wait().await.map(Waited::Exited);
        };
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(status) => status.map(Waited::Exited),
            Err(_elapsed) => {
                group.kill();
                let _ = killed_tx.send(());
                child.wait().await.map(|_| Waited::TimedOut(limit))
            }
        }
    };
    let drain = async {
        let pumps = join_all(
            outputs
                .into_iter()
                .map(|(out, kind)| pump(out, kind, tx.clone())),
        );
        let give_up = async {
            match killed_rx.await {
                Ok(()) => tokio::time::sleep(DRAIN_AFTER_KILL).await,
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = pumps => {}
            _ = give_up => tracing::warn!("output still open after the process group was killed; giving up on it"),
        }
    };
    let (waited, ()) = join(wait, drain).await;
    match waited {
        Ok(Waited::Exited(status)) => GuestFrame::Exit(exit_status(status)),
        Ok(Waited::TimedOut(limit)) => GuestFrame::Error(WireError::new(
            ErrorCode::Timeout,
            format!(
                "command timed out after {} and was killed",
                format_secs(limit)
            ),
        )),
        Err(e) => GuestFrame::Error(WireError::from_error(
            ErrorCode::AgentFailed,
            &WaitError(e),
            None,
        )),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot wait for the process")]
struct WaitError(#[source] io::Error);

/// Forwards one output stream in chunks of up to [`CHUNK`] bytes until EOF.
async fn pump(mut out: Output, kind: OutKind, tx: mpsc::Sender<GuestFrame>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match out.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                if tx.send(kind.frame(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(cause = %e, "reading process output failed");
                return;
            }
        }
    }
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(sig)) => ExitStatus::Signal(sig),
        // Neither exited nor signalled cannot happen for a reaped process.
        (None, None) => ExitStatus::Code(-1),
    }
}

fn format_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_print_without_fraction() {
        assert_eq!(format_secs(Duration::from_millis(3000)), "3s");
    }

    #[test]
    fn fractional_seconds_print_one_decimal() {
        assert_eq!(format_secs(Duration::from_millis(1500)), "1.5s");
    }
}
