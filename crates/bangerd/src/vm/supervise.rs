//! Taking charge of a running VMM: supervise it until it exits, whether this daemon
//! launched it or adopted it after a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use banger_wire::api::VmState;
use tokio::sync::watch;

use super::agent::{bind_agent, connect_agent, keep_agent};
use super::process::{self, ExitWatch};
use super::{Manager, Runtime, Slot};
use crate::error::DaemonError;
use crate::store::VmRecord;
use crate::vmm::{Launched, Vmm};

impl Manager {
    /// Starts supervising a launched (or adopted) VMM and records it as starting. The
    /// supervisor records its exit (stopped, or crashed with the logs' tails) the moment
    /// it happens, and releases its runtime dir and network.
    pub(super) fn track(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
        vmm: Arc<dyn Vmm>,
        launched: Launched,
    ) -> Result<Arc<Runtime>, DaemonError> {
        let pid = launched.pid;
        let watch_exit = ExitWatch::new(pid);
        // Unknown (the VMM is already gone): recorded as such, never adopted.
        let start = process::start_time(pid);
        let rt = Arc::new(Runtime {
            launched,
            vmm,
            stop_requested: AtomicBool::new(false),
            agent: watch::channel(None).0,
            exited: watch::channel(false).0,
        });
        slot.set_runtime(Some(rt.clone()));
        self.store
            .set_running(&rec.id, VmState::Starting, pid, start)?;
        tokio::spawn(super::console::keep_capped(
            self.paths.vm_dir(&rec.id).join("serial.log"),
            self.config.console_log_max_mib.saturating_mul(1024 * 1024),
            rt.exited.subscribe(),
        ));
        let this = self.clone();
        let (slot, rec, rt2) = (slot.clone(), rec.clone(), rt.clone());
        tokio::spawn(async move {
            match watch_exit {
                Ok(w) => w.exited().await,
                Err(e) => tracing::error!(vm = %rec.name, cause = %e, "cannot watch vmm pid"),
            }
            process::reap(pid);
            let asked = rt2.stop_requested.load(Ordering::SeqCst);
            let (state, why) = if asked {
                (VmState::Stopped, None)
            } else {
                let vm_dir = this.paths.vm_dir(&rec.id);
                let why = format!(
                    "vmm (pid {pid}) exited unexpectedly\n--- vmm log ---\n{}\n--- console ---\n{}",
                    process::tail(&vm_dir.join("vmm.log"), 10),
                    process::tail(&vm_dir.join("serial.log"), 20)
                );
                tracing::warn!(vm = %rec.name, pid, "vmm exited unexpectedly");
                (VmState::Crashed, Some(why))
            };
            if let Err(e) = this.store.set_exited(&rec.id, state, why.as_deref()) {
                tracing::error!(vm = %rec.name, cause = %e, "cannot record vmm exit");
            }
            let rt_dir = this.paths.vm_runtime_dir(&rec.id);
            rt2.vmm.release(&rt_dir, &rec.id);
            let _ = fs_err::remove_dir_all(&rt_dir);
            let tap = this
                .store
                .get_vm(&rec.id)
                .ok()
                .flatten()
                .and_then(|r| r.tap);
            this.detach_network(&rec, tap.as_deref()).await;
            {
                let mut cur = slot.rt.lock().unwrap_or_else(|p| p.into_inner());
                if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &rt2)) {
                    *cur = None;
                }
            }
            let _ = rt2.agent.send_replace(None);
            let _ = rt2.exited.send_replace(true);
        });
        Ok(rt)
    }

    /// Re-adopts a VMM that survived a daemon restart and reconnects to its agent.
    pub(super) async fn adopt(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
    ) -> Result<(), DaemonError> {
        let vmm = self.backend(rec.backend, &rec.name)?;
        let pid = rec.pid.unwrap_or_default();
        let rt_dir = self.paths.vm_runtime_dir(&rec.id);
        let launched = vmm.attach(&rt_dir, &rec.id, pid);
        let listener = match vmm.agent_listen_path(&rt_dir, &rec.id) {
            Some(p) => {
                let _ = fs_err::remove_file(&p);
                Some(bind_agent(vmm.as_ref(), &p).map_err(|e| e.into_daemon(rec, p))?)
            }
            None => None,
        };
        let rt = self.track(slot, rec, vmm, launched)?;
        tracing::info!(vm = %rec.name, pid, "adopted running vmm");
        let this = self.clone();
        let rec = rec.clone();
        tokio::spawn(async move {
            // A daemon killed while snapshotting left the guest paused; running, it
            // takes this as a no-op.
            if let Err(e) = rt.vmm.resume(&rt.launched).await {
                tracing::debug!(vm = %rec.name, cause = %e, "cannot resume the adopted vmm");
            }
            let res = tokio::time::timeout(
                Duration::from_secs(this.config.boot_timeout_secs),
                connect_agent(&rt.launched.agent, listener, &rec.token, true),
            )
            .await;
            match res {
                Ok(Ok(agent)) => {
                    let _ = rt.agent.send_replace(Some(agent));
                    keep_agent(rt.clone(), rec.token.clone(), rec.name.clone());
                    let _ = this.store.set_state(&rec.id, VmState::Running);
                }
                Ok(Err(e)) => tracing::warn!(vm = %rec.name, cause = %e, "agent reconnect failed"),
                Err(_) => tracing::warn!(vm = %rec.name, "agent did not answer after adoption"),
            }
        });
        Ok(())
    }
}
