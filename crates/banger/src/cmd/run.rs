//! `banger vm run [--rm] [--name N] [PATH] -- cmd args…`: create (or reuse), ship the
//! git repository at PATH if given, run, exit with the command's code, and with `--rm`
//! delete the VM whatever happened (see [`crate::run`]).

use banger_wire::api::VmCreateSpec;

use super::parse_backend;
use crate::cli::RunArgs;
use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::run::{self, Workspace};
use crate::vm;
use crate::workspace::exec::Vm;
use crate::workspace::{self, ShipOptions};

/// `vm run PATH --dry-run`: the files that would be shipped; no daemon, no VM.
pub fn dry_run(args: &RunArgs) -> Result<i32, CliError> {
    let Some(path) = &args.path else {
        return Err(CliError::usage("--dry-run needs a PATH to ship", None));
    };
    let repo = workspace::HostRepo::open(path)?;
    workspace::list(&repo, args.include_untracked, std::io::stdout().lock())?;
    Ok(0)
}

pub async fn run(client: &Client, mut args: RunArgs) -> Result<i32, CliError> {
    // Bad input is refused before a VM exists for it.
    let env = super::exec::env(&args.opts)?;
    let ws = match &args.path {
        Some(path) => Some(Workspace::open(path, ship_options(&args))?),
        None => None,
    };
    args.image = super::image::ensure(client, args.image.take()).await?;
    let vm = run::vm(client, create_spec(&args)?).await?;
    if args.command.is_empty() {
        // A container image's entrypoint and cmd, else a login shell.
        let image = crate::registry::show(client, &vm.image).await?;
        args.command = image.map(|i| i.run.command()).unwrap_or_default();
        if args.command.is_empty() {
            args.command = vec!["/bin/sh".into(), "-l".into()];
            (args.opts.tty, args.opts.interactive) = (true, true);
        }
    }
    let guest = Vm {
        client,
        name: &vm.name,
    };
    let work = async {
        let cwd = match &ws {
            // A Ctrl-C while shipping still deletes the VM under --rm.
            Some(ws) => tokio::select! {
                r = super::workspace::prepare(&guest, &ws.repo, &ws.opts) => Some(r?.workdir),
                _ = tokio::signal::ctrl_c(), if args.rm => return Ok(130),
            },
            None => None,
        };
        super::exec::exec_in(client, &vm.name, &args.opts, env, args.command.clone(), cwd).await
    };
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c(), if args.rm && args.opts.tty => Ok(130),
    };
    if args.rm {
        if let Err(e) = vm::delete(client, &vm.name).await {
            output::note(&format!("could not delete vm {}: {e}", vm.name));
        }
    }
    result
}

fn ship_options(args: &RunArgs) -> ShipOptions {
    ShipOptions {
        include_untracked: args.include_untracked,
        dest: args.workdir_in_guest.clone(),
    }
}

/// The VM `vm run` makes when `--name` names none: warm unless `--cold`, and
/// `ephemeral` under `--rm`, so a daemon restart deletes it if this run dies with it.
fn create_spec(args: &RunArgs) -> Result<VmCreateSpec, CliError> {
    Ok(VmCreateSpec {
        name: args.name.clone(),
        image: args.image.clone(),
        vcpu: args.res.vcpu,
        memory_mib: args.res.memory,
        disk_size_mib: args.res.disk_size,
        backend: parse_backend(args.backend.clone())?,
        no_network: args.net.no_network,
        publish: args.net.publish.clone(),
        policy: super::policy(&args.net.policy),
        warm: !args.cold,
        ephemeral: args.rm,
        ttl_secs: args.ttl.map(|d| d.as_secs()),
        ..Default::default()
    })
}
