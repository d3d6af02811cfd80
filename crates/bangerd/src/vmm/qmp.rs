//! A QMP session with one QEMU: greeting, `qmp_capabilities`, then commands in turn.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::VmmError;

const BACKEND: &str = "qemu";

pub(crate) struct Qmp {
    socket: PathBuf,
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects and negotiates capabilities.
    pub async fn connect(socket: &Path) -> Result<Qmp, VmmError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| control(socket, source))?;
        let (r, writer) = stream.into_split();
        let mut qmp = Qmp {
            socket: socket.to_path_buf(),
            lines: BufReader::new(r).lines(),
            writer,
        };
        qmp.next_reply().await?; // greeting
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `cmd` with `args`; QMP errors come back as [`VmmError::Refused`] with
    /// QEMU's `desc` verbatim.
    pub async fn execute(&mut self, cmd: &str, args: Option<Value>) -> Result<Value, VmmError> {
        let msg = match args {
            Some(a) => json!({ "execute": cmd, "arguments": a }),
            None => json!({ "execute": cmd }),
        };
        let line = msg.to_string() + "\n";
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|source| control(&self.socket, source))?;
        let reply = self.next_reply().await?;
        if let Some(err) = reply.get("error") {
            let message = err["desc"]
                .as_str()
                .unwrap_or("unknown QMP error")
                .to_string();
            return Err(VmmError::Refused {
                backend: BACKEND,
                message,
            });
        }
        Ok(reply["return"].clone())
    }

    /// Hands QEMU `fd` under `name` (QMP `getfd`), for commands that take `fd:<name>`.
    pub async fn send_fd(
        &mut self,
        name: &str,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<(), VmmError> {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
        let line =
            json!({ "execute": "getfd", "arguments": { "fdname": name } }).to_string() + "\n";
        let fds = [fd];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let sent = loop {
            let stream: &tokio::net::UnixStream = self.writer.as_ref();
            stream
                .writable()
                .await
                .map_err(|source| control(&self.socket, source))?;
            let mut control_msg = SendAncillaryBuffer::new(&mut space);
            control_msg.push(SendAncillaryMessage::ScmRights(&fds));
            let tried = stream.try_io(tokio::io::Interest::WRITABLE, || {
                rustix::net::sendmsg(
                    stream,
                    &[std::io::IoSlice::new(line.as_bytes())],
                    &mut control_msg,
                    SendFlags::NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            });
            match tried {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => break other.map_err(|source| control(&self.socket, source))?,
            }
        };
        if sent != line.len() {
            // The descriptor went with the first bytes; the rest is plain JSON.
            self.writer
                .write_all(&line.as_bytes()[sent..])
                .await
                .map_err(|source| control(&self.socket, source))?;
        }
        let reply = self.next_reply().await?;
        match reply.get("error") {
            Some(err) => Err(VmmError::Refused {
                backend: BACKEND,
                message: err["desc"]
                    .as_str()
                    .unwrap_or("unknown QMP error")
                    .to_string(),
            }),
            None => Ok(()),
        }
    }

    /// The next reply line, skipping asynchronous events.
    async fn next_reply(&mut self) -> Result<Value, VmmError> {
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .map_err(|source| control(&self.socket, source))?
                .ok_or_else(|| control(&self.socket, std::io::ErrorKind::UnexpectedEof.into()))?;
            let v: Value =
                serde_json::from_str(&line).map_err(|e| control(&self.socket, e.into()))?;
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }
}

fn control(socket: &Path, source: std::io::Error) -> VmmError {
    VmmError::Control {
        backend: BACKEND,
        path: socket.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read, Write};
    use std::os::fd::AsFd;

    /// A QMP server that takes one descriptor with `getfd` and writes `hello` to it.
    fn fake_qemu(listener: std::os::unix::net::UnixListener) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"{\"QMP\": {}}\n").unwrap();
            let mut caps = String::new();
            std::io::BufReader::new(&s).read_line(&mut caps).unwrap();
            s.write_all(b"{\"return\": {}}\n").unwrap();
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut anc = RecvAncillaryBuffer::new(&mut space);
            let mut buf = [0u8; 256];
            let got = rustix::net::recvmsg(
                &s,
                &mut [std::io::IoSliceMut::new(&mut buf)],
                &mut anc,
                RecvFlags::empty(),
            )
            .unwrap();
            let fd = anc
                .drain()
                .find_map(|m| match m {
                    RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
                    _ => None,
                })
                .unwrap();
            std::fs::File::from(fd).write_all(b"hello").unwrap();
            s.write_all(b"{\"return\": {}}\n").unwrap();
            String::from_utf8_lossy(&buf[..got.bytes]).into_owned()
        })
    }

    #[tokio::test]
    async fn getfd_hands_qemu_the_descriptor_with_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let server = fake_qemu(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let path = dir.path().join("state");
        let file = std::fs::File::create(&path).unwrap();

        let mut qmp = Qmp::connect(&sock).await.unwrap();
        qmp.send_fd("snap", file.as_fd()).await.unwrap();

        let command = server.join().unwrap();
        assert!(command.contains(r#""execute":"getfd""#), "{command}");
        assert!(command.contains(r#""fdname":"snap""#), "{command}");
        let mut written = String::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_string(&mut written)
            .unwrap();
        assert_eq!(written, "hello");
    }
}
