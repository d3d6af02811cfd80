//! Warm snapshots: an image's booted and settled guest, kept so that a warm create
//! (`vm run`) resumes a clone of it instead of booting.

use std::sync::Arc;

use banger_wire::agent::{ExecSpec, ExitStatus, GuestFrame};
use banger_wire::api::{PoolSize, SnapshotInfo, VmCreateSpec, VmInfo};

use super::{lock, Machine, Manager};
use crate::error::DaemonError;
use crate::store::SnapshotRecord;

/// What a guest does once after its first boot and must not redo in every clone:
/// sshd's host key and start.
const SETTLED: &str = "until [ ! -x /usr/sbin/sshd ] || [ -e /run/sshd.pid ]; do sleep 0.1; done";

/// The largest pool `image warm --pool N` sets (the host's memory bounds smaller ones).
const MAX_POOL_SIZE: u32 = 64;

impl Machine {
    pub(super) fn of_snapshot(s: &SnapshotRecord) -> Machine {
        Machine {
            image: s.image.clone(),
            backend: s.backend,
            vcpu: s.vcpu,
            memory_mib: s.memory_mib,
            disk_size_mib: s.disk_size_mib,
            no_network: s.no_network,
        }
    }
}

/// Failures of the resume itself, after which a warm create boots instead.
fn resume_failed(e: &DaemonError) -> bool {
    matches!(
        e,
        DaemonError::Vmm { .. }
            | DaemonError::Agent { .. }
            | DaemonError::BootCrashed { .. }
            | DaemonError::BootTimeout { .. }
            | DaemonError::Io { .. }
    )
}

impl Manager {
    /// The machine `spec` asks for, with the config's defaults filled in.
    pub(super) fn machine(&self, spec: &VmCreateSpec) -> Machine {
        Machine {
            image: spec
                .image
                .clone()
                .unwrap_or_else(|| self.config.default_image.clone()),
            backend: spec.backend.unwrap_or(self.backends.default),
            vcpu: spec.vcpu.unwrap_or(self.config.vcpu),
            memory_mib: spec.memory_mib.unwrap_or(self.config.memory_mib),
            disk_size_mib: spec.disk_size_mib.unwrap_or(self.config.disk_size_mib),
            no_network: spec.no_network,
        }
    }

    /// The warm snapshots of machine `m`, newest last; only those of the image as it
    /// is now when `current` is set.
    pub(super) fn warm_snapshots(
        &self,
        m: &Machine,
        current: bool,
    ) -> Result<Vec<SnapshotRecord>, DaemonError> {
        let digest = crate::image::get(&self.paths, &m.image)
            .map(|i| i.digest().to_string())
            .ok();
        Ok(self
            .store
            .list_snapshots()?
            .into_iter()
            .filter(|s| s.warm && Machine::of_snapshot(s) == *m)
            .filter(|s| !current || digest.as_deref() == Some(s.image_digest.as_str()))
            .collect())
    }

    /// A warm create: a clone of the machine's warm snapshot, or `None` when there is
    /// none (or resuming it failed), and the caller boots instead.
    pub(super) async fn create_warm(
        self: &Arc<Self>,
        spec: &VmCreateSpec,
    ) -> Result<Option<VmInfo>, DaemonError> {
        let Some(snap) = self.warm_snapshots(&self.machine(spec), true)?.pop() else {
            return Ok(None);
        };
        let clone = VmCreateSpec {
            from_snapshot: Some(snap.id.clone()),
            warm: false,
            ..spec.clone()
        };
        match self.create_clone(clone, &snap.id).await {
            Ok(vm) => Ok(Some(vm)),
            Err(e) if resume_failed(&e) => {
                tracing::warn!(snapshot = %snap.name, cause = %e, "warm resume failed; booting instead");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Boots a VM of `spec`'s machine, waits until it has settled, snapshots it as the
    /// machine's warm snapshot (replacing earlier ones) and deletes the VM. With `pool`,
    /// sets the image's own pool size too; then a machine already warm is not warmed
    /// again, only its pool resized.
    pub async fn warm(
        self: &Arc<Self>,
        spec: VmCreateSpec,
        pool: Option<PoolSize>,
    ) -> Result<SnapshotInfo, DaemonError> {
        let m = self.machine(&spec);
        if let Some(size) = pool {
            if let Some(n) = size.own().filter(|n| *n > MAX_POOL_SIZE) {
                return Err(DaemonError::Invalid {
                    message: format!("a pool of {n} clones is too large"),
                    hint: Some(format!(
                        "ask for at most {MAX_POOL_SIZE}; the host's memory bounds it anyway"
                    )),
                });
            }
            crate::image::get(&self.paths, &m.image)
                .map_err(|e| DaemonError::image(&m.image, e))?;
            if let Some(snap) = self.warm_snapshots(&m, true)?.pop() {
                self.set_pool_size(&m.image, size).await?;
                return Ok(self.snapshot_info(&snap));
            }
        }
        let builder = VmCreateSpec {
            name: Some(format!("warm-{}", hex::encode(rand::random::<[u8; 3]>()))),
            image: Some(m.image.clone()),
            vcpu: Some(m.vcpu),
            memory_mib: Some(m.memory_mib),
            disk_size_mib: Some(m.disk_size_mib),
            backend: Some(m.backend),
            no_network: m.no_network,
            ephemeral: true,
            ..Default::default()
        };
        let vm = self.create(builder).await?;
        let taken = self.take_warm(&vm.name, &m).await;
        if let Err(e) = self.delete(&vm.name).await {
            tracing::warn!(vm = %vm.name, cause = %e, "cannot delete the warm builder vm");
        }
        let info = taken?;
        match pool {
            Some(size) => self.set_pool_size(&m.image, size).await?,
            None => self.refill(m, spec.policy.clone()),
        }
        Ok(info)
    }

    /// The first warm create of a machine with no warm snapshot booted `vm`: before its
    /// command runs (the guest is as fresh as a builder's), it becomes the machine's
    /// warm snapshot. A failure costs only the snapshot; the VM is kept.
    pub(super) async fn warm_on_first_use(self: &Arc<Self>, spec: &VmCreateSpec, vm: &VmInfo) {
        let m = self.machine(spec);
        match self.warm_snapshots(&m, true) {
            Ok(found) if found.is_empty() => {}
            // One exists (its resume failed) or the store is unreadable: nothing to do.
            _ => return,
        }
        let key = format!("{m:?}");
        if !lock(&self.warming).insert(key.clone()) {
            return;
        }
        let t0 = std::time::Instant::now();
        let taken = self.take_warm(&vm.name, &m).await;
        lock(&self.warming).remove(&key);
        match taken {
            Ok(info) => tracing::info!(
                vm = %vm.name,
                snapshot = %info.name,
                ms = t0.elapsed().as_millis() as u64,
                "warm snapshot taken on first use"
            ),
            Err(e) => tracing::warn!(vm = %vm.name, cause = %e, "no warm snapshot on first use"),
        }
    }

    /// Waits until `vm` has settled and snapshots it as machine `m`'s warm snapshot,
    /// replacing earlier ones.
    async fn take_warm(&self, vm: &str, m: &Machine) -> Result<SnapshotInfo, DaemonError> {
        self.settle(vm).await?;
        let name = format!("warm-{}", hex::encode(rand::random::<[u8; 4]>()));
        let info = self.snapshot(vm, Some(name), true).await?;
        for old in self.warm_snapshots(m, false)? {
            if old.id != info.id {
                self.snapshot_delete(&old.id).await?;
            }
        }
        tracing::info!(image = %m.image, snapshot = %info.name, "warm snapshot ready");
        Ok(info)
    }

    /// Returns once the guest's first-boot work is done.
    async fn settle(&self, vm: &str) -> Result<(), DaemonError> {
        let spec = ExecSpec {
            argv: vec!["sh".into(), "-c".into(), SETTLED.into()],
            env: Vec::new(),
            cwd: None,
            tty: None,
            timeout_ms: Some(self.config.boot_timeout_secs * 1000),
            user: None,
        };
        let agent_err = |source| DaemonError::Agent {
            vm: vm.to_string(),
            source,
        };
        let mut stream = self.exec(vm, spec).await?;
        loop {
            match crate::agent_conn::next_frame(&mut stream)
                .await
                .map_err(agent_err)?
            {
                GuestFrame::Exit(ExitStatus::Code(0)) => return Ok(()),
                GuestFrame::Exit(status) => {
                    return Err(DaemonError::invalid(format!(
                        "vm {vm:?} did not settle: the wait ended with {status:?}"
                    )))
                }
                _ => {}
            }
        }
    }
}
