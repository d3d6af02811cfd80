//! The host side of VM networking as one object: bridge, NAT table, tap pool.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use banger_host::config::Config;

use super::nat::{NftTable, PortForward};
use super::tap::{tap_index, Tap, TapPool};
use super::{mac_for, nft, pick_subnet, Guest, Guests, Mac, NetError, Netlink, Rules, Subnet};

/// Spare taps kept ready by default.
pub const DEFAULT_SPARE_TAPS: usize = 2;

/// How the host network is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    pub bridge: String,
    /// The subnet from `config.toml`, which wins when set.
    pub subnet: Option<Subnet>,
    /// The subnet used before (kept in the store), so leases stay valid across reboots.
    pub previous_subnet: Option<Subnet>,
    pub spare_taps: usize,
}

impl NetConfig {
    pub fn from_config(config: &Config) -> Result<NetConfig, NetError> {
        Ok(NetConfig {
            bridge: config.bridge.clone(),
            subnet: config.subnet.as_deref().map(str::parse).transpose()?,
            previous_subnet: None,
            spare_taps: DEFAULT_SPARE_TAPS,
        })
    }
}

/// One VM's network: its tap and the lease it was attached with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNet {
    pub tap: Tap,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub subnet: Subnet,
}

impl VmNet {
    /// `ip/prefix` for the guest's boot config (`banger.ip=`).
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.subnet.prefix())
    }
    /// The guest's default gateway, which is also its DNS server.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }
}

/// The bridge, its NAT and isolation tables, the tap pool and the attached guests.
pub struct HostNetwork {
    netlink: Netlink,
    bridge: String,
    table: NftTable,
    subnet: Subnet,
    taps: TapPool,
    guests: Arc<Guests>,
    /// Serialises rewrites of the guests' rules, so the last one reflects every change.
    rules_lock: tokio::sync::Mutex<()>,
}

impl HostNetwork {
    /// Makes the host ready for networked VMs: picks the subnet, creates the bridge with
    /// the `.1` address, installs its nftables table, turns on IPv4 forwarding and fills
    /// the tap pool. `keep_taps` are the taps of VMs still running; every other `bgtap*`
    /// is deleted. Idempotent: a restarted daemon calls it again.
    pub async fn setup(
        config: &NetConfig,
        keep_taps: &HashSet<String>,
    ) -> Result<HostNetwork, NetError> {
        let netlink = Netlink::open()?;
        let on_bridge = match netlink.link(&config.bridge).await? {
            Some(link) => netlink.subnet_of(link.index).await?,
            None => None,
        };
        let routes: Vec<_> = netlink
            .ipv4_routes()
            .await?
            .into_iter()
            .filter(|r| r.dev.as_deref() != Some(config.bridge.as_str()))
            .collect();
        let subnet = pick_subnet(&routes, config.subnet, on_bridge.or(config.previous_subnet))?;
        let index = netlink.ensure_bridge(&config.bridge).await?;
        netlink
            .set_only_ipv4(index, subnet.gateway(), subnet.prefix())
            .await?;
        let table = NftTable::for_bridge(&config.bridge);
        nft::install_base(&table, subnet, &config.bridge).await?;
        nft::enable_forwarding()?;
        nft::enable_route_localnet(&config.bridge)?;
        let taps = TapPool::start(netlink.clone(), index, config.spare_taps, keep_taps).await?;
        tracing::info!(bridge = %config.bridge, %subnet, "host network ready");
        Ok(HostNetwork {
            netlink,
            bridge: config.bridge.clone(),
            table,
            subnet,
            taps,
            guests: Arc::default(),
            rules_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The attached guests and their policies (for DNS).
    pub fn guests(&self) -> &Arc<Guests> {
        &self.guests
    }

    pub fn subnet(&self) -> Subnet {
        self.subnet
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The bridge address: guests' gateway and DNS server.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }

    /// The nftables table holding this bridge's NAT and port forwards.
    pub fn nft_table(&self) -> &NftTable {
        &self.table
    }

    pub fn taps(&self) -> &TapPool {
        &self.taps
    }

    /// Gives VM `vm_id`, holding lease `ip`, a tap, its isolation rules (anti-spoofing
    /// and `rules`) and its port forwards.
    pub async fn attach(
        &self,
        vm_id: &str,
        ip: Ipv4Addr,
        forwards: &[PortForward],
        rules: Rules,
    ) -> Result<VmNet, NetError> {
        if !self.subnet.lease_range().any(|l| l == ip) {
            return Err(NetError::LeaseOutsideSubnet {
                ip,
                subnet: self.subnet,
            });
        }
        let tap = self.taps.take().await?;
        let guest = Guest {
            vm_id: vm_id.to_string(),
            tap: tap.name.clone(),
            ip,
            mac: mac_for(ip),
            rules,
        };
        let t0 = std::time::Instant::now();
        let mut isolation_ms = 0;
        let attached = async {
            self.update_guests(|g| g.insert(guest)).await?;
            isolation_ms = t0.elapsed().as_millis() as u64;
            nft::add_forwards(&self.table, vm_id, ip, forwards).await
        }
        .await;
        if let Err(e) = attached {
            let _ = self.update_guests(|g| drop(g.remove(vm_id))).await;
            self.taps.give_back(tap).await?;
            return Err(e);
        }
        tracing::info!(vm = vm_id, tap = %tap.name, %ip, isolation_ms, "vm network attached");
        Ok(VmNet {
            tap,
            ip,
            mac: mac_for(ip),
            subnet: self.subnet,
        })
    }

    /// Replaces VM `vm_id`'s port forwards (to lease `ip`) with `forwards`.
    pub async fn set_forwards(
        &self,
        vm_id: &str,
        ip: Ipv4Addr,
        forwards: &[PortForward],
    ) -> Result<(), NetError> {
        match forwards {
            [] => nft::remove_forwards(&self.table, vm_id).await,
            _ => nft::add_forwards(&self.table, vm_id, ip, forwards).await,
        }
    }

    /// After a daemon restart: the rules of exactly these guests (the adopted VMs).
    pub async fn restore(&self, guests: Vec<Guest>) -> Result<(), NetError> {
        self.update_guests(|g| {
            for guest in guests {
                g.insert(guest);
            }
        })
        .await
    }

    /// Changes the guest list and rewrites the rules to match it.
    async fn update_guests(&self, change: impl FnOnce(&Guests)) -> Result<(), NetError> {
        let _rules = self.rules_lock.lock().await;
        change(&self.guests);
        nft::set_guests(&self.table, &self.guests.all()).await
    }

    /// Lets guest `guest` reach `addrs` for `secs` seconds (answers for its
    /// `--egress-allow` domains).
    pub async fn allow_egress(
        &self,
        guest: Ipv4Addr,
        addrs: &[Ipv4Addr],
        secs: u32,
    ) -> Result<(), NetError> {
        nft::allow_egress(&self.table, guest, addrs, secs).await
    }

    /// Removes VM `vm_id`'s isolation rules, port forwards and tap. Safe to repeat and
    /// safe after a crash (missing pieces are skipped). The lease is the store's to free.
    pub async fn release(&self, vm_id: &str, tap: Option<&str>) -> Result<(), NetError> {
        let gone = self.guests.by_vm(vm_id);
        self.update_guests(|g| drop(g.remove(vm_id))).await?;
        if let Some(guest) = gone.filter(|g| !g.rules.egress.is_empty()) {
            nft::forget_egress(&self.table, guest.ip).await?;
        }
        nft::remove_forwards(&self.table, vm_id).await?;
        if let Some(name) = tap {
            self.taps.destroy(name).await?;
        }
        tracing::info!(vm = vm_id, tap, "vm network released");
        Ok(())
    }

    /// Removes the port forwards of every VM not in `live` (crash cleanup).
    pub async fn prune_forwards(&self, live: &HashSet<String>) -> Result<Vec<String>, NetError> {
        let mut pruned = Vec::new();
        for vm in nft::vms_with_forwards(&self.table).await? {
            if !live.contains(&vm) {
                nft::remove_forwards(&self.table, &vm).await?;
                pruned.push(vm);
            }
        }
        Ok(pruned)
    }

    /// Daemon shutdown: deletes the spare taps only. Running VMs keep their taps, the
    /// bridge and their port forwards.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.taps.drain().await
    }

    /// Deletes everything banger made for `bridge`: the `bgtap*` devices on it (and
    /// detached ones), the bridge and its nftables table. Taps on other bridges belong to
    /// other daemons and stay. For tests and uninstall; IPv4 forwarding is left.
    pub async fn cleanup_all(bridge: &str) -> Result<(), NetError> {
        let netlink = Netlink::open()?;
        let bridge_index = netlink.link(bridge).await?.map(|l| l.index);
        for link in netlink.links().await? {
            let ours = link.controller.is_none() || link.controller == bridge_index;
            if tap_index(&link.name).is_some() && ours {
                netlink.delete(&link.name).await?;
            }
        }
        netlink.delete(bridge).await?;
        nft::delete_table(&NftTable::for_bridge(bridge)).await
    }

    /// The netlink handle, for callers that inspect links.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_wire::Diagnostic;

    fn shareable<T: Send + Sync>() {}

    #[test]
    fn host_network_can_be_shared_between_tasks() {
        shareable::<HostNetwork>();
        shareable::<super::super::DnsServer>();
    }

    #[test]
    fn config_subnet_is_parsed() {
        let config = Config {
            subnet: Some("172.20.1.0/24".into()),
            ..Config::default()
        };
        let net = NetConfig::from_config(&config).unwrap();
        assert_eq!(net.subnet, Some("172.20.1.0/24".parse().unwrap()));
        assert_eq!(net.bridge, "banger0");
    }

    #[test]
    fn config_subnet_with_host_bits_is_refused() {
        let config = Config {
            subnet: Some("172.20.1.1/24".into()),
            ..Config::default()
        };
        let err = NetConfig::from_config(&config).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid subnet 172.20.1.1/24"),
            "{err}"
        );
        assert!(err.hint().is_some());
    }

    #[test]
    fn vm_net_gives_the_guest_boot_values() {
        let ip = Ipv4Addr::new(172, 30, 0, 7);
        let vm = VmNet {
            tap: Tap {
                name: "bgtap3".into(),
            },
            ip,
            mac: mac_for(ip),
            subnet: "172.30.0.0/24".parse().unwrap(),
        };
        assert_eq!(vm.cidr(), "172.30.0.7/24");
        assert_eq!(vm.gateway(), Ipv4Addr::new(172, 30, 0, 1));
    }
}
