//! `vm create`: a cold create boots the image, a clone restores a snapshot, a warm
//! create clones the machine's warm snapshot. Cold creates and clones come to be the
//! same way ([`Manager::make_vm`]): the row, its lease, its disk, its first run, and on
//! any failure none of it.

use std::sync::Arc;
use std::time::Instant;

use banger_wire::api::{NetPolicy, VmCreateSpec, VmInfo, VmState};
use banger_wire::user::GuestUser;

use super::{files, now_rfc3339, spec, Machine, Manager};
use crate::error::DaemonError;
use crate::failpoint::failpoint;
use crate::store::{SnapshotRecord, VmRecord};

/// What a create chooses of a new VM's row (see [`Manager::new_record`]).
pub(super) struct NewVm {
    name: String,
    machine: Machine,
    publish: Vec<String>,
    /// The policy asked for, before the configured defaults.
    policy: NetPolicy,
    ephemeral: bool,
    user: Option<GuestUser>,
    /// The pool it is made for (see [`super::pool`]).
    pub(super) pool: Option<String>,
}

impl NewVm {
    /// `spec`'s VM on `machine`, under its name or a fresh one.
    pub(super) fn of(spec: &VmCreateSpec, machine: Machine) -> Result<NewVm, DaemonError> {
        let name = spec.name.clone().unwrap_or_else(spec::generate_name);
        spec::validate_name(&name)?;
        Ok(NewVm {
            name,
            machine,
            publish: spec.publish.clone(),
            policy: spec.policy.clone(),
            ephemeral: spec.ephemeral,
            user: spec.user.clone(),
            pool: None,
        })
    }
}

/// Where a new VM's disk and first run come from.
pub(super) enum Origin<'a> {
    /// Its image: an empty writable disk, then a boot unless `start` is false.
    Image { start: bool },
    /// A snapshot: a copy of its disk, then a restore.
    Snapshot(&'a SnapshotRecord),
}

/// The steps of [`Manager::make_vm`].
#[derive(Clone, Copy)]
enum Step {
    Inserted,
    Leased,
    Disk,
    Started,
}

impl Origin<'_> {
    /// Marks `step` done: the crash test's kill point there (see [`crate::failpoint`]).
    fn done(&self, step: Step) {
        match (self, step) {
            (Origin::Image { .. }, Step::Inserted) => failpoint("create.after_insert"),
            (Origin::Image { .. }, Step::Leased) => failpoint("create.after_lease"),
            (Origin::Image { .. }, Step::Disk) => failpoint("create.after_disk"),
            (Origin::Image { .. }, Step::Started) => failpoint("create.after_boot"),
            (Origin::Snapshot(_), Step::Inserted) => failpoint("clone.after_insert"),
            // A clone's lease is the cold create's step; its point covers it.
            (Origin::Snapshot(_), Step::Leased) => {}
            (Origin::Snapshot(_), Step::Disk) => failpoint("clone.after_disk_copy"),
            (Origin::Snapshot(_), Step::Started) => failpoint("clone.after_boot"),
        }
    }

    fn snapshot(&self) -> Option<&str> {
        match self {
            Origin::Image { .. } => None,
            Origin::Snapshot(snap) => Some(&snap.name),
        }
    }
}

impl Manager {
    /// Creates a VM and (unless `no_start`) boots it. On any failure nothing is left:
    /// no row, no files, no process. A warm create resumes a clone of the machine's warm
    /// snapshot when there is one, and otherwise boots and (on first use) takes one.
    pub async fn create(self: &Arc<Self>, spec: VmCreateSpec) -> Result<VmInfo, DaemonError> {
        super::ttl::check(spec.ttl_secs)?;
        super::idle::check(spec.idle_timeout_secs)?;
        let vm = if let Some(from) = spec.from_snapshot.clone() {
            self.create_clone(spec.clone(), &from).await?
        } else if !spec.warm {
            self.create_cold(spec.clone()).await?
        } else if let Some(vm) = self.take_pooled(&spec).await? {
            vm
        } else if let Some(vm) = self.create_warm(&spec).await? {
            vm
        } else {
            let vm = self.create_cold(spec.clone()).await?;
            if self.config.warm_on_first_use && !spec.no_start {
                self.warm_on_first_use(&spec, &vm).await;
            }
            vm
        };
        let vm = match spec.ttl_secs {
            Some(ttl) => self.with_ttl(vm, ttl).await?,
            None => vm,
        };
        let vm = match spec.idle_timeout_secs {
            Some(secs) => self.with_idle_timeout(vm, secs).await?,
            None => vm,
        };
        if !spec.exec_only && !spec.no_start {
            self.wait_ssh(&vm.id).await;
        }
        Ok(vm)
    }

    /// Creates a VM from its image by booting it.
    async fn create_cold(self: &Arc<Self>, spec: VmCreateSpec) -> Result<VmInfo, DaemonError> {
        let t0 = Instant::now();
        let new = NewVm::of(&spec, self.machine(&spec))?;
        let m = &new.machine;
        spec::validate_resources(m.vcpu, m.memory_mib, m.disk_size_mib)?;
        self.backend(m.backend, &new.name)?;
        files::image(&self.paths, &m.image)?;
        let origin = Origin::Image {
            start: !spec.no_start,
        };
        self.make_vm(new, origin, t0).await
    }

    /// Makes VM `new` from `origin`: inserts its row marked `creating` (which takes its
    /// name; a restart deletes a row still so marked), leases its address, makes its disk,
    /// boots or restores it, and clears the mark. On any failure it removes everything:
    /// VMM, network, lease, files and row. `t0` is when the create began.
    pub(super) async fn make_vm(
        self: &Arc<Self>,
        new: NewVm,
        origin: Origin<'_>,
        t0: Instant,
    ) -> Result<VmInfo, DaemonError> {
        let pool = new.pool.clone();
        let rec = self.new_record(new)?;
        let slot = self.slot(&rec.id);
        let _op = slot.op.lock().await;
        if let Err(e) = self.insert_with_forwards(&rec).await {
            self.forget_slot(&rec.id);
            return Err(e);
        }
        origin.done(Step::Inserted);
        let result = async {
            if let (Some(key), Origin::Snapshot(snap)) = (&pool, &origin) {
                self.store.pool_add(&rec.id, key, &snap.id)?;
            }
            if !rec.no_network {
                self.lease(&rec)?;
                origin.done(Step::Leased);
            }
            match origin {
                Origin::Image { .. } => files::create_disk(&self.paths, &rec)?,
                Origin::Snapshot(snap) => files::copy_snapshot_disk(&self.paths, &rec, snap)?,
            }
            origin.done(Step::Disk);
            let disk_ms = t0.elapsed().as_millis() as u64;
            match origin {
                Origin::Image { start: false } => {}
                Origin::Image { start: true } => {
                    self.boot(&slot, &rec).await?;
                    origin.done(Step::Started);
                }
                Origin::Snapshot(snap) => {
                    self.restore(&slot, &rec, snap).await?;
                    origin.done(Step::Started);
                }
            }
            self.store.set_created(&rec.id)?;
            Ok::<u64, DaemonError>(disk_ms)
        }
        .await;
        match result {
            Ok(disk_ms) => {
                let create_ms = t0.elapsed().as_millis() as u64;
                let snapshot = origin.snapshot().map(tracing::field::display);
                tracing::info!(vm = %rec.name, snapshot, disk_ms, create_ms, "vm created");
                self.show(&rec.id)
            }
            Err(e) => {
                tracing::warn!(vm = %rec.name, cause = %e, "create failed; removing everything");
                self.destroy(&slot, &rec).await;
                Err(e)
            }
        }
    }

    /// The row of a new VM: checks that its name is free, its port forwards and network
    /// policy parse and it has the network they need; gives it a fresh id and agent token.
    fn new_record(&self, new: NewVm) -> Result<VmRecord, DaemonError> {
        let m = new.machine;
        spec::validate_publish(&new.publish)?;
        let policy = crate::net::policy::resolve(&self.config.default_policy(), &new.policy);
        crate::net::Rules::parse(&policy).map_err(DaemonError::from_net)?;
        if !m.no_network {
            self.network()?;
        } else if !new.publish.is_empty() {
            return Err(DaemonError::invalid(
                "--publish needs a network; drop --no-network",
            ));
        } else {
            spec::check_policy_without_network(&new.policy)?;
        }
        if self.store.get_vm(&new.name)?.is_some() {
            return Err(DaemonError::NameTaken(new.name));
        }
        Ok(VmRecord {
            id: hex::encode(rand::random::<[u8; 8]>()),
            name: new.name,
            image: m.image,
            backend: m.backend,
            vcpu: m.vcpu,
            memory_mib: m.memory_mib,
            disk_size_mib: m.disk_size_mib,
            state: VmState::Stopped,
            no_network: m.no_network,
            token: hex::encode(rand::random::<[u8; 16]>()),
            created_at: now_rfc3339(),
            pid: None,
            pid_start: None,
            boot: None,
            last_error: None,
            tap: None,
            publish: new.publish,
            policy,
            creating: true,
            ephemeral: new.ephemeral,
            expires_at: None,
            idle_timeout_secs: None,
            user: new.user,
        })
    }
}
