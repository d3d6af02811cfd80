//! The VM half of `banger prune` (see `server/prune.rs`): a stopped VM is deleted
//! under its operation lock, after a fresh look at its row, so a VM started meanwhile
//! stays.

use banger_wire::api::VmState;

use super::Manager;
use crate::error::DaemonError;
use crate::store::VmRecord;

/// Whether prune deletes this VM: stopped or crashed, and not a create under way.
pub fn stopped(rec: &VmRecord) -> bool {
    !rec.creating && matches!(rec.state, VmState::Stopped | VmState::Crashed)
}

impl Manager {
    /// Deletes VM `id` if it is still [`stopped`] once its lock is held; whether it went.
    pub async fn delete_if_stopped(&self, id: &str) -> Result<bool, DaemonError> {
        let slot = self.slot(id);
        let _op = slot.op.lock().await;
        let Some(rec) = self.store.get_vm(id)? else {
            return Ok(false);
        };
        if !stopped(&rec) || slot.runtime().is_some() {
            return Ok(false);
        }
        self.destroy(&slot, &rec).await;
        tracing::info!(vm = %rec.name, "pruned a stopped vm");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::ttl::tests::vm;
    use super::*;

    fn at(state: VmState, creating: bool) -> VmRecord {
        VmRecord {
            state,
            creating,
            ..vm("web", None)
        }
    }

    #[test]
    fn stopped_and_crashed_vms_go_but_not_running_ones_or_creates_under_way() {
        let verdicts = [
            stopped(&at(VmState::Stopped, false)),
            stopped(&at(VmState::Crashed, false)),
            stopped(&at(VmState::Running, false)),
            stopped(&at(VmState::Starting, false)),
            stopped(&at(VmState::Stopping, false)),
            stopped(&at(VmState::Stopped, true)),
        ];

        assert_eq!(verdicts, [true, true, false, false, false, false]);
    }
}
