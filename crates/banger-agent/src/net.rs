//! Guest networking from the boot config, done with iproute2's `ip`.

use std::process::Command;
use std::time::{Duration, Instant};

use banger_wire::agent::BootConfig;

const NIC_PATIENCE: Duration = Duration::from_secs(5);
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Brings `lo` up; with `banger.ip`, configures the first other interface and the
/// default route; with `banger.dns`, writes resolv.conf. Failures are logged.
pub fn configure(cfg: &BootConfig) {
    ip(&["link", "set", "lo", "up"]);
    if let Some(ip_cidr) = &cfg.ip {
        match wait_for_nic() {
            Some(nic) => {
                ip(&["link", "set", &nic, "up"]);
                ip(&["addr", "add", ip_cidr, "dev", &nic]);
                if let Some(gw) = &cfg.gateway {
                    ip(&["route", "add", "default", "via", gw, "dev", &nic]);
                }
                tracing::info!(nic, ip = %ip_cidr, gateway = cfg.gateway.as_deref(), "network configured");
            }
            None => tracing::error!(
                "banger.ip is set but no network interface besides lo appeared; is virtio_net loaded?"
            ),
        }
    }
    if let Some(dns) = &cfg.dns {
        write_resolv_conf(dns);
    }
}

/// Gives the interface a new identity after a snapshot restore: its MAC, its only
/// address, the default route, resolv.conf. One `ip -batch` process does it all (a
/// freshly restored guest runs every new process slowly). Returns the failures.
pub fn reconfigure(
    ip_cidr: Option<&str>,
    gateway: Option<&str>,
    dns: Option<&str>,
    mac: Option<&str>,
) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(ip_cidr) = ip_cidr {
        match wait_for_nic() {
            Some(nic) => {
                let script = reconfigure_script(&nic, ip_cidr, gateway, mac);
                if let Err(e) = ip_batch(&script) {
                    failures.push(e);
                }
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

/// `ip -batch` commands that move `nic` to a new MAC and address. Dropping the old
/// address drops the routes through it, so the default route is added back.
fn reconfigure_script(
    nic: &str,
    ip_cidr: &str,
    gateway: Option<&str>,
    mac: Option<&str>,
) -> String {
    let mut script = String::new();
    if let Some(mac) = mac {
        script.push_str(&format!("link set dev {nic} address {mac}\n"));
    }
    script.push_str(&format!("addr flush dev {nic}\n"));
    script.push_str(&format!("addr add {ip_cidr} dev {nic}\n"));
    if let Some(gw) = gateway {
        script.push_str(&format!("route replace default via {gw} dev {nic}\n"));
    }
    script
}

/// Runs `ip -force -batch -` on `script`; the error carries ip's own words.
fn ip_batch(script: &str) -> Result<(), String> {
    use std::io::Write;
    use std::process::Stdio;
    let run = || -> std::io::Result<std::process::Output> {
        let mut child = Command::new("ip")
            .args(["-force", "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        child.wait_with_output()
    };
    match run() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "ip -batch: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run ip -batch: {e}")),
    }
}

fn ip(args: &[&str]) {
    match Command::new("ip").args(args).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::error!(
            command = %format!("ip {}", args.join(" ")),
            status = %out.status,
            stderr = %String::from_utf8_lossy(&out.stderr).trim(),
            "network setup command failed"
        ),
        Err(e) => tracing::error!(
            command = %format!("ip {}", args.join(" ")),
            cause = %e,
            "cannot run ip (is iproute2 installed in the image?)"
        ),
    }
}

fn wait_for_nic() -> Option<String> {
    let started = Instant::now();
    loop {
        let names = std::fs::read_dir("/sys/class/net")
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
    if std::fs::symlink_metadata(RESOLV_CONF).is_ok_and(|m| m.file_type().is_symlink()) {
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
    fn reconfigure_moves_mac_then_address_then_route() {
        let script = reconfigure_script(
            "eth0",
            "172.30.0.9/24",
            Some("172.30.0.1"),
            Some("06:00:00:00:00:09"),
        );

        assert_eq!(
            script,
            "link set dev eth0 address 06:00:00:00:00:09\naddr flush dev eth0\n\
             addr add 172.30.0.9/24 dev eth0\nroute replace default via 172.30.0.1 dev eth0\n"
        );
    }

    #[test]
    fn first_nic_skips_loopback() {
        let names = vec!["lo".to_string(), "eth1".to_string(), "eth0".to_string()];

        assert_eq!(first_nic(names).as_deref(), Some("eth0"));
    }
}
