//! The MCP server object: shared state, the combined tool router, and what the
//! server tells a client about itself.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use banger_host::config::Paths;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::{tool_handler, ServerHandler};

use super::error::ToolError;
use super::roots::AllowedRoots;
use crate::client::{self, Client};
use crate::error::CliError;

const INSTRUCTIONS: &str = "\
banger runs disposable Linux microVMs on this host; these tools drive them.
Typical flows:
- One-off command: `run` (creates a VM, optionally ships a host git repo into it, runs the \
command, deletes the VM, returns the output and exit code).
- Longer work: `vm_create`, then `exec` / `write_file` / `read_file` as often as needed, \
then `vm_delete`. Tools act only on the VMs this server created (unless it was started with \
--allow-vm or --all-vms). Booting takes seconds to minutes on slow hosts; a VM keeps its files until \
deleted.
- Working on a host repository: `workspace_prepare` ships its working tree (uncommitted \
edits included) to /root/repo in the VM; edit and test there with `exec`; `workspace_export` \
returns the changes as a git patch. Host paths are limited to the directories the server was \
started with (--allow-path).
A failed tool call returns an error with the cause and, when there is one, a hint.";

/// Which VMs the tools may act on: those this server created, plus the ones named on
/// its command line (`--allow-vm`), or every VM (`--all-vms`).
#[derive(Debug, Default)]
pub struct VmScope {
    pub all: bool,
    pub named: BTreeSet<String>,
    /// Name to id of the VMs this server created (an id, so a later VM that takes a
    /// deleted one's name is not in scope).
    created: Mutex<std::collections::BTreeMap<String, String>>,
}

impl VmScope {
    pub fn new(all: bool, named: impl IntoIterator<Item = String>) -> VmScope {
        VmScope {
            all,
            named: named.into_iter().collect(),
            created: Mutex::default(),
        }
    }

    pub fn created(&self, name: &str, id: &str) {
        if let Ok(mut created) = self.created.lock() {
            created.insert(name.to_string(), id.to_string());
        }
    }

    pub fn contains(&self, name: &str, id: &str) -> bool {
        self.all
            || self.named.contains(name)
            || self
                .created
                .lock()
                .is_ok_and(|c| c.get(name).is_some_and(|i| i == id))
    }
}

/// State every tool call shares.
pub struct Shared {
    pub paths: Paths,
    pub roots: AllowedRoots,
    pub scope: VmScope,
    /// Held while checking for (and maybe starting) the daemon, so two calls never
    /// start two daemons.
    starting: tokio::sync::Mutex<()>,
    /// VMs `run` created and has not deleted yet; deleted when the server stops.
    throwaway: Mutex<BTreeSet<String>>,
}

impl Shared {
    /// A client for a running daemon, starting one if none answers.
    pub async fn client(&self) -> Result<Client, ToolError> {
        let _one_at_a_time = self.starting.lock().await;
        Ok(client::ensure_daemon(&self.paths).await?)
    }

    /// A client for acting on VM `vm`, once it is known to be in this server's scope.
    pub async fn vm_client(&self, vm: &str) -> Result<Client, ToolError> {
        let client = self.client().await?;
        let id = crate::vm::show(&client, vm).await?.id;
        if !self.scope.contains(vm, &id) {
            return Err(ToolError::OutOfScope { vm: vm.to_string() });
        }
        Ok(client)
    }

    pub fn hold(&self, vm: &str) {
        if let Ok(mut set) = self.throwaway.lock() {
            set.insert(vm.to_string());
        }
    }

    pub fn release(&self, vm: &str) {
        if let Ok(mut set) = self.throwaway.lock() {
            set.remove(vm);
        }
    }

    /// Deletes a throwaway VM.
    pub async fn dispose(&self, client: &Client, vm: &str) -> Result<(), CliError> {
        match crate::vm::delete(client, vm).await {
            Ok(_) => {
                self.release(vm);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(vm, cause = %e, "could not delete a throwaway vm");
                Err(e)
            }
        }
    }

    /// Deletes every throwaway VM still around (the server is stopping).
    pub async fn dispose_all(&self) {
        let left: Vec<String> = match self.throwaway.lock() {
            Ok(set) => set.iter().cloned().collect(),
            Err(_) => return,
        };
        if left.is_empty() {
            return;
        }
        let client = Client::new(&self.paths.socket);
        for vm in left {
            // Failures are logged: there is no one left to tell.
            let _ = self.dispose(&client, &vm).await;
        }
    }
}

/// The banger MCP server.
#[derive(Clone)]
pub struct Sandbox {
    pub shared: Arc<Shared>,
    tool_router: ToolRouter<Sandbox>,
}

impl Sandbox {
    pub fn new(paths: Paths, roots: AllowedRoots, scope: VmScope) -> Sandbox {
        Sandbox {
            shared: Arc::new(Shared {
                paths,
                roots,
                scope,
                starting: tokio::sync::Mutex::new(()),
                throwaway: Mutex::new(BTreeSet::new()),
            }),
            tool_router: Self::vm_tools()
                + Self::exec_tools()
                + Self::detached_tools()
                + Self::workspace_tools()
                + Self::port_tools(),
        }
    }

    #[cfg(test)]
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tool_router.list_all()
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Sandbox {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("banger", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn scope_holds_created_vms_by_id_and_named_ones() {
        let scope = VmScope::new(false, ["shared".to_string()]);
        assert!(!scope.contains("mine", "id1"));
        scope.created("mine", "id1");
        assert!(scope.contains("mine", "id1"));
        assert!(
            !scope.contains("mine", "id2"),
            "a new VM that took the name is not mine"
        );
        assert!(scope.contains("shared", "any"));
        assert!(!scope.contains("other", "id3"));
        assert!(VmScope::new(true, []).contains("other", "id3"));
    }

    fn sandbox() -> Sandbox {
        let paths = Paths::under(std::path::Path::new("/nonexistent/banger-mcp-test"));
        Sandbox::new(
            paths,
            AllowedRoots::new(&[PathBuf::from("/")]).unwrap(),
            VmScope::default(),
        )
    }

    #[test]
    fn every_tool_is_listed_with_a_description_and_an_object_schema() {
        let tools = sandbox().tools();
        let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
        names.sort();

        assert_eq!(
            names,
            [
                "exec",
                "exec_output",
                "port_add",
                "port_list",
                "port_remove",
                "ps",
                "read_file",
                "run",
                "vm_create",
                "vm_delete",
                "vm_list",
                "workspace_export",
                "workspace_prepare",
                "write_file"
            ]
        );
        assert!(tools
            .iter()
            .all(|t| t.description.as_ref().is_some_and(|d| d.len() > 40)));
        assert!(tools
            .iter()
            .all(|t| t.input_schema.get("type").and_then(|v| v.as_str()) == Some("object")));
        assert!(tools.iter().all(|t| t.output_schema.is_some()));
    }

    #[test]
    fn the_exec_schema_documents_command_and_shell() {
        let tools = sandbox().tools();
        let exec = tools.iter().find(|t| t.name == "exec").unwrap();
        let props = exec.input_schema.get("properties").unwrap();

        assert!(props.get("command").is_some() && props.get("shell").is_some());
        assert_eq!(
            exec.input_schema.get("required").unwrap(),
            &serde_json::json!(["vm"])
        );
    }
}
