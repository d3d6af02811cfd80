//! Persistent tap devices `bgtap<N>` on the bridge, and a pool of spare ones so that a
//! VM create never waits for one.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use super::{NetError, Netlink};

/// Name prefix of every tap banger creates.
pub const TAP_PREFIX: &str = "bgtap";

/// Held by a daemon while it creates a tap or sweeps stale ones, host-wide: creating a
/// tap under a name that exists would open the other daemon's device instead of
/// failing, and a sweep could delete a tap another daemon has made but not yet put on
/// its bridge.
const TAP_LOCK: &str = "/run/banger-taps.lock";

/// The host-wide tap lock, held for milliseconds but across awaits (netlink). It is
/// waited for on the blocking pool: a flock waited for on a runtime worker starves the
/// holder's own awaits, and with a few concurrent creates the daemon hangs.
async fn tap_lock() -> Result<nix::fcntl::Flock<std::fs::File>, NetError> {
    lock_file(TAP_LOCK).await
}

async fn lock_file(path: &'static str) -> Result<nix::fcntl::Flock<std::fs::File>, NetError> {
    let io = |source| NetError::TapLock {
        path: path.into(),
        source,
    };
    let wait = move || {
        let file = fs_err::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io)?;
        nix::fcntl::Flock::lock(file.into_parts().0, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io(e.into()))
    };
    tokio::task::spawn_blocking(wait)
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
}

/// A tap device attached to the bridge, ready for a VMM to open by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tap {
    pub name: String,
}

/// The `N` of a `bgtap<N>` name.
pub fn tap_index(name: &str) -> Option<u32> {
    let digits = name.strip_prefix(TAP_PREFIX)?;
    match digits.starts_with('0') && digits.len() > 1 {
        true => None,
        false => digits.parse().ok(),
    }
}

/// Creates tap `name` (TUNSETIFF) and makes it outlive this process (TUNSETPERSIST).
fn create_persistent_tap(name: &str) -> Result<(), NetError> {
    let wrap = |source| NetError::TapCreate {
        name: name.to_string(),
        source,
    };
    let mut config = tun::Configuration::default();
    config.tun_name(name).layer(tun::Layer::L2);
    config.platform_config(|p| {
        // Address and state are set over netlink, not by the tun crate's ioctls.
        p.ensure_root_privileges(false);
    });
    let mut device = tun::create(&config).map_err(wrap)?;
    device.persist().map_err(wrap)
}

/// Opens a queue of the existing tap `name` (root only), for handing to a VMM that
/// cannot open it itself. With `IFF_VNET_HDR`, as QEMU would open it, so offloads work.
pub fn open_queue(name: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    let mut config = tun::Configuration::default();
    config.tun_name(name).layer(tun::Layer::L2);
    config.platform_config(|p| {
        p.ensure_root_privileges(false);
        p.vnet_hdr(true);
    });
    let device = tun::create(&config).map_err(std::io::Error::other)?;
    // `tun` hands out only a raw fd; duplicating it through our own pidfd gives an
    // owned one without `unsafe`. `device` stays open until the copy exists.
    let me = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )?;
    let fd = rustix::process::pidfd_getfd(
        &me,
        std::os::fd::AsRawFd::as_raw_fd(&device),
        rustix::process::PidfdGetfdFlags::empty(),
    )?;
    Ok(fd)
}

/// Spare taps, refilled in the background. Dropping the pool stops the refill and leaves
/// every device in place; [`TapPool::drain`] deletes the spares.
pub struct TapPool {
    inner: Arc<Inner>,
    refill: Arc<Notify>,
}

struct Inner {
    netlink: Netlink,
    bridge_index: u32,
    spares_wanted: usize,
    state: Mutex<State>,
    /// Set by [`TapPool::drain`] and on drop: no more spares are made.
    closed: AtomicBool,
    /// Held while spares are being made, so a drain waits for a refill under way and
    /// no spare appears after it.
    filling: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    spares: Vec<String>,
    /// Indices of every banger tap that exists: spares, taken and kept.
    used: BTreeSet<u32>,
}

impl TapPool {
    /// Adopts the taps named in `keep` (those of running VMs), deletes every other
    /// `bgtap*` device that is detached or on this bridge (spares and leftovers of an
    /// earlier daemon), leaves taps on other bridges alone, creates `spares`
    /// taps on the bridge with index `bridge_index`, and starts the background refill.
    pub async fn start(
        netlink: Netlink,
        bridge_index: u32,
        spares: usize,
        keep: &HashSet<String>,
    ) -> Result<TapPool, NetError> {
        let mut used = BTreeSet::new();
        let swept = tap_lock().await?;
        for link in netlink.links().await? {
            let Some(index) = tap_index(&link.name) else {
                continue;
            };
            // Taps of running VMs stay, and so do taps on another bridge: they belong
            // to another banger daemon (a smoke run beside a real install).
            let foreign = link.controller.is_some_and(|c| c != bridge_index);
            if keep.contains(&link.name) || foreign {
                used.insert(index);
            } else {
                tracing::info!(tap = %link.name, "deleting stale tap");
                netlink.delete(&link.name).await?;
            }
        }
        drop(swept);
        let inner = Arc::new(Inner {
            netlink,
            bridge_index,
            spares_wanted: spares,
            state: Mutex::new(State {
                spares: Vec::new(),
                used,
            }),
            closed: AtomicBool::new(false),
            filling: tokio::sync::Mutex::new(()),
        });
        inner.fill().await?;
        let refill = Arc::new(Notify::new());
        tokio::spawn(refill_loop(Arc::downgrade(&inner), refill.clone()));
        Ok(TapPool { inner, refill })
    }

    /// A tap for a new VM: a spare when there is one, else one made now.
    pub async fn take(&self) -> Result<Tap, NetError> {
        loop {
            let spare = self.inner.lock().spares.pop();
            self.refill.notify_one();
            let Some(name) = spare else {
                return self.inner.create().await.map(|name| Tap { name });
            };
            if self.inner.netlink.link(&name).await?.is_some() {
                return Ok(Tap { name });
            }
            tracing::warn!(tap = %name, "spare tap vanished; taking another");
            self.inner.forget(&name);
        }
    }

    /// Returns a tap no VMM has used back to the spares, or deletes it when there are
    /// enough spares.
    pub async fn give_back(&self, tap: Tap) -> Result<(), NetError> {
        {
            let mut state = self.inner.lock();
            if state.spares.len() < self.inner.spares_wanted {
                state.spares.push(tap.name);
                return Ok(());
            }
        }
        self.destroy(&tap.name).await
    }

    /// Deletes tap `name`; a missing device is not an error.
    pub async fn destroy(&self, name: &str) -> Result<(), NetError> {
        self.inner.netlink.delete(name).await?;
        self.inner.forget(name);
        Ok(())
    }

    /// Deletes every spare tap and makes no more (daemon shutdown). Taps handed out stay.
    pub async fn drain(&self) -> Result<(), NetError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        let _filling = self.inner.filling.lock().await;
        let spares = std::mem::take(&mut self.inner.lock().spares);
        for name in spares {
            self.destroy(&name).await?;
        }
        Ok(())
    }

    /// Names of the current spares.
    pub fn spares(&self) -> Vec<String> {
        self.inner.lock().spares.clone()
    }

    /// Fills up to the wanted number of spares now, without waiting for the background.
    pub async fn fill(&self) -> Result<(), NetError> {
        self.inner.fill().await
    }
}

impl Drop for TapPool {
    fn drop(&mut self) {
        // Wakes the refill task so it sees the pool is closed and ends.
        self.inner.closed.store(true, Ordering::SeqCst);
        self.refill.notify_one();
    }
}

async fn refill_loop(inner: Weak<Inner>, refill: Arc<Notify>) {
    loop {
        refill.notified().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = inner.fill().await {
            tracing::warn!(error = %e, "could not refill the tap pool");
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, name: &str) {
        let mut state = self.lock();
        state.spares.retain(|s| s != name);
        if let Some(index) = tap_index(name) {
            state.used.remove(&index);
        }
    }

    async fn fill(&self) -> Result<(), NetError> {
        let _filling = self.filling.lock().await;
        while !self.closed.load(Ordering::SeqCst) && self.lock().spares.len() < self.spares_wanted {
            let name = self.create().await?;
            self.lock().spares.push(name);
        }
        Ok(())
    }

    /// Makes a new tap on the bridge, up, under the lowest index that is free on the
    /// host (another daemon's taps included), under the host-wide tap lock.
    async fn create(&self) -> Result<String, NetError> {
        let _creating = tap_lock().await?;
        let name = loop {
            let name = {
                let mut state = self.lock();
                let index = (0..).find(|i| !state.used.contains(i)).unwrap_or(0);
                state.used.insert(index);
                format!("{TAP_PREFIX}{index}")
            };
            // Taken by another daemon since we looked: keep the index marked used.
            if self.netlink.link(&name).await?.is_none() {
                break name;
            }
        };
        let made = async {
            create_persistent_tap(&name)?;
            self.netlink.set_up(&name, Some(self.bridge_index)).await
        };
        if let Err(e) = made.await {
            let _ = self.netlink.delete(&name).await;
            self.forget(&name);
            return Err(e);
        }
        tracing::debug!(tap = %name, "created tap");
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_index_parses_only_banger_names() {
        assert_eq!(tap_index("bgtap0"), Some(0));
        assert_eq!(tap_index("bgtap17"), Some(17));
        assert_eq!(tap_index("bgtap"), None);
        assert_eq!(tap_index("bgtap01"), None);
        assert_eq!(tap_index("tap0"), None);
        assert_eq!(tap_index("bgtapx"), None);
    }

    /// Holders await while holding the lock; waiters must not take the runtime's only
    /// worker from them. Waiting on a worker thread hung here.
    #[test]
    fn lock_waiters_do_not_starve_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path: &'static str = Box::leak(
            dir.path()
                .join("taps.lock")
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        );
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let held = lock_file(path).await.expect("lock");
                let waiter = tokio::spawn(async move { lock_file(path).await.map(drop) });
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                drop(held);
                waiter.await.expect("join").expect("second lock");
            });
            let _ = done.send(());
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a waiter blocked the holder's runtime");
    }
}
