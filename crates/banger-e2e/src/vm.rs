//! [`TestVm`]: a VM of the run, and [`Harness::create`], which makes one.

use banger_wire::api::VmInfo;

use crate::harness::Harness;
use crate::out::{run_with_input, Out};

impl Harness {
    /// `banger vm create NAME ARGS`, NAME being [`Harness::name`] of `base`; the VM is
    /// deleted when the returned [`TestVm`] drops.
    pub fn create(&self, base: &str, args: &[&str]) -> TestVm<'_> {
        let name = self.name(base);
        let mut argv = vec!["vm", "create", &name];
        argv.extend_from_slice(args);
        let vm = TestVm::new(self, name.clone());
        self.banger(&argv).success();
        vm
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
