//! The `bangerd` process: set-up around [`crate::server::serve`].

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use banger_host::config::{Config, Paths};
use nix::sys::stat::{umask, Mode};

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::net::{host_nameservers, DnsServer, HostNetwork, NetConfig, VmLookup, RESOLV_CONF};
use crate::server::{serve, Deps};
use crate::store::Store;
use crate::vm::{Backends, Manager};
use crate::vmm::qemu::Qemu;
use crate::vmm::Vmm;

/// Finds the VMMs this host has.
pub fn backends(config: &Config) -> Backends {
    let qemu = Qemu::locate(crate::host::qemu_accel())
        .ok()
        .map(|q| Arc::new(q) as Arc<dyn Vmm>);
    let firecracker = crate::vmm::firecracker_backend();
    Backends {
        qemu,
        firecracker,
        default: crate::host::default_backend(config),
    }
}

/// Binds the daemon socket: as root 0660, group `socket_group` when that group exists;
/// as a user 0600. Refuses if another daemon answers on it; removes a stale socket file
/// otherwise.
pub fn bind_socket(path: &Path, group: &str) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("another bangerd is already listening on {}", path.display());
        }
        fs_err::remove_file(path)?;
    }
    if !nix::unistd::geteuid().is_root() {
        // A user's daemon acts as that user: nobody else may talk to it.
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("cannot bind {}", path.display()))?;
        fs_err::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        return Ok(listener);
    }
    if let Some(dir) = path.parent() {
        fs_err::create_dir_all(dir)?;
        // Non-root group members must be able to reach the socket inside.
        if nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .is_some()
        {
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

/// An exclusive lock on the state dir, held for the daemon's lifetime: two daemons on one
/// store would each reconcile, and so stop or delete, the other's VMs. The file is opened
/// close-on-exec, so VMM children never inherit the lock.
pub struct StateLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// How long a starting daemon waits for the state dir's previous owner to finish exiting.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

pub fn lock_state_dir(paths: &Paths) -> anyhow::Result<StateLock> {
    use nix::fcntl::{Flock, FlockArg};
    use std::io::{Read, Seek, Write};

    let state_dir = &paths.state_dir;
    fs_err::create_dir_all(state_dir)?;
    let path = paths.daemon_lock();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut holder = String::new();
    let _ = (&file).read_to_string(&mut holder);
    // A daemon that was just stopped or killed lets go within moments of exiting; one
    // that still runs keeps it, and then this one refuses.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Flock::lock(file, FlockArg::LockExclusive));
    });
    let mut lock = match rx.recv_timeout(LOCK_PATIENCE) {
        Ok(Ok(lock)) => lock,
        Ok(Err((_, errno))) => {
            return Err(errno).with_context(|| format!("cannot lock {}", path.display()))
        }
        Err(_) => {
            let holder = holder.trim();
            anyhow::bail!(
                "another bangerd{} owns the state dir {}; stop it with `banger daemon stop`, \
                 or give this one its own BANGER_STATE_DIR",
                if holder.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {holder})")
                },
                state_dir.display()
            );
        }
    };
    lock.set_len(0)?;
    lock.rewind()?;
    writeln!(lock, "{}", std::process::id())?;
    Ok(StateLock { _lock: lock })
}

/// Creates the daemon's directories and opens its store.
pub fn open(paths: &Paths) -> anyhow::Result<Store> {
    for dir in [&paths.state_dir, &paths.cache_dir, &paths.vms_dir()] {
        fs_err::create_dir_all(dir)?;
    }
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        fs_err::create_dir_all(&paths.runtime_dir)?;
    } else {
        // A user's daemon trusts only a runtime dir of its own (see `private_dir`).
        banger_host::private_dir::ensure(&paths.runtime_dir, euid.as_raw()).map_err(|e| {
            anyhow::anyhow!(
                "{e}; {}",
                banger_wire::Diagnostic::hint(&e).unwrap_or_default()
            )
        })?;
    }
    Ok(Store::open(&paths.db())?)
}

const SUBNET_KEY: &str = "net.subnet";

/// Sets up the bridge, NAT and tap pool, keeping the taps of VMs that still run.
pub async fn network(config: &Config, store: &Store) -> Result<Arc<HostNetwork>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("bangerd is not root, so it cannot create taps".into());
    }
    let mut net_cfg = NetConfig::from_config(config).map_err(|e| e.to_string())?;
    net_cfg.previous_subnet = store
        .meta(SUBNET_KEY)
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok());
    let keep: HashSet<String> = store
        .list_vms()
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|v| match (v.pid, v.pid_start) {
            (Some(pid), Some(start)) => crate::vm::process::is_same_process(pid, start),
            _ => false,
        })
        .filter_map(|v| v.tap)
        .collect();
    match HostNetwork::setup(&net_cfg, &keep).await {
        Ok(net) => {
            let _ = store.set_meta(SUBNET_KEY, &net.subnet().to_string());
            tracing::info!(bridge = net.bridge(), subnet = %net.subnet(), "host network ready");
            Ok(Arc::new(net))
        }
        Err(e) => {
            tracing::warn!(cause = %e, "host networking unavailable");
            Err(e.to_string())
        }
    }
}

/// Serves `<vm>.vm` names on `dns_listen`, and on the bridge address for guests.
pub async fn start_dns(
    config: &Config,
    store: &Arc<Store>,
    net: Option<Arc<HostNetwork>>,
) -> anyhow::Result<DnsServer> {
    let gateway = net.as_ref().map(|n| n.gateway());
    let mut listen: Vec<SocketAddr> = vec![config
        .dns_listen
        .parse()
        .with_context(|| format!("invalid dns_listen {:?} in config.toml", config.dns_listen))?];
    if let Some(gw) = gateway {
        listen.push(SocketAddr::from((gw, 53)));
    }
    let upstreams = match config.dns_upstreams.as_slice() {
        [] => host_nameservers(Path::new(RESOLV_CONF), &listen).unwrap_or_else(|e| {
            tracing::warn!(cause = %e, "no upstream resolvers: only <vm>.vm names will resolve");
            Vec::new()
        }),
        given => given
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .with_context(|| format!("invalid dns_upstreams entry {s:?} in config.toml"))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    let store = store.clone();
    let lookup: VmLookup = Arc::new(move |name: &str| {
        store
            .ip_of_name(name)
            .ok()
            .flatten()
            .and_then(|ip| ip.parse().ok())
    });
    Ok(DnsServer::start(&listen, &upstreams, lookup, net).await?)
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
        let _state_lock = lock_state_dir(&paths)?;
        let store = Arc::new(open(&paths)?);
        let backends = backends(&config);
        tracing::info!(
            socket = %paths.socket.display(),
            state = %paths.state_dir.display(),
            default_backend = backends.default.as_str(),
            "bangerd starting"
        );
        if let Err(e) = crate::ssh::ensure_key(&paths) {
            tracing::warn!(cause = %e, "no banger ssh key; `vm ssh` will not work");
        }
        let listener = bind_socket(&paths.socket, &config.socket_group)?;
        let net = network(&config, &store).await;
        crate::net::Rules::parse(&config.default_policy())
            .context("invalid network policy defaults in config.toml")?;
        let dns = start_dns(&config, &store, net.as_ref().ok().cloned()).await?;
        let manager = Arc::new(Manager::new(
            paths.clone(),
            config.clone(),
            store,
            backends,
            net,
        ));
        crate::image::sweep(&manager.paths);
        manager.reconcile().await?;
        manager.spawn_reaper();
        manager.refill_all();
        if std::env::var_os("BANGER_NOTIFY_STDOUT").is_some() {
            // `banger daemon start` waits for this line instead of polling the socket.
            use std::io::Write;
            let mut out = std::io::stdout();
            let _ = writeln!(out, "READY");
            let _ = out.flush();
        }
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        let socket = paths.socket.clone();
        let net = manager.net.clone();
        serve(
            listener,
            Deps {
                manager: manager.clone(),
                socket: socket.clone(),
                agent: None,
            },
            shutdown,
        )
        .await?;
        manager.empty_pools().await;
        dns.shutdown().await;
        // Spare taps go; running VMs keep theirs, the bridge and their NAT rules.
        if let Ok(net) = net {
            if let Err(e) = net.shutdown().await {
                tracing::warn!(cause = %e, "cannot delete the spare taps");
            }
        }
        let _ = fs_err::remove_file(&socket);
        tracing::info!("bangerd stopped; running VMs keep running, pooled clones are gone");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_daemon_on_a_state_dir_is_refused_until_the_first_lets_go() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths::under(root.path());
        let first = lock_state_dir(&paths).unwrap();

        let err = lock_state_dir(&paths).err().unwrap().to_string();
        assert!(
            err.contains(&format!(
                "another bangerd (pid {}) owns",
                std::process::id()
            )),
            "{err}"
        );

        drop(first);
        assert!(lock_state_dir(&paths).is_ok());
    }
}
