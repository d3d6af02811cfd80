//! `banger workspace prepare NAME PATH` and `banger workspace export NAME` (see
//! [`crate::workspace`]).

use std::time::Instant;

use crate::cli::WorkspaceCommand;
use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::progress::Waits;
use crate::vm;
use crate::workspace::exec::{Runner, Vm};
use crate::workspace::{self, Applied, Base, HostRepo, Prepared, ShipOptions};

pub async fn run(client: &Client, cmd: WorkspaceCommand) -> Result<i32, CliError> {
    match cmd {
        WorkspaceCommand::Prepare {
            name,
            path,
            include_untracked,
            dest,
            history,
        } => {
            let repo = HostRepo::open(&path)?;
            let opts = ShipOptions {
                include_untracked,
                dest: vm::workspace_dest(client, &name, dest).await?,
                history,
            };
            prepare(
                &Vm {
                    client,
                    name: &name,
                },
                &repo,
                &opts,
            )
            .await?;
            Ok(0)
        }
        WorkspaceCommand::Export {
            name,
            output,
            apply,
            repo,
            dest,
        } => {
            let dest = vm::workspace_dest(client, &name, dest).await?;
            let vm = Vm {
                client,
                name: &name,
            };
            if apply {
                let repo = HostRepo::open(&repo)?;
                let applied = workspace::export_apply(&vm, &dest, &repo).await?;
                return Ok(report_applied(&name, &dest, &repo, applied));
            }
            match output {
                Some(file) => {
                    workspace::export_to_file(&vm, &dest, Base::Head, &file).await?;
                }
                None => workspace::export(&vm, &dest, Base::Head, &mut tokio::io::stdout()).await?,
            }
            Ok(0)
        }
    }
}

/// Ships `repo`'s working tree into `vm`, saying how it went on stderr.
pub async fn prepare(
    vm: &impl Runner,
    repo: &HostRepo,
    opts: &ShipOptions,
) -> Result<Prepared, CliError> {
    let started = Instant::now();
    let waiting = Waits::stderr(false).phase(format!(
        "shipping workspace {} to {}:{}",
        repo.root.display(),
        vm.name(),
        opts.dest
    ));
    let prepared = workspace::prepare(vm, repo, opts).await?;
    drop(waiting);
    for skipped in &prepared.shipped.skipped {
        output::note(&format!(
            "left out {}: a nested git repository",
            skipped.display()
        ));
    }
    output::info(&format!(
        "shipped {} files from {} to {}:{} in {:.1}s",
        prepared.shipped.files,
        repo.root.display(),
        vm.name(),
        opts.dest,
        started.elapsed().as_secs_f64()
    ));
    Ok(prepared)
}

/// Says what `export --apply` did; the exit code is 1 when conflicts are left.
pub fn report_applied(vm: &str, dest: &str, repo: &HostRepo, applied: Applied) -> i32 {
    let root = repo.root.display();
    match applied {
        Applied::Clean { files: 0, .. } => output::info(&format!("no changes in {vm}:{dest}")),
        Applied::Clean { files, three_way } => output::info(&format!(
            "applied changes to {files} files in {root}{}",
            if three_way { " (3-way merge)" } else { "" }
        )),
        Applied::Conflicts { paths } => {
            output::note(&format!(
                "applied with conflicts in {root}; resolve these files:"
            ));
            for path in paths {
                output::note(&format!("  {path}"));
            }
            return 1;
        }
    }
    0
}
