//! `banger vm run [--rm] [--name N] [PATH [--export FILE] [--apply]] -- cmd args…`:
//! create (or reuse), ship the git repository at PATH if given, run, bring the changes
//! back as asked, exit with the command's code, and with `--rm` delete the VM whatever
//! happened (see [`crate::run`]).

use banger_wire::api::VmCreateSpec;
use banger_wire::workspace::default_dest;

use super::parse_backend;
use crate::cli::RunArgs;
use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::progress::Waits;
use crate::run::{self, Workspace};
use crate::slurm::session::Session;
use crate::vm;
use crate::workspace::exec::{Runner, Vm, VmAs};
use crate::workspace::{self, Base, ShipOptions};

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
    let mut ws = match &args.path {
        Some(path) => Some(Workspace::open(path, ship_options(&args))?),
        None => None,
    };
    if let Some(file) = &args.export {
        run::check_export_file(file)?;
    }
    args.image = super::image::ensure(client, args.image.take()).await?;
    let waiting = Waits::stderr(false).phase("starting VM, waiting for its agent");
    let vm = run::vm(client, create_spec(&args)?).await?;
    drop(waiting);
    let user = args.opts.user.clone().or(vm.user.clone());
    if let (Some(ws), None) = (&mut ws, &args.workdir_in_guest) {
        // A VM made earlier may have a user of its own.
        ws.opts.dest = default_dest(user.as_ref());
    }
    if args.command.is_empty() {
        // A container image's entrypoint and cmd, else a login shell.
        let image = crate::registry::show(client, &vm.image).await?;
        args.command = image.map(|i| i.run.command()).unwrap_or_default();
        if args.command.is_empty() {
            args.command = vec!["/bin/sh".into(), "-l".into()];
            (args.opts.tty, args.opts.interactive) = (true, true);
        }
    }
    let guest = VmAs {
        vm: Vm {
            client,
            name: &vm.name,
        },
        user: args.opts.user.clone(),
    };
    // `None`: interrupted before the command ended.
    let work = async {
        let cwd = match &ws {
            // A Ctrl-C while shipping still deletes the VM under --rm.
            Some(ws) => tokio::select! {
                r = super::workspace::prepare(&guest, &ws.repo, &ws.opts) => Some(r?.workdir),
                _ = tokio::signal::ctrl_c(), if args.rm => return Ok(None),
            },
            None => None,
        };
        let argv = args.command.clone();
        let code = super::exec::exec_in(client, &vm.name, &args.opts, env, argv, cwd).await?;
        Ok(Some(code))
    };
    let ended = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c(), if args.rm && args.opts.tty => Ok(None),
    };
    let result = match (ended, &ws) {
        (Ok(Some(code)), Some(ws)) if args.export.is_some() || args.apply => {
            let back = bring_back(&guest, ws, &args, code).await;
            Ok(run::exit_code(code, back))
        }
        (Ok(Some(code)), _) => Ok(code),
        (Ok(None), _) => Ok(130),
        (Err(e), _) => Err(e),
    };
    if args.rm {
        if let Err(e) = vm::delete_detached(client, &vm.name).await {
            output::note(&format!("could not delete vm {}: {e}", vm.name));
        }
    }
    result
}

/// `--export` and `--apply` once the command ended with `code`: the patch file, then
/// the apply. Answers 0, 1 when the apply left conflicts, or the code of the failure it
/// printed.
async fn bring_back(guest: &impl Runner, ws: &Workspace, args: &RunArgs, code: i32) -> i32 {
    let dest = &ws.opts.dest;
    let steps = async {
        if let Some(file) = &args.export {
            let waiting = Waits::stderr(false).phase("bringing the changes back");
            let bytes = workspace::export_to_file(guest, dest, Base::Head, file).await?;
            drop(waiting);
            output::info(&match bytes {
                0 => format!("no changes: {} is empty", file.display()),
                _ => format!("wrote the changes to {} ({bytes} bytes)", file.display()),
            });
        }
        if !args.apply {
            return Ok(0);
        }
        let waiting = Waits::stderr(false).phase("bringing the changes back and applying them");
        let applied = workspace::export_apply(guest, dest, &ws.repo).await?;
        drop(waiting);
        Ok(super::workspace::report_applied(
            guest.name(),
            dest,
            &ws.repo,
            applied,
        ))
    };
    // Ctrl-C stops the export: its temporary files go, the working tree stays as it is.
    let ended = tokio::select! {
        r = steps => r,
        _ = tokio::signal::ctrl_c() => {
            output::note("interrupted: the changes were not brought back");
            return 130;
        }
    };
    match ended {
        Ok(code) => code,
        Err(source) => output::fail(&CliError::failed(run::NotBroughtBack {
            code,
            root: ws.repo.root.clone(),
            // A --slurm run's VM is always gone, and --rm is not what to drop.
            vm_deleted: args.rm && !args.slurm,
            source,
        })),
    }
}

/// `vm run --slurm`: the same run in a VM of the node Slurm places the step on (see
/// [`crate::slurm`]). The VM is always throwaway: the node deletes it when the step
/// ends, however it ends.
pub async fn on_slurm(mut args: RunArgs) -> Result<i32, CliError> {
    let env = super::exec::env(&args.opts)?;
    let ws = match &args.path {
        Some(path) => Some(Workspace::open(path, ship_options(&args))?),
        None => None,
    };
    if let Some(file) = &args.export {
        run::check_export_file(file)?;
    }
    if args.command.is_empty() {
        args.command = vec!["/bin/sh".into(), "-l".into()];
        (args.opts.tty, args.opts.interactive) = (true, true);
    }
    let session = Session::start(&args.srun_arg, create_spec(&args)?).await?;
    output::info(&format!("vm {} on node {}", session.vm, session.node));
    let guest = session.guest(args.opts.user.clone());
    let work = async {
        let cwd = match &ws {
            Some(ws) => tokio::select! {
                r = super::workspace::prepare(&guest, &ws.repo, &ws.opts) => Some(r?.workdir),
                _ = tokio::signal::ctrl_c() => return Ok(130),
            },
            None => None,
        };
        let spec = super::exec::spec(&args.opts, env, args.command.clone(), cwd);
        let code = super::exec::pump(session.exec(spec).await?, &args.opts).await?;
        Ok(match &ws {
            Some(ws) if args.export.is_some() || args.apply => {
                run::exit_code(code, bring_back(&guest, ws, &args, code).await)
            }
            _ => code,
        })
    };
    let result = work.await;
    let ended = session.finish(result.as_ref().ok().copied()).await;
    match (result, ended) {
        // The step's end explains a failed run best (srun's last lines).
        (Err(_), Err(e)) => Err(e.into()),
        (result, _) => result,
    }
}

fn ship_options(args: &RunArgs) -> ShipOptions {
    ShipOptions {
        include_untracked: args.include_untracked,
        dest: args
            .workdir_in_guest
            .clone()
            .unwrap_or_else(|| default_dest(args.opts.user.as_ref())),
        history: args.history,
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
        user: args.opts.user.clone(),
        no_pool: args.no_pool,
        idle_timeout_secs: args.idle_timeout.map(|d| d.as_secs()),
        ..Default::default()
    })
}
