//! `vm port add|rm|ls`: a VM's port forwards, changed while it runs. The list is kept in
//! the VM's row (`publish`, as `--publish` sets it), so a restart of the VM or of the
//! daemon keeps it; on a running VM its nftables chain is rewritten at once. Delete
//! releases the chain with the rest of the VM's network.

use std::net::Ipv4Addr;

use banger_wire::api::PortInfo;

use super::{Manager, Slot};
use crate::error::DaemonError;
use crate::net::{port_bound, port_holder, PortError, PortForward, PortMatch, Proto, Transport};
use crate::store::VmRecord;

/// The forwards kept in a VM's row.
fn forwards(rec: &VmRecord) -> Vec<PortForward> {
    rec.publish.iter().filter_map(|p| p.parse().ok()).collect()
}

fn infos(forwards: &[PortForward]) -> Vec<PortInfo> {
    forwards.iter().map(|f| PortInfo::from(*f)).collect()
}

fn transport(proto: Proto) -> Transport {
    match proto {
        Proto::Tcp => Transport::Tcp,
        Proto::Udp => Transport::Udp,
    }
}

fn bad_spec(e: crate::net::NetError, hint: &str) -> DaemonError {
    DaemonError::Invalid {
        message: e.to_string(),
        hint: Some(hint.into()),
    }
}

impl Manager {
    pub fn port_list(&self, name: &str) -> Result<Vec<PortInfo>, DaemonError> {
        Ok(infos(&forwards(&self.record(name)?)))
    }

    /// Adds the forward `spec` (`HOST:GUEST[/PROTO]`) to VM `name`: refused when the
    /// host port is forwarded already (to any VM) or a host process holds it.
    pub async fn port_add(&self, name: &str, spec: &str) -> Result<Vec<PortInfo>, DaemonError> {
        let slot = self.slot(&self.record(name)?.id);
        let _op = slot.op.lock().await;
        let rec = self.record(name)?;
        if rec.no_network {
            return Err(PortError::NoNetwork { vm: rec.name }.into());
        }
        let fwd: PortForward = spec
            .parse()
            .map_err(|e| bad_spec(e, "use HOST_PORT:GUEST_PORT[/tcp|/udp], e.g. 8080:80"))?;
        let _forwards = self.forwards.lock().await;
        self.check_free(&[fwd])?;
        let mut list = forwards(&rec);
        list.push(fwd);
        self.replace_forwards(&slot, &rec, &list).await?;
        tracing::info!(vm = %rec.name, forward = %fwd, "port forward added");
        Ok(infos(&list))
    }

    /// Refuses forwards in `wanted` of a host port a VM's forward (the VM's own
    /// included) or a host process holds. Hold [`Manager::forwards`] until they are
    /// stored.
    fn check_free(&self, wanted: &[PortForward]) -> Result<(), DaemonError> {
        if wanted.is_empty() {
            return Ok(());
        }
        let others = self.store.list_vms()?;
        for fwd in wanted {
            let port = format!("{}/{}", fwd.host, fwd.proto.as_str());
            for other in &others {
                if let Some(old) = forwards(other)
                    .into_iter()
                    .find(|f| (f.host, f.proto) == (fwd.host, fwd.proto))
                {
                    return Err(PortError::Taken {
                        port,
                        vm: other.name.clone(),
                        guest: old.guest,
                    }
                    .into());
                }
            }
            if port_bound(transport(fwd.proto), fwd.host) {
                let holder = port_holder(transport(fwd.proto), fwd.host);
                return Err(PortError::InUse { port, holder }.into());
            }
        }
        Ok(())
    }

    /// Stores the row of a new VM `rec`, whose forwards must be free (see
    /// [`Manager::check_free`]).
    pub(super) async fn insert_with_forwards(&self, rec: &VmRecord) -> Result<(), DaemonError> {
        let _forwards = self.forwards.lock().await;
        self.check_free(&forwards(rec))?;
        Ok(self.store.insert_vm(rec)?)
    }

    /// Removes VM `name`'s forwards matching `spec` (`HOST[:GUEST][/PROTO]`).
    pub async fn port_remove(&self, name: &str, spec: &str) -> Result<Vec<PortInfo>, DaemonError> {
        let slot = self.slot(&self.record(name)?.id);
        let _op = slot.op.lock().await;
        let rec = self.record(name)?;
        let wanted: PortMatch = spec
            .parse()
            .map_err(|e| bad_spec(e, "use HOST_PORT[:GUEST_PORT][/tcp|/udp], e.g. 8080"))?;
        let (gone, kept): (Vec<_>, Vec<_>) =
            forwards(&rec).into_iter().partition(|f| wanted.matches(f));
        if gone.is_empty() {
            return Err(PortError::NotForwarded {
                vm: rec.name,
                spec: spec.to_string(),
            }
            .into());
        }
        self.replace_forwards(&slot, &rec, &kept).await?;
        tracing::info!(vm = %rec.name, port = spec, "port forward removed");
        Ok(infos(&kept))
    }

    /// Keeps `list` as the VM's forwards and, when it runs, installs them; a store
    /// failure puts the old ones back.
    async fn replace_forwards(
        &self,
        slot: &Slot,
        rec: &VmRecord,
        list: &[PortForward],
    ) -> Result<(), DaemonError> {
        let live = match (slot.runtime(), self.store.lease_of(&rec.id)?) {
            (Some(_), Some(lease)) => Some(lease.ip.parse::<Ipv4Addr>().map_err(|_| {
                DaemonError::invalid(format!("bad lease {} of vm {}", lease.ip, rec.name))
            })?),
            _ => None,
        };
        let net_err = |source| DaemonError::Network {
            vm: rec.name.clone(),
            source: Box::new(source),
        };
        if let Some(ip) = live {
            let net = self.network()?;
            net.set_forwards(&rec.id, ip, list).await.map_err(net_err)?;
        }
        let publish: Vec<String> = list.iter().map(|f| f.to_string()).collect();
        if let Err(e) = self.store.set_publish(&rec.id, &publish) {
            if let (Some(ip), Ok(net)) = (live, self.network()) {
                let _ = net.set_forwards(&rec.id, ip, &forwards(rec)).await;
            }
            return Err(e.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use banger_wire::{Diagnostic, ErrorCode};

    use super::*;
    use crate::vm::{test_manager, test_vm};

    /// A manager without network, holding stopped VMs (with a network) of these names.
    fn with_vms(names: &[&str]) -> (tempfile::TempDir, std::sync::Arc<Manager>) {
        let tmp = tempfile::tempdir().unwrap();
        let m = test_manager(tmp.path());
        for name in names {
            let rec = VmRecord {
                no_network: false,
                ..test_vm(name, None)
            };
            m.store.insert_vm(&rec).unwrap();
        }
        (tmp, m)
    }

    #[tokio::test]
    async fn a_stopped_vm_keeps_the_forwards_it_is_given() {
        let (_tmp, m) = with_vms(&["web"]);

        m.port_add("web", "8080:80").await.unwrap();
        let after_add = m.port_list("web").unwrap();
        m.port_add("web", "5353:53/udp").await.unwrap();
        let left = m.port_remove("web", "8080").await.unwrap();

        assert_eq!(
            after_add,
            [PortInfo {
                host: 8080,
                guest: 80,
                proto: Proto::Tcp
            }]
        );
        assert_eq!(
            left,
            [PortInfo {
                host: 5353,
                guest: 53,
                proto: Proto::Udp
            }]
        );
        assert_eq!(m.record("web").unwrap().publish, ["5353:53/udp"]);
    }

    #[tokio::test]
    async fn a_host_port_forwarded_to_another_vm_is_refused() {
        let (_tmp, m) = with_vms(&["a", "b"]);
        m.port_add("a", "8080:80").await.unwrap();

        let err = m.port_add("b", "8080:8000").await.unwrap_err();

        assert_eq!(err.code(), ErrorCode::AlreadyExists);
        assert_eq!(
            err.to_string(),
            "host port 8080/tcp is already forwarded to vm \"a\"'s port 80"
        );
        assert!(m.record("b").unwrap().publish.is_empty());
    }

    #[tokio::test]
    async fn a_new_vm_may_not_take_a_host_port_forwarded_to_another() {
        let (_tmp, m) = with_vms(&["a"]);
        m.port_add("a", "8080:80").await.unwrap();
        let b = VmRecord {
            no_network: false,
            publish: vec!["9090:90".into(), "8080:8000".into()],
            ..test_vm("b", None)
        };

        let err = m.insert_with_forwards(&b).await.unwrap_err();

        assert_eq!(err.code(), ErrorCode::AlreadyExists);
        assert!(m.store.get_vm("b").unwrap().is_none());
        let c = VmRecord {
            publish: vec!["8080:80/udp".into()],
            ..test_vm("c", None)
        };
        m.insert_with_forwards(&c).await.unwrap();
    }

    #[tokio::test]
    async fn a_host_port_the_vm_forwards_already_is_refused() {
        let (_tmp, m) = with_vms(&["a"]);
        m.port_add("a", "8080:80").await.unwrap();

        let err = m.port_add("a", "8080:22").await.unwrap_err();

        assert_eq!(err.code(), ErrorCode::AlreadyExists);
        assert_eq!(m.record("a").unwrap().publish, ["8080:80/tcp"]);
    }

    #[tokio::test]
    async fn a_vm_without_network_has_no_forwards_to_change() {
        let tmp = tempfile::tempdir().unwrap();
        let m = test_manager(tmp.path());
        m.store.insert_vm(&test_vm("nonet", None)).unwrap();

        let err = m.port_add("nonet", "8080:80").await.unwrap_err();

        assert_eq!(err.code(), ErrorCode::FailedPrecondition);
    }

    #[tokio::test]
    async fn a_host_port_a_process_listens_on_is_refused() {
        let (_tmp, m) = with_vms(&["web"]);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();

        let err = m.port_add("web", &format!("{port}:80")).await.unwrap_err();

        assert_eq!(err.code(), ErrorCode::AlreadyExists);
        assert!(err.to_string().contains(" is in use"), "{err}");
        assert!(m.record("web").unwrap().publish.is_empty());
    }

    #[tokio::test]
    async fn removing_a_forward_the_vm_lacks_says_so() {
        let (_tmp, m) = with_vms(&["web"]);
        m.port_add("web", "8080:80").await.unwrap();

        let wrong_guest = m.port_remove("web", "8080:81").await.unwrap_err();
        let unknown = m.port_remove("web", "9090").await.unwrap_err();
        let bad = m.port_remove("web", "http").await.unwrap_err();

        assert_eq!(wrong_guest.code(), ErrorCode::NotFound);
        assert_eq!(
            unknown.to_string(),
            "vm \"web\" has no forward of host port 9090"
        );
        assert_eq!(bad.code(), ErrorCode::InvalidArgument);
        assert_eq!(m.record("web").unwrap().publish, ["8080:80/tcp"]);
    }
}
