//! The daemon's VM verbs as typed calls, for the commands and MCP alike: each checks
//! that the answer is of the kind its request gets.

use banger_wire::api::{PortInfo, Request, Response, VmCreateSpec, VmInfo};

use crate::client::Client;
use crate::error::CliError;

/// The VM in a daemon answer.
pub fn expect_vm(resp: Response) -> Result<VmInfo, CliError> {
    match resp {
        Response::Vm(vm) => Ok(vm),
        other => Err(CliError::unexpected(other)),
    }
}

pub async fn show(client: &Client, name: &str) -> Result<VmInfo, CliError> {
    let name = name.to_string();
    expect_vm(client.rpc(&Request::VmShow { name }).await?)
}

/// Where VM `name`'s workspace goes (or is): `given`, else the default for the user
/// its commands run as ([`banger_wire::workspace::default_dest`]).
pub async fn workspace_dest(
    client: &Client,
    name: &str,
    given: Option<String>,
) -> Result<String, CliError> {
    match given {
        Some(dest) => Ok(dest),
        None => Ok(banger_wire::workspace::default_dest(
            show(client, name).await?.user.as_ref(),
        )),
    }
}

/// Creates a VM; the daemon finishes or rolls back the create on its own, even if
/// this process goes away while the VM boots.
pub async fn create(client: &Client, spec: VmCreateSpec) -> Result<VmInfo, CliError> {
    expect_vm(client.rpc(&Request::VmCreate { spec }).await?)
}

/// Stops the VM if it runs and deletes it with its disk.
pub async fn delete(client: &Client, name: &str) -> Result<(), CliError> {
    let name = name.to_string();
    client
        .rpc(&Request::VmDelete { name, force: true })
        .await
        .map(drop)
}

/// A port verb (`VmPortAdd`, `VmPortRemove`, `VmPortList`); answers the VM's forwards.
pub async fn ports(client: &Client, req: Request) -> Result<Vec<PortInfo>, CliError> {
    match client.rpc(&req).await? {
        Response::Ports(p) => Ok(p),
        other => Err(CliError::unexpected(other)),
    }
}
