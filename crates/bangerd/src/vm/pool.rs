//! The hot pool: per warm machine (its machine and network policy), up to `pool_size`
//! clones of the warm snapshot restored ahead of time in the background and paused, so
//! that a warm create takes one instead of restoring.
//!
//! A pooled clone is restored like any clone (its own disk, address, token and, by the
//! restore's `Reconfigure`, host key and randomness). When a create takes it, it gets the
//! create's name, is resumed, and a second `Reconfigure` gives the guest that name, the
//! clock and fresh randomness again. Its rows are ephemeral: a restarted daemon deletes
//! it like any VM of a run that died with the daemon, and fills the pool again. A new
//! warm snapshot (an image rebuilt, `image warm` again) leaves the older clones unused,
//! and the next refill deletes them; deleting a snapshot deletes its clones.
//!
//! A pool keeps the image's own size (`image warm --pool N`, in the store) or else the
//! config's `pool_size`; a refill also deletes the clones over that size.
//!
//! Refills never push the host into swap: a clone is restored only while the host
//! would keep [`RESERVE_DIVISOR`]th of its memory available even if the clone wrote all
//! of its guest memory.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use banger_wire::agent::GuestIdentity;
use banger_wire::api::{NetPolicy, PoolSize, VmCreateSpec, VmInfo};

use super::{lock, Machine, Manager};
use crate::error::DaemonError;
use crate::store::{PoolEntry, SnapshotRecord, StoreError};

/// A refill leaves at least 1/`RESERVE_DIVISOR` of the host's memory available.
const RESERVE_DIVISOR: u64 = 8;

/// What the daemon knows of one pool besides its rows: what it serves, and how its
/// refills went (for `daemon status` and `doctor`).
#[derive(Debug, Clone)]
pub(super) struct PoolState {
    pub(super) machine: Machine,
    pub(super) policy: NetPolicy,
    filling: bool,
    pub(super) short_of_memory: bool,
    pub(super) failures: u32,
    pub(super) last_error: Option<String>,
}

impl PoolState {
    fn new(machine: Machine, policy: NetPolicy) -> PoolState {
        PoolState {
            machine,
            policy,
            filling: false,
            short_of_memory: false,
            failures: 0,
            last_error: None,
        }
    }
}

/// How long a take's steps took: the VMM's resume, and the guest's new identity (its
/// `Reconfigure` round trip).
struct Woken {
    resume_ms: u64,
    identity_ms: u64,
}

/// How a refill ended.
enum Filled {
    Full,
    ShortOfMemory,
}

/// What a pooled clone serves, as the store keeps it: the machine and the policy asked.
pub(super) fn pool_key(m: &Machine, policy: &NetPolicy) -> String {
    let policy = serde_json::to_string(policy).unwrap_or_default();
    format!("{m:?} {policy}")
}

/// Whether a create may take a pooled clone: a plain warm create, with nothing a clone
/// restored ahead of time could not have (port forwards).
fn poolable(spec: &VmCreateSpec) -> bool {
    spec.warm
        && !spec.no_pool
        && !spec.no_start
        && spec.from_snapshot.is_none()
        && spec.publish.is_empty()
}

/// `(MemAvailable, MemTotal)` in bytes, from `/proc/meminfo`.
fn meminfo() -> Option<(u64, u64)> {
    let text = fs_err::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib << 10)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

/// Whether a clone of `memory_mib` fits without eating into the reserve.
fn memory_allows(memory_mib: u32, available: u64, total: u64) -> bool {
    let need = u64::from(memory_mib) << 20;
    available.saturating_sub(need) >= total / RESERVE_DIVISOR
}

impl Manager {
    /// A warm create served by the pool: a ready clone renamed, resumed and given its
    /// identity. `None` when the pool has none (the caller restores or boots), and a
    /// refill is started either way.
    pub(super) async fn take_pooled(
        self: &Arc<Self>,
        spec: &VmCreateSpec,
    ) -> Result<Option<VmInfo>, DaemonError> {
        let m = self.machine(spec);
        if !poolable(spec) || self.pool_target(&m.image) == 0 {
            return Ok(None);
        }
        let Some(snap) = self.warm_snapshots(&m, true)?.pop() else {
            return Ok(None);
        };
        let key = pool_key(&m, &spec.policy);
        let name = spec.name.clone().unwrap_or_else(super::spec::generate_name);
        super::spec::validate_name(&name)?;
        let taken = loop {
            let t0 = Instant::now();
            let Some(id) = self
                .store
                .pool_take(&key, &snap.id, &name, spec.ephemeral, spec.user.as_ref())
                .map_err(|e| match e {
                    StoreError::NameTaken(n) => DaemonError::NameTaken(n),
                    e => e.into(),
                })?
            else {
                break None;
            };
            match self.wake(&id, &name).await {
                Ok((vm, woken)) => {
                    let take_ms = t0.elapsed().as_millis() as u64;
                    tracing::info!(
                        vm = %name,
                        snapshot = %snap.name,
                        take_ms,
                        resume_ms = woken.resume_ms,
                        identity_ms = woken.identity_ms,
                        "vm taken from the pool"
                    );
                    break Some(vm);
                }
                Err(e) => {
                    tracing::warn!(vm = %name, cause = %e, "pooled clone failed to wake; deleting it");
                    // The name is the caller's again for the next try, whatever the
                    // delete does.
                    if let Err(e) = self.store.release_name(&id) {
                        tracing::warn!(vm = %id, cause = %e, "cannot free a pooled clone's name");
                    }
                    self.discard_pooled(&id).await;
                }
            }
        };
        // The run that took one is under way: the pool refills when a VM is deleted
        // (see `refill_all`), and at once only when it ran dry.
        let left = self.store.pool_entries()?;
        if !left.iter().any(|e| e.machine == key && e.ready) {
            self.refill(m, spec.policy.clone());
        }
        Ok(taken)
    }

    /// Deletes pooled VM `id`; a failure is logged (a restart's reconcile deletes what
    /// is left of it).
    async fn discard_pooled(&self, id: &str) {
        if let Err(e) = self.delete(id).await {
            tracing::warn!(vm = %id, cause = %e, "cannot delete a pooled clone");
        }
    }

    /// Resumes pooled VM `id`, now named `name`, and gives its guest that name, the
    /// clock and fresh randomness.
    async fn wake(&self, id: &str, name: &str) -> Result<(VmInfo, Woken), DaemonError> {
        let slot = self.slot(id);
        let _op = slot.op.lock().await;
        let rec = self.record(id)?;
        let rt = slot.runtime().ok_or_else(|| DaemonError::WrongState {
            name: name.to_string(),
            state: rec.state.as_str(),
            hint: "its VMM is gone".into(),
        })?;
        let vm_err = |source| DaemonError::Vmm {
            vm: name.to_string(),
            source,
        };
        let t0 = Instant::now();
        rt.vmm.resume(&rt.launched).await.map_err(vm_err)?;
        let resume_ms = t0.elapsed().as_millis() as u64;
        let agent = self.agent(&rec).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let id = GuestIdentity {
            token: rec.token.clone(),
            hostname: name.to_string(),
            // The address, gateway and DNS are the clone's since its restore.
            ip: None,
            gateway: None,
            dns: None,
            mac: None,
            unix_time_ms: now.as_millis() as u64,
            entropy: rand::random::<[u8; 32]>().to_vec(),
        };
        let t1 = Instant::now();
        agent
            .reconfigure(&id)
            .await
            .map_err(|source| DaemonError::Agent {
                vm: name.to_string(),
                source,
            })?;
        let woken = Woken {
            resume_ms,
            identity_ms: t1.elapsed().as_millis() as u64,
        };
        Ok((self.show(&rec.id)?, woken))
    }

    /// How many clones the pools of `image` keep: its own size, else the config's.
    pub(super) fn pool_target(&self, image: &str) -> usize {
        match self.store.image_pool_size(image) {
            Ok(Some(size)) => size as usize,
            _ => self.config.pool_size,
        }
    }

    /// Sets image `image`'s own pool size (or puts it back on the config's), and resizes
    /// its pools: the clones over it are deleted before this returns, the missing ones
    /// restored in the background.
    pub(super) async fn set_pool_size(
        self: &Arc<Self>,
        image: &str,
        size: PoolSize,
    ) -> Result<(), DaemonError> {
        self.store.set_image_pool_size(image, size.own())?;
        let size = self.pool_target(image);
        let mut pools: Vec<(Machine, NetPolicy)> = lock(&self.pools)
            .values()
            .filter(|p| p.machine.image == image)
            .map(|p| (p.machine.clone(), p.policy.clone()))
            .collect();
        for s in self.store.list_snapshots()? {
            let m = Machine::of_snapshot(&s);
            if s.warm && s.image == image && !pools.iter().any(|(p, _)| *p == m) {
                pools.push((m, NetPolicy::default()));
            }
        }
        for (m, policy) in pools {
            self.trim(&pool_key(&m, &policy), size).await?;
            self.refill(m, policy);
        }
        Ok(())
    }

    /// Deletes the ready clones of pool `key` over `target`.
    async fn trim(&self, key: &str, target: usize) -> Result<(), DaemonError> {
        let ready: Vec<PoolEntry> = self
            .store
            .pool_entries()?
            .into_iter()
            .filter(|e| e.machine == key && e.ready)
            .collect();
        for surplus in ready.iter().skip(target) {
            // A create may take it meanwhile; then it is not ours to delete.
            if self.store.pool_claim(&surplus.vm_id)? {
                self.delete(&surplus.vm_id).await?;
                tracing::info!(pool = %key, vm = %surplus.vm_id, "pooled clone over the pool's size deleted");
            }
        }
        Ok(())
    }

    /// Fills the pool of machine `m` with `policy` up to its size in the background,
    /// after deleting its clones of older warm snapshots and those over the size. One
    /// refill per pool at a time.
    pub(super) fn refill(self: &Arc<Self>, m: Machine, policy: NetPolicy) {
        let key = pool_key(&m, &policy);
        {
            let mut pools = lock(&self.pools);
            if self.pools_closed.load(Ordering::SeqCst) {
                return;
            }
            let state = pools
                .entry(key.clone())
                .or_insert_with(|| PoolState::new(m.clone(), policy.clone()));
            if state.filling {
                return;
            }
            state.filling = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let filled = this.fill(&m, &policy, &key).await;
            let mut pools = lock(&this.pools);
            this.fill_ended.notify_waiters();
            let Some(state) = pools.get_mut(&key) else {
                return;
            };
            state.filling = false;
            match filled {
                Ok(Filled::Full) => {
                    state.short_of_memory = false;
                    state.failures = 0;
                    state.last_error = None;
                }
                Ok(Filled::ShortOfMemory) => state.short_of_memory = true,
                Err(e) => {
                    tracing::warn!(pool = %key, cause = %e, "pool refill stopped");
                    state.failures += 1;
                    state.last_error = Some(e.to_string());
                }
            }
        });
    }

    async fn fill(
        self: &Arc<Self>,
        m: &Machine,
        policy: &NetPolicy,
        key: &str,
    ) -> Result<Filled, DaemonError> {
        let Some(snap) = self.warm_snapshots(m, true)?.pop() else {
            return Ok(Filled::Full);
        };
        loop {
            let mine: Vec<PoolEntry> = self
                .store
                .pool_entries()?
                .into_iter()
                .filter(|e| e.machine == key)
                .collect();
            for stale in mine.iter().filter(|e| e.snapshot != snap.id) {
                self.discard_pooled(&stale.vm_id).await;
            }
            let target = self.pool_target(&m.image);
            self.trim(key, target).await?;
            if mine.iter().filter(|e| e.snapshot == snap.id).count() >= target {
                return Ok(Filled::Full);
            }
            if self.pools_closed.load(Ordering::SeqCst) {
                return Ok(Filled::Full);
            }
            match meminfo() {
                Some((available, total)) if !memory_allows(m.memory_mib, available, total) => {
                    tracing::info!(
                        pool = %key,
                        available_mib = available >> 20,
                        "pool not refilled: the host's memory is low"
                    );
                    return Ok(Filled::ShortOfMemory);
                }
                _ => {}
            }
            self.fill_one(policy, key, &snap).await?;
        }
    }

    /// Restores one clone of `snap` into the pool `key` and pauses it.
    async fn fill_one(
        self: &Arc<Self>,
        policy: &NetPolicy,
        key: &str,
        snap: &SnapshotRecord,
    ) -> Result<(), DaemonError> {
        let t0 = Instant::now();
        let spec = VmCreateSpec {
            name: Some(format!("pool-{}", hex::encode(rand::random::<[u8; 4]>()))),
            policy: policy.clone(),
            exec_only: true,
            ephemeral: true,
            ..Default::default()
        };
        let vm = self.create_clone_into(spec, &snap.id, Some(key)).await?;
        let slot = self.slot(&vm.id);
        let paused = async {
            // The restore gave the guest a new SSH host key: sshd restarts with it in
            // the background. Paused before it listens, the clone would finish that
            // work in the run that takes it.
            self.wait_ssh(&vm.id).await;
            let _op = slot.op.lock().await;
            let rt = slot.runtime().ok_or_else(|| DaemonError::WrongState {
                name: vm.name.clone(),
                state: "stopped",
                hint: "its VMM is gone".into(),
            })?;
            rt.vmm
                .pause(&rt.launched)
                .await
                .map_err(|source| DaemonError::Vmm {
                    vm: vm.name.clone(),
                    source,
                })?;
            self.store.pool_set_ready(&vm.id)?;
            Ok::<(), DaemonError>(())
        }
        .await;
        if let Err(e) = paused {
            self.discard_pooled(&vm.id).await;
            return Err(e);
        }
        let fill_ms = t0.elapsed().as_millis() as u64;
        tracing::info!(vm = %vm.name, snapshot = %snap.name, fill_ms, "pooled clone ready");
        Ok(())
    }

    /// Fills the pools of every current warm snapshot for the default policy: after a
    /// start (whose reconcile deleted the clones a previous daemon left), and after a
    /// delete, when the run that took a clone is over and its CPU free.
    /// Clones of snapshots that are no longer current (their image was rebuilt) are
    /// deleted.
    pub fn refill_all(self: &Arc<Self>) {
        let Ok(snaps) = self.store.list_snapshots() else {
            return;
        };
        let mut current = std::collections::HashSet::new();
        for s in snaps.iter().filter(|s| s.warm) {
            let m = Machine::of_snapshot(s);
            if self
                .warm_snapshots(&m, true)
                .is_ok_and(|c| c.iter().any(|c| c.id == s.id))
            {
                current.insert(s.id.clone());
                self.refill(m, NetPolicy::default());
            }
        }
        let stale: Vec<String> = self
            .store
            .pool_entries()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.ready && !current.contains(&e.snapshot))
            .map(|e| e.vm_id)
            .collect();
        if !stale.is_empty() {
            let this = self.clone();
            tokio::spawn(async move {
                for id in stale {
                    this.discard_pooled(&id).await;
                }
            });
        }
    }

    /// Daemon shutdown: no refill starts, the ones under way end after their current
    /// clone, and every pooled clone is deleted. The pools are a cache the next daemon
    /// fills again; their VMMs must not outlive the daemon that owns them.
    pub async fn empty_pools(&self) {
        loop {
            let ended = self.fill_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            {
                let pools = lock(&self.pools);
                self.pools_closed.store(true, Ordering::SeqCst);
                if !pools.values().any(|p| p.filling) {
                    break;
                }
            }
            ended.await;
        }
        for e in self.store.pool_entries().unwrap_or_default() {
            self.discard_pooled(&e.vm_id).await;
        }
    }

    /// Deletes the pooled clones of snapshot `id` (it is being deleted).
    pub(super) async fn discard_pool_of(&self, snapshot_id: &str) {
        let Ok(entries) = self.store.pool_entries() else {
            return;
        };
        for e in entries.iter().filter(|e| e.snapshot == snapshot_id) {
            self.discard_pooled(&e.vm_id).await;
        }
    }

    /// The ids of the VMs in a pool, which `vm list` leaves out.
    pub(super) fn pooled_ids(&self) -> std::collections::HashSet<String> {
        self.store
            .pool_entries()
            .map(|e| e.into_iter().map(|e| e.vm_id).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refill_keeps_an_eighth_of_the_host_available() {
        let gib = 1u64 << 30;

        assert!(memory_allows(1024, 8 * gib, 24 * gib));
        assert!(!memory_allows(1024, 3 * gib + gib / 2, 24 * gib));
        assert!(!memory_allows(1024, gib / 2, 24 * gib));
    }

    #[test]
    fn only_plain_warm_creates_take_from_the_pool() {
        let warm = VmCreateSpec {
            warm: true,
            ..Default::default()
        };
        let published = VmCreateSpec {
            publish: vec!["8080:80".into()],
            ..warm.clone()
        };
        let bypass = VmCreateSpec {
            no_pool: true,
            ..warm.clone()
        };

        assert!(poolable(&warm));
        assert!(!poolable(&published));
        assert!(!poolable(&bypass));
        assert!(!poolable(&VmCreateSpec::default()));
    }

    #[test]
    fn pools_differ_by_policy() {
        let m = Machine {
            image: "default".into(),
            backend: banger_wire::api::Backend::Qemu,
            vcpu: 2,
            memory_mib: 512,
            disk_size_mib: 1024,
            no_network: false,
        };
        let open = NetPolicy {
            mode: Some(banger_wire::api::NetMode::Open),
            ..Default::default()
        };

        assert_ne!(pool_key(&m, &NetPolicy::default()), pool_key(&m, &open));
    }
}
