//! `banger vm ssh NAME [-- cmd args…]` and `banger vm ssh-config NAME` (see
//! [`crate::ssh`]).

use std::os::unix::process::CommandExt;

use banger_wire::user::GuestUser;

use crate::client::Client;
use crate::error::CliError;
use crate::output;
use crate::ssh::{self, SshError};

/// Replaces this process with `ssh`, so its exit code, signals and terminal are the
/// session's own. Returns only if ssh cannot be started.
pub async fn run(
    client: &Client,
    name: &str,
    user: Option<GuestUser>,
    command: Vec<String>,
) -> Result<i32, CliError> {
    let target = ssh::target(client, name, user).await?;
    let err = std::process::Command::new("ssh")
        .args(target.argv(&command))
        .exec();
    Err(SshError::SshMissing(err).into())
}

/// Prints a `Host` block for ~/.ssh/config (pinning the host key first, so the block
/// works at once).
pub async fn config(client: &Client, name: &str, user: Option<GuestUser>) -> Result<i32, CliError> {
    let target = ssh::target(client, name, user).await?;
    output::data(&target.config_block());
    Ok(0)
}
