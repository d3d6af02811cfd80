//! The virtio-serial channel (QEMU).
//!
//! A virtio console port reads EOF while no host is connected and `EAGAIN` (non-blocking)
//! while one is connected with nothing to say. The host cannot be told to reconnect, so
//! the guest watches for it: before every hello it waits for a connected host.
//!
//! Each session gets the port through a fresh descriptor (a `dup`), registered with the
//! reactor anew: once a host hangs up, tokio keeps the descriptor's "closed" readiness
//! for good, and a session on it would spin on reads that never block.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::os::unix::fs::OpenOptionsExt;

use banger_wire::agent::HOST_KNOCK;

use crate::fdio::{FdStream, Kind};

const VIRTIO_PORTS: &str = "/sys/class/virtio-ports";
/// How often the port's connection state is probed.
const PROBE: Duration = Duration::from_millis(50);
/// After this long without the port, say so on the console (and keep looking).
const PORT_PATIENCE: Duration = Duration::from_secs(10);

/// The agent port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the agent port {path}")]
pub struct OpenError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// The opened agent port.
pub struct SerialPort {
    path: PathBuf,
    /// Non-blocking; probed directly, never through the reactor.
    fd: OwnedFd,
}

impl SerialPort {
    /// Waits for the port named `name` to appear, then opens it.
    pub async fn open(name: &str) -> Result<SerialPort, OpenError> {
        let path = find_port(Path::new(VIRTIO_PORTS), name).await;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
            .open(&path)
            .map_err(|source| OpenError {
                path: path.clone(),
                source,
            })?;
        tracing::info!(port = %path.display(), "agent port open");
        Ok(SerialPort {
            path,
            fd: OwnedFd::from(file),
        })
    }

    fn read_now(&self, buf: &mut [u8]) -> Result<usize, Errno> {
        nix::unistd::read(&self.fd, buf)
    }

    /// Returns once a host is connected, discarding anything stale it finds buffered,
    /// with a stream of its own for the session.
    pub async fn wait_connected(&self) -> FdStream {
        let mut buf = vec![0u8; 64 * 1024];
        let mut announced = false;
        loop {
            match self.read_now(&mut buf) {
                Err(Errno::EAGAIN) => match session_stream(&self.fd) {
                    Ok(stream) => return stream,
                    Err(e) => {
                        tracing::warn!(port = %self.path.display(), cause = %e, "cannot open a session on the agent port");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Ok(0) => {
                    if !announced {
                        tracing::info!(port = %self.path.display(), "waiting for the host to connect");
                        announced = true;
                    }
                    tokio::time::sleep(PROBE).await;
                }
                Ok(n) => tracing::debug!(bytes = n, "discarded stale bytes on the agent port"),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::warn!(port = %self.path.display(), cause = %e, "agent port read failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Returns once the connected host has gone away (used to drop a refused host), or
    /// a host knocks: a new host can connect between two probes, so the guest never
    /// sees the port without one, and its knock is the only sign.
    pub async fn wait_disconnected(&self) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail = Vec::new();
        loop {
            match self.read_now(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if knocked(&mut tail, &buf[..n]) {
                        tracing::info!("a host knocked on the agent port");
                        return;
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => tokio::time::sleep(PROBE).await,
                Err(e) => {
                    tracing::warn!(port = %self.path.display(), cause = %e, "agent port read failed");
                    return;
                }
            }
        }
    }
}

/// A stream of its own on `fd`, for one session (see the module docs).
pub(crate) fn session_stream(fd: &OwnedFd) -> std::io::Result<FdStream> {
    FdStream::new(fd.try_clone()?, Kind::Device)
}

/// Whether [`HOST_KNOCK`] is in what was read so far; `tail` keeps the last bytes
/// between reads, so a knock split across two reads is seen.
fn knocked(tail: &mut Vec<u8>, read: &[u8]) -> bool {
    tail.extend_from_slice(read);
    let found = tail.windows(HOST_KNOCK.len()).any(|w| w == HOST_KNOCK);
    let keep = HOST_KNOCK.len() - 1;
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    found
}

/// Polls `sysfs` (`/sys/class/virtio-ports`) until a port named `name` shows up and
/// returns its device node, `/dev/<port dir>`.
async fn find_port(sysfs: &Path, name: &str) -> PathBuf {
    let started = Instant::now();
    let mut warned = false;
    loop {
        if let Some(dev) = scan_ports(sysfs, name) {
            return Path::new("/dev").join(dev);
        }
        let waited = started.elapsed();
        if waited > PORT_PATIENCE && !warned {
            tracing::warn!(
                port = name,
                dir = %sysfs.display(),
                "no virtio-serial port with this name yet; is virtio_console loaded and the port configured? still waiting"
            );
            warned = true;
        }
        let pause = if waited > PORT_PATIENCE {
            Duration::from_secs(1)
        } else {
            PROBE
        };
        tokio::time::sleep(pause).await;
    }
}

/// The directory name (e.g. `vport0p1`) of the port named `name`, if present.
fn scan_ports(sysfs: &Path, name: &str) -> Option<String> {
    let entries = fs_err::read_dir(sysfs).ok()?;
    let mut found: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            fs_err::read_to_string(e.path().join("name"))
                .map(|n| n.trim() == name)
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    found.sort();
    found.into_iter().next()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_knock_is_seen_whole_or_split_across_reads() {
        let mut tail = Vec::new();
        assert!(!knocked(&mut tail, b"leftovers of the refused host"));
        assert!(!knocked(&mut tail, &HOST_KNOCK[..5]));
        assert!(knocked(&mut tail, &HOST_KNOCK[5..]));
        let mut tail = Vec::new();
        let mut burst = b"junk".to_vec();
        burst.extend_from_slice(&HOST_KNOCK);
        assert!(knocked(&mut tail, &burst));
        assert!(tail.len() < HOST_KNOCK.len());
    }
    use super::*;

    #[test]
    fn port_is_found_by_its_name_file() {
        let dir = tempfile::tempdir().unwrap();
        for (port, name) in [("vport0p0", "other"), ("vport0p1", "org.banger.agent.0")] {
            fs_err::create_dir(dir.path().join(port)).unwrap();
            fs_err::write(dir.path().join(port).join("name"), format!("{name}\n")).unwrap();
        }

        let got = scan_ports(dir.path(), "org.banger.agent.0");

        assert_eq!(got.as_deref(), Some("vport0p1"));
    }

    #[test]
    fn missing_port_is_none() {
        let dir = tempfile::tempdir().unwrap();

        assert_eq!(scan_ports(dir.path(), "org.banger.agent.0"), None);
    }
}
