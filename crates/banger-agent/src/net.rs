//! Guest networking from the boot config, over rtnetlink: no iproute2 needed in the
//! image, and no process to start (a freshly restored guest starts processes slowly).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use banger_wire::agent::BootConfig;
use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

const NIC_PATIENCE: Duration = Duration::from_secs(5);
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Brings `lo` up; with `banger.ip`, configures the first other interface and the
/// default route; with `banger.dns`, writes resolv.conf. Failures are logged.
pub async fn configure(cfg: &BootConfig) {
    let nic = match cfg.ip {
        Some(_) => wait_for_nic(),
        None => None,
    };
    if cfg.ip.is_some() && nic.is_none() {
        tracing::error!(
            "banger.ip is set but no network interface besides lo appeared; is virtio_net loaded?"
        );
    }
    let plan = Plan {
        nic: nic.as_deref(),
        ip_cidr: cfg.ip.as_deref().filter(|_| nic.is_some()),
        gateway: cfg.gateway.as_deref(),
        mac: None,
    };
    for failure in apply(&plan).await {
        tracing::error!(failure, "network setup failed");
    }
    if let Some(ip) = plan.ip_cidr {
        tracing::info!(
            nic,
            ip,
            gateway = cfg.gateway.as_deref(),
            "network configured"
        );
    }
    if let Some(dns) = &cfg.dns {
        write_resolv_conf(dns);
    }
}

/// Gives the interface a new identity after a snapshot restore: its MAC, its only
/// address, the default route, resolv.conf. Returns the failures.
pub async fn reconfigure(
    ip_cidr: Option<&str>,
    gateway: Option<&str>,
    dns: Option<&str>,
    mac: Option<&str>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(ip_cidr) = ip_cidr {
        match wait_for_nic() {
            Some(nic) => {
                let plan = Plan {
                    nic: Some(&nic),
                    ip_cidr: Some(ip_cidr),
                    gateway,
                    mac,
                };
                failures.extend(apply(&plan).await);
                tracing::info!(nic, ip = %ip_cidr, gateway, mac, "network reconfigured");
            }
            None => failures.push("no network interface besides lo".into()),
        }
    }
    if let Some(dns) = dns {
        write_resolv_conf(dns);
    }
    failures
}

/// What to do to the links: `lo` always comes up; `nic` gets `mac`, then `ip_cidr` as
/// its only IPv4 address (dropping the old one drops the routes through it), then the
/// default route through `gateway`.
struct Plan<'a> {
    nic: Option<&'a str>,
    ip_cidr: Option<&'a str>,
    gateway: Option<&'a str>,
    mac: Option<&'a str>,
}

async fn apply(plan: &Plan<'_>) -> Vec<String> {
    let handle = match rtnetlink::new_connection() {
        Ok((connection, handle, _)) => {
            tokio::spawn(connection);
            handle
        }
        Err(e) => return vec![format!("cannot open a netlink socket: {e}")],
    };
    let mut failures = Vec::new();
    let mut step = |what: String, result: Result<(), String>| {
        if let Err(e) = result {
            failures.push(format!("{what}: {e}"));
        }
    };
    step(
        "set lo up".into(),
        set_link(&handle, "lo", |m| m.up()).await,
    );
    let (Some(nic), Some(ip_cidr)) = (plan.nic, plan.ip_cidr) else {
        return failures;
    };
    let (ip, prefix) = match parse_cidr(ip_cidr) {
        Ok(v) => v,
        Err(e) => {
            step(format!("address {ip_cidr}"), Err(e));
            return failures;
        }
    };
    if let Some(mac) = plan.mac {
        let result = match parse_mac(mac) {
            Ok(bytes) => set_link(&handle, nic, |m| m.address(bytes)).await,
            Err(e) => Err(e),
        };
        step(format!("set {nic} address {mac}"), result);
    }
    step(
        format!("set {nic} up"),
        set_link(&handle, nic, |m| m.up()).await,
    );
    let index = match link_index(&handle, nic).await {
        Ok(index) => index,
        Err(e) => {
            step(format!("find {nic}"), Err(e));
            return failures;
        }
    };
    step(
        format!("make {ip_cidr} the only address of {nic}"),
        only_address(&handle, index, ip, prefix).await,
    );
    if let Some(gw) = plan.gateway {
        let result = match gw.parse::<Ipv4Addr>() {
            Ok(gw) => default_route(&handle, index, gw).await,
            Err(e) => Err(e.to_string()),
        };
        step(format!("default route via {gw}"), result);
    }
    failures
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, String> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err("no such link".into()),
        Err(e) => Err(e.to_string()),
    }
}

async fn set_link(
    handle: &Handle,
    name: &str,
    change: impl FnOnce(
        rtnetlink::LinkMessageBuilder<LinkUnspec>,
    ) -> rtnetlink::LinkMessageBuilder<LinkUnspec>,
) -> Result<(), String> {
    let msg = change(LinkUnspec::new_with_name(name)).build();
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| e.to_string())
}

async fn only_address(handle: &Handle, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), String> {
    let old: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    for msg in old
        .into_iter()
        .filter(|m| m.header.index == index && m.header.family == AddressFamily::Inet)
    {
        handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(|e| e.to_string())?;
    }
    handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(|e| e.to_string())
}

async fn default_route(handle: &Handle, index: u32, gateway: Ipv4Addr) -> Result<(), String> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(|e| e.to_string())
}

/// `a.b.c.d/n`.
fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{ip:?}: {e}"))?;
    match prefix.parse::<u8>() {
        Ok(p) if p <= 32 => Ok((ip, p)),
        _ => Err(format!("{prefix:?} is not a prefix length")),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
fn parse_mac(s: &str) -> Result<Vec<u8>, String> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s:?} is not a MAC address"))?;
    match bytes.len() {
        6 => Ok(bytes),
        _ => Err(format!("{s:?} is not a MAC address")),
    }
}

fn wait_for_nic() -> Option<String> {
    let started = Instant::now();
    loop {
        let names = fs_err::read_dir("/sys/class/net")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if let Some(nic) = first_nic(names) {
            return Some(nic);
        }
        if started.elapsed() > NIC_PATIENCE {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first interface in name order that is not loopback.
fn first_nic(mut names: Vec<String>) -> Option<String> {
    names.sort();
    names.into_iter().find(|n| n != "lo")
}

fn write_resolv_conf(dns: &str) {
    // Often a dangling symlink into /run/systemd; replace it with a plain file.
    if fs_err::symlink_metadata(RESOLV_CONF).is_ok_and(|m| m.file_type().is_symlink()) {
        let _ = fs_err::remove_file(RESOLV_CONF);
    }
    if let Err(e) = fs_err::write(RESOLV_CONF, resolv_conf(dns)) {
        tracing::error!(cause = %e, "cannot write resolv.conf");
    }
}

/// resolv.conf for a comma-separated server list.
fn resolv_conf(dns: &str) -> String {
    dns.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("nameserver {s}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_lists_every_server() {
        assert_eq!(
            resolv_conf("172.30.0.1,1.1.1.1"),
            "nameserver 172.30.0.1\nnameserver 1.1.1.1\n"
        );
    }

    #[test]
    fn cidr_and_mac_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_cidr("172.30.0.9/24").unwrap(),
            (Ipv4Addr::new(172, 30, 0, 9), 24)
        );
        assert!(parse_cidr("172.30.0.9").is_err());
        assert!(parse_cidr("172.30.0.9/33").is_err());
        assert_eq!(
            parse_mac("06:00:ac:1e:00:09").unwrap(),
            [6, 0, 0xac, 0x1e, 0, 9]
        );
        assert!(parse_mac("06:00:ac:1e:00").is_err());
        assert!(parse_mac("zz:00:ac:1e:00:09").is_err());
    }

    #[test]
    fn first_nic_skips_loopback() {
        let names = vec!["lo".to_string(), "eth1".to_string(), "eth0".to_string()];

        assert_eq!(first_nic(names).as_deref(), Some("eth0"));
    }
}
