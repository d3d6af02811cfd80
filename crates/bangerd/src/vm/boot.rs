//! Booting a VM, or restoring a snapshot into it: prepare what the VMM needs, launch and
//! track it, then wait for the guest agent's hello.

use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_wire::agent::{BootConfig, GuestIdentity};
use banger_wire::api::{Backend, BootTimings, VmState};
use tokio::net::UnixListener;
use tracing::Instrument;

use super::agent::{bind_agent, connect_agent, keep_agent};
use super::files::{self, io_err, upper_disk};
use super::{process, Manager, Runtime, Slot};
use crate::agent_conn::AgentConn;
use crate::error::{ConsoleTail, DaemonError};
use crate::failpoint::failpoint;
use crate::net::VmNet;
use crate::store::{SnapshotRecord, VmRecord};
use crate::vmm::{LaunchSpec, NetAttach, Vmm};

/// What a launch needs, made ready by [`Manager::prepare`].
struct Prepared {
    vmm: Arc<dyn Vmm>,
    spec: LaunchSpec,
    /// What the guest is told on its kernel command line.
    boot_cfg: BootConfig,
    /// The guest's tap, forwards and rules, attached already.
    net: Option<VmNet>,
    /// The agent socket, bound before the guest can dial it (backends where the
    /// daemon listens).
    listener: Option<UnixListener>,
}

impl Prepared {
    fn tap(&self) -> Option<&str> {
        self.net.as_ref().map(|n| n.tap.name.as_str())
    }
}

impl Manager {
    /// Launches the VMM and waits for the agent. On failure the VMM is killed and the
    /// VM is left stopped (or crashed, with the console tail).
    pub(super) async fn boot(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
    ) -> Result<(), DaemonError> {
        self.boot_from(slot, rec, None).await
    }

    /// [`Manager::boot`] as a restore of snapshot `snap`: the guest resumes instead of
    /// booting, is reached with the snapshot's agent token, and is then given this VM's
    /// identity (token, name, address).
    pub(super) async fn restore(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
        snap: &SnapshotRecord,
    ) -> Result<(), DaemonError> {
        self.boot_from(slot, rec, Some(snap)).await
    }

    async fn boot_from(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
        from: Option<&SnapshotRecord>,
    ) -> Result<(), DaemonError> {
        let span = tracing::info_span!("boot", vm = %rec.name, backend = rec.backend.as_str());
        async {
            let t0 = Instant::now();
            let prepared = self.prepare(rec).await?;
            let prepare_ms = t0.elapsed().as_millis() as u64;
            let launch_t = Instant::now();
            let rt = self.launch(slot, rec, &prepared, from).await?;
            let agent = self.await_agent(rec, &rt, prepared, from, launch_t).await?;
            let boot = BootTimings {
                prepare_ms,
                agent_ready_ms: launch_t.elapsed().as_millis() as u64,
            };
            self.mark_running(rec, &rt, agent, &boot)
        }
        .instrument(span)
        .await
    }

    /// Makes everything the launch needs: a fresh runtime dir, the guest's network
    /// (attached now, so its first frame already meets its rules), its boot config and
    /// the agent socket. A socket that cannot be bound detaches the network again.
    async fn prepare(&self, rec: &VmRecord) -> Result<Prepared, DaemonError> {
        let vmm = self.backend(rec.backend, &rec.name)?;
        let image = files::image(&self.paths, &rec.image)?;
        let rt_dir = self.paths.vm_runtime_dir(&rec.id);
        vmm.release(&rt_dir, &rec.id);
        let _ = fs_err::remove_dir_all(&rt_dir);
        fs_err::create_dir_all(&rt_dir).map_err(io_err("creating runtime dir", &rt_dir))?;
        let vm_dir = self.paths.vm_dir(&rec.id);
        let net = self.attach_network(rec).await?;
        failpoint("boot.after_attach");
        let gateway = net.as_ref().map(|n| n.gateway().to_string());
        let boot_cfg = BootConfig {
            hostname: Some(rec.name.clone()),
            token: Some(rec.token.clone()),
            channel: Some(match rec.backend {
                Backend::Qemu => "serial".into(),
                Backend::Firecracker => "vsock".into(),
            }),
            ip: net.as_ref().map(|n| n.cidr()),
            gateway: gateway.clone(),
            dns: gateway,
            ssh_key: crate::ssh::authorized_key(&self.paths),
        };
        let spec = LaunchSpec {
            vm_id: rec.id.clone(),
            name: rec.name.clone(),
            vcpu: rec.vcpu,
            memory_mib: rec.memory_mib,
            kernel_elf: image.vmlinux,
            kernel_bzimage: image.bzimage,
            initrd: image.initrd,
            boot_args: boot_cfg.to_cmdline(),
            root_disk: image.rootfs,
            upper_disk: upper_disk(&self.paths, rec),
            net: net.as_ref().map(|n| NetAttach {
                tap: n.tap.name.clone(),
                mac: n.mac.to_string(),
            }),
            runtime_dir: rt_dir.clone(),
            serial_log: vm_dir.join("serial.log"),
            vmm_log: vm_dir.join("vmm.log"),
        };
        let mut prepared = Prepared {
            vmm,
            spec,
            boot_cfg,
            net,
            listener: None,
        };
        if let Some(p) = prepared.vmm.agent_listen_path(&rt_dir, &rec.id) {
            match bind_agent(prepared.vmm.as_ref(), &p) {
                Ok(l) => prepared.listener = Some(l),
                Err(e) => {
                    self.detach_network(rec, prepared.tap()).await;
                    return Err(e.into_daemon(rec, p));
                }
            }
        }
        Ok(prepared)
    }

    /// Launches the VMM, or restores snapshot `from` in it, and tracks it. A launch
    /// that fails undoes the runtime dir and the network.
    async fn launch(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
        prepared: &Prepared,
        from: Option<&SnapshotRecord>,
    ) -> Result<Arc<Runtime>, DaemonError> {
        let Prepared { vmm, spec, .. } = prepared;
        let launch_t = Instant::now();
        let snap_files = from.map(|s| files::snapshot_files(&self.paths.state_dir, &s.id));
        let launching = match &snap_files {
            None => vmm.launch(spec),
            Some(files) => vmm.restore(spec, files),
        };
        let launched = match tracing::info_span!("launch").in_scope(|| launching).await {
            Ok(l) => l,
            Err(source) => {
                vmm.release(&spec.runtime_dir, &rec.id);
                let _ = fs_err::remove_dir_all(&spec.runtime_dir);
                self.detach_network(rec, prepared.tap()).await;
                return Err(DaemonError::Vmm {
                    vm: rec.name.clone(),
                    source,
                });
            }
        };
        let ms = launch_t.elapsed().as_millis() as u64;
        tracing::info!(pid = launched.pid, ms, "vmm launched");
        failpoint("boot.after_launch");
        let rt = self.track(slot, rec, vmm.clone(), launched)?;
        failpoint("boot.after_track");
        Ok(rt)
    }

    /// Waits for the guest agent's hello, within the boot timeout and while the VMM
    /// lives; a restored guest is then given this VM's identity. On failure the VMM is
    /// killed.
    async fn await_agent(
        &self,
        rec: &VmRecord,
        rt: &Runtime,
        prepared: Prepared,
        from: Option<&SnapshotRecord>,
        launch_t: Instant,
    ) -> Result<AgentConn, DaemonError> {
        let agent_err = |source| DaemonError::Agent {
            vm: rec.name.clone(),
            source,
        };
        let token = from.map_or(&rec.token, |s| &s.token);
        let timeout = Duration::from_secs(self.config.boot_timeout_secs);
        let hello = connect_agent(&rt.launched.agent, prepared.listener, token, from.is_some());
        let ready = tokio::select! {
            r = hello => r.map_err(agent_err),
            _ = tokio::time::sleep(timeout) => Err(DaemonError::BootTimeout {
                vm: rec.name.clone(),
                secs: self.config.boot_timeout_secs,
                console: ConsoleTail(process::tail(&prepared.spec.serial_log, 15)),
            }),
            _ = rt.wait_exited(Duration::MAX) => Err(DaemonError::BootCrashed {
                vm: rec.name.clone(),
                detail: self
                    .record(&rec.id)
                    .ok()
                    .and_then(|r| r.last_error)
                    .unwrap_or_default(),
            }),
        };
        let ready = match (ready, from) {
            (Ok(agent), Some(snap)) => {
                let hello_ms = launch_t.elapsed().as_millis() as u64;
                let id = identity(rec, &prepared.boot_cfg, prepared.net.as_ref());
                let done = agent.reconfigure(&id).await;
                let reconfigure_ms = launch_t.elapsed().as_millis() as u64 - hello_ms;
                tracing::info!(snapshot = %snap.name, hello_ms, reconfigure_ms, "vm restored");
                done.map(|()| agent).map_err(agent_err)
            }
            (ready, _) => ready,
        };
        if ready.is_err() {
            process::signal(rt.launched.pid, nix::sys::signal::Signal::SIGKILL);
            rt.wait_exited(Duration::from_secs(10)).await;
        }
        ready
    }

    /// Records the guest as running, with its boot timings, and keeps its agent session.
    fn mark_running(
        &self,
        rec: &VmRecord,
        rt: &Arc<Runtime>,
        agent: AgentConn,
        boot: &BootTimings,
    ) -> Result<(), DaemonError> {
        tracing::info!(
            prepare_ms = boot.prepare_ms,
            agent_ready_ms = boot.agent_ready_ms,
            guest_uptime_ms = agent.hello.uptime_ms,
            "agent ready"
        );
        let _ = rt.agent.send_replace(Some(agent));
        keep_agent(rt.clone(), rec.token.clone(), rec.name.clone());
        self.store.set_state(&rec.id, VmState::Running)?;
        self.store.set_boot_timings(&rec.id, boot)?;
        Ok(())
    }
}

/// The identity a restored guest takes on: what a boot would have put on its kernel
/// command line, plus a fresh clock and randomness.
fn identity(rec: &VmRecord, cfg: &BootConfig, net: Option<&VmNet>) -> GuestIdentity {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    GuestIdentity {
        token: rec.token.clone(),
        hostname: rec.name.clone(),
        ip: cfg.ip.clone(),
        gateway: cfg.gateway.clone(),
        dns: cfg.dns.clone(),
        mac: net.map(|n| n.mac.to_string()),
        unix_time_ms: now.as_millis() as u64,
        entropy: rand::random::<[u8; 32]>().to_vec(),
    }
}
