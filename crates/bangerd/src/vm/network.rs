//! A VM on the host network: its lease (kept until delete), and its tap, port forwards
//! and isolation rules while it runs.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::{lock, Manager};
use crate::error::DaemonError;
use crate::net::{PortForward, Rules, VmNet};
use crate::store::{Lease, VmRecord};

impl Manager {
    /// Leases the lowest free address of the bridge subnet to VM `id`.
    pub(super) fn lease(&self, rec: &VmRecord) -> Result<(), DaemonError> {
        let net = self.network()?;
        let _guard = lock(&self.lease_lock);
        let taken: HashSet<Ipv4Addr> = self
            .store
            .leases()?
            .iter()
            .filter_map(|l| l.ip.parse().ok())
            .collect();
        let ip =
            crate::net::allocate(net.subnet(), &taken).ok_or_else(|| DaemonError::Invalid {
                message: format!("no free address left in {}", net.subnet()),
                hint: Some("delete unused VMs, or set a larger `subnet` in config.toml".into()),
            })?;
        let mac = crate::net::mac_for(ip).to_string();
        self.store.insert_lease(&Lease {
            ip: ip.to_string(),
            vm_id: rec.id.clone(),
            mac,
        })?;
        Ok(())
    }

    /// Gives the VM its tap and port forwards when it holds a lease.
    pub(super) async fn attach_network(
        &self,
        rec: &VmRecord,
    ) -> Result<Option<VmNet>, DaemonError> {
        let Some(lease) = self.store.lease_of(&rec.id)? else {
            return Ok(None);
        };
        let net = self.network()?;
        let ip = lease
            .ip
            .parse()
            .map_err(|_| DaemonError::invalid(format!("bad lease {}", lease.ip)))?;
        let forwards: Vec<PortForward> =
            rec.publish.iter().filter_map(|p| p.parse().ok()).collect();
        let rules = Rules::parse(&rec.policy).map_err(DaemonError::from_net)?;
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
    pub(super) async fn detach_network(&self, rec: &VmRecord, tap: Option<&str>) {
        if let Ok(net) = &self.net {
            if let Err(e) = net.release(&rec.id, tap).await {
                tracing::warn!(vm = %rec.name, cause = %e, "cannot release vm network");
            }
        }
        let _ = self.store.set_tap(&rec.id, None);
    }
}
