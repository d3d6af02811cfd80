//! Frame I/O: 4-byte big-endian length + postcard payload.
//!
//! The handshake frames before yamux starts are read with exact reads and no buffering,
//! so not one byte of the yamux session that follows is swallowed. Inside yamux streams
//! the same framing is done by [`LengthDelimitedCodec`].

use std::io;

use banger_wire::agent::{decode, encode, frame, frame_len, HOST_KNOCK, MAX_FRAME};
use bytes::Bytes;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("channel i/o failed")]
    Io(#[from] io::Error),
    #[error("peer sent a {len}-byte frame, larger than the {MAX_FRAME}-byte limit")]
    TooLarge { len: usize },
    #[error("peer sent a malformed frame")]
    Decode(#[from] banger_wire::agent::DecodeError),
    #[error("peer closed the stream")]
    Closed,
}

/// Writes one length-prefixed frame and flushes it.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = frame(&encode(msg)).map_err(|e| FrameError::TooLarge { len: e.len })?;
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads exactly one length-prefixed frame (`read_exact` of the length, then of the
/// payload, so the stream is left at the next byte), skipping any [`HOST_KNOCK`]s
/// before it. A host that
/// knocked just as the guest's hello went out already has that hello: the knock asks for
/// nothing more. (A knock's first four bytes, read as a length, exceed [`MAX_FRAME`], so
/// no frame is mistaken for one.)
pub async fn read_frame_after_knocks<R, T>(r: &mut R) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    loop {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await.map_err(eof_is_closed)?;
        if len != HOST_KNOCK[..4] {
            return read_payload(r, len).await;
        }
        let mut rest = [0u8; HOST_KNOCK.len() - 4];
        r.read_exact(&mut rest).await.map_err(eof_is_closed)?;
        if rest != HOST_KNOCK[4..] {
            return Err(FrameError::TooLarge {
                len: u32::from_be_bytes(len) as usize,
            });
        }
        tracing::debug!("the host knocked after the hello; still waiting for its auth");
    }
}

async fn read_payload<R, T>(r: &mut R, len: [u8; 4]) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let len = frame_len(len).map_err(|e| FrameError::TooLarge { len: e.len })?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.map_err(eof_is_closed)?;
    Ok(decode(&payload)?)
}

fn eof_is_closed(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Closed
    } else {
        FrameError::Io(e)
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

pub type StreamIo = Compat<yamux::Stream>;
pub type FrameReader = FramedRead<ReadHalf<StreamIo>, LengthDelimitedCodec>;
pub type FrameWriter = FramedWrite<WriteHalf<StreamIo>, LengthDelimitedCodec>;

/// Splits a yamux stream into a frame reader and a frame writer.
pub fn split_stream(stream: yamux::Stream) -> (FrameReader, FrameWriter) {
    let (r, w) = tokio::io::split(stream.compat());
    (FramedRead::new(r, codec()), FramedWrite::new(w, codec()))
}

/// Reads and decodes the next frame of a framed stream.
pub async fn next_frame<S, T>(frames: &mut S) -> Result<T, FrameError>
where
    S: Stream<Item = io::Result<bytes::BytesMut>> + Unpin,
    T: DeserializeOwned,
{
    match frames.next().await {
        Some(Ok(bytes)) => Ok(decode(&bytes)?),
        Some(Err(e)) => Err(e.into()),
        None => Err(FrameError::Closed),
    }
}

/// Encodes `msg` and queues it on a framed sink without flushing.
pub async fn feed_frame<S, T>(sink: &mut S, msg: &T) -> Result<(), FrameError>
where
    S: Sink<Bytes, Error = io::Error> + Unpin,
    T: Serialize,
{
    sink.feed(Bytes::from(encode(msg))).await?;
    Ok(())
}

/// Encodes `msg`, sends it on a framed sink and flushes.
pub async fn send_frame<S, T>(sink: &mut S, msg: &T) -> Result<(), FrameError>
where
    S: Sink<Bytes, Error = io::Error> + Unpin,
    T: Serialize,
{
    sink.send(Bytes::from(encode(msg))).await?;
    Ok(())
}

/// Flushes frames queued with [`feed_frame`].
pub async fn flush(writer: &mut FrameWriter) -> io::Result<()> {
    SinkExt::<Bytes>::flush(writer).await
}

/// Flushes and closes the write side of a stream (a yamux FIN).
pub async fn close(writer: &mut FrameWriter) -> io::Result<()> {
    SinkExt::<Bytes>::close(writer).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_wire::agent::HostAuth;

    #[tokio::test]
    async fn exact_read_leaves_following_bytes_unread() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let auth = HostAuth {
            token: "t0k".into(),
        };
        write_frame(&mut a, &auth).await.unwrap();
        a.write_all(b"yamux bytes").await.unwrap();
        drop(a);

        let got: HostAuth = read_frame_after_knocks(&mut b).await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();

        assert_eq!(got, auth);
        assert_eq!(rest, b"yamux bytes");
    }

    #[tokio::test]
    async fn knocks_before_the_auth_are_skipped_and_a_garbled_one_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let auth = HostAuth {
            token: "t0k".into(),
        };
        a.write_all(&HOST_KNOCK).await.unwrap();
        a.write_all(&HOST_KNOCK).await.unwrap();
        write_frame(&mut a, &auth).await.unwrap();
        let got: HostAuth = read_frame_after_knocks(&mut b).await.unwrap();
        assert_eq!(got, auth);

        a.write_all(&HOST_KNOCK[..4]).await.unwrap();
        a.write_all(b"not-a-knock!").await.unwrap();
        let got = read_frame_after_knocks::<_, HostAuth>(&mut b).await;
        assert!(matches!(got, Err(FrameError::TooLarge { .. })), "{got:?}");
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();

        let got = read_frame_after_knocks::<_, HostAuth>(&mut b).await;

        assert!(matches!(got, Err(FrameError::TooLarge { .. })), "{got:?}");
    }
}
