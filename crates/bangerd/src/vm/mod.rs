//! The VM manager: create, start, stop, delete, adopt. It owns every VMM's lifecycle;
//! no VMM is ever tied to the request that started it.
//!
//! Locking: each VM has a [`Slot`] with an async operation lock, held for the whole of
//! start/stop/delete/set, so operations on one VM serialise while different VMs proceed
//! in parallel. The supervisor task never takes that lock.

mod agent;
mod boot;
mod clone;
mod console;
mod create;
mod detached;
mod files;
mod idle;
mod network;
mod pool;
mod pool_status;
mod ports;
pub mod process;
mod prune;
mod reconcile;
mod snapshot;
mod sparse;
pub mod spec;
mod supervise;
mod ttl;
mod warm;

pub use idle::{Busy, VmStream};
pub use prune::stopped;
/// A manager on a temp dir without VMMs or network, and VM rows, for other modules' tests.
#[cfg(test)]
pub(crate) use ttl::tests::{manager as test_manager, vm as test_vm};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use banger_host::config::{Config, Paths};
use banger_wire::agent::{AgentRequest, ExecSpec};
use banger_wire::api::{Backend, VmInfo, VmSetSpec, VmState};
use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::agent_conn::AgentConn;
use crate::error::DaemonError;
use crate::failpoint::failpoint;
use crate::net::HostNetwork;
use crate::store::{Store, VmRecord};
use crate::vmm::{Launched, Vmm, VmmError};

/// The VMM implementations this daemon can use.
#[derive(Clone)]
pub struct Backends {
    pub qemu: Option<Arc<dyn Vmm>>,
    pub firecracker: Option<Arc<dyn Vmm>>,
    pub default: Backend,
}

impl Backends {
    pub fn get(&self, b: Backend) -> Result<Arc<dyn Vmm>, VmmError> {
        let (vmm, binary) = match b {
            Backend::Qemu => (&self.qemu, "qemu-system-x86_64"),
            Backend::Firecracker => (&self.firecracker, "firecracker"),
        };
        vmm.clone().ok_or(VmmError::BinaryMissing {
            binary: binary.into(),
        })
    }
}

/// A running VMM as the daemon tracks it.
pub(crate) struct Runtime {
    pub launched: Launched,
    pub vmm: Arc<dyn Vmm>,
    pub stop_requested: AtomicBool,
    pub agent: watch::Sender<Option<AgentConn>>,
    /// Becomes true once the exit has been recorded in the store.
    pub exited: watch::Sender<bool>,
}

impl Runtime {
    pub async fn wait_exited(&self, limit: Duration) -> bool {
        let mut rx = self.exited.subscribe();
        let res = tokio::time::timeout(limit, rx.wait_for(|e| *e))
            .await
            .is_ok();
        res
    }
}

#[derive(Default)]
pub(crate) struct Slot {
    pub op: tokio::sync::Mutex<()>,
    pub rt: Mutex<Option<Arc<Runtime>>>,
}

impl Slot {
    pub fn runtime(&self) -> Option<Arc<Runtime>> {
        lock(&self.rt).clone()
    }
    pub fn set_runtime(&self, rt: Option<Arc<Runtime>>) {
        *lock(&self.rt) = rt;
    }
}

pub struct Manager {
    pub paths: Paths,
    pub config: Config,
    pub store: Arc<Store>,
    pub backends: Backends,
    /// The host network, or why there is none (e.g. the daemon is not root).
    pub net: Result<Arc<HostNetwork>, String>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// Serialises lease allocation so concurrent creates never pick the same IP.
    lease_lock: Mutex<()>,
    /// Per snapshot: clones read its files (shared), a delete removes them (exclusive).
    snapshot_locks: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
    /// Machines whose warm snapshot is being taken, so concurrent first runs take one.
    warming: Mutex<std::collections::HashSet<String>>,
    /// The pools (see [`pool`]) by their key: what each serves and how its refills went.
    pools: Mutex<HashMap<String, pool::PoolState>>,
    /// Set at daemon shutdown: no refill starts any more (see [`Manager::empty_pools`]).
    pools_closed: std::sync::atomic::AtomicBool,
    /// Rung when a refill ends.
    fill_ended: tokio::sync::Notify,
    /// Throwaway VMs whose delete runs after their caller was answered: gone for
    /// `vm list` already (a restart finishes the delete if this daemon dies first).
    deleting: Mutex<std::collections::HashSet<String>>,
    /// Rung when a VM gets an expiry (see [`ttl`]).
    reaper: ttl::Reaper,
    /// Held from the check that a host port is free to its forward being stored (see
    /// [`ports`]), so two VMs never take one port.
    forwards: tokio::sync::Mutex<()>,
    /// When each VM was last used (see [`idle`]).
    activity: Arc<idle::Activity>,
}

/// A VM's machine: what it boots and on what. A warm snapshot serves the creates whose
/// machine equals its own.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Machine {
    image: String,
    backend: Backend,
    vcpu: u32,
    memory_mib: u32,
    disk_size_mib: u64,
    no_network: bool,
}

/// A std mutex's guard; a poisoned lock is still usable (its holder only panicked).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Manager {
    pub fn new(
        paths: Paths,
        config: Config,
        store: Arc<Store>,
        backends: Backends,
        net: Result<Arc<HostNetwork>, String>,
    ) -> Manager {
        Manager {
            paths,
            config,
            store,
            backends,
            net,
            slots: Mutex::new(HashMap::new()),
            lease_lock: Mutex::new(()),
            snapshot_locks: Mutex::new(HashMap::new()),
            warming: Mutex::new(std::collections::HashSet::new()),
            pools: Mutex::new(HashMap::new()),
            pools_closed: Default::default(),
            fill_ended: tokio::sync::Notify::new(),
            deleting: Mutex::new(std::collections::HashSet::new()),
            reaper: ttl::Reaper::default(),
            forwards: tokio::sync::Mutex::new(()),
            activity: Arc::default(),
        }
    }

    fn network(&self) -> Result<&Arc<HostNetwork>, DaemonError> {
        self.net.as_ref().map_err(|reason| DaemonError::NoNetwork {
            reason: reason.clone(),
        })
    }

    /// The VMM `backend` for VM `vm`; one this daemon lacks fails as that VM's VMM.
    fn backend(&self, backend: Backend, vm: &str) -> Result<Arc<dyn Vmm>, DaemonError> {
        self.backends
            .get(backend)
            .map_err(|source| DaemonError::Vmm {
                vm: vm.to_string(),
                source,
            })
    }

    pub(crate) fn slot(&self, id: &str) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        slots.entry(id.to_string()).or_default().clone()
    }

    fn forget_slot(&self, id: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub fn record(&self, name: &str) -> Result<VmRecord, DaemonError> {
        self.store
            .get_vm(name)?
            .ok_or_else(|| DaemonError::VmNotFound(name.to_string()))
    }

    pub fn info(&self, rec: &VmRecord) -> Result<VmInfo, DaemonError> {
        Ok(rec.info(self.store.lease_of(&rec.id)?.map(|l| l.ip)))
    }

    /// The VM `name`; one whose delete is under way is gone already (see `list`).
    pub fn show(&self, name: &str) -> Result<VmInfo, DaemonError> {
        let rec = self.record(name)?;
        if lock(&self.deleting).contains(&rec.id) {
            return Err(DaemonError::VmNotFound(name.to_string()));
        }
        self.info(&rec)
    }

    /// The VMs, without the pool's (see [`pool`]).
    pub fn list(&self) -> Result<Vec<VmInfo>, DaemonError> {
        let pooled = self.pooled_ids();
        let deleting = lock(&self.deleting).clone();
        self.store
            .list_vms()?
            .iter()
            .filter(|r| !pooled.contains(&r.id) && !deleting.contains(&r.id))
            .map(|r| self.info(r))
            .collect()
    }

    pub async fn start(self: &Arc<Self>, name: &str) -> Result<VmInfo, DaemonError> {
        let rec = self.record(name)?;
        let slot = self.slot(&rec.id);
        let _op = slot.op.lock().await;
        if slot.runtime().is_none() {
            self.boot(&slot, &rec).await?;
        }
        self.wait_ssh(&rec.id).await;
        self.show(&rec.id)
    }

    pub async fn stop(&self, name: &str, force: bool) -> Result<VmInfo, DaemonError> {
        let rec = self.record(name)?;
        let slot = self.slot(&rec.id);
        let _op = slot.op.lock().await;
        self.halt(&slot, &rec, force).await;
        self.show(&rec.id)
    }

    pub async fn restart(self: &Arc<Self>, name: &str) -> Result<VmInfo, DaemonError> {
        let rec = self.record(name)?;
        let slot = self.slot(&rec.id);
        let _op = slot.op.lock().await;
        self.halt(&slot, &rec, false).await;
        let rec = self.record(name)?;
        self.boot(&slot, &rec).await?;
        self.wait_ssh(&rec.id).await;
        self.show(&rec.id)
    }

    /// Deletes the ephemeral VM `rec` in the background (`vm run --rm`: the caller waits
    /// for its command, not for the cleanup); it is out of `vm list` at once, and its
    /// name is free for the next run at once.
    pub fn delete_detached(self: &Arc<Self>, rec: VmRecord) {
        lock(&self.deleting).insert(rec.id.clone());
        if let Err(e) = self.store.release_name(&rec.id) {
            tracing::warn!(vm = %rec.name, cause = %e, "cannot free the name of a vm being deleted");
        }
        let vms = self.clone();
        tokio::spawn(async move {
            if let Err(e) = vms.delete(&rec.id).await {
                tracing::warn!(vm = %rec.name, cause = %e, "detached delete failed");
            }
            lock(&vms.deleting).remove(&rec.id);
            vms.refill_all();
        });
    }

    pub async fn delete(&self, name: &str) -> Result<(), DaemonError> {
        let rec = self.record(name)?;
        let slot = self.slot(&rec.id);
        let _op = slot.op.lock().await;
        let t0 = std::time::Instant::now();
        self.destroy(&slot, &rec).await;
        let delete_ms = t0.elapsed().as_millis() as u64;
        tracing::info!(vm = %rec.name, delete_ms, "vm deleted");
        Ok(())
    }

    pub async fn set(&self, name: &str, change: VmSetSpec) -> Result<VmInfo, DaemonError> {
        let rec = self.record(name)?;
        let slot = self.slot(&rec.id);
        let _op = slot.op.lock().await;
        let rec = self.record(&rec.id)?;
        if slot.runtime().is_some() {
            return Err(DaemonError::WrongState {
                name: rec.name.clone(),
                state: "running",
                hint: format!(
                    "`vm set` changes a stopped VM only: `banger vm stop {}` first",
                    rec.name
                ),
            });
        }
        let policy = (!change.policy.is_empty())
            .then(|| self.changed_policy(&rec, &change.policy))
            .transpose()?;
        let vcpu = change.vcpu.unwrap_or(rec.vcpu);
        let memory_mib = change.memory_mib.unwrap_or(rec.memory_mib);
        let disk_size_mib = change.disk_size_mib.unwrap_or(rec.disk_size_mib);
        spec::validate_resources(vcpu, memory_mib, disk_size_mib)?;
        if disk_size_mib != rec.disk_size_mib {
            files::grow_disk(&self.paths, &rec, disk_size_mib)?;
        }
        self.store
            .set_resources(&rec.id, vcpu, memory_mib, disk_size_mib)?;
        if let Some(policy) = policy {
            self.store.set_policy(&rec.id, &policy)?;
        }
        self.show(&rec.id)
    }

    /// The VM's policy with `vm set`'s changes, checked.
    fn changed_policy(
        &self,
        rec: &VmRecord,
        change: &banger_wire::api::NetPolicyChange,
    ) -> Result<banger_wire::api::NetPolicy, DaemonError> {
        if rec.no_network {
            return Err(DaemonError::invalid(format!(
                "vm {} has no network, so it has no network policy",
                rec.name
            )));
        }
        let mut policy = rec.policy.clone();
        if let Some(mode) = change.mode {
            policy.mode = Some(mode);
        }
        if let Some(group) = &change.group {
            policy.group = (!group.is_empty()).then(|| group.clone());
        }
        for (new, old) in [
            (&change.allow_host, &mut policy.allow_host),
            (&change.allow, &mut policy.allow),
            (&change.egress_allow, &mut policy.egress_allow),
        ] {
            if let Some(new) = new {
                *old = new.clone();
            }
        }
        crate::net::Rules::parse(&policy).map_err(DaemonError::from_net)?;
        Ok(policy)
    }

    /// Opens an exec stream to the VM's agent; the request has been sent. A spec that
    /// names no user runs as the VM's default user; the image's env and working
    /// directory (a container image's config) are the defaults.
    pub async fn exec(&self, name: &str, spec: ExecSpec) -> Result<VmStream, DaemonError> {
        let spec = self.exec_defaults(name, spec)?;
        self.agent_stream(name, &AgentRequest::Exec(spec)).await
    }

    /// `spec` with the VM's defaults filled in: its default user when it names none,
    /// and the env and working directory of its image (a container image's config).
    pub fn exec_defaults(&self, name: &str, mut spec: ExecSpec) -> Result<ExecSpec, DaemonError> {
        let rec = self.record(name)?;
        if spec.user.is_none() {
            spec.user = rec.user.clone();
        }
        Ok(match crate::image::get(&self.paths, &rec.image) {
            Ok(img) => crate::image::exec_defaults(&img.manifest().run, spec),
            Err(_) => spec,
        })
    }

    /// Stops the VMM: the agent's clean shutdown (or the VMM's power button), then a
    /// kill after the timeout. Returns once the exit is recorded.
    async fn halt(&self, slot: &Slot, rec: &VmRecord, force: bool) {
        let Some(rt) = slot.runtime() else {
            if matches!(
                rec.state,
                VmState::Running | VmState::Starting | VmState::Stopping
            ) {
                let _ = self.store.set_exited(&rec.id, VmState::Stopped, None);
            }
            return;
        };
        rt.stop_requested.store(true, Ordering::SeqCst);
        let _ = self.store.set_state(&rec.id, VmState::Stopping);
        let timeout = Duration::from_secs(self.config.stop_timeout_secs);
        if !force {
            let agent = rt.agent.borrow().clone();
            let asked = match agent {
                Some(a) if !a.is_closed() => a.shutdown().await.is_ok(),
                _ => rt.vmm.request_shutdown(&rt.launched).await.is_ok(),
            };
            if asked && rt.wait_exited(timeout).await {
                return;
            }
            tracing::warn!(vm = %rec.name, "graceful stop timed out; killing the vmm");
        }
        process::signal(rt.launched.pid, Signal::SIGKILL);
        if !rt.wait_exited(Duration::from_secs(10)).await {
            tracing::error!(vm = %rec.name, pid = rt.launched.pid, "vmm did not die after SIGKILL");
        }
    }

    /// Kills the VM if it runs and removes every trace of it. The row goes before the
    /// files, so a crash in between leaves only files, which a restart sweeps.
    async fn destroy(&self, slot: &Slot, rec: &VmRecord) {
        self.halt(slot, rec, true).await;
        failpoint("delete.after_halt");
        if let Err(e) = self.store.delete_vm(&rec.id) {
            tracing::error!(vm = %rec.name, cause = %e, "cannot delete vm row");
        }
        failpoint("delete.after_row");
        files::remove_files(&self.paths, rec);
        self.forget_slot(&rec.id);
    }

    pub fn running_count(&self) -> u32 {
        let slots = lock(&self.slots);
        slots.values().filter(|s| s.runtime().is_some()).count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vm_deleted_in_the_background_frees_its_name_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let m = test_manager(tmp.path());
        let old = test_vm("ci", None);
        m.store.insert_vm(&old).unwrap();

        // `vm run --rm --name ci` twice in a row: the second create comes while the
        // first VM's delete runs.
        m.delete_detached(old);
        let next = VmRecord {
            id: "id-next".into(),
            ..test_vm("ci", None)
        };

        m.store.insert_vm(&next).unwrap();
        assert_eq!(m.record("ci").unwrap().id, "id-next");
    }
}
