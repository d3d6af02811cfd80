//! The channel loop: connect, handshake, serve, and start over when the host goes away.

use std::sync::Arc;

use crate::channel::{Backoff, Channel, ChannelError, ChannelKind};
use crate::logging::chain;
use crate::session::{self, Ctx, Handshake, SessionEnd};

/// Serves hosts on `kind` forever; returns only when a host asked for a shutdown
/// (which only an agent in [`session::Role::Init`] accepts), with its `reboot` flag.
pub async fn serve(kind: ChannelKind, ctx: Arc<Ctx>) -> Result<bool, ChannelError> {
    let mut channel = Channel::open(kind).await?;
    let mut backoff = Backoff::new();
    loop {
        let io = channel.connect().await;
        match session::handshake(io, &ctx).await {
            Ok(Handshake::Accepted(io)) => {
                backoff.reset();
                tracing::info!("host authenticated; session up");
                match session::serve_yamux(io, ctx.clone()).await {
                    Ok(SessionEnd::HostClosed) => tracing::info!("host disconnected"),
                    Ok(SessionEnd::Shutdown { reboot }) => return Ok(reboot),
                    Err(e) => tracing::warn!(cause = %chain(&e), "session ended"),
                }
            }
            Ok(Handshake::Refused) => {
                tracing::warn!("host presented a wrong token; dropping it");
                channel.drop_host().await;
            }
            Err(e) => {
                tracing::info!(cause = %chain(&e), "handshake did not complete; starting over");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Role;
    use crate::testhost::Host;
    use crate::tests::{ctx, TOKEN};
    use banger_wire::agent::{AgentRequest, GuestFrame};
    use banger_wire::ErrorCode;
    use tokio::net::UnixListener;

    fn is_pong(frame: &GuestFrame) -> bool {
        matches!(frame, GuestFrame::Pong { .. })
    }

    #[tokio::test]
    async fn agent_reconnects_after_the_host_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let agent = tokio::spawn(serve(ChannelKind::Unix(path), ctx(Role::Serve)));

        let (first, _) = listener.accept().await.unwrap();
        let host = Host::connect(first, TOKEN).await.unwrap();
        let first_pong = host.roundtrip(&AgentRequest::Ping).await;
        host.disconnect();
        let (second, _) = listener.accept().await.unwrap();
        let host = Host::connect(second, TOKEN).await.unwrap();
        let second_pong = host.roundtrip(&AgentRequest::Ping).await;
        agent.abort();

        assert!(is_pong(&first_pong), "{first_pong:?}");
        assert!(is_pong(&second_pong), "{second_pong:?}");
    }

    #[tokio::test]
    async fn reconfigure_rekeys_the_token_and_renews_the_boot_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let agent = tokio::spawn(serve(ChannelKind::Unix(path), ctx(Role::Serve)));
        let identity = banger_wire::agent::GuestIdentity {
            token: "new-token".into(),
            hostname: "clone".into(),
            ip: None,
            gateway: None,
            dns: None,
            mac: None,
            unix_time_ms: 0,
            entropy: vec![1; 32],
        };

        let (first, _) = listener.accept().await.unwrap();
        let host = Host::connect(first, TOKEN).await.unwrap();
        let reply = host.roundtrip(&AgentRequest::Reconfigure(identity)).await;
        host.disconnect();
        let (second, _) = listener.accept().await.unwrap();
        let old_token = Host::connect(second, TOKEN).await.err().unwrap();
        let (third, _) = listener.accept().await.unwrap();
        let host = Host::connect(third, "new-token").await.unwrap();
        agent.abort();

        assert_eq!(reply, GuestFrame::Ok);
        assert_eq!(old_token.code, ErrorCode::PermissionDenied);
        assert_ne!(host.hello.boot_id, "boot-1");
    }

    #[tokio::test]
    async fn refused_host_is_dropped_and_the_next_one_served() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let agent = tokio::spawn(serve(ChannelKind::Unix(path), ctx(Role::Serve)));

        let (first, _) = listener.accept().await.unwrap();
        let refused = Host::connect(first, "wrong").await.err().unwrap();
        let (second, _) = listener.accept().await.unwrap();
        let host = Host::connect(second, TOKEN).await.unwrap();
        let pong = host.roundtrip(&AgentRequest::Ping).await;
        agent.abort();

        assert_eq!(refused.code, ErrorCode::PermissionDenied);
        assert!(is_pong(&pong), "{pong:?}");
    }
}
