//! `banger doctor`: one PASS/WARN/FAIL row per host requirement, each non-PASS row with
//! a fix a user can paste into a shell. The CLI runs `bangerd doctor` ([`main`]), so it
//! links none of the probes, and no daemon needs to be running.
//!
//! Checks are grouped one file per concern (virtualisation, network, tools, storage)
//! and run in parallel; each one is bounded (~1 s), so the whole report is too.
//! [`run`] probes the real machine; [`run_with`] takes a [`Host`] so tests can point
//! the probes at a fake `/dev`, `/proc` and `/sys`.

mod confine;
mod net;
mod pool;
mod port;
mod render;
mod storage;
mod tools;
mod virt;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use banger_host::config::{Config, Paths};
use banger_wire::api::Backend;
use serde::Serialize;

use crate::host::Host;

pub use render::render_table;

/// Longest any external command run by a check may take.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(900);

/// Verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable machine name (`kvm`, `dns_port`, …) for scripts.
    pub id: &'static str,
    /// What was checked, for humans.
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// A shell command (or `# comment` when no command applies) that fixes a non-PASS row.
    pub fix: Option<String>,
}

impl Check {
    fn pass(id: &'static str, name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            id,
            name: name.into(),
            status: Status::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(
        id: &'static str,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Warn,
            fix: Some(fix.into()),
            ..Check::pass(id, name, detail)
        }
    }

    fn fail(
        id: &'static str,
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Check::pass(id, name, detail)
        }
    }
}

/// Every check, in report order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether any check failed; `bangerd doctor` (and so `banger doctor`) exits 1 then.
    pub fn has_failures(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }
}

/// What every check may look at.
struct Ctx<'a> {
    host: &'a Host,
    paths: &'a Paths,
    config: &'a Config,
    /// The backend new VMs get (configured or chosen from the host).
    backend: Backend,
}

impl<'a> Ctx<'a> {
    fn new(host: &'a Host, paths: &'a Paths, config: &'a Config) -> Ctx<'a> {
        Ctx {
            host,
            paths,
            config,
            backend: host.default_backend(config),
        }
    }
}

type CheckFn = fn(&Ctx<'_>) -> Check;

const CHECKS: &[CheckFn] = &[
    virt::kvm,
    virt::firecracker,
    virt::jailer,
    virt::qemu,
    confine::vmm_user,
    confine::qemu_sandbox,
    net::tun,
    net::nftables,
    net::ip_forward,
    net::isolation,
    tools::mkfs_ext4,
    tools::git,
    tools::ssh,
    port::dns_port,
    storage::store,
    storage::default_image,
    storage::image_gaps,
    storage::free_disk,
    pool::pools,
];

/// `bangerd doctor`: prints the report of this host on stdout, as JSON or as the table
/// (with ANSI colours when `color`), and exits 1 when a check failed.
pub fn main(json: bool, color: bool) -> ExitCode {
    let paths = Paths::from_env();
    let config = Config::load(&paths).unwrap_or_default();
    let report = run(&paths, &config);
    let text = if json {
        // A report of strings and enums always serialises.
        serde_json::to_string_pretty(&report).unwrap_or_default() + "\n"
    } else {
        render_table(&report, color)
    };
    // A reader that stops early (`| head`) is not an error.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if report.has_failures() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs every check against this machine. Blocking (it spawns short-lived commands and
/// threads); call it from `spawn_blocking` in async code. Takes about a second at most.
pub fn run(paths: &Paths, config: &Config) -> Report {
    run_with(&Host::from_env(), paths, config)
}

/// Runs every check with probes pointed at `host`.
pub fn run_with(host: &Host, paths: &Paths, config: &Config) -> Report {
    let ctx = Ctx::new(host, paths, config);
    let checks = std::thread::scope(|s| {
        let handles: Vec<_> = CHECKS.iter().map(|check| s.spawn(|| check(&ctx))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    Report { checks }
}

/// `apt-get install` line for a Debian package.
fn apt(package: &str) -> String {
    format!("apt-get install -y {package}")
}

#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use crate::host::Host;

    /// A host whose `/dev`, `/proc`, `/sys` and `PATH` (`<root>/bin`) live under `root`.
    pub(crate) fn fake_host(root: &Path) -> Host {
        Host {
            root: root.to_path_buf(),
            path_var: Some(root.join("bin").into_os_string()),
            firecracker_env: None,
            jailer_env: None,
            is_root: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_host_reports_every_check_in_order_and_fails() {
        let t = tempfile::tempdir().unwrap();
        let host = testing::fake_host(t.path());

        let report = run_with(&host, &Paths::under(t.path()), &Config::default());

        let ids: Vec<&str> = report.checks.iter().map(|c| c.id).collect();
        assert_eq!(
            ids,
            [
                "kvm",
                "firecracker",
                "jailer",
                "qemu",
                "vmm_user",
                "qemu_sandbox",
                "tun",
                "nftables",
                "ip_forward",
                "isolation",
                "mkfs_ext4",
                "git",
                "ssh",
                "dns_port",
                "store",
                "default_image",
                "image_gaps",
                "free_disk",
                "pool"
            ]
        );
        assert!(report.has_failures());
        assert!(report
            .checks
            .iter()
            .all(|c| c.status == Status::Pass || c.fix.is_some()));
    }
}
