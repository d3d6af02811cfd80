//! One command in a VM made for it: what `banger vm run` and MCP's `run` share. The
//! repository to ship is checked before a VM exists for it; the VM is exec-only (the
//! command goes through the agent, never ssh); the workspace's directory is where the
//! command starts. Running the command and deleting a throwaway VM are the callers':
//! a terminal and a tool answer want them done differently.

use std::path::Path;

use banger_wire::api::{Request, VmCreateSpec, VmInfo, VmState};
use banger_wire::ErrorCode;

use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::vm;
use crate::workspace::{self, HostRepo, ShipOptions, WorkspaceError};

/// A repository to ship into the run's VM, and where.
#[derive(Debug)]
pub struct Workspace {
    pub repo: HostRepo,
    pub opts: ShipOptions,
}

impl Workspace {
    /// Checks the guest directory and the repository at `path` (a work tree without
    /// submodules), so that a run fails before it costs a VM.
    pub fn open(path: &Path, opts: ShipOptions) -> Result<Workspace, WorkspaceError> {
        workspace::check_dest(&opts.dest)?;
        let repo = HostRepo::open(path)?;
        repo.check_shippable()?;
        Ok(Workspace { repo, opts })
    }
}

/// The run's VM: the one `spec` names if it exists (started if it is not running),
/// else a new exec-only VM made from `spec`.
pub async fn vm(client: &Client, spec: VmCreateSpec) -> Result<VmInfo, CliError> {
    if let Some(name) = &spec.name {
        let existing = vm::show(client, name).await;
        if let (Ok(vm), Some(_)) = (&existing, spec.ttl_secs) {
            output::note(&format!(
                "--ttl applies to new VMs; vm {} exists and keeps its lifetime",
                vm.name
            ));
        }
        match existing {
            Ok(vm) if vm.state == VmState::Running => return Ok(vm),
            Ok(vm) => {
                let name = vm.name.clone();
                client.rpc(&Request::VmStart { name }).await?;
                return Ok(vm);
            }
            Err(CliError::Remote(e)) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let spec = VmCreateSpec {
        exec_only: true,
        ..spec
    };
    vm::create(client, spec).await
}
