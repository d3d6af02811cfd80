//! VM lifetimes (`--ttl`): the daemon deletes a VM once its expiry passes. The expiry
//! is a column of the VM's row, so it holds across daemon restarts. One reaper task
//! sleeps until the earliest expiry in the store, or until a create sets a new one,
//! deletes what has expired and sleeps again; its first pass, right after reconcile,
//! deletes what expired while the daemon was down. It deletes idle VMs too
//! ([`super::idle`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use banger_wire::api::VmInfo;
use tokio::sync::Notify;

use super::Manager;
use crate::error::DaemonError;
use crate::store::VmRecord;

/// Longest `--ttl`: ten years, far below where seconds since the epoch overflow.
const MAX_TTL_SECS: u64 = 10 * 365 * 86_400;
/// When a pass could not read the store or delete a VM, the next one comes after this.
const RETRY: Duration = Duration::from_secs(30);

/// The reaper's doorbell: rung when an expiry is set.
#[derive(Default)]
pub struct Reaper {
    wake: Notify,
}

impl Reaper {
    fn ring(&self) {
        // A permit is kept when the reaper is busy, so no ring is lost.
        self.wake.notify_one();
    }
}

/// What a reaper pass at one instant does with the rows it read.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    /// The VMs to delete now: `(id, name)`.
    expired: Vec<(String, String)>,
    /// How long until the next expiry; `None`: until rung.
    wait: Option<Duration>,
}

/// `now` is the time since the Unix epoch; a VM expires at the start of its second.
fn plan(now: Duration, vms: &[VmRecord]) -> Plan {
    let mut expired = Vec::new();
    let mut next: Option<Duration> = None;
    for vm in vms {
        let Some(at) = vm.expires_at else { continue };
        let at = Duration::from_secs(u64::try_from(at).unwrap_or(0));
        match at.checked_sub(now).filter(|d| !d.is_zero()) {
            None => expired.push((vm.id.clone(), vm.name.clone())),
            Some(left) => next = Some(next.map_or(left, |n| n.min(left))),
        }
    }
    Plan {
        expired,
        wait: next,
    }
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Refuses a TTL that means nothing (0) or that would not fit the store.
pub fn check(ttl_secs: Option<u64>) -> Result<(), DaemonError> {
    match ttl_secs {
        Some(0) => Err(DaemonError::invalid(
            "a ttl of 0 seconds would delete the vm at once",
        )),
        Some(s) if s > MAX_TTL_SECS => Err(DaemonError::Invalid {
            message: format!("a ttl of {s} seconds is too long"),
            hint: Some("use at most 10 years, or no --ttl".into()),
        }),
        _ => Ok(()),
    }
}

impl Manager {
    /// Gives a just-created VM its expiry, `ttl_secs` from now. A VM whose expiry cannot
    /// be stored is deleted: it must not outlive what it was created for.
    pub(super) async fn with_ttl(&self, vm: VmInfo, ttl_secs: u64) -> Result<VmInfo, DaemonError> {
        if let Err(e) = self.set_ttl(&vm.id, ttl_secs) {
            tracing::warn!(vm = %vm.name, cause = %e, "cannot store the vm's ttl; deleting it");
            if let Err(e) = self.delete(&vm.id).await {
                tracing::warn!(vm = %vm.name, cause = %e, "cannot delete the vm");
            }
            return Err(e);
        }
        self.show(&vm.id)
    }

    /// Sets VM `id` to expire `ttl_secs` from now and wakes the reaper for it.
    fn set_ttl(&self, id: &str, ttl_secs: u64) -> Result<(), DaemonError> {
        // Rounded up to a whole second: a VM never goes before its ttl is over.
        let now = since_epoch();
        let now = now.as_secs() + u64::from(now.subsec_nanos() > 0);
        let at = now.saturating_add(ttl_secs);
        self.store
            .set_expiry(id, Some(i64::try_from(at).unwrap_or(i64::MAX)))?;
        self.reaper.ring();
        Ok(())
    }

    /// Spawns the task that deletes VMs as they expire. Call once, after reconcile.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.reap().await })
    }

    async fn reap(self: Arc<Self>) {
        loop {
            let wait = match self.store.list_vms() {
                Ok(vms) => {
                    let plan = plan(since_epoch(), &vms);
                    let (idle, idle_wait) = self.idle_pass(&vms).await;
                    let expired = plan.expired.into_iter().map(|vm| (vm, "ttl expired"));
                    let idle = idle.into_iter().map(|vm| (vm, "idle timeout reached"));
                    let mut failed = false;
                    for ((id, name), why) in expired.chain(idle) {
                        tracing::info!(vm = %name, reason = why, "deleting the vm");
                        match self.delete(&id).await {
                            Ok(()) | Err(DaemonError::VmNotFound(_)) => {}
                            Err(e) => {
                                tracing::warn!(vm = %name, cause = %e, "cannot delete an expired vm");
                                failed = true;
                            }
                        }
                    }
                    let wait = [plan.wait, idle_wait].into_iter().flatten().min();
                    match (wait, failed) {
                        (wait, false) => wait,
                        (wait, true) => Some(wait.map_or(RETRY, |w| w.min(RETRY))),
                    }
                }
                Err(e) => {
                    tracing::warn!(cause = %e, "cannot read vm expiries");
                    Some(RETRY)
                }
            };
            match wait {
                Some(wait) => {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.reaper.wake.notified() => {}
                        _ = self.activity.ended.notified() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = self.reaper.wake.notified() => {}
                        _ = self.activity.ended.notified() => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use banger_wire::api::{Backend, NetPolicy, VmState};

    /// A stopped VM row without a network.
    pub(crate) fn vm(name: &str, expires_at: Option<i64>) -> VmRecord {
        VmRecord {
            id: format!("id-{name}"),
            name: name.into(),
            image: "default".into(),
            backend: Backend::Qemu,
            vcpu: 1,
            memory_mib: 256,
            disk_size_mib: 1024,
            state: VmState::Stopped,
            no_network: true,
            token: "t".into(),
            created_at: String::new(),
            pid: None,
            pid_start: None,
            boot: None,
            last_error: None,
            tap: None,
            publish: vec![],
            policy: NetPolicy::default(),
            creating: false,
            ephemeral: false,
            expires_at,
            user: None,
            idle_timeout_secs: None,
        }
    }

    const NOW: Duration = Duration::from_millis(1_000_500);

    #[test]
    fn without_expiries_the_reaper_waits_to_be_rung() {
        let vms = [vm("a", None)];

        assert_eq!(
            plan(NOW, &vms),
            Plan {
                expired: vec![],
                wait: None
            }
        );
    }

    #[test]
    fn past_and_current_expiries_go_now_and_the_earliest_future_one_sets_the_wait() {
        let vms = [
            vm("old", Some(900)),
            vm("now", Some(1000)),
            vm("later", Some(1060)),
            vm("soon", Some(1010)),
            vm("never", None),
        ];

        let p = plan(NOW, &vms);

        let names: Vec<&str> = p.expired.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["old", "now"]);
        assert_eq!(p.wait, Some(Duration::from_millis(9_500)));
    }

    #[test]
    fn zero_and_absurd_ttls_are_refused() {
        assert!(check(None).is_ok());
        assert!(check(Some(5)).is_ok());
        assert!(check(Some(0)).is_err());
        assert!(check(Some(u64::MAX)).is_err());
    }

    /// A manager on a temp dir and an in-memory store, with no VMM and no network.
    pub(crate) fn manager(dir: &std::path::Path) -> Arc<Manager> {
        let backends = super::super::Backends {
            qemu: None,
            firecracker: None,
            default: Backend::Qemu,
        };
        Arc::new(Manager::new(
            banger_host::config::Paths::under(dir),
            banger_host::config::Config::default(),
            Arc::new(crate::store::Store::in_memory().unwrap()),
            backends,
            Err("no network in unit tests".into()),
        ))
    }

    pub(crate) async fn gone(m: &Manager, name: &str, within: Duration) -> bool {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < within {
            if m.store.get_vm(name).unwrap().is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test]
    async fn the_reaper_deletes_what_expired_before_it_started_and_what_expires_later() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        let past = since_epoch().as_secs() as i64 - 60;
        m.store.insert_vm(&vm("stale", Some(past))).unwrap();
        m.store.insert_vm(&vm("kept", None)).unwrap();
        m.store.insert_vm(&vm("fresh", None)).unwrap();

        let reaper = m.spawn_reaper();
        assert!(gone(&m, "stale", Duration::from_secs(5)).await);
        m.set_ttl("id-fresh", 1).unwrap();
        let fresh_gone = gone(&m, "fresh", Duration::from_secs(5)).await;
        reaper.abort();

        assert!(fresh_gone);
        assert!(m.store.get_vm("kept").unwrap().is_some());
    }
}
