//! Host side of the guest agent protocol (see `banger_wire::agent`): the handshake,
//! then one yamux session per VM over which every request gets its own stream.

use std::collections::VecDeque;
use std::task::Poll;

use banger_wire::agent::{
    self, AgentRequest, AuthReply, GuestFrame, GuestHello, HostAuth, HostFrame, PROTOCOL_VERSION,
};
use banger_wire::{Diagnostic, ErrorCode, WireError};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent channel i/o failed")]
    Io(#[from] std::io::Error),
    #[error("agent sent a malformed frame")]
    Decode(#[from] agent::DecodeError),
    #[error("agent speaks protocol {got}, this daemon speaks {PROTOCOL_VERSION}")]
    Protocol { got: u32 },
    #[error("agent closed the channel")]
    Closed,
    #[error("agent multiplexer failed")]
    Mux(#[from] yamux::ConnectionError),
    #[error("{0}")]
    Remote(WireError),
}

impl Diagnostic for AgentError {
    fn code(&self) -> ErrorCode {
        match self {
            AgentError::Remote(e) => e.code,
            AgentError::Protocol { .. } => ErrorCode::FailedPrecondition,
            _ => ErrorCode::AgentFailed,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            AgentError::Remote(e) => e.hint.clone(),
            AgentError::Protocol { .. } => {
                Some("rebuild the image with `banger image build --force`".into())
            }
            AgentError::Closed => Some("the VM may have stopped: check `banger vm show`".into()),
            _ => None,
        }
    }
}

/// A framed yamux stream carrying one request.
pub type AgentStream = Framed<Compat<yamux::Stream>, LengthDelimitedCodec>;

type OpenReply = oneshot::Sender<Result<yamux::Stream, AgentError>>;

/// An authenticated session with one guest agent. Cheap to clone.
#[derive(Clone)]
pub struct AgentConn {
    open_tx: mpsc::UnboundedSender<OpenReply>,
    closed: watch::Receiver<bool>,
    pub hello: GuestHello,
}

async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> Result<Vec<u8>, AgentError> {
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(AgentError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = agent::frame_len(len).map_err(|e| AgentError::Io(std::io::Error::other(e)))?;
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, payload: &[u8]) -> Result<(), AgentError> {
    let frame = agent::frame(payload).map_err(|e| AgentError::Io(std::io::Error::other(e)))?;
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Skips bytes up to and including [`agent::HELLO_SYNC`].
async fn skip_to_sync<R: AsyncRead + Unpin>(io: &mut R) -> Result<(), AgentError> {
    let sync = agent::HELLO_SYNC;
    let mut window = [0u8; 8];
    let mut seen = 0usize;
    let mut byte = [0u8; 1];
    while window != sync {
        match io.read_exact(&mut byte).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(AgentError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        window.rotate_left(1);
        window[7] = byte[0];
        seen += 1;
        if seen > agent::MAX_FRAME {
            return Err(AgentError::Io(std::io::Error::other(
                "no hello from the agent",
            )));
        }
    }
    if seen > sync.len() {
        tracing::debug!(
            skipped = seen - sync.len(),
            "discarded stale bytes before the agent hello"
        );
    }
    Ok(())
}

/// Waits for the guest's hello on a fresh channel (the guest speaks first).
pub async fn read_hello<S: AsyncRead + Unpin>(io: &mut S) -> Result<GuestHello, AgentError> {
    skip_to_sync(io).await?;
    let hello: GuestHello = agent::decode(&read_frame(io).await?)?;
    if hello.protocol != PROTOCOL_VERSION {
        return Err(AgentError::Protocol {
            got: hello.protocol,
        });
    }
    Ok(hello)
}

/// Authenticates with `token` after [`read_hello`] and starts the yamux session.
pub async fn authenticate<S>(
    mut io: S,
    hello: GuestHello,
    token: &str,
) -> Result<AgentConn, AgentError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    write_frame(
        &mut io,
        &agent::encode(&HostAuth {
            token: token.to_string(),
        }),
    )
    .await?;
    let reply: AuthReply = agent::decode(&read_frame(&mut io).await?)?;
    reply.map_err(AgentError::Remote)?;

    let conn = yamux::Connection::new(io.compat(), yamux::Config::default(), yamux::Mode::Client);
    let (open_tx, open_rx) = mpsc::unbounded_channel();
    let (closed_tx, closed) = watch::channel(false);
    tokio::spawn(drive(conn, open_rx, closed_tx));
    Ok(AgentConn {
        open_tx,
        closed,
        hello,
    })
}

/// Polls the yamux connection: opens outbound streams on request and refuses inbound
/// ones (the guest never opens streams).
async fn drive<T>(
    mut conn: yamux::Connection<T>,
    mut open_rx: mpsc::UnboundedReceiver<OpenReply>,
    closed_tx: watch::Sender<bool>,
) where
    T: futures::AsyncRead + futures::AsyncWrite + Unpin,
{
    let mut waiting: VecDeque<OpenReply> = VecDeque::new();
    let result = futures::future::poll_fn(|cx| {
        while let Poll::Ready(Some(tx)) = open_rx.poll_recv(cx) {
            waiting.push_back(tx);
        }
        while !waiting.is_empty() {
            match conn.poll_new_outbound(cx) {
                Poll::Ready(res) => {
                    if let Some(tx) = waiting.pop_front() {
                        let _ = tx.send(res.map_err(AgentError::from));
                    }
                }
                Poll::Pending => break,
            }
        }
        loop {
            match conn.poll_next_inbound(cx) {
                Poll::Ready(Some(Ok(stream))) => drop(stream),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(cause = %e, "agent session ended");
    }
    for tx in waiting {
        let _ = tx.send(Err(AgentError::Closed));
    }
    let _ = closed_tx.send(true);
}

impl AgentConn {
    /// Opens a stream and sends `req` on it.
    pub async fn request(&self, req: &AgentRequest) -> Result<AgentStream, AgentError> {
        let (tx, rx) = oneshot::channel();
        self.open_tx.send(tx).map_err(|_| AgentError::Closed)?;
        let stream = rx.await.map_err(|_| AgentError::Closed)??;
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(agent::MAX_FRAME)
            .new_codec();
        let mut framed = Framed::new(stream.compat(), codec);
        framed.send(bytes::Bytes::from(agent::encode(req))).await?;
        Ok(framed)
    }

    /// Round trip to the agent; answers its uptime in milliseconds.
    pub async fn ping(&self) -> Result<u64, AgentError> {
        let mut s = self.request(&AgentRequest::Ping).await?;
        match next_frame(&mut s).await? {
            GuestFrame::Pong { uptime_ms } => Ok(uptime_ms),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the guest to shut down cleanly; returns once the agent acknowledged.
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        let mut s = self
            .request(&AgentRequest::Shutdown { reboot: false })
            .await?;
        match next_frame(&mut s).await? {
            GuestFrame::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Gives a guest restored from a snapshot its own identity; returns once the
    /// agent has applied it (from then on it accepts only `id.token`).
    pub async fn reconfigure(&self, id: &agent::GuestIdentity) -> Result<(), AgentError> {
        let mut s = self.request(&AgentRequest::Reconfigure(id.clone())).await?;
        match next_frame(&mut s).await? {
            GuestFrame::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Waits until the guest's sshd accepts connections; `false` when it has none.
    pub async fn ssh_ready(&self) -> Result<bool, AgentError> {
        let mut s = self.request(&AgentRequest::SshReady).await?;
        match next_frame(&mut s).await? {
            GuestFrame::Ssh { listening } => Ok(listening),
            other => Err(unexpected(other)),
        }
    }

    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves when the session ends.
    pub async fn closed(&self) {
        let mut rx = self.closed.clone();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// Reads the next guest frame of a stream.
pub async fn next_frame(s: &mut AgentStream) -> Result<GuestFrame, AgentError> {
    match s.next().await {
        Some(Ok(bytes)) => match agent::decode::<GuestFrame>(&bytes)? {
            GuestFrame::Error(e) => Err(AgentError::Remote(e)),
            frame => Ok(frame),
        },
        Some(Err(e)) => Err(e.into()),
        None => Err(AgentError::Closed),
    }
}

/// Sends one host frame on a stream.
pub async fn send_frame(s: &mut AgentStream, frame: &HostFrame) -> Result<(), AgentError> {
    s.send(bytes::Bytes::from(agent::encode(frame))).await?;
    Ok(())
}

pub fn unexpected(frame: GuestFrame) -> AgentError {
    AgentError::Io(std::io::Error::other(format!(
        "unexpected agent frame {frame:?}"
    )))
}
