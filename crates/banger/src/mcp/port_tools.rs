//! Port forward tools: a VM's host ports, changed while it runs (`banger vm port`).

use banger_wire::api::{PortInfo, PortProto, Request};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::{tool, tool_router, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::ToolError;
use super::params::VmNameArgs;
use super::server::Sandbox;
use crate::vm;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortAddArgs {
    /// Name of a VM.
    pub vm: String,
    /// The host port (1-65535); it must be free on the host.
    pub host: u16,
    /// The guest port it reaches.
    pub guest: u16,
    /// "tcp" (default) or "udp".
    pub proto: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortRemoveArgs {
    /// Name of a VM.
    pub vm: String,
    /// The forwarded host port.
    pub host: u16,
    /// Only the forward to this guest port.
    pub guest: Option<u16>,
    /// Only the forward of this protocol, "tcp" or "udp".
    pub proto: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Port {
    /// The host port; it answers on every host address, 127.0.0.1 included.
    pub host: u16,
    /// The guest port it reaches.
    pub guest: u16,
    /// "tcp" or "udp".
    pub proto: &'static str,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Ports {
    /// The VM's port forwards.
    pub ports: Vec<Port>,
}

impl From<Vec<PortInfo>> for Ports {
    fn from(ports: Vec<PortInfo>) -> Ports {
        let ports = ports
            .into_iter()
            .map(|p| Port {
                host: p.host,
                guest: p.guest,
                proto: match p.proto {
                    PortProto::Tcp => "tcp",
                    PortProto::Udp => "udp",
                },
            })
            .collect();
        Ports { ports }
    }
}

#[tool_router(router = port_tools, vis = "pub(super)")]
impl Sandbox {
    #[tool(
        description = "Forward a host port to a VM's port, also while it runs; it answers \
on the host's addresses, 127.0.0.1 included, and is kept with the VM. Refused when the host \
port is already forwarded or in use. Answers with the VM's forwards.",
        annotations(destructive_hint = false, open_world_hint = false)
    )]
    async fn port_add(
        &self,
        Parameters(args): Parameters<PortAddArgs>,
    ) -> Result<Json<Ports>, ToolError> {
        let client = self.shared.vm_client(&args.vm).await?;
        let proto = args.proto.as_deref().unwrap_or("tcp");
        let port = format!("{}:{}/{proto}", args.host, args.guest);
        let req = Request::VmPortAdd {
            name: args.vm,
            port,
        };
        Ok(Json(vm::ports(&client, req).await?.into()))
    }

    #[tool(
        description = "Remove a VM's forward of a host port (narrowed by `guest` and `proto` \
when given). Answers with the forwards left.",
        annotations(destructive_hint = true, open_world_hint = false)
    )]
    async fn port_remove(
        &self,
        Parameters(args): Parameters<PortRemoveArgs>,
    ) -> Result<Json<Ports>, ToolError> {
        let client = self.shared.vm_client(&args.vm).await?;
        let mut port = args.host.to_string();
        if let Some(guest) = args.guest {
            port.push_str(&format!(":{guest}"));
        }
        if let Some(proto) = &args.proto {
            port.push_str(&format!("/{proto}"));
        }
        let req = Request::VmPortRemove {
            name: args.vm,
            port,
        };
        Ok(Json(vm::ports(&client, req).await?.into()))
    }

    #[tool(
        description = "List a VM's port forwards (host port, guest port, protocol).",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn port_list(
        &self,
        Parameters(args): Parameters<VmNameArgs>,
    ) -> Result<Json<Ports>, ToolError> {
        let client = self.shared.vm_client(&args.name).await?;
        let req = Request::VmPortList { name: args.name };
        Ok(Json(vm::ports(&client, req).await?.into()))
    }
}
