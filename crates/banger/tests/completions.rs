//! `banger completions` into a reader that went away (`| head`, a closed pipe) ends
//! quietly instead of panicking on the broken pipe.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};

#[test]
fn completions_into_a_closed_pipe_do_not_panic() {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(["completions", "zsh"])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
