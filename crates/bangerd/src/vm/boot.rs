//! Booting a VM: launch the VMM, supervise it, and wait for its agent's hello.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_wire::agent::{BootConfig, GuestIdentity, HOST_KNOCK};
use banger_wire::api::{Backend, BootTimings, VmState};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use tokio::sync::watch;
use tracing::Instrument;

use super::files::{self, io_err, upper_disk};
use super::process::{self, ExitWatch};
use super::{Manager, Runtime, Slot};
use crate::agent_conn::{self, AgentConn, AgentError};
use crate::error::DaemonError;
use crate::failpoint::failpoint;
use crate::store::VmRecord;
use crate::vmm::{AgentEndpoint, LaunchSpec, NetAttach};

impl Manager {
    /// Launches the VMM and waits for the agent. On failure the VMM is killed and the
    /// VM is left stopped (or crashed, with the console tail).
    pub(crate) async fn boot(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
    ) -> Result<(), DaemonError> {
        self.boot_from(slot, rec, None).await
    }

    /// [`Manager::boot`], or with `from`, a restore of that snapshot: the guest
    /// resumes instead of booting, is reached with the snapshot's agent token, and is
    /// then given this VM's identity (token, name, address).
    pub(crate) async fn boot_from(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
        from: Option<&crate::store::SnapshotRecord>,
    ) -> Result<(), DaemonError> {
        let span = tracing::info_span!("boot", vm = %rec.name, backend = rec.backend.as_str());
        async {
            let t0 = Instant::now();
            let vmm = self
                .backends
                .get(rec.backend)
                .map_err(|source| DaemonError::Vmm { vm: rec.name.clone(), source })?;
            let files = files::image(&self.paths, &rec.image)?;
            let rt_dir = self.paths.vm_runtime_dir(&rec.id);
            vmm.release(&rt_dir, &rec.id);
            let _ = std::fs::remove_dir_all(&rt_dir);
            std::fs::create_dir_all(&rt_dir).map_err(io_err("creating runtime dir", &rt_dir))?;
            let vm_dir = self.paths.vm_dir(&rec.id);
            let vm_net = self.attach_network(rec).await?;
            failpoint("boot.after_attach");
            let gateway = vm_net.as_ref().map(|n| n.gateway().to_string());
            let boot_cfg = BootConfig {
                hostname: Some(rec.name.clone()),
                token: Some(rec.token.clone()),
                channel: Some(match rec.backend {
                    Backend::Qemu => "serial".into(),
                    Backend::Firecracker => "vsock".into(),
                }),
                ip: vm_net.as_ref().map(|n| n.cidr()),
                gateway: gateway.clone(),
                dns: gateway,
                ssh_key: crate::ssh::authorized_key(&self.paths),
            };
            let spec = LaunchSpec {
                vm_id: rec.id.clone(),
                name: rec.name.clone(),
                vcpu: rec.vcpu,
                memory_mib: rec.memory_mib,
                kernel_elf: files.vmlinux,
                kernel_bzimage: files.bzimage,
                initrd: files.initrd,
                boot_args: boot_cfg.to_cmdline(),
                root_disk: files.rootfs,
                upper_disk: upper_disk(&self.paths, rec),
                net: vm_net.as_ref().map(|n| NetAttach { tap: n.tap.name.clone(), mac: n.mac.to_string() }),
                runtime_dir: rt_dir.clone(),
                serial_log: vm_dir.join("serial.log"),
                vmm_log: vm_dir.join("vmm.log"),
            };
            // A listening endpoint must exist before the guest can dial it.
            let tap = vm_net.as_ref().map(|n| n.tap.name.clone());
            let listener = match vmm.agent_listen_path(&rt_dir, &rec.id) {
                Some(p) => match bind_agent(vmm.as_ref(), &p) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        self.detach_network(rec, tap.as_deref()).await;
                        return Err(e.into_daemon(rec, p));
                    }
                },
                None => None,
            };
            let prepare_ms = t0.elapsed().as_millis() as u64;
            let launch_t = Instant::now();
            let snap_files = from.map(|s| files::snapshot_files(&self.paths.state_dir, &s.id));
            let launching = match &snap_files {
                None => vmm.launch(&spec),
                Some(files) => vmm.restore(&spec, files),
            };
            let launched = match tracing::info_span!("launch").in_scope(|| launching).await {
                Ok(l) => l,
                Err(source) => {
                    vmm.release(&rt_dir, &rec.id);
                    let _ = std::fs::remove_dir_all(&rt_dir);
                    self.detach_network(rec, tap.as_deref()).await;
                    return Err(DaemonError::Vmm { vm: rec.name.clone(), source });
                }
            };
            tracing::info!(pid = launched.pid, ms = launch_t.elapsed().as_millis() as u64, "vmm launched");
            failpoint("boot.after_launch");
            let rt = self.track(slot, rec, vmm, launched)?;
            failpoint("boot.after_track");
            let ready = tokio::select! {
                r = connect_agent(&rt.launched.agent, listener, from.map_or(&rec.token, |s| &s.token), from.is_some()) => r.map_err(|source| DaemonError::Agent { vm: rec.name.clone(), source }),
                _ = tokio::time::sleep(Duration::from_secs(self.config.boot_timeout_secs)) => {
                    Err(DaemonError::BootTimeout {
                        vm: rec.name.clone(),
                        secs: self.config.boot_timeout_secs,
                        console: crate::error::ConsoleTail(process::tail(&vm_dir.join("serial.log"), 15)),
                    })
                }
                _ = rt.wait_exited(Duration::MAX) => Err(DaemonError::BootCrashed {
                    vm: rec.name.clone(),
                    detail: self.record(&rec.id).ok().and_then(|r| r.last_error).unwrap_or_default(),
                }),
            };
            let ready = match (ready, from) {
                (Ok(agent), Some(snap)) => {
                    let hello_ms = launch_t.elapsed().as_millis() as u64;
                    let id = identity(rec, &boot_cfg, vm_net.as_ref());
                    let done = agent.reconfigure(&id).await;
                    let reconfigure_ms = launch_t.elapsed().as_millis() as u64 - hello_ms;
                    tracing::info!(snapshot = %snap.name, hello_ms, reconfigure_ms, "vm restored");
                    done.map(|()| agent).map_err(|source| DaemonError::Agent { vm: rec.name.clone(), source })
                }
                (ready, _) => ready,
            };
            let agent = match ready {
                Ok(a) => a,
                Err(e) => {
                    process::signal(rt.launched.pid, nix::sys::signal::Signal::SIGKILL);
                    rt.wait_exited(Duration::from_secs(10)).await;
                    return Err(e);
                }
            };
            let boot = BootTimings {
                prepare_ms,
                agent_ready_ms: launch_t.elapsed().as_millis() as u64,
            };
            tracing::info!(prepare_ms, agent_ready_ms = boot.agent_ready_ms, guest_uptime_ms = agent.hello.uptime_ms, "agent ready");
            let _ = rt.agent.send_replace(Some(agent));
            keep_agent(rt.clone(), rec.token.clone(), rec.name.clone());
            self.store.set_state(&rec.id, VmState::Running)?;
            self.store.set_boot_timings(&rec.id, &boot)?;
            Ok(())
        }
        .instrument(span)
        .await
    }

    /// Starts supervising a launched (or adopted) VMM and records it as starting.
    fn track(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
        vmm: Arc<dyn crate::vmm::Vmm>,
        launched: crate::vmm::Launched,
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
            let _ = std::fs::remove_dir_all(&rt_dir);
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

    /// Gives the VM its tap and port forwards when it holds a lease.
    async fn attach_network(
        &self,
        rec: &VmRecord,
    ) -> Result<Option<crate::net::VmNet>, DaemonError> {
        let Some(lease) = self.store.lease_of(&rec.id)? else {
            return Ok(None);
        };
        let net = self.network()?;
        let ip = lease
            .ip
            .parse()
            .map_err(|_| DaemonError::invalid(format!("bad lease {}", lease.ip)))?;
        let forwards: Vec<crate::net::PortForward> =
            rec.publish.iter().filter_map(|p| p.parse().ok()).collect();
        let rules = crate::net::Rules::parse(&rec.policy).map_err(DaemonError::from_net)?;
        let vm_net = net
            .attach(&rec.id, ip, &forwards, rules)
            .await
            .map_err(|source| DaemonError::Network {
                vm: rec.name.clone(),
                source: Box::new(source),
            })?;
        self.store.set_tap(&rec.id, Some(&vm_net.tap.name))?;
        Ok(Some(vm_net))
    }

    /// Removes the VM's tap and forwards (its lease stays until delete).
    pub(crate) async fn detach_network(&self, rec: &VmRecord, tap: Option<&str>) {
        if let Ok(net) = &self.net {
            if let Err(e) = net.release(&rec.id, tap).await {
                tracing::warn!(vm = %rec.name, cause = %e, "cannot release vm network");
            }
        }
        let _ = self.store.set_tap(&rec.id, None);
    }

    /// Re-adopts a VMM that survived a daemon restart and reconnects to its agent.
    pub(crate) async fn adopt(
        self: &Arc<Self>,
        slot: &Arc<Slot>,
        rec: &VmRecord,
    ) -> Result<(), DaemonError> {
        let vmm = self
            .backends
            .get(rec.backend)
            .map_err(|source| DaemonError::Vmm {
                vm: rec.name.clone(),
                source,
            })?;
        let pid = rec.pid.unwrap_or_default();
        let rt_dir = self.paths.vm_runtime_dir(&rec.id);
        let launched = vmm.attach(&rt_dir, &rec.id, pid);
        let listener = match vmm.agent_listen_path(&rt_dir, &rec.id) {
            Some(p) => {
                let _ = std::fs::remove_file(&p);
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

/// The identity a restored guest takes on: what a boot would have put on its kernel
/// command line, plus a fresh clock and randomness.
fn identity(rec: &VmRecord, cfg: &BootConfig, net: Option<&crate::net::VmNet>) -> GuestIdentity {
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

enum BindError {
    Io(std::io::Error),
    Vmm(crate::vmm::VmmError),
}

impl BindError {
    fn into_daemon(self, rec: &VmRecord, path: std::path::PathBuf) -> DaemonError {
        match self {
            BindError::Io(e) => io_err("binding agent socket", &path)(e),
            BindError::Vmm(source) => DaemonError::Vmm {
                vm: rec.name.clone(),
                source,
            },
        }
    }
}

/// Binds the agent socket (creating its directory, e.g. a jail) and lets the VMM reach it.
fn bind_agent(
    vmm: &dyn crate::vmm::Vmm,
    path: &std::path::Path,
) -> Result<tokio::net::UnixListener, BindError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(BindError::Io)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(BindError::Io)?;
    vmm.share_agent_socket(path).map_err(BindError::Vmm)?;
    Ok(listener)
}

/// Reconnects to the agent whenever its session drops while the VMM lives on (the
/// guest agent restarted, or the channel hiccuped), unless a stop was asked for.
fn keep_agent(rt: Arc<Runtime>, token: String, vm: String) {
    let AgentEndpoint::Connect(_) = rt.launched.agent else {
        return;
    };
    tokio::spawn(async move {
        loop {
            let current = rt.agent.borrow().clone();
            let Some(agent) = current else { return };
            let mut exited = rt.exited.subscribe();
            tokio::select! {
                _ = agent.closed() => {}
                _ = exited.wait_for(|e| *e) => return,
            }
            if rt.stop_requested.load(Ordering::SeqCst) || *rt.exited.borrow() {
                return;
            }
            tracing::info!(vm = %vm, "agent session dropped; reconnecting");
            match connect_agent(&rt.launched.agent, None, &token, true).await {
                Ok(a) => {
                    rt.agent.send_replace(Some(a));
                }
                Err(e) => {
                    tracing::warn!(vm = %vm, cause = %e, "agent reconnect failed");
                    rt.agent.send_replace(None);
                    return;
                }
            }
        }
    });
}

/// Reaches the guest agent and authenticates. The guest speaks first, so this returns
/// the moment the agent is up: no polling.
///
/// `knock` is for reconnecting to a guest that was already up (after a daemon restart);
/// a fresh guest needs none, and a knock racing its first hello would only garble it.
async fn connect_agent(
    endpoint: &AgentEndpoint,
    listener: Option<tokio::net::UnixListener>,
    token: &str,
    knock: bool,
) -> Result<AgentConn, AgentError> {
    match (endpoint, listener) {
        (_, Some(l)) => accept_agent(l, token).await,
        (AgentEndpoint::Listen(path), None) => {
            accept_agent(tokio::net::UnixListener::bind(path)?, token).await
        }
        (AgentEndpoint::Connect(path), None) => {
            // A guest can be mid-session with a previous daemon (it reconnected before
            // the guest noticed the hang-up); the knock makes it start over, and a
            // garbled first frame (that session's leftovers) is worth one more try.
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut stream = UnixStream::connect(path).await?;
                if knock || attempt > 1 {
                    stream.write_all(&HOST_KNOCK).await?;
                }
                let result = match agent_conn::read_hello(&mut stream).await {
                    Ok(hello) => agent_conn::authenticate(stream, hello, token).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(conn) => return Ok(conn),
                    Err(e @ (AgentError::Closed | AgentError::Remote(_))) => return Err(e),
                    Err(e) if attempt < 5 => {
                        tracing::debug!(attempt, cause = %e, "no clean hello; reconnecting");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

async fn accept_agent(l: tokio::net::UnixListener, token: &str) -> Result<AgentConn, AgentError> {
    let (mut stream, _) = l.accept().await?;
    let hello = agent_conn::read_hello(&mut stream).await?;
    agent_conn::authenticate(stream, hello, token).await
}
