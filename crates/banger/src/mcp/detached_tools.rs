//! Detached commands: `exec` with `detach: true` starts one (see `exec_tools`); `ps`
//! lists them, `exec_output` fetches a command's output and state.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::{tool, tool_router, Json};
use schemars::JsonSchema;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::capture::Capped;
use super::error::ToolError;
use super::exec_tools::OUTPUT_CAP;
use super::results::{Detached, DetachedList, DetachedOutput};
use super::server::Sandbox;
use crate::detached::{self, Output};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PsArgs {
    /// Name of a running VM.
    pub vm: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputArgs {
    /// Name of a running VM.
    pub vm: String,
    /// The detached command's id, as `exec` with `detach` or `ps` report it.
    pub id: String,
    /// Wait until the command has ended (default false: answer with its output so far).
    pub wait: Option<bool>,
}

#[tool_router(router = detached_tools, vis = "pub(super)")]
impl Sandbox {
    #[tool(
        description = "List the commands started with `exec` and `detach: true` in a running \
VM: id, pid, command, state (running or exited) and exit code. An exited command stays listed \
until `exec_output` has fetched its output.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn ps(
        &self,
        Parameters(args): Parameters<PsArgs>,
    ) -> Result<Json<DetachedList>, ToolError> {
        let client = self.shared.vm_client(&args.vm).await?;
        let list = detached::list(&client, &args.vm).await?;
        Ok(Json(DetachedList {
            commands: list.into_iter().map(Detached::from).collect(),
        }))
    }

    #[tool(
        description = "The output of a command started with `exec` and `detach: true`: \
stdout and stderr so far (each kept up to 1 MiB in this answer), and its state. With `wait: \
true` it answers once the command has ended. Once an exited command's output was fetched, the \
command is forgotten (ps no longer lists it).",
        annotations(read_only_hint = false, open_world_hint = false)
    )]
    async fn exec_output(
        &self,
        Parameters(args): Parameters<OutputArgs>,
        ct: CancellationToken,
    ) -> Result<Json<DetachedOutput>, ToolError> {
        let client = self.shared.vm_client(&args.vm).await?;
        let mut stdout = Capped::new(OUTPUT_CAP);
        let mut stderr = Capped::new(OUTPUT_CAP);
        let follow = args.wait.unwrap_or(false);
        let fetch = async {
            let mut outputs = detached::output(&client, &args.vm, &args.id, follow).await?;
            loop {
                match outputs.next().await? {
                    Output::Stdout(d) => stdout.push(&d),
                    Output::Stderr(d) => stderr.push(&d),
                    Output::End(info) => return Ok::<_, crate::error::CliError>(info),
                }
            }
        };
        let info = tokio::select! {
            info = fetch => info?,
            _ = ct.cancelled() => return Err(ToolError::Cancelled { vm: args.vm }),
        };
        Ok(Json(DetachedOutput {
            truncated: stdout.truncated() || stderr.truncated(),
            stdout: stdout.text(),
            stderr: stderr.text(),
            dropped_bytes: info.dropped_bytes,
            output_cap_bytes: OUTPUT_CAP as u64,
            command: info.into(),
        }))
    }
}
