//! `banger vm ssh NAME [-- cmd args…]` and `banger vm ssh-config NAME`: OpenSSH with
//! banger's key, and a per-VM known_hosts file that pins the guest's host key at first
//! use (read over the agent channel, never trusted on first sight over the network).
//!
//! A VM with a network is dialled at its IP; one without is reached through a
//! ProxyCommand that tunnels the connection over the agent (`banger-agent connect`).

mod error;
mod hostkey;
mod quote;
mod target;

use std::os::unix::process::CommandExt;

use banger_host::config::Paths;
use banger_wire::api::{Request, VmState};

use self::error::SshError;
use self::target::SshTarget;
use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::workspace::exec::Vm;

/// Replaces this process with `ssh`, so its exit code, signals and terminal are the
/// session's own. Returns only if ssh cannot be started.
pub async fn run(client: &Client, name: &str, command: Vec<String>) -> Result<i32, CliError> {
    let target = prepare(client, name).await?;
    let err = std::process::Command::new("ssh")
        .args(target.argv(&command))
        .exec();
    Err(SshError::SshMissing(err).into())
}

/// Prints a `Host` block for ~/.ssh/config (pinning the host key first, so the block
/// works at once).
pub async fn config(client: &Client, name: &str) -> Result<i32, CliError> {
    let target = prepare(client, name).await?;
    output::data(&target.config_block());
    Ok(0)
}

async fn prepare(client: &Client, name: &str) -> Result<SshTarget, SshError> {
    let paths = Paths::from_env();
    let vm = super::vm::expect_vm(
        client
            .rpc(&Request::VmShow {
                name: name.to_string(),
            })
            .await?,
    )?;
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
