//! `banger vm run [--rm] [--name N] [PATH] -- cmd args…`: create (or reuse), ship the
//! git repository at PATH if given, run, exit with the command's code, and with `--rm`
//! delete the VM whatever happened.

use banger_wire::api::{Request, VmCreateSpec};
use banger_wire::ErrorCode;

use super::parse_backend;
use crate::cli::RunArgs;
use crate::client::Client;
use crate::error::CliError;
use crate::output;
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

pub async fn run(client: &Client, args: RunArgs) -> Result<i32, CliError> {
    // Check the repository before a VM exists for it.
    let repo = match &args.path {
        Some(path) => {
            workspace::check_dest(&args.workdir_in_guest).map_err(|m| CliError::usage(m, None))?;
            let repo = workspace::HostRepo::open(path)?;
            repo.check_shippable()?;
            Some(repo)
        }
        None => None,
    };
    let existing = match &args.name {
        Some(n) => match client.rpc(&Request::VmShow { name: n.clone() }).await {
            Ok(resp) => Some(super::vm::expect_vm(resp)?),
            Err(CliError::Remote(e)) if e.code == ErrorCode::NotFound => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    let vm = match existing {
        Some(vm) => {
            if args.ttl.is_some() {
                output::note(&format!(
                    "--ttl applies to new VMs; vm {} exists and keeps its lifetime",
                    vm.name
                ));
            }
            if vm.state != banger_wire::api::VmState::Running {
                client
                    .rpc(&Request::VmStart {
                        name: vm.name.clone(),
                    })
                    .await?;
            }
            vm
        }
        None => {
            let spec = VmCreateSpec {
                name: args.name.clone(),
                image: args.image.clone(),
                vcpu: args.res.vcpu,
                memory_mib: args.res.memory,
                disk_size_mib: args.res.disk_size,
                backend: parse_backend(args.backend.clone())?,
                no_start: false,
                no_network: args.net.no_network,
                publish: args.net.publish.clone(),
                policy: super::policy(&args.net.policy),
                from_snapshot: None,
                warm: !args.cold,
                exec_only: true,
                ephemeral: args.rm,
                ttl_secs: args.ttl.map(|d| d.as_secs()),
            };
            // The daemon finishes or rolls back a create on its own, even if this
            // process is interrupted while the VM boots.
            super::vm::expect_vm(client.rpc(&Request::VmCreate { spec }).await?)?
        }
    };
    let argv = if args.command.is_empty() {
        vec!["/bin/sh".to_string(), "-l".to_string()]
    } else {
        args.command.clone()
    };
    let mut opts = args.opts;
    if args.command.is_empty() {
        opts.tty = true;
        opts.interactive = true;
    }
    let work = async {
        let cwd = match &repo {
            Some(repo) => {
                let ship = ShipOptions {
                    include_untracked: args.include_untracked,
                    dest: args.workdir_in_guest.clone(),
                };
                // A Ctrl-C while shipping still deletes the VM under --rm.
                tokio::select! {
                    r = super::workspace::prepare(client, &vm.name, repo, &ship) => r?,
                    _ = tokio::signal::ctrl_c(), if args.rm => return Ok(130),
                };
                let dir = format!("{}/{}", ship.dest.trim_end_matches('/'), repo.prefix);
                Some(dir.trim_end_matches('/').to_string())
            }
            None => None,
        };
        super::exec::exec_in(client, &vm.name, &opts, argv, cwd).await
    };
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c(), if args.rm && opts.tty => Ok(130),
    };
    if args.rm {
        if let Err(e) = client
            .rpc(&Request::VmDelete {
                name: vm.name.clone(),
                force: true,
            })
            .await
        {
            output::note(&format!("could not delete vm {}: {e}", vm.name));
        }
    }
    result
}
