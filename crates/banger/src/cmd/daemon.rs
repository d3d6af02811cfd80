//! `banger daemon start|stop|status|logs`.

use banger_host::config::Paths;
use banger_wire::api::{Request, Response};

use crate::cli::DaemonCommand;
use crate::client::{self, Client, Daemon};
use crate::error::CliError;
use crate::output;

pub async fn run(paths: &Paths, which: Daemon, cmd: DaemonCommand) -> Result<i32, CliError> {
    let client = Client::new(&paths.socket);
    match cmd {
        DaemonCommand::Start => match client.rpc(&Request::Ping).await {
            Ok(_) => {
                output::note(&format!(
                    "bangerd is already running on {}",
                    paths.socket.display()
                ));
                Ok(0)
            }
            // A connection dropped mid-ping: a daemon that is dying, not serving.
            Err(CliError::Unreachable { .. } | CliError::Http(_)) => {
                let pid = client::start_daemon(paths).await?;
                output::note(&format!(
                    "started bangerd (pid {pid}) on {}",
                    paths.socket.display()
                ));
                Ok(0)
            }
            Err(e) => Err(e),
        },
        DaemonCommand::Stop => match client.rpc(&Request::DaemonShutdown).await {
            Ok(_) => {
                wait_gone(paths).await;
                output::note("bangerd stopped; running VMs keep running");
                Ok(0)
            }
            Err(CliError::Unreachable { .. }) => {
                output::note("bangerd is not running");
                Ok(0)
            }
            Err(e) => Err(e),
        },
        DaemonCommand::Status { json } => match client.rpc(&Request::DaemonStatus).await {
            Ok(Response::Daemon(info)) => {
                if json {
                    let mut value = serde_json::to_value(&info)?;
                    value["daemon"] = which.describe().into();
                    output::json(&value)?;
                } else {
                    output::data(&format!(
                        "running\ndaemon    {}\npid       {}\nversion   {}\nsocket    {}\nstate     {}\nuptime    {}s\nvms       {} running, {} total\npool      {} ready, {} MiB (PSS), {} MiB shared snapshot memory",
                        which.describe(), info.pid, info.version, info.socket, info.state_dir,
                        info.uptime_secs, info.vms_running, info.vms_total,
                        info.pool_vms, info.pool_pss_kib >> 10, info.pool_shared_kib >> 10
                    ));
                    for p in &info.pools {
                        output::data(&format!(
                            "          {}: {}/{} ready, {} MiB (PSS)",
                            p.machine(),
                            p.ready,
                            p.target,
                            p.pss_kib >> 10
                        ));
                    }
                }
                Ok(0)
            }
            Ok(other) => Err(CliError::unexpected(other)),
            Err(CliError::Unreachable { .. }) => {
                if json {
                    output::json(&serde_json::json!({
                        "running": false,
                        "daemon": which.describe(),
                        "socket": paths.socket.display().to_string(),
                    }))?;
                } else {
                    output::data(&format!(
                        "not running\ndaemon    {}\nsocket    {}",
                        which.describe(),
                        paths.socket.display()
                    ));
                }
                Ok(banger_wire::ErrorCode::Unavailable.exit_code())
            }
            Err(e) => Err(e),
        },
        DaemonCommand::Logs => {
            let text = fs_err::read_to_string(paths.daemon_log()).unwrap_or_default();
            output::data(&text);
            Ok(0)
        }
    }
}

/// Waits until the daemon's socket stops answering (it removes it on exit).
/// Waits until the daemon has let go of the state dir, i.e. has exited: its lock comes
/// free only then, so a `daemon start` right after never meets the old one.
async fn wait_gone(paths: &Paths) {
    let path = paths.daemon_lock();
    let wait = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(path).ok()?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared).ok()
    });
    if tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .is_err()
    {
        output::note("bangerd is still exiting after 30 s");
    }
}
