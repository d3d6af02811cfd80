//! One file per verb group; each command is a short function over the client.

mod api;
mod cp;
mod daemon;
mod detached;
mod doctor;
mod exec;
mod image;
mod mcp;
mod port;
mod prune;
mod run;
mod slurm;
mod snapshot;
mod ssh;
mod vm;
mod workspace;

use banger_host::config::Paths;

use crate::cli::{Cli, Command};
use crate::client::{self, Client};
use crate::error::CliError;

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> Result<i32, CliError> {
    crate::output::set_quiet(cli.quiet);
    let paths = Paths::from_env();
    match cli.command {
        Command::Daemon(cmd) => {
            let (paths, which) = client::locate(paths).await?;
            daemon::run(&paths, which, cmd).await
        }
        Command::Doctor { json } => doctor::run(paths, json).await,
        Command::Mcp {
            allow_path,
            allow_vm,
            all_vms,
        } => {
            mcp::run(
                client::locate(paths).await?.0,
                &allow_path,
                crate::mcp::VmScope::new(all_vms, allow_vm),
            )
            .await
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            use std::io::Write;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "banger", &mut script);
            // A reader that stops early (`| head`) is not an error.
            match std::io::stdout().write_all(&script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(CliError::Io(e)),
                _ => Ok(0),
            }
        }
        Command::Vm(crate::cli::VmCommand::Run(args)) if args.dry_run => run::dry_run(&args),
        // The VM is a node's: no daemon here.
        Command::Vm(crate::cli::VmCommand::Run(args)) if args.slurm => run::on_slurm(args).await,
        Command::Slurm(cmd) => slurm::run(cmd).await,
        Command::Vm(cmd) => vm::run(&connect(&paths).await?, cmd).await,
        Command::Prune {
            force,
            dry_run,
            json,
        } => prune::run(&connect(&paths).await?, force, dry_run, json).await,
        Command::Workspace(cmd) => workspace::run(&connect(&paths).await?, cmd).await,
        Command::Image(cmd) => image::run(&connect(&paths).await?, cmd).await,
        Command::Api(cmd) => api::run(&connect(&paths).await?, cmd).await,
    }
}

async fn connect(paths: &Paths) -> Result<Client, CliError> {
    let (paths, _) = client::locate(paths.clone()).await?;
    client::ensure_daemon(&paths).await
}

/// The policy flags of `vm create` / `vm run`, for the daemon to check.
fn policy(args: &crate::cli::PolicyArgs) -> banger_wire::api::NetPolicy {
    if args.mode.as_deref() == Some("open") {
        crate::output::note(
            "warning: --net open lets this VM reach every host service and the LAN; \
             prefer --allow-host PORT or --allow CIDR",
        );
    }
    banger_wire::api::NetPolicy {
        mode: args.mode.as_deref().and_then(|m| m.parse().ok()),
        group: args.group.clone(),
        allow_host: args.allow_host.clone(),
        allow: args.allow.clone(),
        egress_allow: args.egress_allow.clone(),
    }
}

fn parse_backend(s: Option<String>) -> Result<Option<banger_wire::api::Backend>, CliError> {
    s.map(|b| b.parse().map_err(|e: String| CliError::usage(e, None)))
        .transpose()
}
