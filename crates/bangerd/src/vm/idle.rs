//! Idle timeouts (`--idle-timeout`): the daemon deletes a VM that nothing has used for
//! its timeout. Use is anything that goes through the daemon naming the VM: a request
//! (kept busy while it runs) and any stream to its agent (exec, `vm cp`, workspaces,
//! detached commands, the proxied `vm ssh`), which keeps the VM busy while open; the
//! end of each resets the clock. What runs in the guest keeps the VM too: before
//! deleting an idle VM the reaper looks for an ssh session from the host to it (an
//! established connection to its port 22 in `/proc/net/tcp`) and asks its agent
//! whether a detached command runs; while either does it looks again every [`POLL`].
//!
//! The timeout is a column of the VM's row; the clock is the daemon's memory, so after
//! a daemon restart it starts again from the daemon's start. The TTL reaper
//! ([`super::ttl`]) is the one task that deletes idle VMs too.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use banger_wire::agent::{AgentRequest, DetachedState, GuestFrame};
use banger_wire::api::{VmInfo, VmState};
use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::sync::Notify;

use super::{lock, Manager};
use crate::agent_conn::{self, AgentStream};
use crate::error::DaemonError;
use crate::store::VmRecord;

/// Longest `--idle-timeout`: a year; a VM meant to live longer needs none.
const MAX_IDLE_SECS: u64 = 365 * 86_400;
/// While an ssh session or a detached command runs, the reaper looks this often whether
/// it still does (at most; a shorter timeout polls at its own length).
const POLL: Duration = Duration::from_secs(1);

/// How each VM was last used, since this daemon started.
pub struct Activity {
    started: Instant,
    vms: Mutex<HashMap<String, Use>>,
    /// Rung when a use ends, so the reaper plans with the new clock.
    pub(super) ended: Notify,
}

/// One VM's use: streams and requests open now, when the last one ended, and whether
/// the reaper saw the guest in use (an ssh session or a detached command; then it polls
/// instead of deleting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Use {
    busy: u32,
    last: Instant,
    guest: bool,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            started: Instant::now(),
            vms: Mutex::new(HashMap::new()),
            ended: Notify::new(),
        }
    }
}

impl Activity {
    fn entry<R>(&self, id: &str, f: impl FnOnce(&mut Use) -> R) -> R {
        let mut vms = lock(&self.vms);
        let last = self.started;
        let u = vms.entry(id.to_string()).or_insert(Use {
            busy: 0,
            last,
            guest: false,
        });
        f(u)
    }

    /// Marks VM `id` used from now until the guard drops.
    pub fn busy(self: &Arc<Self>, id: &str) -> Busy {
        self.entry(id, |u| u.busy += 1);
        Busy {
            activity: self.clone(),
            id: id.to_string(),
        }
    }

    /// Restarts VM `id`'s clock now.
    pub(super) fn touch(&self, id: &str) {
        self.entry(id, |u| u.last = Instant::now());
        self.ended.notify_one();
    }

    /// The reaper's finding for VM `id` at `now`: the guest is in use (poll again), or
    /// no longer (its clock counts from now), or was not.
    fn guest(&self, id: &str, in_use: bool, now: Instant) {
        self.entry(id, |u| {
            if in_use || u.guest {
                u.last = now;
            }
            u.guest = in_use;
        });
    }

    /// Forgets the VMs that are not in `ids` and not in use.
    fn retain(&self, ids: &[&str]) {
        lock(&self.vms).retain(|id, u| u.busy > 0 || ids.contains(&id.as_str()));
    }

    fn snapshot(&self) -> HashMap<String, Use> {
        lock(&self.vms).clone()
    }
}

/// A use of a VM in progress; its drop ends it and restarts the VM's clock.
pub struct Busy {
    activity: Arc<Activity>,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.entry(&self.id, |u| {
            u.busy = u.busy.saturating_sub(1);
            u.last = Instant::now();
        });
        self.activity.ended.notify_one();
    }
}

/// A stream to a VM's agent that keeps the VM busy while open.
pub struct VmStream {
    stream: AgentStream,
    busy: Busy,
}

impl VmStream {
    pub fn into_parts(self) -> (AgentStream, Busy) {
        (self.stream, self.busy)
    }
}

impl std::ops::Deref for VmStream {
    type Target = AgentStream;
    fn deref(&self) -> &AgentStream {
        &self.stream
    }
}

impl std::ops::DerefMut for VmStream {
    fn deref_mut(&mut self) -> &mut AgentStream {
        &mut self.stream
    }
}

impl Stream for VmStream {
    type Item = <AgentStream as Stream>::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

impl Sink<Bytes> for VmStream {
    type Error = <AgentStream as Sink<Bytes>>::Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Sink::<Bytes>::poll_ready(Pin::new(&mut self.stream), cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Bytes) -> Result<(), Self::Error> {
        Pin::new(&mut self.stream).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Sink::<Bytes>::poll_flush(Pin::new(&mut self.stream), cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Sink::<Bytes>::poll_close(Pin::new(&mut self.stream), cx)
    }
}

/// What the reaper does about idle VMs at one instant.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Plan {
    /// VMs idle for their timeout (or due for a poll), `(id, name)`: the reaper looks
    /// whether their guest is in use, and deletes them if not.
    pub due: Vec<(String, String)>,
    /// How long until the next VM is due; `None`: until a use ends.
    pub wait: Option<Duration>,
}

/// VMs in use now have no deadline; the others are due at their last use plus their
/// timeout (or plus the poll interval while the guest was seen in use). A VM
/// never used since `started` counts from there.
fn plan(now: Instant, started: Instant, vms: &[VmRecord], uses: &HashMap<String, Use>) -> Plan {
    let mut due = Vec::new();
    let mut next: Option<Duration> = None;
    for vm in vms.iter().filter(|vm| !vm.creating) {
        let Some(secs) = vm.idle_timeout_secs else {
            continue;
        };
        let timeout = Duration::from_secs(secs);
        let u = uses.get(&vm.id).copied().unwrap_or(Use {
            busy: 0,
            last: started,
            guest: false,
        });
        if u.busy > 0 {
            continue;
        }
        let after = if u.guest { timeout.min(POLL) } else { timeout };
        match (u.last + after).checked_duration_since(now) {
            Some(left) if !left.is_zero() => next = Some(next.map_or(left, |n| n.min(left))),
            _ => due.push((vm.id.clone(), vm.name.clone())),
        }
    }
    Plan { due, wait: next }
}

/// Refuses an idle timeout that means nothing (0) or is absurdly long.
pub fn check(idle_secs: Option<u64>) -> Result<(), DaemonError> {
    match idle_secs {
        Some(0) => Err(DaemonError::Invalid {
            message: "an idle timeout of 0 seconds would delete the vm at once".into(),
            hint: Some("give a duration such as 10m, or no --idle-timeout".into()),
        }),
        Some(s) if s > MAX_IDLE_SECS => Err(DaemonError::Invalid {
            message: format!("an idle timeout of {s} seconds is too long"),
            hint: Some("use at most a year, or no --idle-timeout".into()),
        }),
        _ => Ok(()),
    }
}

impl Manager {
    /// Gives a just-created VM its idle timeout, its clock starting now. A VM whose
    /// timeout cannot be stored is deleted: it must not outlive what it was created for.
    pub(super) async fn with_idle_timeout(
        &self,
        vm: VmInfo,
        secs: u64,
    ) -> Result<VmInfo, DaemonError> {
        self.activity.touch(&vm.id);
        if let Err(e) = self.store.set_idle_timeout(&vm.id, Some(secs)) {
            tracing::warn!(vm = %vm.name, cause = %e, "cannot store the vm's idle timeout; deleting it");
            if let Err(e) = self.delete(&vm.id).await {
                tracing::warn!(vm = %vm.name, cause = %e, "cannot delete the vm");
            }
            return Err(e.into());
        }
        self.show(&vm.id)
    }

    /// Marks VM `name` used until the guard drops; `None` when there is no such VM.
    pub fn busy(&self, name: &str) -> Option<Busy> {
        let rec = self.store.get_vm(name).ok()??;
        Some(self.activity.busy(&rec.id))
    }

    /// A stream to VM `rec`'s agent that keeps it busy while open.
    pub(super) fn in_use(&self, rec: &VmRecord, stream: AgentStream) -> VmStream {
        VmStream {
            stream,
            busy: self.activity.busy(&rec.id),
        }
    }

    /// The idle VMs to delete now, `(id, name)`, and how long until the next one is
    /// due. A due VM whose guest is in use is kept and polled.
    pub(super) async fn idle_pass(
        &self,
        vms: &[VmRecord],
    ) -> (Vec<(String, String)>, Option<Duration>) {
        let ids: Vec<&str> = vms.iter().map(|v| v.id.as_str()).collect();
        self.activity.retain(&ids);
        let started = self.activity.started;
        let p = plan(Instant::now(), started, vms, &self.activity.snapshot());
        let mut idle = Vec::new();
        for vm in vms
            .iter()
            .filter(|vm| p.due.iter().any(|(id, _)| *id == vm.id))
        {
            let running = self.guest_in_use(vm).await;
            self.activity.guest(&vm.id, running, Instant::now());
            // Planned again: a use may have begun or ended while the agent answered.
            let again = plan(
                Instant::now(),
                started,
                std::slice::from_ref(vm),
                &self.activity.snapshot(),
            );
            if running || again.due.is_empty() {
                self.activity.ended.notify_one();
            } else {
                idle.push((vm.id.clone(), vm.name.clone()));
            }
        }
        (idle, p.wait)
    }

    /// Whether VM `vm`'s guest is in use: an ssh session from the host, or a detached
    /// command its agent runs (asked without marking the VM used). A VM not running runs
    /// nothing, and an agent that cannot answer is taken to run nothing.
    async fn guest_in_use(&self, vm: &VmRecord) -> bool {
        let Ok(rec) = self.record(&vm.id) else {
            return false;
        };
        if rec.state != VmState::Running {
            return false;
        }
        let ip = self.store.lease_of(&rec.id).ok().flatten();
        if let Some(ip) = ip.and_then(|l| l.ip.parse::<Ipv4Addr>().ok()) {
            match fs_err::read_to_string("/proc/net/tcp") {
                Ok(table) if ssh_connected(&table, ip) => return true,
                Ok(_) => {}
                Err(e) => tracing::warn!(cause = %e, "cannot look for ssh sessions"),
            }
        }
        let asked = async {
            let agent = self.agent(&rec).await.ok()?;
            let mut stream = agent.request(&AgentRequest::DetachedList).await.ok()?;
            match agent_conn::next_frame(&mut stream).await.ok()? {
                GuestFrame::DetachedList(list) => {
                    Some(list.iter().any(|d| d.state == DetachedState::Running))
                }
                _ => None,
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), asked).await {
            Ok(Some(running)) => running,
            _ => {
                tracing::warn!(vm = %rec.name, "the agent did not list its detached commands; the idle vm is deleted");
                false
            }
        }
    }
}

/// Whether `table` (the text of `/proc/net/tcp`) holds an established connection to
/// port 22 of `ip`: an ssh session from the host into the VM.
fn ssh_connected(table: &str, ip: Ipv4Addr) -> bool {
    // An address is its network-order bytes printed as a host-order word; a port is hex.
    let want = format!("{:08X}:0016", u32::from_ne_bytes(ip.octets()));
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(2);
        let (remote, state) = (fields.next(), fields.next());
        remote == Some(want.as_str()) && state == Some("01")
    })
}

#[cfg(test)]
mod tests {
    use super::super::ttl::tests::{gone, manager, vm};
    use super::*;

    fn idle(name: &str, secs: u64) -> VmRecord {
        VmRecord {
            idle_timeout_secs: Some(secs),
            ..vm(name, None)
        }
    }

    fn used(busy: u32, last: Instant, guest: bool) -> Use {
        Use { busy, last, guest }
    }

    #[test]
    fn without_idle_timeouts_the_reaper_waits_to_be_rung() {
        let t0 = Instant::now();

        let p = plan(t0, t0, &[vm("a", None)], &HashMap::new());

        assert_eq!(
            p,
            Plan {
                due: vec![],
                wait: None
            }
        );
    }

    #[test]
    fn a_vm_never_used_counts_from_the_daemon_start_and_goes_after_its_timeout() {
        let t0 = Instant::now();
        let vms = [idle("a", 5)];

        let early = plan(t0 + Duration::from_secs(2), t0, &vms, &HashMap::new());
        let late = plan(t0 + Duration::from_secs(5), t0, &vms, &HashMap::new());

        assert_eq!(early.due, vec![]);
        assert_eq!(early.wait, Some(Duration::from_secs(3)));
        assert_eq!(late.due, vec![("id-a".to_string(), "a".to_string())]);
    }

    #[test]
    fn a_vm_in_use_is_never_due_and_its_last_use_restarts_the_clock() {
        let t0 = Instant::now();
        let vms = [idle("busy", 5), idle("used", 5)];
        let uses = HashMap::from([
            ("id-busy".to_string(), used(1, t0, false)),
            (
                "id-used".to_string(),
                used(0, t0 + Duration::from_secs(8), false),
            ),
        ]);

        let p = plan(t0 + Duration::from_secs(10), t0, &vms, &uses);

        assert_eq!(p.due, vec![]);
        assert_eq!(p.wait, Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_vm_whose_guest_is_in_use_is_polled_not_waited_for() {
        let t0 = Instant::now();
        let vms = [idle("d", 60)];
        let uses = HashMap::from([("id-d".to_string(), used(0, t0, true))]);

        let p = plan(t0 + POLL, t0, &vms, &uses);

        assert_eq!(p.due, vec![("id-d".to_string(), "d".to_string())]);
    }

    #[test]
    fn a_row_still_being_created_is_left_alone() {
        let t0 = Instant::now();
        let vms = [VmRecord {
            creating: true,
            ..idle("new", 1)
        }];

        let p = plan(t0 + Duration::from_secs(9), t0, &vms, &HashMap::new());

        assert_eq!(
            p,
            Plan {
                due: vec![],
                wait: None
            }
        );
    }

    #[test]
    fn a_guest_seen_no_longer_in_use_restarts_the_clock() {
        let a = Activity::default();
        let seen = a.started + Duration::from_secs(3);
        a.guest("id-d", true, seen);
        a.guest("id-d", false, seen + POLL);

        let u = a.snapshot()["id-d"];

        assert_eq!(u, used(0, seen + POLL, false));
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn an_established_connection_to_port_22_is_an_ssh_session() {
        let table = "  sl  local_address rem_address   st tx_queue\n\
           0: 0100007F:A46B 00000000:0000 0A 00000000:00000000\n\
           1: 01021EAC:D431 02021EAC:0016 01 00000000:00000000\n\
           2: 01021EAC:D432 03021EAC:0016 06 00000000:00000000\n\
           3: 01021EAC:D433 04021EAC:0050 01 00000000:00000000\n";

        assert!(ssh_connected(table, Ipv4Addr::new(172, 30, 2, 2)));
        // Closing (TIME_WAIT), and another port.
        assert!(!ssh_connected(table, Ipv4Addr::new(172, 30, 2, 3)));
        assert!(!ssh_connected(table, Ipv4Addr::new(172, 30, 2, 4)));
    }

    #[test]
    fn a_use_ends_when_its_guard_drops() {
        let a = Arc::new(Activity::default());
        let guard = a.busy("id-x");
        assert_eq!(a.snapshot()["id-x"].busy, 1);

        drop(guard);

        let u = a.snapshot()["id-x"];
        assert_eq!(u.busy, 0);
        assert!(u.last > a.started);
    }

    #[tokio::test]
    async fn the_reaper_deletes_an_idle_vm_and_keeps_one_in_use_until_its_use_ends() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path());
        m.store.insert_vm(&idle("idle", 1)).unwrap();
        m.store.insert_vm(&idle("used", 1)).unwrap();
        let using = m.busy("used").unwrap();

        let reaper = m.spawn_reaper();
        let idle_gone = gone(&m, "idle", Duration::from_secs(5)).await;
        let used_kept = m.store.get_vm("used").unwrap().is_some();
        drop(using);
        let used_gone = gone(&m, "used", Duration::from_secs(5)).await;
        reaper.abort();

        assert!(idle_gone);
        assert!(used_kept);
        assert!(used_gone);
    }

    #[test]
    fn zero_and_absurd_idle_timeouts_are_refused() {
        assert!(check(None).is_ok());
        assert!(check(Some(5)).is_ok());
        assert!(check(Some(0)).is_err());
        assert!(check(Some(MAX_IDLE_SECS + 1)).is_err());
    }
}
