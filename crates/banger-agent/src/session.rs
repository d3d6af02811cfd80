//! One agent session over a connected channel: handshake, then a yamux server whose
//! every inbound stream carries one request.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use banger_wire::agent::{
    AgentRequest, AuthReply, GuestFrame, GuestHello, GuestIdentity, HostAuth, HELLO_SYNC,
    PROTOCOL_VERSION,
};
use banger_wire::{ErrorCode, WireError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::compat::TokioAsyncReadCompatExt;
use tracing::Instrument;

use crate::detached::Detached;
use crate::exec::{self, ExecDefaults};
use crate::frame::{next_frame, read_frame_after_knocks, split_stream, write_frame, FrameError};
use crate::run::reply_once;
use crate::sys;

/// How long closing a session may take after a shutdown was acknowledged.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// What the agent is allowed to do to the machine it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The agent is the guest's init: `Shutdown` powers the VM off.
    Init,
    /// Started some other way (systemd unit, tests): `Shutdown` is refused.
    Serve,
}

/// Everything a session needs, passed in explicitly.
#[derive(Debug)]
pub struct Ctx {
    /// `banger.token`, until a [`AgentRequest::Reconfigure`] re-keys it; with none,
    /// every host is refused.
    pub token: Mutex<Option<String>>,
    /// Told to every host in the hello; a re-keyed (cloned) guest gets a fresh one.
    pub boot_id: Mutex<String>,
    /// Guest uptime when the agent came up.
    pub started_ms: u64,
    pub role: Role,
    pub exec: ExecDefaults,
    /// The commands started with [`AgentRequest::ExecDetached`]; they outlive sessions.
    pub detached: Arc<Detached>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("handshake with the host failed")]
    Handshake(#[source] FrameError),
    #[error("yamux session failed")]
    Yamux(#[source] yamux::ConnectionError),
}

/// How an authenticated session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The host closed the channel.
    HostClosed,
    /// The host asked for a shutdown, which was acknowledged; the channel is closed.
    Shutdown { reboot: bool },
}

/// Outcome of the handshake.
#[derive(Debug)]
pub enum Handshake<T> {
    Accepted(T),
    /// The host presented the wrong token; it was told so and must be dropped.
    Refused,
}

/// Says hello, checks the host's token and answers it. Reads are exact, so `io` is
/// positioned at the first yamux byte afterwards.
pub async fn handshake<T>(mut io: T, ctx: &Ctx) -> Result<Handshake<T>, SessionError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let hello = GuestHello {
        protocol: PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        boot_id: lock(&ctx.boot_id).clone(),
        uptime_ms: ctx.started_ms,
    };
    io.write_all(&HELLO_SYNC)
        .await
        .map_err(|e| SessionError::Handshake(e.into()))?;
    write_frame(&mut io, &hello)
        .await
        .map_err(SessionError::Handshake)?;
    let auth: HostAuth = read_frame_after_knocks(&mut io)
        .await
        .map_err(SessionError::Handshake)?;
    let expected = lock(&ctx.token).clone();
    let verdict = check_token(expected.as_deref(), &auth.token);
    let accepted = verdict.is_ok();
    write_frame(&mut io, &verdict)
        .await
        .map_err(SessionError::Handshake)?;
    Ok(if accepted {
        Handshake::Accepted(io)
    } else {
        Handshake::Refused
    })
}

/// A poisoned lock still holds a whole value (only assignments happen under it).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn check_token(expected: Option<&str>, presented: &str) -> AuthReply {
    let Some(expected) = expected else {
        return Err(WireError::new(
            ErrorCode::PermissionDenied,
            "the guest has no banger.token on its kernel command line; refusing every host",
        ));
    };
    // Constant time in the token's content.
    let same_len = expected.len() == presented.len();
    let diff = expected
        .bytes()
        .zip(presented.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if same_len && diff == 0 {
        Ok(())
    } else {
        Err(WireError::new(
            ErrorCode::PermissionDenied,
            "wrong agent token",
        ))
    }
}

/// Runs the yamux server until the host goes away or asks for a shutdown. Every
/// request still running when it ends is aborted, which kills its processes.
pub async fn serve_yamux<T>(io: T, ctx: Arc<Ctx>) -> Result<SessionEnd, SessionError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn =
        yamux::Connection::new(io.compat(), yamux::Config::default(), yamux::Mode::Server);
    let mut handlers = JoinSet::new();
    let shutdown = Arc::new(ShutdownRequest::default());
    let end = loop {
        tokio::select! {
            inbound = poll_fn(|cx| conn.poll_next_inbound(cx)) => match inbound {
                Some(Ok(stream)) => {
                    handlers.spawn(handle_stream(stream, ctx.clone(), shutdown.clone()));
                }
                Some(Err(e)) => break Err(SessionError::Yamux(e)),
                None => break Ok(SessionEnd::HostClosed),
            },
            () = shutdown.acknowledged.notified() => {
                // Flushes every queued frame (the `Ok` reply included), then says goodbye.
                // Bounded: a serial port blocks writes once the host has disconnected.
                let close = poll_fn(|cx| conn.poll_close(cx));
                match tokio::time::timeout(CLOSE_GRACE, close).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(cause = %e, "closing the session after shutdown"),
                    Err(_) => tracing::debug!("host gone before the session closed cleanly"),
                }
                let reboot = shutdown.reboot.get().copied().unwrap_or(false);
                break Ok(SessionEnd::Shutdown { reboot });
            }
            Some(joined) = handlers.join_next(), if !handlers.is_empty() => {
                if let Err(e) = joined {
                    tracing::error!(cause = %e, "request handler failed");
                }
            }
        }
    };
    // Once a shutdown was requested it happens, even if the host hung up first.
    let end = match shutdown.reboot.get() {
        Some(&reboot) => Ok(SessionEnd::Shutdown { reboot }),
        None => end,
    };
    while handlers.try_join_next().is_some() {}
    let running = handlers.len();
    handlers.shutdown().await;
    if running > 0 {
        tracing::info!(
            requests = running,
            "session over; aborted its running requests"
        );
    }
    end
}

/// Handshake followed by the yamux server: the whole session on one connected channel.
/// `Ok(None)` means the host was refused. (The serve loop runs the two halves itself.)
#[cfg(test)]
pub async fn run_session<T>(io: T, ctx: Arc<Ctx>) -> Result<Option<SessionEnd>, SessionError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match handshake(io, &ctx).await? {
        Handshake::Accepted(io) => serve_yamux(io, ctx).await.map(Some),
        Handshake::Refused => Ok(None),
    }
}

/// A shutdown request, shared between its handler and the session loop.
#[derive(Default)]
struct ShutdownRequest {
    /// Set before the reply goes out, so the session cannot miss it.
    reboot: OnceLock<bool>,
    /// Signalled once the `Ok` reply is queued: time to close the session.
    acknowledged: Notify,
}

async fn handle_stream(stream: yamux::Stream, ctx: Arc<Ctx>, shutdown: Arc<ShutdownRequest>) {
    let (mut reader, mut writer) = split_stream(stream);
    let request: AgentRequest = match next_frame(&mut reader).await {
        Ok(request) => request,
        Err(FrameError::Closed) => return,
        Err(e) => {
            let err = WireError::from_error(ErrorCode::InvalidArgument, &e, None);
            reply_once(&mut writer, &GuestFrame::Error(err)).await;
            return;
        }
    };
    match request {
        AgentRequest::Ping => {
            let pong = GuestFrame::Pong {
                uptime_ms: sys::uptime_ms(),
            };
            reply_once(&mut writer, &pong).await;
        }
        AgentRequest::Exec(spec) => {
            let span = tracing::info_span!("exec", argv0 = spec.argv.first().map(String::as_str));
            exec::serve(spec, &ctx.exec, reader, writer)
                .instrument(span)
                .await;
        }
        AgentRequest::Shutdown { reboot } => match ctx.role {
            Role::Serve => {
                let err = WireError::new(
                    ErrorCode::FailedPrecondition,
                    "this agent is not the guest's init; it will not shut the machine down",
                )
                .with_hint("stop the guest with its own init system");
                reply_once(&mut writer, &GuestFrame::Error(err)).await;
            }
            Role::Init => {
                tracing::info!(reboot, "host requested shutdown");
                let _ = shutdown.reboot.set(reboot);
                reply_once(&mut writer, &GuestFrame::Ok).await;
                shutdown.acknowledged.notify_one();
            }
        },
        AgentRequest::Reconfigure(id) => {
            let reply = reconfigure(&ctx, &id).await;
            reply_once(&mut writer, &reply).await;
        }
        AgentRequest::SshReady => {
            let listening = match ctx.role {
                Role::Init => crate::ssh::ready().await,
                Role::Serve => false,
            };
            reply_once(&mut writer, &GuestFrame::Ssh { listening }).await;
        }
        AgentRequest::ExecDetached(spec) => {
            let reply = ctx.detached.start(spec, &ctx.exec);
            reply_once(&mut writer, &reply).await;
        }
        AgentRequest::DetachedList => reply_once(&mut writer, &ctx.detached.list()).await,
        AgentRequest::DetachedOutput { id, follow } => {
            ctx.detached.output(&id, follow, reader, writer).await;
        }
        AgentRequest::DetachedKill { id, signal } => {
            reply_once(&mut writer, &ctx.detached.kill(&id, signal)).await;
        }
    }
}

/// Takes on a new identity after a snapshot restore. The new token holds from the next
/// handshake on (this session stays authenticated). The machine (clock, randomness,
/// name, network) is changed only by the agent that is init; one started under
/// another init leaves that to it.
async fn reconfigure(ctx: &Ctx, id: &GuestIdentity) -> GuestFrame {
    let t0 = std::time::Instant::now();
    let failures = match ctx.role {
        Role::Init => {
            let failures = crate::identity::apply(id).await;
            // After the reseed: clones must not draw their new keys from shared state.
            crate::ssh::rekey();
            failures
        }
        Role::Serve => Vec::new(),
    };
    let apply_ms = t0.elapsed().as_millis() as u64;
    *lock(&ctx.token) = Some(id.token.clone());
    *lock(&ctx.boot_id) = hex::encode(rand::random::<[u8; 16]>());
    tracing::info!(hostname = %id.hostname, ip = id.ip.as_deref(), apply_ms, failures = failures.len(), "identity changed");
    if failures.is_empty() {
        GuestFrame::Ok
    } else {
        GuestFrame::Error(WireError::new(ErrorCode::AgentFailed, failures.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn right_token_is_accepted() {
        assert_eq!(check_token(Some("abc"), "abc"), Ok(()));
    }

    #[test]
    fn prefix_of_the_token_is_refused() {
        let got = check_token(Some("abcdef"), "abc").unwrap_err();
        assert_eq!(got.code, ErrorCode::PermissionDenied);
    }

    #[test]
    fn no_configured_token_refuses_everyone() {
        let got = check_token(None, "").unwrap_err();
        assert_eq!(got.code, ErrorCode::PermissionDenied);
    }
}
