//! `banger doctor`: runs `bangerd doctor`, which probes the host (KVM, the VMMs and
//! their user, nftables), so the CLI links none of the probes. It needs no running
//! daemon; the one the CLI would use (`BANGER_SOCKET`) shows its pools when it runs.
//! The report and the exit status (1: a check failed) are passed through.

use std::os::unix::process::ExitStatusExt;

use banger_host::config::Paths;

use crate::client;
use crate::error::CliError;
use crate::output;

pub async fn run(paths: Paths, json: bool) -> Result<i32, CliError> {
    let bangerd = client::daemon_binary();
    let mut cmd = tokio::process::Command::new(&bangerd);
    cmd.arg("doctor");
    if let Ok((located, _)) = client::locate(paths).await {
        cmd.env("BANGER_SOCKET", located.socket);
    }
    if json {
        cmd.arg("--json");
    }
    if output::color_stdout() {
        cmd.arg("--color");
    }
    let status = cmd
        .status()
        .await
        .map_err(|source| CliError::NoDaemonBinary {
            path: bangerd,
            source,
        })?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or_default()))
}
