//! After a daemon start, whatever instant the last daemon died at: the store made to
//! agree with the VMMs, taps, rules and files that are really there.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_wire::api::VmState;

use super::{files, process, Manager};
use crate::error::DaemonError;
use crate::net::{Guest, Rules};
use crate::store::VmRecord;

impl Manager {
    /// Reconciles the store with reality after a daemon start, whatever instant the
    /// last daemon died at: adopts VMs whose VMM still runs and resumes them (a snapshot
    /// may have paused them), marks dead ones stopped, deletes half-made and throwaway
    /// VMs with all they hold, kills VMMs that were launched but never recorded, and
    /// removes files, port forwards and rules that no VM owns.
    pub async fn reconcile(self: &Arc<Self>) -> Result<(), DaemonError> {
        let mut guests = Vec::new();
        let mut live = HashSet::new();
        let mut kept = HashSet::new();
        for rec in self.store.list_vms()? {
            let recorded = match (rec.pid, rec.pid_start) {
                (Some(pid), Some(start)) if process::is_same_process(pid, start) => Some(pid),
                _ => None,
            };
            // A VMM of this VM that is not the recorded one was launched but never
            // recorded: nothing can reach it.
            let unrecorded: Vec<u32> = process::vmm_pids(&rec.id)
                .into_iter()
                .filter(|p| Some(*p) != recorded)
                .collect();
            process::kill_and_wait(&unrecorded).await;
            if rec.creating || rec.ephemeral {
                self.discard(&rec, recorded).await?;
                continue;
            }
            kept.insert(rec.id.clone());
            if recorded.is_some() {
                let this = self.clone();
                let slot = self.slot(&rec.id);
                match this.adopt(&slot, &rec).await {
                    Ok(()) => {
                        live.insert(rec.id.clone());
                        guests.extend(self.guest_of(&rec)?);
                    }
                    Err(e) => tracing::warn!(vm = %rec.name, cause = %e, "cannot adopt running vm"),
                }
            } else {
                if rec.state != VmState::Stopped && rec.state != VmState::Crashed {
                    tracing::info!(vm = %rec.name, "vmm is gone; marking stopped");
                    self.store.set_exited(
                        &rec.id,
                        VmState::Stopped,
                        Some("the vmm exited while the daemon was down"),
                    )?;
                }
                if rec.tap.is_some() {
                    self.store.set_tap(&rec.id, None)?;
                }
                self.release_runtime(&rec);
            }
        }
        self.sweep_files(&kept)?;
        // Exactly the adopted guests keep their isolation rules and port forwards.
        if let Ok(net) = &self.net {
            net.restore(guests).await.map_err(DaemonError::from_net)?;
            for vm in net
                .prune_forwards(&live)
                .await
                .map_err(DaemonError::from_net)?
            {
                tracing::info!(vm = %vm, "removed the port forwards of a vm that is gone");
            }
        }
        Ok(())
    }

    /// Deletes a VM the last daemon left half-made (`creating`) or that was a
    /// throwaway (`ephemeral`): its VMM, network, files, row and lease.
    async fn discard(&self, rec: &VmRecord, pid: Option<u32>) -> Result<(), DaemonError> {
        tracing::info!(
            vm = %rec.name,
            creating = rec.creating,
            ephemeral = rec.ephemeral,
            "deleting a half-made or throwaway vm"
        );
        process::kill_and_wait(&pid.into_iter().collect::<Vec<_>>()).await;
        if let Ok(net) = &self.net {
            if let Err(e) = net.release(&rec.id, rec.tap.as_deref()).await {
                tracing::warn!(vm = %rec.name, cause = %e, "cannot release vm network");
            }
        }
        self.release_runtime(rec);
        self.store.delete_vm(&rec.id)?;
        files::remove_files(&self.paths, rec);
        Ok(())
    }

    /// Lets the backend undo what it set up for a VMM that is gone (e.g. a jail) and
    /// removes the VM's runtime dir.
    fn release_runtime(&self, rec: &VmRecord) {
        let rt_dir = self.paths.vm_runtime_dir(&rec.id);
        if let Ok(vmm) = self.backends.get(rec.backend) {
            vmm.release(&rt_dir, &rec.id);
        }
        let _ = fs_err::remove_dir_all(rt_dir);
    }

    /// Removes VM dirs, runtime dirs, pinned host keys and snapshot dirs that no row
    /// owns: a delete removes the row first, a snapshot writes its files first.
    fn sweep_files(&self, vms: &HashSet<String>) -> Result<(), DaemonError> {
        let snaps: HashSet<String> = self
            .store
            .list_snapshots()?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let runtime_vms = self.paths.runtime_dir.join("vms");
        for orphan in orphans(&runtime_vms, vms) {
            // The backend that made it is unknown: each undoes what it may have set up.
            let id = orphan.file_name().unwrap_or_default().to_string_lossy();
            for vmm in [&self.backends.qemu, &self.backends.firecracker]
                .into_iter()
                .flatten()
            {
                vmm.release(&orphan, &id);
            }
        }
        let dirs = [
            (self.paths.vms_dir(), vms),
            (runtime_vms, vms),
            (self.paths.state_dir.join("ssh/known_hosts"), vms),
            (files::snapshots_dir(&self.paths.state_dir), &snaps),
        ];
        for (dir, owners) in dirs {
            for orphan in orphans(&dir, owners) {
                tracing::info!(path = %orphan.display(), "removing files no vm or snapshot owns");
                let gone = if orphan.is_dir() {
                    fs_err::remove_dir_all(&orphan)
                } else {
                    fs_err::remove_file(&orphan)
                };
                if let Err(e) = gone {
                    tracing::warn!(cause = %e, "cannot remove orphaned files");
                }
            }
        }
        Ok(())
    }

    /// An adopted VM's guest entry: its tap, lease and policy.
    fn guest_of(&self, rec: &VmRecord) -> Result<Option<Guest>, DaemonError> {
        let (Some(tap), Some(lease)) = (&rec.tap, self.store.lease_of(&rec.id)?) else {
            return Ok(None);
        };
        let Ok(ip) = lease.ip.parse() else {
            return Ok(None);
        };
        let rules = Rules::parse(&rec.policy).unwrap_or_default();
        Ok(Some(Guest {
            vm_id: rec.id.clone(),
            tap: tap.clone(),
            ip,
            mac: crate::net::mac_for(ip),
            rules,
        }))
    }
}

/// The entries of `dir` whose names are not in `owners`.
fn orphans(dir: &Path, owners: &HashSet<String>) -> Vec<PathBuf> {
    let Ok(entries) = fs_err::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| !owners.contains(e.file_name().to_string_lossy().as_ref()))
        .map(|e| e.path())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_the_entries_nobody_owns() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a", "b"] {
            fs_err::create_dir(dir.path().join(name)).unwrap();
        }
        fs_err::write(dir.path().join("c"), "").unwrap();
        let owners = ["a".to_string()].into_iter().collect();

        let mut found = orphans(dir.path(), &owners);
        found.sort();

        assert_eq!(found, vec![dir.path().join("b"), dir.path().join("c")]);
        assert!(orphans(&dir.path().join("missing"), &owners).is_empty());
    }
}
