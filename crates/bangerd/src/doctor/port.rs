//! The DNS port check: is `dns_listen` free, or held by our own daemon?
//!
//! Read from `/proc/net/udp{,6}` rather than by binding, so the check has no side
//! effects; the holder is found by matching the socket inode against
//! `/proc/<pid>/fd/*` links.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Check, Ctx};
use crate::host::{process_name, Host};

/// Name of our daemon's process, as `/proc/<pid>/comm` shows it.
const DAEMON_COMM: &str = "bangerd";

/// One bound UDP socket from `/proc/net/udp{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UdpSocket {
    pub local: SocketAddr,
    pub inode: u64,
}

pub(super) fn dns_port(ctx: &Ctx<'_>) -> Check {
    let listen = &ctx.config.dns_listen;
    let name = format!("udp {listen}");
    let Ok(want) = listen.parse::<SocketAddr>() else {
        return Check::fail(
            "dns_port",
            name,
            format!("dns_listen {listen:?} is not an address:port"),
            format!(
                "sed -i 's/^dns_listen *=.*/dns_listen = \"127.0.0.1:42069\"/' {}",
                ctx.paths.config_file().display()
            ),
        );
    };
    let holders: Vec<UdpSocket> = udp_sockets(ctx.host)
        .into_iter()
        .filter(|s| conflicts(s.local, want))
        .collect();
    let Some(sock) = holders.first() else {
        return Check::pass("dns_port", name, "free");
    };
    match socket_owner(ctx.host, sock.inode) {
        Some((pid, comm)) if comm == DAEMON_COMM => {
            Check::pass("dns_port", name, format!("held by bangerd pid {pid}"))
        }
        Some((pid, comm)) => Check::fail(
            "dns_port",
            name,
            format!("in use by {comm} (pid {pid}) on {}", sock.local),
            format!(
                "kill {pid}  # or set dns_listen in {}",
                ctx.paths.config_file().display()
            ),
        ),
        None => Check::fail(
            "dns_port",
            name,
            format!("in use on {} by a process this user cannot see", sock.local),
            format!("sudo ss -ulpn 'sport = :{}'", want.port()),
        ),
    }
}

/// Whether a socket bound to `held` stops a bind to `want`.
fn conflicts(held: SocketAddr, want: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let (h, w) = (canon(held.ip()), canon(want.ip()));
    held.port() == want.port() && (h == w || h.is_unspecified() || w.is_unspecified())
}

/// Every bound UDP socket in this network namespace; unreadable tables count as empty.
pub(crate) fn udp_sockets(host: &Host) -> Vec<UdpSocket> {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|p| fs_err::read_to_string(host.path(p)).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(parse_line)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One row: `sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode …`.
fn parse_line(line: &str) -> Option<UdpSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (ip_hex, port_hex) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    Some(UdpSocket {
        local: SocketAddr::new(parse_ip(ip_hex)?, port),
        inode,
    })
}

/// The kernel prints addresses as native-endian 32-bit words in hex.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<[u8; 4]>> = (0..hex.len() / 8)
        .map(|i| {
            u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_ne_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

/// The process with an fd on socket `inode`, and its name.
fn socket_owner(host: &Host, inode: u64) -> Option<(u32, String)> {
    let target = format!("socket:[{inode}]");
    let procs = fs_err::read_dir(host.path("/proc")).ok()?;
    procs
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path())))
        .find(|(_, dir)| {
            fs_err::read_dir(dir.join("fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok).any(|fd| {
                    fs_err::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str())
                })
            })
        })
        .map(|(pid, _)| (pid, process_name(host, pid).unwrap_or_else(|| "?".into())))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::doctor::{testing::fake_host, Status};
    use banger_host::config::{Config, Paths};

    const UDP_HEADER: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";

    fn fake_process(root: &Path, pid: u32, comm: &str, inode: u64) {
        let dir = root.join("proc").join(pid.to_string());
        fs_err::create_dir_all(dir.join("fd")).unwrap();
        fs_err::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        std::os::unix::fs::symlink(format!("socket:[{inode}]"), dir.join("fd/3")).unwrap();
    }

    fn udp_table(root: &Path, rows: &str) {
        fs_err::create_dir_all(root.join("proc/net")).unwrap();
        fs_err::write(root.join("proc/net/udp"), format!("{UDP_HEADER}{rows}")).unwrap();
    }

    #[test]
    fn parses_ipv4_and_ipv6_rows() {
        let v4 = "  1: 0100007F:A43D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0";
        let v6 = "  2: 00000000000000000000000000000000:0035 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 77 2 0000000000000000 0";

        assert_eq!(
            parse_line(v4),
            Some(UdpSocket {
                local: "127.0.0.1:42045".parse().unwrap(),
                inode: 4242
            })
        );
        assert_eq!(
            parse_line(v6),
            Some(UdpSocket {
                local: "[::]:53".parse().unwrap(),
                inode: 77
            })
        );
    }

    #[test]
    fn free_when_nothing_holds_the_port() {
        let t = tempfile::tempdir().unwrap();
        udp_table(t.path(), "");
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = dns_port(&Ctx::new(&host, &paths, &config));

        assert_eq!(
            (check.status, check.detail.as_str()),
            (Status::Pass, "free")
        );
    }

    #[test]
    fn our_daemon_holding_it_passes() {
        let t = tempfile::tempdir().unwrap();
        udp_table(t.path(), "  5: 0100007F:A455 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 999 2 0 0\n");
        fake_process(t.path(), 321, "bangerd", 999);
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = dns_port(&Ctx::new(&host, &paths, &config));

        assert_eq!(
            (check.status, check.detail.as_str()),
            (Status::Pass, "held by bangerd pid 321")
        );
    }

    #[test]
    fn another_process_on_the_wildcard_address_fails_naming_it() {
        let t = tempfile::tempdir().unwrap();
        udp_table(t.path(), "  5: 00000000:A455 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 555 2 0 0\n");
        fake_process(t.path(), 77, "dnsmasq", 555);
        let (host, paths, config) = (
            fake_host(t.path()),
            Paths::under(t.path()),
            Config::default(),
        );

        let check = dns_port(&Ctx::new(&host, &paths, &config));

        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.detail, "in use by dnsmasq (pid 77) on 0.0.0.0:42069");
        assert!(check.fix.unwrap().starts_with("kill 77"));
    }
}
