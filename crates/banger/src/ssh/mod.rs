//! OpenSSH into a VM (`banger vm ssh`, `banger vm ssh-config`): banger's key, and a
//! per-VM known_hosts file that pins the guest's host key at first use (read over the
//! agent channel, never trusted on first sight over the network).
//!
//! A VM with a network is dialled at its IP; one without is reached through a
//! ProxyCommand that tunnels the connection over the agent (`banger-agent connect`).

mod error;
mod hostkey;
mod quote;
mod target;

use banger_host::config::Paths;
use banger_wire::api::VmState;

use crate::client::Client;
use crate::workspace::exec::Vm;

pub use self::error::SshError;
pub use self::target::SshTarget;

/// How ssh reaches the running VM `name`, its host key pinned first.
pub async fn target(client: &Client, name: &str) -> Result<SshTarget, SshError> {
    let paths = Paths::from_env();
    let vm = crate::vm::show(client, name).await?;
    if vm.state != VmState::Running {
        return Err(SshError::NotRunning {
            vm: vm.name,
            state: vm.state.as_str(),
        });
    }
    let key = paths.ssh_key();
    if !key.is_file() {
        return Err(SshError::NoKey { path: key });
    }
    let known_hosts = hostkey::known_hosts_file(&paths.state_dir, &vm.id);
    hostkey::pin(&Vm { client, name }, &vm.id, &known_hosts).await?;
    let proxy = match vm.ip {
        Some(_) => None,
        None => {
            let banger = std::env::current_exe().map_err(SshError::NoExe)?;
            Some(target::agent_proxy(&banger, &paths.socket, &vm.name))
        }
    };
    Ok(SshTarget {
        host: vm.ip.unwrap_or_else(|| format!("banger-{}", vm.name)),
        alias: hostkey::alias(&vm.id),
        name: vm.name,
        key,
        known_hosts,
        proxy,
    })
}
