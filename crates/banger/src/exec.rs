//! The client end of an exec stream: stdio pumping, signals, TTY raw mode and resize.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use banger_wire::agent::{self, ExitStatus, GuestFrame, HostFrame, TtySize, CHUNK};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use nix::sys::termios;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::error::CliError;

/// The local terminal size, if stdin is a terminal.
pub fn tty_size() -> Option<TtySize> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdin()).ok()?;
    Some(TtySize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}

/// Puts the terminal in raw mode until dropped.
struct RawMode {
    saved: termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(
            std::io::stdin().as_fd(),
            termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// Pumps stdio over an exec stream until the guest process exits; returns its exit
/// code (a signal n maps to 128+n).
pub async fn pump<S>(io: S, tty: bool, forward_stdin: bool) -> Result<i32, CliError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(agent::MAX_FRAME)
        .new_codec();
    let (mut sink, mut frames) = Framed::new(io, codec).split();
    let _raw = if tty && std::io::stdin().is_terminal() {
        RawMode::enter()
    } else {
        None
    };

    let (tx, mut rx) = tokio::sync::mpsc::channel::<HostFrame>(16);
    if forward_stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; CHUNK];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(HostFrame::StdinEof).await;
                        break;
                    }
                    Ok(n) => {
                        if tx.send(HostFrame::Stdin(buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    } else {
        let _ = tx.send(HostFrame::StdinEof).await;
    }
    {
        // Ctrl-C and friends go to the guest process; in TTY mode the terminal sends
        // them as bytes instead.
        let tx = tx.clone();
        tokio::spawn(async move {
            let (Ok(mut int), Ok(mut term), Ok(mut winch)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::window_change()),
            ) else {
                return;
            };
            loop {
                let frame = tokio::select! {
                    _ = int.recv() => HostFrame::Signal(2),
                    _ = term.recv() => HostFrame::Signal(15),
                    _ = winch.recv() => match tty_size() {
                        Some(size) => HostFrame::Resize(size),
                        None => continue,
                    },
                };
                if tx.send(frame).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if sink.send(Bytes::from(agent::encode(&frame))).await.is_err() {
                break;
            }
        }
    });

    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let result = loop {
        let Some(bytes) = frames.next().await else {
            break Err(CliError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the exec stream ended before the command exited (did the VM stop?)",
            )));
        };
        match agent::decode::<GuestFrame>(&bytes?)? {
            GuestFrame::Stdout(d) => {
                stdout.write_all(&d).await?;
                stdout.flush().await?;
            }
            GuestFrame::Stderr(d) => {
                stderr.write_all(&d).await?;
                stderr.flush().await?;
            }
            GuestFrame::Exit(status) => break Ok(status),
            GuestFrame::Error(e) => break Err(CliError::Remote(e)),
            GuestFrame::Started { .. }
            | GuestFrame::Pong { .. }
            | GuestFrame::Ok
            | GuestFrame::Ssh { .. } => {}
        }
    };
    writer.abort();
    result.map(ExitStatus::shell_code)
}
