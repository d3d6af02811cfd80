//! [`Out`]: what one command did, and running a command to get it.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

/// What a command did: its exit code (128+n for a signal, as a shell reports it) and
/// output.
#[derive(Debug)]
pub struct Out {
    /// The command line, for failure messages.
    pub what: String,
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Out {
    /// stdout as text without its trailing newlines, as `$(…)` gives it.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout)
            .trim_end_matches('\n')
            .to_string()
    }

    /// Fails the test unless the command succeeded.
    #[track_caller]
    pub fn success(self) -> Out {
        assert_eq!(self.code, 0, "{} failed\n{}", self.what, self.dump());
        self
    }

    /// Fails the test unless the command failed with `code` (`None`: any but 0) and
    /// said something containing `needle` on stdout or stderr.
    #[track_caller]
    pub fn failure(&self, code: Option<i32>, needle: &str) {
        assert_ne!(self.code, 0, "{} succeeded\n{}", self.what, self.dump());
        if let Some(code) = code {
            assert_eq!(
                self.code,
                code,
                "exit code of {}\n{}",
                self.what,
                self.dump()
            );
        }
        assert!(
            self.stderr.contains(needle) || self.text().contains(needle),
            "{} does not say {needle:?}\n{}",
            self.what,
            self.dump()
        );
    }

    fn dump(&self) -> String {
        format!(
            "exit code {}\nstdout: {}\nstderr: {}",
            self.code,
            self.text(),
            self.stderr
        )
    }
}

/// Runs `cmd` to its end, capturing stdout and stderr unless they are set already.
pub(crate) fn run(mut cmd: Command, what: &str) -> Out {
    run_with_input(&mut cmd, what, None)
}

pub(crate) fn run_with_input(cmd: &mut Command, what: &str, input: Option<&[u8]>) -> Out {
    cmd.stdout(Stdio::piped());
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = match cmd.stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => panic!("spawn {what}: {e}"),
    };
    let output = std::thread::scope(|s| {
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            // A command that stops reading early shows in its exit code and output.
            s.spawn(move || stdin.write_all(input));
        }
        child.wait_with_output()
    });
    let output = output.unwrap_or_else(|e| panic!("wait for {what}: {e}"));
    let status = output.status;
    Out {
        what: what.to_string(),
        code: status
            .code()
            .or_else(|| status.signal().map(|n| 128 + n))
            .unwrap_or(-1),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
