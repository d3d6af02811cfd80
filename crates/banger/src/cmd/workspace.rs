//! `banger workspace prepare NAME PATH` and `banger workspace export NAME`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cli::WorkspaceCommand;
use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::workspace::exec::Vm;
use crate::workspace::{self, Applied, Base, HostRepo, ShipOptions, WorkspaceError};

pub async fn run(client: &Client, cmd: WorkspaceCommand) -> Result<i32, CliError> {
    match cmd {
        WorkspaceCommand::Prepare {
            name,
            path,
            include_untracked,
            dest,
        } => {
            let repo = HostRepo::open(&path)?;
            prepare(
                client,
                &name,
                &repo,
                &ShipOptions {
                    include_untracked,
                    dest,
                },
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
            workspace::check_dest(&dest).map_err(|m| CliError::usage(m, None))?;
            match (apply, output) {
                (true, _) => export_apply(client, &name, &dest, &repo).await,
                (false, Some(file)) => export_to_file(client, &name, &dest, &file).await,
                (false, None) => {
                    let mut stdout = tokio::io::stdout();
                    workspace::export(
                        &Vm {
                            client,
                            name: &name,
                        },
                        &dest,
                        Base::Head,
                        &mut stdout,
                    )
                    .await?;
                    Ok(0)
                }
            }
        }
    }
}

/// Ships `repo`'s working tree into VM `vm`, saying how it went on stderr.
pub async fn prepare(
    client: &Client,
    vm: &str,
    repo: &HostRepo,
    opts: &ShipOptions,
) -> Result<(), CliError> {
    workspace::check_dest(&opts.dest).map_err(|m| CliError::usage(m, None))?;
    let started = Instant::now();
    let shipped = workspace::ship(&Vm { client, name: vm }, repo, opts).await?;
    for skipped in &shipped.skipped {
        output::note(&format!(
            "left out {}: a nested git repository",
            skipped.display()
        ));
    }
    output::note(&format!(
        "shipped {} files from {} to {vm}:{} in {:.1}s",
        shipped.files,
        repo.root.display(),
        opts.dest,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

async fn export_to_file(
    client: &Client,
    vm: &str,
    dest: &str,
    file: &Path,
) -> Result<i32, CliError> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let werr = |source| WorkspaceError::Write {
        path: file.to_path_buf(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".banger-export")
        .tempfile_in(&dir)
        .map_err(werr)?;
    let mut out = tokio::fs::File::from_std(tmp.reopen().map_err(werr)?);
    workspace::export(&Vm { client, name: vm }, dest, Base::Head, &mut out).await?;
    tmp.persist(file).map_err(|e| werr(e.error))?;
    Ok(0)
}

async fn export_apply(client: &Client, vm: &str, dest: &str, repo: &Path) -> Result<i32, CliError> {
    let repo = HostRepo::open(repo)?;
    let werr = |source| WorkspaceError::Write {
        path: std::env::temp_dir(),
        source,
    };
    let tmp = tempfile::Builder::new()
        .prefix("banger-export")
        .suffix(".patch")
        .tempfile()
        .map_err(werr)?;
    let mut out = tokio::fs::File::from_std(tmp.reopen().map_err(werr)?);
    workspace::export(&Vm { client, name: vm }, dest, Base::Shipped, &mut out).await?;
    let root = repo.root.display();
    match workspace::apply(&repo.root, tmp.path(), vm)? {
        Applied::Clean { files: 0, .. } => output::note(&format!("no changes in {vm}:{dest}")),
        Applied::Clean { files, three_way } => output::note(&format!(
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
            return Ok(1);
        }
    }
    Ok(0)
}
