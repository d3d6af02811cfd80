//! `banger prune [--force] [--dry-run] [--json]`: the daemon deletes stopped VMs,
//! snapshots and unused images under its locks; this asks first on a terminal.

use std::io::{BufRead, IsTerminal, Write};

use banger_wire::api::{PruneReport, Request, Response};

use crate::client::Client;
use crate::error::CliError;
use crate::output;

pub async fn run(client: &Client, force: bool, dry_run: bool, json: bool) -> Result<i32, CliError> {
    if !dry_run && !force {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(
                "prune deletes for good and has no terminal to ask on",
                Some("pass --force to prune anyway, or --dry-run to see what would go"),
            ));
        }
        let preview = prune(client, true).await?;
        if lines(&preview).is_empty() {
            output::note("nothing to prune");
            return Ok(0);
        }
        for line in lines(&preview) {
            output::note(&format!("would delete {line}"));
        }
        if !confirm("delete these? [y/N] ")? {
            output::note("nothing deleted");
            return Ok(1);
        }
    }
    let report = prune(client, dry_run).await?;
    if json {
        output::json(&report)?;
    } else {
        for line in lines(&report) {
            output::data(&line);
        }
    }
    if dry_run {
        output::note("dry run: nothing was deleted");
    }
    for failed in &report.failed {
        output::note(&format!("not pruned: {failed}"));
    }
    Ok(if report.failed.is_empty() { 0 } else { 1 })
}

async fn prune(client: &Client, dry_run: bool) -> Result<PruneReport, CliError> {
    match client.rpc(&Request::Prune { dry_run }).await? {
        Response::Pruned(report) => Ok(report),
        other => Err(CliError::usage(
            format!("bangerd sent an unexpected answer: {other:?}"),
            None,
        )),
    }
}

/// One line per thing: `vm web`, `snapshot base`, `image old`, `layer sha256:…`.
fn lines(r: &PruneReport) -> Vec<String> {
    let kinds = [
        ("vm", &r.vms),
        ("snapshot", &r.snapshots),
        ("image", &r.images),
        ("layer", &r.layers),
    ];
    kinds
        .iter()
        .flat_map(|(kind, names)| names.iter().map(move |n| format!("{kind} {n}")))
        .collect()
}

/// Asks on the terminal; only `y` or `yes` is a yes.
fn confirm(question: &str) -> Result<bool, CliError> {
    let mut err = std::io::stderr().lock();
    err.write_all(question.as_bytes())?;
    err.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thing_is_one_line_of_its_kind() {
        let r = PruneReport {
            vms: vec!["web".into()],
            snapshots: vec!["base".into(), "warm-1".into()],
            images: vec!["old".into()],
            ..Default::default()
        };

        assert_eq!(
            lines(&r),
            ["vm web", "snapshot base", "snapshot warm-1", "image old"]
        );
    }
}
