//! `banger doctor` runs `bangerd doctor` (found like the daemon it auto-starts) and
//! passes its flags, output and exit status through.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

fn banger_doctor(bangerd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_banger"))
        .arg("doctor")
        .args(args)
        .env("BANGER_DAEMON", bangerd)
        .output()
        .unwrap()
}

// Stand-ins for bangerd that need no file written (a test spawning while another
// writes an executable can make that one's exec fail with ETXTBSY).
#[test]
fn flags_and_output_pass_through() {
    let out = banger_doctor(Path::new("/bin/echo"), &["--json"]);

    assert_eq!(String::from_utf8_lossy(&out.stdout), "doctor --json\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_exit_status_passes_through() {
    let out = banger_doctor(Path::new("/bin/false"), &[]);

    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_missing_bangerd_says_where_to_put_it() {
    let out = banger_doctor(Path::new("/nonexistent/bangerd"), &[]);

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: cannot run /nonexistent/bangerd"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: install bangerd next to banger"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(7));
}
