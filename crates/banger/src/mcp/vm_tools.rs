//! VM lifecycle tools, and `run`: one command in a throwaway VM.

use banger_wire::api::{Request, Response, VmCreateSpec};
use banger_wire::workspace::default_dest;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{tool, tool_router, Json};
use tokio_util::sync::CancellationToken;

use super::error::ToolError;
use super::exec_tools::exec_capped;
use super::params::{self, Command, RunArgs, VmCreateArgs, VmNameArgs};
use super::results::{Deleted, ExecOutput, RunOutput, Vm as VmAnswer, VmList};
use super::server::Sandbox;
use super::workspace_tools::{bring_back, open_workspace, BroughtBack};
use crate::error::CliError;
use crate::workspace::exec::Vm;
use crate::workspace::{self, ShipOptions};
use crate::{run, vm};

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
    ) -> Result<Json<VmAnswer>, ToolError> {
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
            user: params::user(args.user.as_deref())?,
            idle_timeout_secs: args.idle_timeout_secs,
            ..Default::default()
        };
        let client = self.shared.client().await?;
        let vm = vm::create(&client, spec).await?;
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
                    .map(VmAnswer::from)
                    .collect(),
            })),
            other => Err(CliError::unexpected(other).into()),
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
        vm::delete(&client, &args.name).await?;
        Ok(Json(Deleted { deleted: args.name }))
    }

    #[tool(
        description = "Run one command in a fresh throwaway VM and delete the VM afterwards \
(also when the command fails or times out). Optionally ships a host git repository into the \
VM first (`repo`, like workspace_prepare) and runs the command in it. Answers with exit_code, \
stdout and stderr (each capped at 1 MiB; `truncated` says when output was cut). With `repo`, \
`export: true` also answers with the command's changes as a git patch (`patch`) and \
`apply: true` applies them to the host repository (refused, with nothing written, if a path \
escapes it); either happens whatever the exit code, and `export_error` says when they did not \
come back. Nothing else the command writes survives; use vm_create + exec for multi-step work.",
        annotations(destructive_hint = false, open_world_hint = false)
    )]
    async fn run(
        &self,
        Parameters(args): Parameters<RunArgs>,
        ct: CancellationToken,
    ) -> Result<Json<RunOutput>, ToolError> {
        let create = create_spec(&args);
        let mut command = Command::new(args.command, args.shell, args.env, args.timeout_secs)?;
        command.cwd = args.cwd;
        let ttl_secs = params::ttl_secs(args.ttl.as_deref())?;
        // The VM's default user: the repository is shipped as it, too.
        let user = params::user(args.user.as_deref())?;
        // Check the repository before a VM exists for it.
        let ws = match &args.repo {
            Some(path) => {
                let opts = ShipOptions {
                    include_untracked: args.include_untracked,
                    dest: default_dest(user.as_ref()),
                    history: args.history,
                };
                Some(open_workspace(&self.shared.roots, path, opts)?)
            }
            None if args.export || args.apply => {
                return Err(ToolError::invalid(
                    "`export` and `apply` need `repo`: the changes come from its workspace",
                    Some("pass `repo`, the host repository to ship"),
                ))
            }
            None => None,
        };
        let client = self.shared.client().await?;
        let create = VmCreateSpec {
            ttl_secs,
            user,
            idle_timeout_secs: args.idle_timeout_secs,
            ..create
        };
        let shared = self.shared.clone();
        // Its own task: a call the client abandons still deletes its VM.
        let task = tokio::spawn(async move {
            let vm = run::vm(&client, create).await?;
            shared.hold(&vm.name);
            let guest = Vm {
                client: &client,
                name: &vm.name,
            };
            let work = async {
                let shipped_files = match &ws {
                    Some(ws) => {
                        let prepared = workspace::prepare(&guest, &ws.repo, &ws.opts).await?;
                        command.cwd = command.cwd.or(Some(prepared.workdir));
                        Some(prepared.shipped.files)
                    }
                    None => None,
                };
                let stdin = args.stdin.unwrap_or_default();
                let collected =
                    exec_capped(&client, &vm.name, command, stdin.as_bytes(), &ct).await?;
                // The command ended (whatever its code, or at its timeout).
                let back = match &ws {
                    Some(ws) if args.export || args.apply => tokio::select! {
                        back = bring_back(&guest, ws, args.export, args.apply) => back,
                        _ = ct.cancelled() => return Err(ToolError::Cancelled { vm: vm.name.clone() }),
                    },
                    _ => BroughtBack::default(),
                };
                Ok::<_, ToolError>((ExecOutput::from(collected), shipped_files, back))
            };
            let result = work.await;
            let disposed = shared.dispose(&client, &vm.name).await;
            let (mut exec, shipped_files, back) = result?;
            if let Err(e) = disposed {
                let left = format!("the VM could not be deleted ({e}); delete it with vm_delete");
                exec.note = Some(match exec.note {
                    Some(note) => format!("{note}; {left}"),
                    None => left,
                });
            }
            Ok(Json(RunOutput {
                vm: vm.name.clone(),
                shipped_files,
                exec,
                patch: back.patch,
                applied: back.applied,
                export_error: back.error,
            }))
        });
        task.await.map_err(ToolError::Task)?
    }
}

/// The VM of a `run`: like `vm run`'s, a clone of the machine's warm snapshot when
/// there is one (taken from the pool unless `no_pool`), deleted if the daemon restarts.
fn create_spec(args: &RunArgs) -> VmCreateSpec {
    VmCreateSpec {
        image: args.image.clone(),
        vcpu: args.vcpu,
        memory_mib: args.memory_mib,
        warm: true,
        ephemeral: true,
        no_pool: args.no_pool,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::{Path, PathBuf};

    use banger_host::config::Paths;

    use super::*;
    use crate::mcp::roots::AllowedRoots;
    use crate::mcp::VmScope;

    #[tokio::test]
    async fn export_and_apply_without_a_repo_are_refused_before_any_daemon_work() {
        // No daemon answers here: reaching one would fail with another error.
        let sandbox = Sandbox::new(
            Paths::under(Path::new("/nonexistent/banger-mcp-test")),
            AllowedRoots::new(&[PathBuf::from("/")]).unwrap(),
            VmScope::default(),
        );
        let args = |export, apply| RunArgs {
            shell: Some("true".into()),
            export,
            apply,
            ..Default::default()
        };

        let export = sandbox.run(Parameters(args(true, false)), CancellationToken::new());
        let apply = sandbox.run(Parameters(args(false, true)), CancellationToken::new());

        let refused = |r: Result<Json<RunOutput>, ToolError>| r.err().unwrap().render();
        assert!(refused(export.await).contains("need `repo`"));
        assert!(refused(apply.await).contains("need `repo`"));
    }

    #[test]
    fn a_run_with_no_pool_asks_for_a_fresh_clone() {
        let args: RunArgs = serde_json::from_str(r#"{"shell":"true","no_pool":true}"#).unwrap();

        let spec = create_spec(&args);

        assert!(spec.warm && spec.no_pool && spec.ephemeral);
        assert!(!create_spec(&RunArgs::default()).no_pool);
    }
}
