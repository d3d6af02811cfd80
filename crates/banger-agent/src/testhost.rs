//! A minimal host side of the agent protocol, for tests: handshake, yamux client,
//! one request per stream.

use std::future::poll_fn;
use std::task::Poll;

use banger_wire::agent::{
    AgentRequest, AuthReply, ExecSpec, GuestFrame, GuestHello, HostAuth, HostFrame, CHUNK,
    PROTOCOL_VERSION,
};
use banger_wire::WireError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::frame::{
    next_frame, read_frame_after_knocks, send_frame, split_stream, write_frame, FrameError,
    FrameReader, FrameWriter,
};

type OpenRequest = oneshot::Sender<yamux::Stream>;

pub struct Host {
    pub hello: GuestHello,
    opener: mpsc::Sender<OpenRequest>,
    driver: JoinHandle<()>,
}

/// Everything a finished exec sent.
#[derive(Debug)]
pub struct Finished {
    pub started: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `Exit` or `Error`.
    pub last: GuestFrame,
}

impl Host {
    /// Runs the handshake with `token`; on success starts the yamux client.
    pub async fn connect<T>(mut io: T, token: &str) -> Result<Host, WireError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut sync = [0u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut io, &mut sync)
            .await
            .expect("hello sync");
        assert_eq!(sync, banger_wire::agent::HELLO_SYNC);
        let hello: GuestHello = read_frame_after_knocks(&mut io).await.expect("guest hello");
        assert_eq!(hello.protocol, PROTOCOL_VERSION);
        let auth = HostAuth {
            token: token.to_string(),
        };
        write_frame(&mut io, &auth).await.expect("send auth");
        let reply: AuthReply = read_frame_after_knocks(&mut io).await.expect("auth reply");
        reply?;
        let conn =
            yamux::Connection::new(io.compat(), yamux::Config::default(), yamux::Mode::Client);
        let (opener, requests) = mpsc::channel(4);
        let driver = tokio::spawn(drive(conn, requests));
        Ok(Host {
            hello,
            opener,
            driver,
        })
    }

    /// Opens a stream and sends `request` on it.
    pub async fn request(&self, request: &AgentRequest) -> (FrameReader, FrameWriter) {
        let (tx, rx) = oneshot::channel();
        self.opener.send(tx).await.expect("driver alive");
        let (reader, mut writer) = split_stream(rx.await.expect("stream opened"));
        send_frame(&mut writer, request)
            .await
            .expect("send request");
        (reader, writer)
    }

    /// Sends one request and returns the single reply frame.
    pub async fn roundtrip(&self, request: &AgentRequest) -> GuestFrame {
        let (mut reader, _writer) = self.request(request).await;
        next_frame(&mut reader).await.expect("reply")
    }

    /// Runs `spec`, feeding `stdin` (then EOF) while collecting output until the end.
    pub async fn exec(&self, spec: ExecSpec, stdin: &[u8]) -> Finished {
        let (reader, mut writer) = self.request(&AgentRequest::Exec(spec)).await;
        let feed = async {
            for chunk in stdin.chunks(CHUNK) {
                if send_frame(&mut writer, &HostFrame::Stdin(chunk.to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = send_frame(&mut writer, &HostFrame::StdinEof).await;
        };
        let (finished, ()) = tokio::join!(collect(reader), feed);
        drop(writer);
        finished
    }

    /// Drops the connection, as a host that went away would.
    pub fn disconnect(self) {
        self.driver.abort();
    }
}

/// Reads an exec's frames until `Exit` or `Error`.
pub async fn collect(mut reader: FrameReader) -> Finished {
    let mut out = Finished {
        started: false,
        stdout: Vec::new(),
        stderr: Vec::new(),
        last: GuestFrame::Ok,
    };
    loop {
        match next_frame::<_, GuestFrame>(&mut reader)
            .await
            .expect("frame")
        {
            GuestFrame::Started { .. } => out.started = true,
            GuestFrame::Stdout(d) => out.stdout.extend_from_slice(&d),
            GuestFrame::Stderr(d) => out.stderr.extend_from_slice(&d),
            last => {
                out.last = last;
                return out;
            }
        }
    }
}

/// Sends a frame on an exec stream (stdin, signals, resizes).
pub async fn send(writer: &mut FrameWriter, frame: &HostFrame) -> Result<(), FrameError> {
    send_frame(writer, frame).await?;
    crate::frame::flush(writer).await?;
    Ok(())
}

/// Drives the client connection: opens outbound streams on request, refuses inbound ones.
async fn drive<T>(mut conn: yamux::Connection<T>, mut requests: mpsc::Receiver<OpenRequest>)
where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut pending: Option<OpenRequest> = None;
    let mut requests_open = true;
    poll_fn(|cx| loop {
        if pending.is_none() && requests_open {
            match requests.poll_recv(cx) {
                Poll::Ready(Some(req)) => pending = Some(req),
                Poll::Ready(None) => requests_open = false,
                Poll::Pending => {}
            }
        }
        if pending.is_some() {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(Ok(stream)) => {
                    if let Some(req) = pending.take() {
                        let _ = req.send(stream);
                    }
                    continue;
                }
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => {}
            }
        }
        match conn.poll_next_inbound(cx) {
            Poll::Ready(Some(Ok(_unexpected))) => continue,
            Poll::Ready(_) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    })
    .await
}
