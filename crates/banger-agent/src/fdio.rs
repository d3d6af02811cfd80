//! Async byte streams over raw file descriptors (virtio-serial port, vsock and Unix
//! sockets, pty masters), driven by tokio's reactor.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What `poll_shutdown` does to the descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A socket: shut down the write direction.
    Socket,
    /// A character device (serial port): nothing to half-close; the fd stays open.
    Device,
    /// A pty master: `EIO` on read means every slave end is closed, i.e. end of output.
    PtyMaster,
}

/// A non-blocking descriptor shared by cheap clones (one reader, one writer).
#[derive(Debug, Clone)]
pub struct FdStream {
    fd: Arc<AsyncFd<OwnedFd>>,
    kind: Kind,
}

impl FdStream {
    /// Switches `fd` to non-blocking mode and registers it with the reactor.
    pub fn new(fd: OwnedFd, kind: Kind) -> io::Result<FdStream> {
        let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(FdStream {
            fd: Arc::new(register(fd)?),
            kind,
        })
    }
}

#[allow(unsafe_code)]
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is a valid open descriptor that only its owner closes; the
    // `AsyncFd` owns it from here until it is dropped, and `as_raw_fd` on it always
    // returns that same descriptor.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

impl AsFd for FdStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard
                .try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(io::Error::from))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e))
                    if self.kind == Kind::PtyMaster
                        && e.raw_os_error() == Some(Errno::EIO as i32) =>
                {
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kind == Kind::Socket {
            let fd = self.fd.get_ref().as_raw_fd();
            match nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Write) {
                Ok(()) | Err(Errno::ENOTCONN) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn socket_pair_carries_bytes_and_half_closes() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut a = FdStream::new(a.into(), Kind::Socket).unwrap();
        let mut b = FdStream::new(b.into(), Kind::Socket).unwrap();

        a.write_all(b"hello").await.unwrap();
        a.shutdown().await.unwrap();
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();

        assert_eq!(got, b"hello");
    }
}
