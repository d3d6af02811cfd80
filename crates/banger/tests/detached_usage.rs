//! Bad input to the detached-command verbs is refused by the command line itself,
//! before banger looks for (or starts) a daemon: nothing is left behind.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn banger(args: &[&str], runtime: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(args)
        .env("BANGER_RUNTIME_DIR", runtime)
        .env("BANGER_SOCKET", runtime.join("bangerd.sock"))
        .env("BANGER_STATE_DIR", runtime.join("state"))
        // Should a regression look for a daemon, it cannot start one.
        .env("BANGER_DAEMON", runtime.join("no-bangerd"))
        .output()
        .unwrap()
}

#[test]
fn an_unknown_signal_or_a_detached_terminal_starts_no_daemon() {
    let dir = tempfile::tempdir().unwrap();

    let kill = banger(
        &["vm", "kill", "box", "ab12", "--signal", "NOPE"],
        dir.path(),
    );
    let tty = banger(&["vm", "exec", "-d", "-t", "box", "--", "true"], dir.path());

    assert_eq!(kill.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&kill.stderr).contains("unknown signal \"NOPE\""));
    assert_eq!(tty.status.code(), Some(2));
    assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 0);
}
