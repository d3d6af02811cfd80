//! Detached commands through real sessions over in-memory pipes (hermetic, like
//! [`crate::tests`]).

use std::sync::Arc;

use banger_wire::agent::{AgentRequest, DetachedInfo, DetachedState, GuestFrame};
use banger_wire::ErrorCode;

use crate::session::{run_session, Ctx, Role};
use crate::testhost::{collect, Finished, Host};
use crate::tests::{cmd, ctx, TOKEN};

async fn session(ctx: &Arc<Ctx>) -> Host {
    let (host_io, guest_io) = tokio::io::duplex(256 * 1024);
    tokio::spawn(run_session(guest_io, ctx.clone()));
    Host::connect(host_io, TOKEN).await.expect("authenticated")
}

async fn detach(host: &Host, argv: &[&str], timeout_ms: Option<u64>) -> DetachedInfo {
    let mut spec = cmd(argv);
    spec.timeout_ms = timeout_ms;
    match host.roundtrip(&AgentRequest::ExecDetached(spec)).await {
        GuestFrame::Detached(info) => info,
        other => panic!("not started: {other:?}"),
    }
}

async fn output(host: &Host, id: &str, follow: bool) -> Finished {
    let req = AgentRequest::DetachedOutput {
        id: id.to_string(),
        follow,
    };
    let (reader, _writer) = host.request(&req).await;
    collect(reader).await
}

fn ended(frame: &GuestFrame) -> (DetachedState, Option<i32>, bool) {
    match frame {
        GuestFrame::Detached(i) => (i.state, i.exit_code, i.timed_out),
        other => panic!("no state: {other:?}"),
    }
}

#[tokio::test]
async fn a_detached_command_outlives_its_session_and_its_output_is_fetched_once() {
    let ctx = ctx(Role::Serve);
    let first = session(&ctx).await;
    let info = detach(
        &first,
        &["sh", "-c", "echo out; echo err >&2; sleep 0.3; exit 3"],
        None,
    )
    .await;
    first.disconnect();

    let second = session(&ctx).await;
    let listed = second.roundtrip(&AgentRequest::DetachedList).await;
    let done = output(&second, &info.id, true).await;
    let again = output(&second, &info.id, false).await;

    assert_eq!(info.state, DetachedState::Running);
    assert!(
        matches!(&listed, GuestFrame::DetachedList(l) if l.len() == 1 && l[0].id == info.id),
        "{listed:?}"
    );
    assert_eq!(done.stdout, b"out\n");
    assert_eq!(done.stderr, b"err\n");
    assert_eq!(ended(&done.last), (DetachedState::Exited, Some(3), false));
    assert!(
        matches!(&again.last, GuestFrame::Error(e) if e.code == ErrorCode::NotFound),
        "{:?}",
        again.last
    );
}

#[tokio::test]
async fn without_follow_a_running_command_answers_what_it_wrote_so_far() {
    let ctx = ctx(Role::Serve);
    let host = session(&ctx).await;
    let info = detach(&host, &["sh", "-c", "echo early; exec sleep 30"], None).await;
    let mut early = output(&host, &info.id, false).await;
    while early.stdout.is_empty() {
        early = output(&host, &info.id, false).await;
    }

    let killed = host
        .roundtrip(&AgentRequest::DetachedKill {
            id: info.id.clone(),
            signal: 9,
        })
        .await;
    let done = output(&host, &info.id, true).await;

    assert_eq!(early.stdout, b"early\n");
    assert_eq!(ended(&early.last).0, DetachedState::Running);
    assert!(matches!(killed, GuestFrame::Detached(_)), "{killed:?}");
    assert_eq!(ended(&done.last), (DetachedState::Exited, Some(137), false));
}

#[tokio::test]
async fn a_timeout_kills_the_group_and_records_124() {
    let ctx = ctx(Role::Serve);
    let host = session(&ctx).await;
    let info = detach(&host, &["sh", "-c", "sleep 30 & wait"], Some(200)).await;

    let done = output(&host, &info.id, true).await;

    assert_eq!(ended(&done.last), (DetachedState::Exited, Some(124), true));
    assert!(group_gone(info.pid).await, "group {} still there", info.pid);
}

/// Whether process group `pgid` is empty (its killed members reaped) within 5 s.
async fn group_gone(pgid: u32) -> bool {
    let pgid = nix::unistd::Pid::from_raw(pgid as i32);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if nix::sys::signal::killpg(pgid, None).is_err() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_terminal_is_refused_and_unknown_ids_are_not_found() {
    let ctx = ctx(Role::Serve);
    let host = session(&ctx).await;
    let mut spec = cmd(&["true"]);
    spec.tty = Some(banger_wire::agent::TtySize { rows: 24, cols: 80 });

    let tty = host.roundtrip(&AgentRequest::ExecDetached(spec)).await;
    let unknown = host
        .roundtrip(&AgentRequest::DetachedKill {
            id: "../etc".into(),
            signal: 15,
        })
        .await;

    assert!(
        matches!(&tty, GuestFrame::Error(e) if e.code == ErrorCode::InvalidArgument),
        "{tty:?}"
    );
    assert!(
        matches!(&unknown, GuestFrame::Error(e) if e.code == ErrorCode::NotFound),
        "{unknown:?}"
    );
}
