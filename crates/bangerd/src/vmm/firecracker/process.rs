//! The firecracker process while it starts: spawn, wait for the API socket, and either
//! hand it off (it then runs on its own) or kill it and remove what it created.

use std::ffi::OsString;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures::StreamExt;
use inotify::{EventStream, Inotify, WatchMask};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::{Layout, API_SOCKET, BACKEND, VSOCK_UDS};
use crate::vmm::{LaunchSpec, VmmError};

/// How long firecracker may take to open its API socket (it takes milliseconds).
const API_SOCKET_DEADLINE: Duration = Duration::from_secs(10);
/// How long a VMM whose API connection broke gets to finish exiting, so the error can
/// say it died instead of "connection reset".
const EXIT_GRACE: Duration = Duration::from_millis(500);
/// Log lines quoted in [`VmmError::DiedDuringStart`].
const TAIL_LINES: usize = 12;

/// A firecracker process that has not been handed off yet. Dropping it (the launch
/// future was cancelled) kills the process and removes its sockets.
pub(super) struct Starting {
    binary: PathBuf,
    child: Option<Child>,
    pid: u32,
    events: EventStream<[u8; 1024]>,
    api_socket: PathBuf,
    /// Files firecracker creates, removed when the start is abandoned.
    sockets: Vec<PathBuf>,
    serial_log: PathBuf,
    serial_start: u64,
    vmm_log: PathBuf,
}

impl Starting {
    /// Spawns `binary` (firecracker, or the jailer that execs it in place, so the pid is
    /// firecracker's) for `spec` in its own process group, with stdio on files so it
    /// outlives the daemon.
    pub(super) fn spawn(
        binary: &Path,
        args: &[OsString],
        spec: &LaunchSpec,
        layout: &Layout,
    ) -> Result<Starting, VmmError> {
        let spawn_error = |source: io::Error| VmmError::Spawn {
            binary: binary.display().to_string(),
            source,
        };
        let api_socket = layout.host(API_SOCKET);
        let sockets = vec![api_socket.clone(), layout.host(VSOCK_UDS)];
        let watched = api_socket.parent().unwrap_or(Path::new("/")).to_path_buf();
        for socket in &sockets {
            remove_stale_socket(socket).map_err(spawn_error)?;
        }
        rotate_log(&spec.vmm_log).map_err(spawn_error)?;
        let serial = fs_err::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.serial_log)
            .map_err(spawn_error)?;
        let serial_start = serial.metadata().map_err(spawn_error)?.len();
        let (serial, _) = serial.into_parts();
        // Watch before spawning, so the socket's creation cannot be missed.
        let inotify = Inotify::init().map_err(spawn_error)?;
        inotify
            .watches()
            .add(&watched, WatchMask::CREATE | WatchMask::MOVED_TO)
            .map_err(|e| {
                spawn_error(io::Error::new(
                    e.kind(),
                    format!("watching {}: {e}", watched.display()),
                ))
            })?;
        let events = inotify
            .into_event_stream([0u8; 1024])
            .map_err(spawn_error)?;

        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            // Firecracker writes the guest's serial console to stdout.
            .stdout(serial.try_clone().map_err(spawn_error)?)
            .stderr(serial)
            // Own process group: a Ctrl-C or group kill aimed at the daemon misses it.
            .process_group(0)
            // The VMM outlives this future and the daemon; the VM manager owns it.
            .kill_on_drop(false);
        let child = command.spawn().map_err(spawn_error)?;
        let pid = child.id().ok_or_else(|| {
            spawn_error(io::Error::other(
                "the process exited before its pid was read",
            ))
        })?;
        tracing::debug!(vm = %spec.vm_id, pid, binary = %binary.display(), socket = %api_socket.display(), "spawned firecracker");
        Ok(Starting {
            binary: binary.to_path_buf(),
            child: Some(child),
            pid,
            events,
            api_socket,
            sockets,
            serial_log: spec.serial_log.clone(),
            serial_start,
            vmm_log: spec.vmm_log.clone(),
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the API socket accepts connections: woken by inotify when a file
    /// appears in its directory, failing at once if the process exits first. With
    /// `owner`, the socket must be one that uid created (see [`super::jail::connect_owned`]).
    pub(super) async fn wait_for_api(&mut self, owner: Option<u32>) -> Result<(), VmmError> {
        let socket = self.api_socket.clone();
        let deadline = Instant::now() + API_SOCKET_DEADLINE;
        loop {
            let connected = match owner {
                Some(uid) => super::jail::connect_owned(&socket, uid).await,
                None => UnixStream::connect(&socket).await,
            };
            let bound_not_listening = match connected {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                // Between firecracker's bind() and listen(): a matter of microseconds.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => true,
                Err(source) => {
                    return Err(VmmError::Control {
                        backend: BACKEND,
                        path: socket,
                        source,
                    })
                }
            };
            let child = self.child.as_mut().expect("child present until handed off");
            tokio::select! {
                status = child.wait() => return Err(self.died(status).await),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(VmmError::NoControlSocket { backend: BACKEND, path: socket });
                }
                _ = tokio::time::sleep(Duration::from_millis(1)), if bound_not_listening => {}
                event = self.events.next(), if !bound_not_listening => {
                    if let Some(Err(e)) = event {
                        tracing::warn!(error = %e, "inotify read failed; retrying the socket");
                    }
                }
            }
        }
    }

    /// Turns a configuration error into [`VmmError::DiedDuringStart`] when the
    /// process exited underneath it.
    pub(super) async fn explain(&mut self, error: VmmError) -> VmmError {
        let VmmError::Control { .. } = error else {
            return error;
        };
        let child = self.child.as_mut().expect("child present until handed off");
        match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
            Ok(status) => self.died(status).await,
            Err(_) => error,
        }
    }

    /// The VM is started: let the process go. Tokio reaps it if it exits while this
    /// daemon runs; the VM manager watches it by pid.
    pub(super) fn detach(mut self) -> u32 {
        self.child = None;
        self.pid
    }

    /// Kills and reaps the process and removes the sockets it created.
    pub(super) async fn abort(mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(e) = child.start_kill() {
                tracing::warn!(pid = self.pid, error = %e, "failed to kill firecracker");
            }
            if let Err(e) = child.wait().await {
                tracing::warn!(pid = self.pid, error = %e, "failed to reap firecracker");
            }
        }
        remove_files(&self.sockets);
    }

    async fn died(&self, status: io::Result<ExitStatus>) -> VmmError {
        let status = match status {
            Ok(status) => status.to_string(),
            Err(e) => format!("wait failed: {e}"),
        };
        let mut lines = tail_lines(&self.vmm_log, 0);
        // Errors before firecracker's logger is up go to stderr, i.e. the serial log.
        lines.extend(tail_lines(&self.serial_log, self.serial_start));
        let from = lines.len().saturating_sub(TAIL_LINES);
        let mut detail = format!("{} {status}", self.binary.display());
        for line in &lines[from..] {
            detail.push('\n');
            detail.push_str(line);
        }
        VmmError::DiedDuringStart {
            backend: BACKEND,
            detail,
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        // Only reached with a child when the launch future was dropped mid-start.
        if let Some(mut child) = self.child.take() {
            tracing::warn!(pid = self.pid, "launch cancelled; killing firecracker");
            if let Err(e) = child.start_kill() {
                tracing::warn!(pid = self.pid, error = %e, "failed to kill firecracker");
            }
            // Dropping the killed child leaves its reaping to tokio.
            remove_files(&self.sockets);
        }
    }
}

/// Removes `paths`, ignoring ones that do not exist.
pub(super) fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        match fs_err::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "failed to remove firecracker socket"),
        }
    }
}

/// A socket file nobody listens on (left by a killed VMM) would make firecracker's bind
/// fail; remove it. A live listener means another VMM owns this directory.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    if fs_err::symlink_metadata(path).is_err() {
        return Ok(());
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use by a running process", path.display()),
        )),
        Err(_) => fs_err::remove_file(path),
    }
}

/// Firecracker opens its log file without `O_APPEND` and writes from offset 0, so an
/// old log would be overwritten in place. Keep the previous run's log as `<name>.prev`.
pub(super) fn rotate_log(path: &Path) -> io::Result<()> {
    match fs_err::metadata(path) {
        Ok(meta) if meta.len() > 0 => {
            let mut prev = OsString::from(path.as_os_str());
            prev.push(".prev");
            fs_err::rename(path, PathBuf::from(prev))?;
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs_err::File::create(path).map(drop)
}

/// The last lines of `path` written after byte `from` (at most the last 8 KiB).
fn tail_lines(path: &Path, from: u64) -> Vec<String> {
    const MAX: u64 = 8 * 1024;
    let read = || -> io::Result<String> {
        let mut file = fs_err::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(from.max(len.saturating_sub(MAX))))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read()
        .unwrap_or_default()
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_log_keeps_the_previous_run() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("vmm.log");
        fs_err::write(&log, "first run\n").unwrap();

        rotate_log(&log).unwrap();

        assert_eq!(
            fs_err::read_to_string(dir.path().join("vmm.log.prev")).unwrap(),
            "first run\n"
        );
        assert_eq!(fs_err::read_to_string(&log).unwrap(), "");
    }

    #[test]
    fn tail_lines_reads_only_what_was_written_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        fs_err::write(&log, "old boot\nnew 1\n\nnew 2\n").unwrap();

        let lines = tail_lines(&log, "old boot\n".len() as u64);

        assert_eq!(lines, vec!["new 1".to_string(), "new 2".to_string()]);
    }

    #[test]
    fn a_stale_socket_is_removed_and_a_live_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let live = dir.path().join("live.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();

        remove_stale_socket(&stale).unwrap();
        let err = remove_stale_socket(&live).unwrap_err();

        assert!(!stale.exists());
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
