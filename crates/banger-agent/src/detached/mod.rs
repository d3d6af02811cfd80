//! Detached commands (`vm exec -d`): started by one request, then run on their own,
//! whatever happens to that stream or the session. The registry keeps up to
//! [`DETACHED_MAX`] of them with their output ([`log`]), each in its own directory under
//! a root-owned one, until the guest stops; starting one more forgets the oldest ended
//! one (or is refused while all run). Each runs as a group leader; its task reaps it ([`crate::run::finish`], the
//! same wait, timeout and output drain as an attached exec).

mod log;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use banger_wire::agent::{
    DetachedInfo, DetachedState, ExecSpec, GuestFrame, DETACHED_MAX, TIMED_OUT,
};
use banger_wire::{ErrorCode, WireError};
use futures::future::join;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use crate::exec::{self, ExecDefaults};
use crate::frame::{self, feed_frame, next_frame, FrameReader, FrameWriter};
use crate::run::{self, reply_once};
use crate::spawn::{OutKind, Spawned};
use log::OutputLog;

/// Output chunks queued between a command's pipes and its log.
const QUEUE: usize = 8;

/// The detached commands of this guest.
pub struct Detached {
    root: PathBuf,
    entries: Mutex<Vec<Arc<Entry>>>,
}

impl std::fmt::Debug for Detached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detached")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

struct Entry {
    dir: PathBuf,
    pgid: Option<Pid>,
    info: Mutex<DetachedInfo>,
    log: OutputLog,
    /// Bumped on every chunk of output and when the command has ended.
    changed: watch::Sender<u64>,
}

impl Entry {
    fn info(&self) -> DetachedInfo {
        let mut info = lock(&self.info).clone();
        info.dropped_bytes = self.log.dropped();
        info
    }

    fn ended(&self) -> bool {
        lock(&self.info).state == DetachedState::Exited
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// A poisoned lock still holds a whole value (only assignments happen under it).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, thiserror::Error)]
enum DetachError {
    #[error("a detached command has no terminal")]
    Tty,
    #[error("{DETACHED_MAX} detached commands are running already")]
    Full,
    #[error("no detached command {id} in this guest")]
    Unknown { id: String },
    #[error("unknown signal {0}")]
    Signal(i32),
    #[error("cannot keep the output of a detached command in {}", dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl banger_wire::Diagnostic for DetachError {
    fn code(&self) -> ErrorCode {
        match self {
            DetachError::Tty | DetachError::Signal(_) => ErrorCode::InvalidArgument,
            DetachError::Full => ErrorCode::FailedPrecondition,
            DetachError::Unknown { .. } => ErrorCode::NotFound,
            DetachError::Dir { .. } => ErrorCode::AgentFailed,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            DetachError::Tty => Some("drop -t; fetch its output later instead".into()),
            DetachError::Full => {
                Some("stop one with `banger vm kill NAME ID`, or wait for one to end".into())
            }
            DetachError::Unknown { .. } => Some(
                "`banger vm ps NAME` lists them; an ended command is forgotten once its \
                 output was fetched, and every one when the VM stops"
                    .into(),
            ),
            _ => None,
        }
    }
}

impl Detached {
    /// The registry, keeping output under `root`: emptied now (what is there was left
    /// by an earlier boot) and only root's.
    pub fn at(root: PathBuf) -> Detached {
        if root.exists() {
            if let Err(e) = fs_err::remove_dir_all(&root) {
                tracing::warn!(cause = %e, "cannot clear old detached output");
            }
        }
        Detached {
            root,
            entries: Mutex::new(Vec::new()),
        }
    }

    fn find(&self, id: &str) -> Result<Arc<Entry>, DetachError> {
        lock(&self.entries)
            .iter()
            .find(|e| lock(&e.info).id == id)
            .cloned()
            .ok_or_else(|| DetachError::Unknown { id: id.to_string() })
    }

    fn forget(&self, entry: &Arc<Entry>) {
        lock(&self.entries).retain(|e| !Arc::ptr_eq(e, entry));
        remove_dir(&entry.dir);
    }

    /// Starts `spec` detached; answers once it runs.
    pub fn start(self: &Arc<Self>, spec: ExecSpec, defaults: &ExecDefaults) -> GuestFrame {
        match self.spawn(spec, defaults) {
            Ok(info) => GuestFrame::Detached(info),
            Err(e) => {
                tracing::info!(code = ?e.code, cause = %e.message, "detached exec refused");
                GuestFrame::Error(*e)
            }
        }
    }

    fn spawn(
        self: &Arc<Self>,
        spec: ExecSpec,
        defaults: &ExecDefaults,
    ) -> Result<DetachedInfo, Box<WireError>> {
        let wire = |e: &dyn banger_wire::Diagnostic| Box::new(WireError::from_diagnostic(e));
        if spec.tty.is_some() {
            return Err(wire(&DetachError::Tty));
        }
        let mut entries = lock(&self.entries);
        if entries.len() >= DETACHED_MAX {
            let Some(oldest) = entries.iter().position(|e| e.ended()) else {
                return Err(wire(&DetachError::Full));
            };
            remove_dir(&entries.remove(oldest).dir);
        }
        let id = loop {
            let id = hex::encode(rand::random::<[u8; 4]>());
            if !entries.iter().any(|e| lock(&e.info).id == id) {
                break id;
            }
        };
        let dir = self.root.join(&id);
        let log = make_dir(&self.root, &dir)
            .and_then(|()| OutputLog::create(&dir))
            .map_err(|source| {
                remove_dir(&dir);
                wire(&DetachError::Dir {
                    dir: dir.clone(),
                    source,
                })
            })?;
        let spawned = exec::start(&spec, defaults).map_err(|e| {
            remove_dir(&dir);
            wire(&e)
        })?;
        let pid = spawned.child.id().unwrap_or_default();
        let info = DetachedInfo {
            id,
            pid,
            argv: spec.argv,
            started_at_ms: unix_ms(),
            state: DetachedState::Running,
            exit_code: None,
            timed_out: false,
            dropped_bytes: 0,
        };
        let entry = Arc::new(Entry {
            dir,
            pgid: i32::try_from(pid)
                .ok()
                .filter(|&p| p > 0)
                .map(Pid::from_raw),
            info: Mutex::new(info.clone()),
            log,
            changed: watch::Sender::new(0),
        });
        entries.push(entry.clone());
        drop(entries);
        tracing::info!(id = %info.id, pid, "detached command started");
        let timeout = spec.timeout_ms.map(Duration::from_millis);
        tokio::spawn(supervise(entry, spawned, timeout));
        Ok(info)
    }

    pub fn list(&self) -> GuestFrame {
        GuestFrame::DetachedList(lock(&self.entries).iter().map(|e| e.info()).collect())
    }

    /// Signals the command's process group while it runs.
    pub fn kill(&self, id: &str, signal: i32) -> GuestFrame {
        let killed = self.find(id).and_then(|entry| {
            let sig = Signal::try_from(signal).map_err(|_| DetachError::Signal(signal))?;
            let info = lock(&entry.info);
            if let (DetachedState::Running, Some(pgid)) = (info.state, entry.pgid) {
                if let Err(e) = killpg(pgid, sig) {
                    tracing::debug!(%pgid, signal, cause = %e, "signal not delivered");
                }
            }
            drop(info);
            Ok(entry.info())
        });
        match killed {
            Ok(info) => GuestFrame::Detached(info),
            Err(e) => GuestFrame::Error(WireError::from_diagnostic(&e)),
        }
    }

    /// Sends the command's output and then its state; with `follow`, until it has ended
    /// and its output closed, or the host goes away. An ended command whose output went
    /// out to its end is forgotten.
    pub async fn output(
        &self,
        id: &str,
        follow: bool,
        reader: FrameReader,
        mut writer: FrameWriter,
    ) {
        let entry = match self.find(id) {
            Ok(entry) => entry,
            Err(e) => {
                let err = GuestFrame::Error(WireError::from_diagnostic(&e));
                return reply_once(&mut writer, &err).await;
            }
        };
        let host_gone = async move {
            let mut reader = reader;
            loop {
                // Host frames (stdin, signals) mean nothing here; only the end counts.
                if next_frame::<_, banger_wire::agent::HostFrame>(&mut reader)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        };
        tokio::select! {
            sent = send_output(&entry, follow, &mut writer) => match sent {
                Ok(true) => self.forget(&entry),
                Ok(false) => {}
                Err(e) => tracing::debug!(cause = %crate::logging::chain(&e), "detached output not delivered"),
            },
            () = host_gone => {}
        }
    }
}

/// Sends output frames, then the state; `true` when the command had ended and all of its
/// output went out.
async fn send_output(
    entry: &Entry,
    follow: bool,
    writer: &mut FrameWriter,
) -> Result<bool, frame::FrameError> {
    let mut changed = entry.changed.subscribe();
    let mut pos = 0;
    let complete = loop {
        // Seen before reading: output or an end after this point wakes us up.
        changed.borrow_and_update();
        let ended = entry.ended();
        let chunk = match entry.log.read_from(pos) {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(cause = %e, "cannot read detached output");
                let err = WireError::from_error(ErrorCode::AgentFailed, &e, None);
                feed_frame(writer, &GuestFrame::Error(err)).await?;
                frame::close(writer).await?;
                return Ok(false);
            }
        };
        for (kind, data) in chunk.records {
            feed_frame(writer, &kind.frame(data)).await?;
        }
        frame::flush(writer).await?;
        if chunk.next != pos {
            pos = chunk.next;
            continue;
        }
        if ended || !follow {
            break ended;
        }
        if changed.changed().await.is_err() {
            break false;
        }
    };
    feed_frame(writer, &GuestFrame::Detached(entry.info())).await?;
    frame::close(writer).await?;
    Ok(complete)
}

/// Runs a started command to its end, writing its output to the log, then records how
/// it ended. Owns its process group, which is killed if this task is dropped first.
async fn supervise(entry: Arc<Entry>, spawned: Spawned, timeout: Option<Duration>) {
    let Spawned {
        mut child,
        group,
        outputs,
        input,
    } = spawned;
    // Its stdin reads end-of-file at once.
    drop(input);
    let (tx, mut rx) = mpsc::channel::<GuestFrame>(QUEUE);
    let write = async {
        let mut failed = false;
        while let Some(frame) = rx.recv().await {
            let (kind, data) = match frame {
                GuestFrame::Stdout(d) => (OutKind::Stdout, d),
                GuestFrame::Stderr(d) => (OutKind::Stderr, d),
                _ => continue,
            };
            match entry.log.append(kind, &data) {
                Ok(()) => entry.bump(),
                Err(e) if !failed => {
                    failed = true;
                    tracing::warn!(cause = %e, "cannot keep detached output; dropping it");
                }
                Err(_) => {}
            }
        }
    };
    let (last, ()) = join(run::finish(&mut child, &group, outputs, tx, timeout), write).await;
    let (exit_code, timed_out) = match last {
        GuestFrame::Exit(status) => (Some(status.shell_code()), false),
        GuestFrame::Error(e) if e.code == ErrorCode::Timeout => (Some(TIMED_OUT), true),
        other => {
            tracing::warn!(frame = ?other, "detached command ended without a status");
            (None, false)
        }
    };
    group.disarm();
    let mut info = lock(&entry.info);
    info.state = DetachedState::Exited;
    info.exit_code = exit_code;
    info.timed_out = timed_out;
    tracing::info!(id = %info.id, exit_code, timed_out, "detached command ended");
    drop(info);
    entry.bump();
}

/// Creates `dir` (0700) under `root` (0700, created when missing).
fn make_dir(root: &Path, dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let private = || std::fs::Permissions::from_mode(0o700);
    fs_err::create_dir_all(root)?;
    fs_err::set_permissions(root, private())?;
    fs_err::create_dir(dir)?;
    fs_err::set_permissions(dir, private())
}

fn remove_dir(dir: &Path) {
    if let Err(e) = fs_err::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(cause = %e, "cannot remove detached output");
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The output of commands nobody can ask for any more goes with the registry.
impl Drop for Detached {
    fn drop(&mut self) {
        if self.root.exists() {
            remove_dir(&self.root);
        }
    }
}

#[cfg(test)]
mod tests;
