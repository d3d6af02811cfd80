//! [`TestVm`] and [`Out`], the result of one command.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use banger_wire::api::VmInfo;

use crate::harness::Harness;

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

fn run_with_input(cmd: &mut Command, what: &str, input: Option<&[u8]>) -> Out {
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

/// A VM of the run, deleted when dropped (also when its test panics).
pub struct TestVm<'h> {
    h: &'h Harness,
    name: String,
    deleted: bool,
}

impl<'h> TestVm<'h> {
    /// Takes charge of the VM `name` (made by the caller, or about to be).
    pub fn new(h: &'h Harness, name: String) -> TestVm<'h> {
        TestVm {
            h,
            name,
            deleted: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `banger vm exec NAME -- ARGV`: the guest runs argv exactly as given.
    pub fn exec(&self, argv: &[&str]) -> Out {
        self.h.banger(&self.exec_args(None, argv))
    }

    /// [`TestVm::exec`] in the guest directory `dir` (`-w`).
    pub fn exec_in(&self, dir: &str, argv: &[&str]) -> Out {
        self.h.banger(&self.exec_args(Some(dir), argv))
    }

    /// [`TestVm::exec`] with `input` on its stdin.
    pub fn exec_with_stdin(&self, argv: &[&str], input: &[u8]) -> Out {
        let mut cmd = self.h.command();
        cmd.args(self.exec_args(None, argv));
        run_with_input(&mut cmd, &format!("vm exec {}", self.name), Some(input))
    }

    /// `sh -c SCRIPT` in the guest, which must succeed; its stdout.
    pub fn sh(&self, script: &str) -> String {
        self.exec(&["sh", "-c", script]).success().text()
    }

    fn exec_args<'a>(&'a self, dir: Option<&'a str>, argv: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["vm", "exec", &self.name];
        if let Some(dir) = dir {
            args.extend(["-w", dir]);
        }
        args.push("--");
        args.extend_from_slice(argv);
        args
    }

    /// `banger vm show NAME --json`.
    pub fn info(&self) -> VmInfo {
        self.h.show(&self.name)
    }

    /// The guest's address; fails the test when it has none.
    pub fn ip(&self) -> String {
        let info = self.info();
        match info.ip {
            Some(ip) => ip,
            None => panic!("{} has no address: {info:?}", self.name),
        }
    }

    /// The guest's default gateway (the bridge address on the host).
    pub fn gateway(&self) -> String {
        let route = self
            .exec(&["ip", "-4", "route", "show", "default"])
            .success();
        let text = route.text();
        let gw = text.split(' ').nth(2);
        gw.unwrap_or_else(|| panic!("{}: no default route in {text:?}", self.name))
            .to_string()
    }

    /// Waits until the guest's sshd runs (it starts once the guest made its host keys,
    /// seconds under TCG).
    pub fn wait_for_sshd(&self) {
        self.exec(&[
            "timeout",
            "120",
            "sh",
            "-c",
            "until [ -e /run/sshd.pid ]; do sleep 0.2; done",
        ])
        .success();
    }

    pub fn stop(&self) {
        self.h.ok(&["vm", "stop", &self.name]);
    }

    pub fn start(&self) {
        self.h.ok(&["vm", "start", &self.name]);
    }

    /// `banger vm set NAME ARGS`, whatever it answers.
    pub fn set(&self, args: &[&str]) -> Out {
        let mut argv = vec!["vm", "set", &self.name];
        argv.extend_from_slice(args);
        self.h.banger(&argv)
    }

    /// `banger vm delete NAME`, which must succeed.
    pub fn delete(mut self) {
        self.deleted = true;
        self.h.ok(&["vm", "delete", &self.name]);
    }
}

impl Drop for TestVm<'_> {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let out = self.h.banger(&["vm", "delete", &self.name]);
        if out.code != 0 && !out.stderr.contains("not found") {
            eprintln!("e2e: deleting {}: {}", self.name, out.stderr.trim_end());
        }
    }
}
