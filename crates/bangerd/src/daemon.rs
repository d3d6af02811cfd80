//! The `bangerd` process: set-up around [`crate::server::serve`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use nix::sys::stat::{umask, Mode};

use crate::config::{Config, Paths};
use crate::server::{serve, Deps};
use crate::store::Store;
use crate::vm::{Backends, Manager};
use crate::vmm::qemu::Qemu;
use crate::vmm::Vmm;

/// Finds the VMMs this host has.
pub fn backends(config: &Config) -> Backends {
    let qemu = Qemu::locate(crate::host::qemu_accel()).ok().map(|q| Arc::new(q) as Arc<dyn Vmm>);
    let firecracker = crate::vmm::firecracker_backend();
    Backends { qemu, firecracker, default: crate::host::default_backend(config) }
}

/// Binds the daemon socket: 0660, group `socket_group` when that group exists. Refuses
/// if another daemon answers on it; removes a stale socket file otherwise.
pub fn bind_socket(path: &Path, group: &str) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another bangerd is already listening on {}", path.display());
        }
        fs_err::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
        // Non-root group members must be able to reach the socket inside.
        if nix::unistd::Group::from_name(group).ok().flatten().is_some() {
            let _ = fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o750));
        }
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind {}", path.display()))?;
    fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Ok(Some(g)) = nix::unistd::Group::from_name(group) {
        let _ = nix::unistd::chown(path, None, Some(g.gid));
        if let Some(dir) = path.parent() {
            let _ = nix::unistd::chown(dir, None, Some(g.gid));
        }
    }
    Ok(listener)
}

/// Creates the daemon's directories and opens its store.
pub fn open(paths: &Paths) -> anyhow::Result<Store> {
    for dir in [&paths.state_dir, &paths.runtime_dir, &paths.cache_dir, &paths.vms_dir()] {
        fs_err::create_dir_all(dir)?;
    }
    Ok(Store::open(&paths.db())?)
}

pub fn run() -> anyhow::Result<()> {
    umask(Mode::from_bits_truncate(0o077));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BANGER_LOG")
                .unwrap_or_else(|_| "info,bangerd=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let paths = Paths::from_env();
        let config = Config::load(&paths)?;
        let store = Arc::new(open(&paths)?);
        let backends = backends(&config);
        tracing::info!(
            socket = %paths.socket.display(),
            state = %paths.state_dir.display(),
            default_backend = backends.default.as_str(),
            "bangerd starting"
        );
        let manager = Arc::new(Manager::new(paths.clone(), config.clone(), store, backends));
        let listener = bind_socket(&paths.socket, &config.socket_group)?;
        manager.reconcile().await?;
        if std::env::var_os("BANGER_NOTIFY_STDOUT").is_some() {
            // `banger daemon start` waits for this line instead of polling the socket.
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "READY");
            let _ = out.flush();
        }
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        let socket = paths.socket.clone();
        serve(listener, Deps { manager, socket: socket.clone() }, shutdown).await?;
        let _ = fs_err::remove_file(&socket);
        tracing::info!("bangerd stopped; running VMs keep running");
        Ok(())
    })
}
