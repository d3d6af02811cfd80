//! OpenSSH into a VM (`banger vm ssh`, `banger vm ssh-config`): banger's key, and a
//! per-VM known_hosts file that pins the guest's host key at first use (read over the
//! agent channel, never trusted on first sight over the network).
//!
//! A VM with a network is dialled at its IP; one without is reached through a
//! ProxyCommand that tunnels the connection over the agent (`banger-agent connect`).

mod authorize;
mod error;
mod hostkey;
mod quote;
mod target;

use banger_host::config::Paths;
use banger_wire::api::VmState;
use banger_wire::user::GuestUser;

use crate::client::Client;
use crate::workspace::exec::{Vm, VmAs};

pub use self::error::SshError;
pub use self::target::SshTarget;

/// How ssh reaches the running VM `name` as `user` (default: the VM's user, else root),
/// its host key pinned and, for a user other than root, banger's key authorized first.
pub async fn target(
    client: &Client,
    name: &str,
    user: Option<GuestUser>,
) -> Result<SshTarget, SshError> {
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
    let user = user.or(vm.user).filter(|u| !u.is_root());
    if let Some(user) = &user {
        let public = key.with_extension("pub");
        let line = fs_err::read_to_string(&public)
            .ok()
            .and_then(|text| authorize::key_line(&text))
            .ok_or(SshError::NoKey { path: public })?;
        let vm = VmAs {
            vm: Vm { client, name },
            user: Some(user.clone()),
        };
        authorize::authorize(&vm, &line).await?;
    }
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
        user: user.map_or_else(|| "root".to_string(), |u| u.name().to_string()),
        key,
        known_hosts,
        proxy,
    })
}
