//! Finding and (re)connecting the byte channel to the host.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use banger_wire::agent::{SERIAL_PORT_NAME, VSOCK_PORT};
use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};

use crate::fdio::{FdStream, Kind};
use crate::logging::chain;
use crate::serial::{self, SerialPort};

/// The host's vsock context id.
const HOST_CID: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("unknown banger.channel {value:?}")]
    UnknownKind { value: String },
    #[error(transparent)]
    Open(#[from] serial::OpenError),
    #[error("cannot connect to the host on {target}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },
}

impl ChannelError {
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ChannelError::UnknownKind { .. } => {
                Some("use banger.channel=serial or banger.channel=vsock")
            }
            _ => None,
        }
    }
}

/// Which transport carries the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind {
    /// virtio-serial port named [`SERIAL_PORT_NAME`] (QEMU).
    Serial,
    /// vsock to the host (Firecracker).
    Vsock { cid: u32, port: u32 },
    /// A Unix socket the agent connects to (testing the agent outside a VM).
    Unix(PathBuf),
}

impl ChannelKind {
    /// Parses `banger.channel`; absent means `serial`.
    pub fn from_boot(value: Option<&str>) -> Result<ChannelKind, ChannelError> {
        match value {
            None | Some("serial") => Ok(ChannelKind::Serial),
            Some("vsock") => Ok(ChannelKind::Vsock {
                cid: HOST_CID,
                port: VSOCK_PORT,
            }),
            Some(other) => Err(ChannelError::UnknownKind {
                value: other.to_string(),
            }),
        }
    }
}

/// Exponential backoff: 20 ms doubling up to 1 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(20);
    const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// An open channel endpoint that hands out one connected stream per session.
pub enum Channel {
    Serial(SerialPort),
    Socket(ChannelKind),
}

impl Channel {
    pub async fn open(kind: ChannelKind) -> Result<Channel, ChannelError> {
        Ok(match kind {
            ChannelKind::Serial => Channel::Serial(SerialPort::open(SERIAL_PORT_NAME).await?),
            other => Channel::Socket(other),
        })
    }

    /// Waits until a host is there: the serial host connected, or a socket connected
    /// (retried with backoff while refused).
    pub async fn connect(&mut self) -> FdStream {
        match self {
            Channel::Serial(port) => port.wait_connected().await,
            Channel::Socket(kind) => {
                let mut backoff = Backoff::new();
                let mut failures = 0u32;
                loop {
                    match connect_socket(kind.clone()).await {
                        Ok(stream) => return stream,
                        Err(e) => {
                            failures += 1;
                            // Refusals are normal while the host is (re)starting: say it once.
                            if failures == 1 {
                                tracing::info!(cause = %chain(&e), "host not reachable yet; retrying");
                            } else {
                                tracing::debug!(cause = %chain(&e), failures, "host still not reachable");
                            }
                            tokio::time::sleep(backoff.next_delay()).await;
                        }
                    }
                }
            }
        }
    }

    /// Drops a host that failed authentication: on a socket the stream is simply closed,
    /// on the serial port the guest waits for that host to disconnect.
    pub async fn drop_host(&self) {
        if let Channel::Serial(port) = self {
            port.wait_disconnected().await;
        }
    }
}

async fn connect_socket(kind: ChannelKind) -> Result<FdStream, ChannelError> {
    let target = match &kind {
        ChannelKind::Vsock { cid, port } => format!("vsock {cid}:{port}"),
        ChannelKind::Unix(path) => path.display().to_string(),
        ChannelKind::Serial => "serial".to_string(),
    };
    let connect_err = |source: io::Error| ChannelError::Connect {
        target: target.clone(),
        source,
    };
    let fd = tokio::task::spawn_blocking(move || connect_blocking(&kind))
        .await
        .map_err(|e| connect_err(io::Error::other(e)))?
        .map_err(connect_err)?;
    FdStream::new(fd, Kind::Socket).map_err(connect_err)
}

fn connect_blocking(kind: &ChannelKind) -> io::Result<OwnedFd> {
    match kind {
        ChannelKind::Vsock { cid, port } => {
            let fd = socket(
                AddressFamily::Vsock,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )?;
            connect(fd.as_raw_fd(), &VsockAddr::new(*cid, *port))?;
            Ok(fd)
        }
        ChannelKind::Unix(path) => Ok(std::os::unix::net::UnixStream::connect(path)?.into()),
        ChannelKind::Serial => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the serial channel is not a socket",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_channel_means_serial() {
        assert_eq!(ChannelKind::from_boot(None).unwrap(), ChannelKind::Serial);
    }

    #[test]
    fn vsock_channel_targets_the_host_cid() {
        assert_eq!(
            ChannelKind::from_boot(Some("vsock")).unwrap(),
            ChannelKind::Vsock {
                cid: 2,
                port: VSOCK_PORT
            }
        );
    }

    #[test]
    fn unknown_channel_is_an_error() {
        assert!(matches!(
            ChannelKind::from_boot(Some("pigeon")),
            Err(ChannelError::UnknownKind { .. })
        ));
    }

    #[test]
    fn backoff_doubles_up_to_one_second() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [20, 40, 80, 160, 320, 640, 1000, 1000]);
    }
}
