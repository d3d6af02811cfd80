//! Session tests: the real guest session over an in-memory pipe, driven by the test host
//! in [`crate::testhost`]. Hermetic: no root, no devices; needs only `sh`, `cat`,
//! `printf`, `sleep` and `tty` from the test machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_wire::agent::{AgentRequest, ExecSpec, ExitStatus, GuestFrame, HostFrame, TtySize};
use banger_wire::ErrorCode;
use tokio::task::JoinHandle;

use crate::accounts::Accounts;
use crate::detached::Detached;
use crate::exec::ExecDefaults;
use crate::session::{run_session, Ctx, Role, SessionEnd, SessionError};
use crate::testhost::{collect, send, Finished, Host};

pub const TOKEN: &str = "s3cret-token";

type Guest = JoinHandle<Result<Option<SessionEnd>, SessionError>>;

pub fn ctx(role: Role) -> Arc<Ctx> {
    ctx_in(role, std::env::temp_dir().join("banger-no-accounts"))
}

/// A session context whose guest users live in the `etc/` under `accounts`.
fn ctx_in(role: Role, accounts: std::path::PathBuf) -> Arc<Ctx> {
    Arc::new(Ctx {
        token: std::sync::Mutex::new(Some(TOKEN.to_string())),
        boot_id: std::sync::Mutex::new("boot-1".into()),
        started_ms: 1234,
        role,
        exec: ExecDefaults {
            cwd: std::env::temp_dir(),
            accounts: Accounts::under(accounts),
        },
        detached: Arc::new(Detached::at(
            std::env::temp_dir().join(format!("banger-detached-{}", rand::random::<u32>())),
        )),
    })
}

fn start_guest(role: Role) -> (tokio::io::DuplexStream, Guest) {
    let (host_io, guest_io) = tokio::io::duplex(256 * 1024);
    let guest = tokio::spawn(run_session(guest_io, ctx(role)));
    (host_io, guest)
}

async fn connect(role: Role) -> (Host, Guest) {
    let (io, guest) = start_guest(role);
    let host = Host::connect(io, TOKEN).await.expect("authenticated");
    (host, guest)
}

pub fn cmd(argv: &[&str]) -> ExecSpec {
    ExecSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        cwd: None,
        tty: None,
        timeout_ms: None,
        user: None,
    }
}

fn error_code(frame: &GuestFrame) -> Option<ErrorCode> {
    match frame {
        GuestFrame::Error(e) => Some(e.code),
        _ => None,
    }
}

fn error_message(frame: &GuestFrame) -> String {
    match frame {
        GuestFrame::Error(e) => e.message.clone(),
        other => format!("not an error: {other:?}"),
    }
}

#[tokio::test]
async fn hello_carries_boot_facts() {
    let (host, _guest) = connect(Role::Serve).await;

    assert_eq!(host.hello.boot_id, "boot-1");
    assert_eq!(host.hello.uptime_ms, 1234);
}

#[tokio::test]
async fn wrong_token_is_refused_and_the_session_ends() {
    let (io, guest) = start_guest(Role::Serve);

    let refused = Host::connect(io, "not-the-token")
        .await
        .err()
        .expect("refused");
    let end = guest.await.unwrap().unwrap();

    assert_eq!(refused.code, ErrorCode::PermissionDenied);
    assert_eq!(end, None);
}

#[tokio::test]
async fn ping_answers_pong() {
    let (host, _guest) = connect(Role::Serve).await;

    let reply = host.roundtrip(&AgentRequest::Ping).await;

    assert!(matches!(reply, GuestFrame::Pong { .. }), "{reply:?}");
}

#[tokio::test]
async fn exit_code_is_reported() {
    let (host, _guest) = connect(Role::Serve).await;

    let done = host.exec(cmd(&["sh", "-c", "exit 42"]), b"").await;

    assert!(done.started);
    assert_eq!(done.last, GuestFrame::Exit(ExitStatus::Code(42)));
}

#[tokio::test]
async fn death_by_signal_is_reported_as_the_signal() {
    let (host, _guest) = connect(Role::Serve).await;

    let done = host.exec(cmd(&["sh", "-c", "kill -9 $$"]), b"").await;

    assert_eq!(done.last, GuestFrame::Exit(ExitStatus::Signal(9)));
}

#[tokio::test]
async fn stdout_and_stderr_stay_apart() {
    let (host, _guest) = connect(Role::Serve).await;

    let done = host
        .exec(cmd(&["sh", "-c", "echo out; echo err >&2"]), b"")
        .await;

    assert_eq!(done.stdout, b"out\n");
    assert_eq!(done.stderr, b"err\n");
}

#[tokio::test]
async fn argv_reaches_the_process_exactly() {
    let (host, _guest) = connect(Role::Serve).await;
    let tricky = [
        "a b",
        "it's",
        "\"q\"",
        "$HOME",
        "*",
        "back\\slash",
        "",
        "tab\there",
    ];
    let mut argv = vec!["printf", "[%s]\\n"];
    argv.extend(tricky);

    let done = host.exec(cmd(&argv), b"").await;

    let expected: String = tricky.iter().map(|a| format!("[{a}]\n")).collect();
    assert_eq!(String::from_utf8(done.stdout).unwrap(), expected);
    assert_eq!(done.last, GuestFrame::Exit(ExitStatus::Code(0)));
}

#[tokio::test]
async fn env_is_added_to_the_base_environment() {
    let (host, _guest) = connect(Role::Serve).await;
    let mut spec = cmd(&["sh", "-c", "echo \"$FOO|${PATH:+has-path}\""]);
    spec.env = vec![("FOO".into(), "b a r".into())];

    let done = host.exec(spec, b"").await;

    assert_eq!(done.stdout, b"b a r|has-path\n");
}

#[tokio::test]
async fn default_cwd_comes_from_the_context() {
    let (host, _guest) = connect(Role::Serve).await;

    let done = host.exec(cmd(&["pwd"]), b"").await;

    let expected = format!("{}\n", std::env::temp_dir().display());
    assert_eq!(String::from_utf8(done.stdout).unwrap(), expected);
}

#[tokio::test]
async fn missing_cwd_is_an_invalid_argument_naming_the_dir() {
    let (host, _guest) = connect(Role::Serve).await;
    let mut spec = cmd(&["true"]);
    spec.cwd = Some("/no/such/dir-banger".into());

    let done = host.exec(spec, b"").await;

    assert!(!done.started);
    assert_eq!(error_code(&done.last), Some(ErrorCode::InvalidArgument));
    assert!(error_message(&done.last).contains("/no/such/dir-banger"));
}

#[tokio::test]
async fn unknown_command_is_not_found_naming_it() {
    let (host, _guest) = connect(Role::Serve).await;
    let mut spec = cmd(&["banger-no-such-command", "x"]);
    // Only searchable directories: one the caller cannot enter turns ENOENT into EACCES.
    spec.env = vec![("PATH".into(), "/usr/bin:/bin".into())];

    let done = host.exec(spec, b"").await;

    assert!(!done.started);
    assert_eq!(error_code(&done.last), Some(ErrorCode::NotFound));
    assert!(error_message(&done.last).contains("banger-no-such-command"));
}

/// How many processes of this machine have exactly `argv` as their command line, once
/// those being killed had a moment to go (a zombie's command line reads empty).
fn running(argv: &[&str]) -> usize {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let count = || {
        fs_err::read_dir("/proc")
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|e| fs_err::read(e.path().join("cmdline")).ok())
                    .filter(|cmdline| *cmdline == wanted)
                    .count()
            })
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    while count() > 0 && t0.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
    }
    count()
}

#[tokio::test]
async fn timeout_kills_the_group_and_reports_timeout() {
    let (host, _guest) = connect(Role::Serve).await;
    // A length no other test sleeps, so its processes are this test's own.
    let mut spec = cmd(&["sh", "-c", "sleep 30.7301 & sleep 30.7301"]);
    spec.timeout_ms = Some(300);
    let began = Instant::now();

    let done = host.exec(spec, b"").await;

    assert_eq!(
        running(&["sleep", "30.7301"]),
        0,
        "a grandchild outlived the timeout"
    );
    assert_eq!(error_code(&done.last), Some(ErrorCode::Timeout));
    assert_eq!(
        error_message(&done.last),
        "command timed out after 0.3s and was killed"
    );
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn signal_frame_reaches_the_process() {
    let (host, _guest) = connect(Role::Serve).await;
    let spec = cmd(&["sh", "-c", "echo ready; exec sleep 30"]);
    let (mut reader, mut writer) = host.request(&AgentRequest::Exec(spec)).await;
    let started = crate::frame::next_frame::<_, GuestFrame>(&mut reader)
        .await
        .unwrap();
    let ready = crate::frame::next_frame::<_, GuestFrame>(&mut reader)
        .await
        .unwrap();

    send(&mut writer, &HostFrame::Signal(15)).await.unwrap();
    let done = collect(reader).await;

    assert!(matches!(started, GuestFrame::Started { .. }));
    assert_eq!(ready, GuestFrame::Stdout(b"ready\n".to_vec()));
    assert_eq!(done.last, GuestFrame::Exit(ExitStatus::Signal(15)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trips_through_cat_byte_identical() {
    let (host, _guest) = connect(Role::Serve).await;
    let input: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();

    let done = host.exec(cmd(&["cat"]), &input).await;

    assert_eq!(done.stdout.len(), input.len());
    assert!(done.stdout == input, "output differs from input");
    assert_eq!(done.last, GuestFrame::Exit(ExitStatus::Code(0)));
}

/// Throughput check: `cargo test -- --ignored --nocapture fifty`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow; measures throughput"]
async fn fifty_mib_through_cat() {
    let (host, _guest) = connect(Role::Serve).await;
    let input: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i ^ (i >> 9)) as u8)
        .collect();
    let began = Instant::now();

    let done = host.exec(cmd(&["cat"]), &input).await;

    let secs = began.elapsed().as_secs_f64();
    eprintln!(
        "50 MiB through cat in {secs:.2}s ({:.0} MiB/s)",
        50.0 / secs
    );
    assert!(done.stdout == input, "output differs from input");
}

#[tokio::test]
async fn tty_gives_a_pts_and_exit_zero() {
    let (host, _guest) = connect(Role::Serve).await;
    let mut spec = cmd(&["tty"]);
    spec.tty = Some(TtySize { rows: 24, cols: 80 });

    let done = host.exec(spec, b"").await;

    let out = String::from_utf8(done.stdout).unwrap();
    assert!(out.starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(done.last, GuestFrame::Exit(ExitStatus::Code(0)));
}

#[tokio::test]
async fn tty_has_the_requested_size_and_merges_stderr() {
    let (host, _guest) = connect(Role::Serve).await;
    let mut spec = cmd(&["sh", "-c", "stty size; echo err >&2"]);
    spec.tty = Some(TtySize {
        rows: 33,
        cols: 101,
    });

    let done = host.exec(spec, b"").await;

    assert_eq!(String::from_utf8(done.stdout).unwrap(), "33 101\r\nerr\r\n");
    assert!(done.stderr.is_empty());
}

#[tokio::test]
async fn host_leaving_kills_the_running_process() {
    let (host, guest) = connect(Role::Serve).await;
    let spec = cmd(&["sh", "-c", "echo $$; exec sleep 30"]);
    let (mut reader, _writer) = host.request(&AgentRequest::Exec(spec)).await;
    let _started = crate::frame::next_frame::<_, GuestFrame>(&mut reader)
        .await
        .unwrap();
    let GuestFrame::Stdout(pid) = crate::frame::next_frame(&mut reader).await.unwrap() else {
        panic!("expected the pid on stdout");
    };
    let pid = String::from_utf8(pid).unwrap().trim().to_string();

    host.disconnect();
    let end = guest.await.unwrap();

    assert!(
        end.is_err() || end.as_ref().unwrap() == &Some(SessionEnd::HostClosed),
        "{end:?}"
    );
    assert!(wait_until_dead(&pid).await, "pid {pid} still running");
}

/// True once `pid` is gone or a zombie (at most 5 s).
async fn wait_until_dead(pid: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let state = fs_err::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        if matches!(state, None | Some('Z') | Some('X')) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn shutdown_outside_init_is_a_failed_precondition() {
    let (host, _guest) = connect(Role::Serve).await;

    let reply = host
        .roundtrip(&AgentRequest::Shutdown { reboot: false })
        .await;

    assert_eq!(error_code(&reply), Some(ErrorCode::FailedPrecondition));
}

#[tokio::test]
async fn shutdown_as_init_is_acknowledged_and_ends_the_session() {
    let (host, guest) = connect(Role::Init).await;

    let reply = host
        .roundtrip(&AgentRequest::Shutdown { reboot: true })
        .await;
    let end = guest.await.unwrap().unwrap();

    assert_eq!(reply, GuestFrame::Ok);
    assert_eq!(end, Some(SessionEnd::Shutdown { reboot: true }));
}

#[tokio::test]
async fn shutdown_happens_even_if_the_host_hangs_up_right_after_ok() {
    let (host, guest) = connect(Role::Init).await;

    let reply = host
        .roundtrip(&AgentRequest::Shutdown { reboot: false })
        .await;
    host.disconnect();
    let end = guest.await.unwrap().unwrap();

    assert_eq!(reply, GuestFrame::Ok);
    assert_eq!(end, Some(SessionEnd::Shutdown { reboot: false }));
}

#[tokio::test]
async fn requests_run_concurrently_on_one_session() {
    let (host, _guest) = connect(Role::Serve).await;
    let slow = host.exec(cmd(&["sh", "-c", "sleep 0.5; echo slow"]), b"");
    let fast = host.exec(cmd(&["sh", "-c", "echo fast"]), b"");
    let began = Instant::now();

    let (slow, fast) = tokio::join!(slow, fast);

    assert_eq!(slow.stdout, b"slow\n");
    assert_eq!(fast.stdout, b"fast\n");
    assert!(began.elapsed() < Duration::from_millis(1500));
}

/// Runs `spec` as `user` in a session whose accounts are `passwd`, under `root`.
async fn exec_as(root: &std::path::Path, passwd: &str, user: &str, argv: &[&str]) -> Finished {
    exec_spec_as(root, passwd, user, cmd(argv)).await
}

/// `sh -c SCRIPT` as dev under a pseudo-terminal.
async fn exec_as_on_tty(root: &std::path::Path, passwd: &str, script: &str) -> Finished {
    let mut spec = cmd(&["sh", "-c", script]);
    spec.tty = Some(TtySize { rows: 24, cols: 80 });
    exec_spec_as(root, passwd, "dev", spec).await
}

async fn exec_spec_as(
    root: &std::path::Path,
    passwd: &str,
    user: &str,
    spec: ExecSpec,
) -> Finished {
    fs_err::create_dir_all(root.join("etc")).unwrap();
    fs_err::write(root.join("etc/passwd"), passwd).unwrap();
    fs_err::write(root.join("etc/group"), "root:x:0:\nwheel:x:10:dev\n").unwrap();
    let (io, guest_io) = tokio::io::duplex(256 * 1024);
    let _guest = tokio::spawn(run_session(guest_io, ctx_in(Role::Serve, root.into())));
    let host = Host::connect(io, TOKEN).await.expect("authenticated");
    let spec = ExecSpec {
        user: Some(user.parse().unwrap()),
        ..spec
    };
    host.exec(spec, b"").await
}

#[tokio::test]
async fn a_user_command_runs_without_root_in_its_home() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: dropping to another user needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let home = root.path().join("home/dev");
    fs_err::create_dir_all(&home).unwrap();
    let passwd = format!("dev:x:4242:4343::{}:/bin/sh\n", home.display());

    let done = exec_as(
        root.path(),
        &passwd,
        "dev",
        &[
            "sh",
            "-c",
            "id -u; id -g; id -G; echo $HOME $USER $LOGNAME $SHELL; pwd",
        ],
    )
    .await;

    let want = format!(
        "4242\n4343\n4343 10\n{0} dev dev /bin/sh\n{0}\n",
        home.display()
    );
    assert_eq!(String::from_utf8_lossy(&done.stdout), want);
    assert_eq!(done.last, GuestFrame::Exit(ExitStatus::Code(0)));
}

#[tokio::test]
async fn a_user_owns_the_terminal_it_runs_on() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: dropping to another user needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();

    let done = exec_as_on_tty(
        root.path(),
        "dev:x:4242:4343::/:/bin/sh\n",
        "stat -c %u:%g $(tty)",
    )
    .await;

    assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), "4242:4343");
}

#[tokio::test]
async fn a_user_whose_uid_disagrees_is_refused_before_anything_runs() {
    let root = tempfile::tempdir().unwrap();

    let done = exec_as(
        root.path(),
        "dev:x:4242:4242::/nonexistent:/bin/sh\n",
        "dev:4000",
        &["touch", "/tmp/should-not-run"],
    )
    .await;

    assert!(!done.started);
    assert_eq!(error_code(&done.last), Some(ErrorCode::FailedPrecondition));
    assert_eq!(
        error_message(&done.last),
        "user dev exists in the guest with UID 4242, not 4000"
    );
}
