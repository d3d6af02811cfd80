//! Bytes written on a blocking thread, read by async code: the tar streams of `vm cp`
//! and of a workspace ship go through here into an exec stream. At most a few
//! [`CHUNK`]s are in flight, so nothing is staged on disk or held whole in memory; the
//! writer waits while the reader (the guest) is busy.

use std::fmt::Display;
use std::io::{self, Write};
use std::pin::Pin;

use banger_wire::agent::CHUNK;
use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::io::StreamReader;

/// Chunks in flight between the writing thread and the reader.
const IN_FLIGHT: usize = 4;

type ChunkStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// What the writing thread writes, as it is written.
pub type Reader = StreamReader<ChunkStream, Bytes>;

/// Runs `produce` on a blocking thread with a writer whose bytes the returned reader
/// yields. When `produce` fails, the reader fails too: it never ends cleanly on partial
/// output. The handle says how `produce` went.
pub fn spawn<T, E, F>(produce: F) -> (Reader, JoinHandle<Result<T, E>>)
where
    F: FnOnce(ChannelWriter) -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Display + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(IN_FLIGHT);
    let failed = tx.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let result = produce(ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            closed: false,
        });
        if let Err(e) = &result {
            let _ = failed.blocking_send(Err(io::Error::other(e.to_string())));
        }
        result
    });
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (StreamReader::new(Box::pin(chunks) as ChunkStream), handle)
}

/// Buffers writes into [`CHUNK`]-sized pieces for the reader; `flush` sends what is
/// buffered.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    closed: bool,
}

impl ChannelWriter {
    /// Whether the reader went away (a write failed for that reason).
    pub fn is_closed(&self) -> bool {
        self.closed
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            self.closed = true;
            io::Error::new(io::ErrorKind::BrokenPipe, "the exec stream went away")
        })
    }
}
