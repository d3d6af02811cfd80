//! `banger-agent`: the guest agent inside every banger VM.
//!
//! * `banger-agent init`: PID 1 after the initramfs's `switch_root`. Forks into a tiny
//!   init (reaper, Ctrl-Alt-Del, shutdown) and the agent, which sets the guest up from
//!   the `banger.*` kernel arguments and then serves the host.
//! * `banger-agent serve`: only the channel loop (under another init, or for tests).
//! * `banger-agent connect HOST:PORT`: stdio joined to a TCP connection, so a guest
//!   port can be reached through the exec stream (banger's SSH ProxyCommand).

mod accounts;
mod boot;
mod channel;
mod connect;
mod detached;
mod exec;
mod fdio;
mod frame;
mod identity;
mod init;
mod logging;
mod mounts;
mod net;
mod pty;
mod run;
mod serial;
mod serve;
mod session;
mod shutdown;
mod spawn;
mod ssh;
mod sys;

#[cfg(test)]
mod testhost;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use banger_wire::agent::{BootConfig, FW_CFG_BOOT_PATH};
use clap::{Parser, Subcommand};

use crate::channel::ChannelKind;
use crate::detached::Detached;
use crate::exec::ExecDefaults;
use crate::session::{Ctx, Role};

/// Where detached commands keep their output in the guest (root's only).
const DETACHED_DIR: &str = "/var/lib/banger/detached";

#[derive(Parser)]
#[command(version, about = "The banger guest agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run as the guest's init (PID 1): set the guest up, then serve the host.
    Init,
    /// Serve the host channel only; `Shutdown` requests are refused.
    Serve {
        /// Kernel command line to read the banger.* settings from.
        #[arg(long, env = "BANGER_AGENT_CMDLINE", default_value = "/proc/cmdline")]
        cmdline: PathBuf,
        /// Connect to this Unix socket instead of banger.channel (testing outside a VM).
        #[arg(long, env = "BANGER_AGENT_UNIX")]
        unix: Option<PathBuf>,
        /// Working directory for commands that name none.
        #[arg(long, default_value = boot::HOME)]
        cwd: PathBuf,
        /// Where detached commands' output is kept (emptied at start).
        #[arg(long, default_value = DETACHED_DIR)]
        detached_dir: PathBuf,
    },
    /// Join stdin/stdout to a TCP connection until both directions end (an SSH
    /// ProxyCommand run through `banger vm exec`).
    Connect {
        /// HOST:PORT, e.g. 127.0.0.1:22.
        addr: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    logging::init();
    match cli.cmd {
        Cmd::Connect { addr } => connect::main(&addr),
        Cmd::Init => init_main(),
        Cmd::Serve {
            cmdline,
            unix,
            cwd,
            detached_dir,
        } => {
            let cfg = read_boot_config(&cmdline)?;
            let kind = match unix {
                Some(path) => ChannelKind::Unix(path),
                None => channel_kind(&cfg)?,
            };
            let ctx = ctx(&cfg, Role::Serve, cwd, detached_dir);
            runtime()?.block_on(agent(kind, ctx))
        }
    }
}

fn init_main() -> anyhow::Result<()> {
    init::become_init().map_err(|e| with_hint(e.hint(), e.into()))?;
    // From here on this is the agent child; PID 1 waits for it.
    boot::early();
    let cfg = read_boot_config(Path::new("/proc/cmdline"))?;
    boot::configure(&cfg);
    let kind = channel_kind(&cfg)?;
    let ctx = ctx(
        &cfg,
        Role::Init,
        PathBuf::from(boot::HOME),
        PathBuf::from(DETACHED_DIR),
    );
    runtime()?.block_on(async move {
        net::configure(&cfg).await;
        tokio::spawn(ssh::run_sshd());
        agent(kind, ctx).await
    })
}

async fn agent(kind: ChannelKind, ctx: Ctx) -> anyhow::Result<()> {
    let role = ctx.role;
    tracing::info!(channel = ?kind, ?role, "banger-agent {} up", env!("CARGO_PKG_VERSION"));
    let reboot = serve::serve(kind, Arc::new(ctx))
        .await
        .map_err(|e| with_hint(e.hint(), e.into()))?;
    if role != Role::Init {
        // Unreachable: sessions refuse `Shutdown` outside init. Never signal a host's PID 1.
        anyhow::bail!("shutdown requested of an agent that is not init");
    }
    tracing::info!(reboot, "handing the shutdown to init");
    init::request_shutdown();
    // Init terminates this process as part of the shutdown.
    std::future::pending::<()>().await;
    Ok(())
}

fn ctx(cfg: &BootConfig, role: Role, cwd: PathBuf, detached_dir: PathBuf) -> Ctx {
    Ctx {
        token: std::sync::Mutex::new(cfg.token.clone()),
        boot_id: std::sync::Mutex::new(sys::boot_id()),
        started_ms: sys::uptime_ms(),
        role,
        exec: ExecDefaults {
            cwd,
            accounts: accounts::Accounts::under("/"),
        },
        detached: Arc::new(Detached::at(detached_dir)),
    }
}

fn read_boot_config(path: &Path) -> anyhow::Result<BootConfig> {
    let text = sys::read_cmdline(path).context("cannot read the boot config")?;
    let mut cfg = BootConfig::from_cmdline(&text);
    // Under QEMU the token comes through fw_cfg, off the host's command lines.
    match fs_err::read_to_string(FW_CFG_BOOT_PATH) {
        Ok(secret) => cfg.merge(BootConfig::from_cmdline(&secret)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = FW_CFG_BOOT_PATH, cause = %e, "cannot read the fw_cfg boot config")
        }
    }
    if cfg.token.is_none() {
        tracing::warn!(cmdline = %path.display(), "no banger.token: every host will be refused");
    }
    Ok(cfg)
}

fn channel_kind(cfg: &BootConfig) -> anyhow::Result<ChannelKind> {
    ChannelKind::from_boot(cfg.channel.as_deref()).map_err(|e| with_hint(e.hint(), e.into()))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn with_hint(hint: Option<&str>, err: anyhow::Error) -> anyhow::Error {
    if let Some(hint) = hint {
        tracing::error!("hint: {hint}");
    }
    err
}
