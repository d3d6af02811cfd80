//! Which process holds a port: `/proc/net/{udp,tcp}` give the socket inode, and
//! `/proc/<pid>/fd` links name the process that has it open.

use std::fmt;
use std::path::Path;

/// A process holding a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHolder {
    pub pid: u32,
    /// The process's `comm` name.
    pub name: String,
}

impl fmt::Display for PortHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {})", self.name, self.pid)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The process that has a socket bound to `port` (UDP) or listening on it (TCP), in
/// the calling thread's network namespace. `None` when no socket is bound or when its
/// owner cannot be seen (another user's process, without root).
pub fn port_holder(transport: Transport, port: u16) -> Option<PortHolder> {
    let inodes = bound_inodes(transport, port);
    if inodes.is_empty() {
        return None;
    }
    owner_of(&inodes)
}

/// Whether a socket is bound to `port` (UDP) or listening on it (TCP), in the calling
/// thread's network namespace, whoever owns it.
pub fn port_bound(transport: Transport, port: u16) -> bool {
    !bound_inodes(transport, port).is_empty()
}

fn bound_inodes(transport: Transport, port: u16) -> Vec<u64> {
    let tables: &[&str] = match transport {
        Transport::Udp => &["udp", "udp6"],
        Transport::Tcp => &["tcp", "tcp6"],
    };
    let listen_only = transport == Transport::Tcp;
    tables
        .iter()
        .filter_map(|t| fs_err::read_to_string(Path::new("/proc/thread-self/net").join(t)).ok())
        .flat_map(|text| socket_inodes(&text, port, listen_only))
        .collect()
}

/// Inodes of the sockets bound to `port` in one `/proc/net/{udp,tcp}[6]` table.
/// `listen_only` keeps TCP sockets in LISTEN state.
pub fn socket_inodes(table: &str, port: u16, listen_only: bool) -> Vec<u64> {
    const TCP_LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let (_, port_hex) = local.rsplit_once(':')?;
            let bound = u16::from_str_radix(port_hex, 16).ok()? == port;
            let listening = !listen_only || *state == TCP_LISTEN;
            (bound && listening && inode != 0).then_some(inode)
        })
        .collect()
}

fn owner_of(inodes: &[u64]) -> Option<PortHolder> {
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in fs_err::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs_err::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs_err::read_link(fd.path())
                .map(|target| targets.iter().any(|t| target.as_os_str() == t.as_str()))
                .unwrap_or(false)
        });
        if holds {
            let name = fs_err::read_to_string(entry.path().join("comm"))
                .map(|s| s.trim_end().to_string())
                .unwrap_or_else(|_| "?".into());
            return Some(PortHolder { pid, name });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDP: &str = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  512: 0100007F:A455 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 41233 2 0000000000000000 0
  600: 3500007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 18101 2 0000000000000000 0
";

    const TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2211 1 0000000000000000 100 0 0 10 0
   1: 0F02000A:0016 0202000A:C350 01 00000000:00000000 02:000A0E9C 00000000     0        0 9911 4 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn finds_the_udp_socket_on_a_port() {
        assert_eq!(socket_inodes(UDP, 42069, false), vec![41233]);
        assert_eq!(socket_inodes(UDP, 53, false), vec![18101]);
        assert!(socket_inodes(UDP, 5353, false).is_empty());
    }

    #[test]
    fn tcp_counts_only_listeners() {
        assert_eq!(socket_inodes(TCP, 22, true), vec![2211]);
    }

    #[test]
    fn ipv6_addresses_parse_too() {
        let udp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  9: 00000000000000000000000000000000:A455 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 777 2 0000000000000000 0\n";
        assert_eq!(socket_inodes(udp6, 42069, false), vec![777]);
    }

    #[test]
    fn holder_displays_name_and_pid() {
        let h = PortHolder {
            pid: 42,
            name: "dnsmasq".into(),
        };
        assert_eq!(h.to_string(), "dnsmasq (pid 42)");
    }
}
