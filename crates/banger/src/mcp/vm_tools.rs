//! VM lifecycle tools, and `run`: one command in a throwaway VM.

use banger_wire::agent::ExecSpec;
use banger_wire::api::{Request, Response, VmCreateSpec, VmInfo};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{tool, tool_router, Json};
use tokio_util::sync::CancellationToken;

use super::error::ToolError;
use super::exec_tools::exec_capped;
use super::params::{self, RunArgs, VmCreateArgs, VmNameArgs};
use super::results::{Deleted, ExecOutput, RunOutput, Vm, VmList};
use super::server::Sandbox;
use super::workspace_tools::{open_repo, prepare};
use crate::error::CliError;
use crate::workspace::{ShipOptions, DEFAULT_DEST};

#[tool_router(router = vm_tools, vis = "pub(super)")]
impl Sandbox {
    #[tool(
        description = "Create a new Linux microVM and start it; answers when it has booted and \
its agent is ready (seconds to a few minutes on a slow host). The VM runs until vm_delete; \
files written in it persist until then. Use exec, write_file and read_file on it by name. For \
a single command, `run` is simpler.",
        annotations(destructive_hint = false, open_world_hint = false)
    )]
    async fn vm_create(
        &self,
        Parameters(args): Parameters<VmCreateArgs>,
    ) -> Result<Json<Vm>, ToolError> {
        let spec = VmCreateSpec {
            name: args.name,
            image: args.image,
            vcpu: args.vcpu,
            memory_mib: args.memory_mib,
            disk_size_mib: args.disk_size_mib,
            no_network: args.no_network,
            // Tools reach the VM through the agent, never ssh.
            exec_only: true,
            ttl_secs: params::ttl_secs(args.ttl.as_deref())?,
            ..Default::default()
        };
        let client = self.shared.client().await?;
        let vm = expect_vm(client.rpc(&Request::VmCreate { spec }).await?)?;
        self.shared.scope.created(&vm.name, &vm.id);
        Ok(Json(vm.into()))
    }

    #[tool(
        description = "List the VMs these tools may act on (those this server created, unless \
started with --allow-vm or --all-vms) with their state (running, stopped, crashed, ...), \
image, size and address.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn vm_list(&self) -> Result<Json<VmList>, ToolError> {
        let client = self.shared.client().await?;
        match client.rpc(&Request::VmList).await? {
            Response::Vms(vms) => Ok(Json(VmList {
                vms: vms
                    .into_iter()
                    .filter(|v| self.shared.scope.contains(&v.name, &v.id))
                    .map(Vm::from)
                    .collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    #[tool(
        description = "Delete a VM: stop it if it runs and remove its disk. Everything in it \
is lost. Delete the VMs you created once you are done with them.",
        annotations(
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn vm_delete(
        &self,
        Parameters(args): Parameters<VmNameArgs>,
    ) -> Result<Json<Deleted>, ToolError> {
        let client = self.shared.vm_client(&args.name).await?;
        let req = Request::VmDelete {
            name: args.name.clone(),
            force: true,
        };
        client.rpc(&req).await?;
        Ok(Json(Deleted { deleted: args.name }))
    }

    #[tool(
        description = "Run one command in a fresh throwaway VM and delete the VM afterwards \
(also when the command fails or times out). Optionally ships a host git repository into the \
VM first (`repo`, like workspace_prepare) and runs the command in it. Answers with exit_code, \
stdout and stderr (each capped at 1 MiB; `truncated` says when output was cut). Nothing the \
command writes survives; use vm_create + exec for multi-step work.",
        annotations(destructive_hint = false, open_world_hint = false)
    )]
    async fn run(
        &self,
        Parameters(args): Parameters<RunArgs>,
        ct: CancellationToken,
    ) -> Result<Json<RunOutput>, ToolError> {
        let argv = params::argv(args.command, args.shell)?;
        let env = params::env(args.env)?;
        let timeout = params::timeout_secs(args.timeout_secs)?;
        let ttl_secs = params::ttl_secs(args.ttl.as_deref())?;
        // Check the repository before a VM exists for it.
        let repo = match &args.repo {
            Some(path) => Some(open_repo(&self.shared.roots, path)?),
            None => None,
        };
        let client = self.shared.client().await?;
        // Like `vm run`: resume the machine's warm snapshot when there is one.
        let create = VmCreateSpec {
            image: args.image,
            vcpu: args.vcpu,
            memory_mib: args.memory_mib,
            warm: true,
            exec_only: true,
            ephemeral: true,
            ttl_secs,
            ..Default::default()
        };
        let shared = self.shared.clone();
        // Its own task: a call the client abandons still deletes its VM.
        let task = tokio::spawn(async move {
            let vm = expect_vm(client.rpc(&Request::VmCreate { spec: create }).await?)?;
            shared.hold(&vm.name);
            let work = async {
                let (cwd, shipped_files) = match &repo {
                    Some(repo) => {
                        let opts = ShipOptions {
                            include_untracked: args.include_untracked,
                            dest: DEFAULT_DEST.into(),
                        };
                        let prepared = prepare(&client, &vm.name, repo, &opts).await?;
                        (args.cwd.or(Some(prepared.workdir)), Some(prepared.files))
                    }
                    None => (args.cwd, None),
                };
                let spec = ExecSpec {
                    argv,
                    env,
                    cwd,
                    tty: None,
                    timeout_ms: Some(timeout * 1000),
                };
                let stdin = args.stdin.unwrap_or_default();
                let collected =
                    exec_capped(&client, &vm.name, spec, stdin.as_bytes(), timeout, &ct).await?;
                Ok::<_, ToolError>((ExecOutput::from(collected), shipped_files))
            };
            let result = work.await;
            let disposed = shared.dispose(&client, &vm.name).await;
            let (mut exec, shipped_files) = result?;
            if let Err(e) = disposed {
                let left = format!("the VM could not be deleted ({e}); delete it with vm_delete");
                exec.note = Some(match exec.note {
                    Some(note) => format!("{note}; {left}"),
                    None => left,
                });
            }
            Ok(Json(RunOutput {
                vm: vm.name,
                shipped_files,
                exec,
            }))
        });
        task.await
            .map_err(|e| ToolError::Cli(CliError::Io(std::io::Error::other(e))))?
    }
}

fn expect_vm(resp: Response) -> Result<VmInfo, ToolError> {
    match resp {
        Response::Vm(vm) => Ok(vm),
        other => Err(unexpected(other)),
    }
}

fn unexpected(resp: Response) -> ToolError {
    ToolError::invalid(format!("bangerd sent an unexpected answer: {resp:?}"), None)
}
