//! `banger vm run [--rm] [--name N] -- cmd args…`: create (or reuse), run, exit with the
//! command's code, and with `--rm` delete the VM whatever happened.

use banger_wire::api::{Request, VmCreateSpec};
use banger_wire::ErrorCode;

use super::parse_backend;
use crate::cli::RunArgs;
use crate::client::Client;
use crate::error::CliError;
use crate::output;

pub async fn run(client: &Client, args: RunArgs) -> Result<i32, CliError> {
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
    let result = tokio::select! {
        r = super::exec::exec_in(client, &vm.name, &opts, argv, None) => r,
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
