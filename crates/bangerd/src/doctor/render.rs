//! The human form of a [`Report`]: one aligned row per check, a `fix:` line under
//! every non-PASS row, and a summary line.

use std::fmt::Write;

use super::{Report, Status};

const RESET: &str = "\x1b[0m";

fn color(status: Status) -> &'static str {
    match status {
        Status::Pass => "\x1b[32m",
        Status::Warn => "\x1b[33m",
        Status::Fail => "\x1b[1;31m",
    }
}

/// Renders `report` as a table; `color` adds ANSI colours (pass `false` under `NO_COLOR`
/// or when stdout is not a terminal).
pub fn render_table(report: &Report, color_on: bool) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for check in &report.checks {
        let status = if color_on {
            format!("{}{}{RESET}", color(check.status), check.status.as_str())
        } else {
            check.status.as_str().to_owned()
        };
        // Writing to a String cannot fail.
        let _ = writeln!(out, "{status}  {:<width$}  {}", check.name, check.detail);
        if let Some(fix) = check
            .fix
            .as_deref()
            .filter(|_| check.status != Status::Pass)
        {
            let _ = writeln!(out, "      {:<width$}  fix: {fix}", "");
        }
    }
    let _ = writeln!(
        out,
        "\n{} checks: {} pass, {} warn, {} fail",
        report.checks.len(),
        report.count(Status::Pass),
        report.count(Status::Warn),
        report.count(Status::Fail)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Check;

    fn sample() -> Report {
        Report {
            checks: vec![
                Check::pass("git", "git", "git version 2.39.5 at /usr/bin/git"),
                Check::warn(
                    "kvm",
                    "/dev/kvm",
                    "KVM is nested/emulated (kvm_pvm): guests cannot run on it",
                    "# nothing to fix",
                ),
                Check::fail(
                    "qemu",
                    "qemu-system-x86_64",
                    "not found on PATH",
                    "apt-get install -y qemu-system-x86",
                ),
            ],
        }
    }

    #[test]
    fn table_without_color() {
        insta::assert_snapshot!(render_table(&sample(), false));
    }

    #[test]
    fn table_with_color_marks_status_only() {
        let out = render_table(&sample(), true);

        assert!(out.starts_with("\x1b[32mPASS\x1b[0m  git "), "{out:?}");
        assert!(
            out.contains("\x1b[1;31mFAIL\x1b[0m  qemu-system-x86_64  not found on PATH\n"),
            "{out:?}"
        );
    }

    #[test]
    fn json_shape() {
        let json = serde_json::to_value(sample()).unwrap();

        assert_eq!(
            json["checks"][2],
            serde_json::json!({
                "id": "qemu",
                "name": "qemu-system-x86_64",
                "status": "fail",
                "detail": "not found on PATH",
                "fix": "apt-get install -y qemu-system-x86",
            })
        );
        assert_eq!(json["checks"][0]["fix"], serde_json::Value::Null);
    }
}
