//! `banger-agent connect HOST:PORT`: joins stdin/stdout to a TCP connection, like
//! `nc -N`. Run through the exec stream it tunnels a connection to a guest port over
//! the agent channel (banger's SSH ProxyCommand for VMs without a network).
//!
//! stdin → socket until stdin ends (then the socket's write side is shut down), and
//! socket → stdout until the peer ends; the command exits when both are done, or as
//! soon as either direction fails.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("copying stdin to {addr} failed")]
    Up {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("copying {addr} to stdout failed")]
    Down {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Connects to `addr` and pipes this process's stdio through it.
pub fn main(addr: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let stream = dial(addr).await?;
        pipe(tokio::io::stdin(), tokio::io::stdout(), stream, addr).await
    });
    // stdin is read on a blocking thread that may still wait for input nobody sends.
    rt.shutdown_background();
    Ok(result?)
}

/// Opens the TCP connection (Nagle off: this carries interactive sessions).
pub async fn dial(addr: &str) -> Result<TcpStream, ConnectError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ConnectError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    stream.set_nodelay(true).ok();
    Ok(stream)
}

/// Copies `input` → `stream` and `stream` → `output` until both directions end.
pub async fn pipe<I, O, S>(
    mut input: I,
    mut output: O,
    stream: S,
    addr: &str,
) -> Result<(), ConnectError>
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let up = async {
        tokio::io::copy(&mut input, &mut wr).await?;
        wr.shutdown().await
    };
    let down = async {
        tokio::io::copy(&mut rd, &mut output).await?;
        output.flush().await
    };
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => {
                r.map_err(|source| ConnectError::Up { addr: addr.to_string(), source })?;
                up_done = true;
            }
            r = &mut down, if !down_done => {
                r.map_err(|source| ConnectError::Down { addr: addr.to_string(), source })?;
                down_done = true;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn bytes_flow_both_ways_and_end_when_both_sides_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // A server that reads everything, then answers with its reversal and closes.
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            sock.read_to_end(&mut got).await.unwrap();
            got.reverse();
            sock.write_all(&got).await.unwrap();
        });
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let stream = dial(&addr).await.unwrap();
        let mut output = Vec::new();

        pipe(&input[..], &mut output, stream, &addr).await.unwrap();

        server.await.unwrap();
        let mut want = input.clone();
        want.reverse();
        assert_eq!(output, want);
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);

        let err = dial(&addr).await.unwrap_err();

        assert_eq!(err.to_string(), format!("cannot connect to {addr}"));
    }
}
