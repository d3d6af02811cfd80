//! What each guest may reach (issue 13): the parsed form of a VM's [`NetPolicy`], and
//! [`Guests`], the attached VMs the isolation rules and the DNS server are made from.
//!
//! A guest reaches the internet through NAT and the daemon's DNS on its gateway, and
//! nothing else, unless its policy says so: `open` (host and LAN), a group (its
//! members), host ports, networks, or an egress allow-list of domains.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use banger_wire::api::{NetMode, NetPolicy};

use super::nat::Proto;
use super::{Mac, NetError};

/// A port on some protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Port {
    pub proto: Proto,
    pub port: u16,
}

/// An IPv4 network of any length, /0 to /32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One `--allow CIDR[:PORT[/udp]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allow {
    pub net: Cidr,
    /// `None`: every port of every protocol.
    pub port: Option<Port>,
}

/// A VM's policy, checked and parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    pub mode: NetMode,
    pub group: Option<String>,
    pub host_ports: Vec<Port>,
    pub allow: Vec<Allow>,
    /// Lowercase domains without a trailing dot; empty means no egress limit.
    pub egress: Vec<String>,
}

impl Rules {
    pub fn parse(policy: &NetPolicy) -> Result<Rules, NetError> {
        if let Some(group) = &policy.group {
            check_label(group).map_err(|reason| invalid("--net-group", group, reason))?;
        }
        let host_ports = policy
            .allow_host
            .iter()
            .map(|s| parse_port(s).map_err(|reason| invalid("--allow-host", s, reason)))
            .collect::<Result<_, _>>()?;
        let allow = policy
            .allow
            .iter()
            .map(|s| parse_allow(s).map_err(|reason| invalid("--allow", s, reason)))
            .collect::<Result<_, _>>()?;
        let egress = policy
            .egress_allow
            .iter()
            .map(|s| parse_domain(s).map_err(|reason| invalid("--egress-allow", s, reason)))
            .collect::<Result<_, _>>()?;
        Ok(Rules {
            mode: policy.mode.unwrap_or_default(),
            group: policy.group.clone(),
            host_ports,
            allow,
            egress,
        })
    }

    /// Whether a DNS name (any case, trailing dot or not) is one the guest may reach.
    pub fn egress_allows(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.egress.iter().any(|d| {
            name == *d
                || name
                    .strip_suffix(d.as_str())
                    .is_some_and(|p| p.ends_with('.'))
        })
    }
}

/// The policy a new VM gets: the configured defaults, then what the create asked for
/// (its mode and group win; its lists add to the defaults').
pub fn resolve(defaults: &NetPolicy, asked: &NetPolicy) -> NetPolicy {
    let join = |a: &[String], b: &[String]| {
        let mut all: Vec<String> = a.to_vec();
        all.extend(b.iter().filter(|s| !a.contains(s)).cloned());
        all
    };
    NetPolicy {
        mode: Some(asked.mode.or(defaults.mode).unwrap_or_default()),
        group: asked.group.clone().or_else(|| defaults.group.clone()),
        allow_host: join(&defaults.allow_host, &asked.allow_host),
        allow: join(&defaults.allow, &asked.allow),
        egress_allow: join(&defaults.egress_allow, &asked.egress_allow),
    }
}

fn invalid(flag: &'static str, spec: &str, reason: String) -> NetError {
    NetError::InvalidPolicy {
        flag,
        spec: spec.to_string(),
        reason,
    }
}

/// A group name is a DNS label, like VM names.
fn check_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ok.then_some(())
        .ok_or_else(|| "use 1-63 lowercase letters, digits and '-'".into())
}

/// `PORT` or `PORT/tcp` or `PORT/udp`.
fn parse_port(s: &str) -> Result<Port, String> {
    let (port, proto) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, Proto::Tcp),
        Some((p, "udp")) => (p, Proto::Udp),
        Some(_) => return Err("the protocol must be tcp or udp".into()),
        None => (s, Proto::Tcp),
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("ports are numbers from 1 to 65535".into()),
        Ok(port) => Ok(Port { proto, port }),
    }
}

/// `CIDR`, `CIDR:PORT[/udp]`, or an address (a /32).
fn parse_allow(s: &str) -> Result<Allow, String> {
    let (net, port) = match s.split_once(':') {
        Some((net, port)) => (net, Some(parse_port(port)?)),
        None => (s, None),
    };
    let (addr, len) = net.split_once('/').unwrap_or((net, "32"));
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= 32)
        .ok_or_else(|| format!("{len:?} is not a prefix length from 0 to 32"))?;
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    if u32::from(addr) & !mask != 0 {
        let network = Ipv4Addr::from(u32::from(addr) & mask);
        return Err(format!("host bits are set; the network is {network}/{len}"));
    }
    Ok(Allow {
        net: Cidr { addr, len },
        port,
    })
}

/// A domain: labels of letters, digits, `-` and `_`, lowercased, no trailing dot.
fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if d.is_empty() || d.len() > 253 || !d.split('.').all(label_ok) {
        return Err("expected a domain name such as pypi.org".into());
    }
    Ok(d)
}

/// A VM attached to the bridge, with what it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    pub vm_id: String,
    pub tap: String,
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub rules: Rules,
}

impl Guest {
    /// Whether this guest may open connections to `other` (both ways hold alike).
    pub fn reaches(&self, other: &Guest) -> bool {
        self.vm_id == other.vm_id
            || self.rules.mode == NetMode::Open && other.rules.mode == NetMode::Open
            || self.rules.group.is_some() && self.rules.group == other.rules.group
    }
}

/// The attached guests, by VM id.
#[derive(Debug, Default)]
pub struct Guests {
    by_vm: Mutex<BTreeMap<String, Guest>>,
}

impl Guests {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Guest>> {
        self.by_vm.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, guest: Guest) {
        self.lock().insert(guest.vm_id.clone(), guest);
    }

    pub fn remove(&self, vm_id: &str) -> Option<Guest> {
        self.lock().remove(vm_id)
    }

    pub fn by_vm(&self, vm_id: &str) -> Option<Guest> {
        self.lock().get(vm_id).cloned()
    }

    pub fn all(&self) -> Vec<Guest> {
        self.lock().values().cloned().collect()
    }

    /// The guest holding `ip`.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<Guest> {
        self.lock().values().find(|g| g.ip == ip).cloned()
    }

    /// Whether a query from `from` may learn (and reach) `to`: the host may see every
    /// guest, a guest only those its policy reaches.
    pub fn visible(&self, from: Ipv4Addr, to: Ipv4Addr) -> bool {
        let guests = self.lock();
        let find = |ip| guests.values().find(|g| g.ip == ip);
        match (find(from), find(to)) {
            (None, _) => true,
            (Some(a), Some(b)) => a.reaches(b),
            (Some(_), None) => false,
        }
    }
}

/// Ordered pairs of distinct guests that may talk to each other.
pub fn peers(guests: &[Guest]) -> Vec<(&Guest, &Guest)> {
    let mut pairs = Vec::new();
    for a in guests {
        for b in guests {
            if a.vm_id != b.vm_id && a.reaches(b) {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use banger_wire::Diagnostic;

    fn policy(f: impl FnOnce(&mut NetPolicy)) -> NetPolicy {
        let mut p = NetPolicy::default();
        f(&mut p);
        p
    }

    fn guest(id: &str, ip: u8, f: impl FnOnce(&mut Rules)) -> Guest {
        let ip = Ipv4Addr::new(172, 30, 0, ip);
        let mut rules = Rules::default();
        f(&mut rules);
        Guest {
            vm_id: id.into(),
            tap: format!("tap-{id}"),
            ip,
            mac: super::super::mac_for(ip),
            rules,
        }
    }

    #[test]
    fn flags_parse() {
        let rules = Rules::parse(&policy(|p| {
            p.group = Some("ci".into());
            p.allow_host = vec!["8000".into(), "53/udp".into()];
            p.allow = vec![
                "10.1.0.0/16".into(),
                "192.168.1.5:5000".into(),
                "10.2.0.0/24:53/udp".into(),
            ];
            p.egress_allow = vec!["PyPI.org.".into()];
        }))
        .unwrap();
        assert_eq!(rules.mode, NetMode::Isolated);
        assert_eq!(
            rules.host_ports,
            [
                Port {
                    proto: Proto::Tcp,
                    port: 8000
                },
                Port {
                    proto: Proto::Udp,
                    port: 53
                }
            ]
        );
        assert_eq!(rules.allow[0].net.to_string(), "10.1.0.0/16");
        assert_eq!(rules.allow[0].port, None);
        assert_eq!(rules.allow[1].net.to_string(), "192.168.1.5/32");
        assert_eq!(
            rules.allow[1].port,
            Some(Port {
                proto: Proto::Tcp,
                port: 5000
            })
        );
        assert_eq!(
            rules.allow[2].port,
            Some(Port {
                proto: Proto::Udp,
                port: 53
            })
        );
        assert_eq!(rules.egress, ["pypi.org"]);
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() {
        let cases = [
            policy(|p| p.group = Some("Bad Group".into())),
            policy(|p| p.allow_host = vec!["0".into()]),
            policy(|p| p.allow_host = vec!["80/icmp".into()]),
            policy(|p| p.allow = vec!["10.0.0.0/33".into()]),
            policy(|p| p.allow = vec!["10.0.0.1/8".into()]),
            policy(|p| p.allow = vec!["example.com".into()]),
            policy(|p| p.egress_allow = vec!["a..b".into()]),
            policy(|p| p.egress_allow = vec!["".into()]),
            policy(|p| p.egress_allow = vec!["a b.com".into()]),
        ];
        for p in cases {
            let err = Rules::parse(&p).unwrap_err();
            assert!(err.to_string().starts_with("invalid --"), "{err}");
            assert!(err.hint().is_some());
        }
    }

    #[test]
    fn egress_allows_the_domain_and_its_subdomains_only() {
        let rules = Rules {
            egress: vec!["allowed.test".into()],
            ..Rules::default()
        };
        assert!(rules.egress_allows("allowed.test."));
        assert!(rules.egress_allows("API.Allowed.Test"));
        assert!(!rules.egress_allows("notallowed.test"));
        assert!(!rules.egress_allows("allowed.test.evil.com"));
        assert!(!rules.egress_allows("other.test"));
    }

    #[test]
    fn resolve_lets_the_request_win_and_adds_lists() {
        let defaults = policy(|p| {
            p.group = Some("dflt".into());
            p.egress_allow = vec!["pypi.org".into()];
        });
        let asked = policy(|p| {
            p.mode = Some(NetMode::Open);
            p.egress_allow = vec!["crates.io".into(), "pypi.org".into()];
        });
        let got = resolve(&defaults, &asked);
        assert_eq!(got.mode, Some(NetMode::Open));
        assert_eq!(got.group.as_deref(), Some("dflt"));
        assert_eq!(got.egress_allow, ["pypi.org", "crates.io"]);
        assert_eq!(
            resolve(&NetPolicy::default(), &NetPolicy::default()).mode,
            Some(NetMode::Isolated)
        );
    }

    #[test]
    fn only_groups_and_open_pairs_are_peers() {
        let guests = [
            guest("a", 2, |_| {}),
            guest("b", 3, |_| {}),
            guest("c", 4, |r| r.group = Some("g".into())),
            guest("d", 5, |r| r.group = Some("g".into())),
            guest("e", 6, |r| r.mode = NetMode::Open),
            guest("f", 7, |r| r.mode = NetMode::Open),
        ];
        let pairs = peers(&guests);
        let names: Vec<String> = pairs
            .iter()
            .map(|(a, b)| format!("{}>{}", a.tap, b.tap))
            .collect();
        assert_eq!(
            names,
            ["tap-c>tap-d", "tap-d>tap-c", "tap-e>tap-f", "tap-f>tap-e"]
        );
    }

    #[test]
    fn guests_see_only_whom_they_reach_and_the_host_sees_all() {
        let guests = Guests::default();
        guests.insert(guest("a", 2, |_| {}));
        guests.insert(guest("b", 3, |_| {}));
        guests.insert(guest("c", 4, |r| r.group = Some("g".into())));
        guests.insert(guest("d", 5, |r| r.group = Some("g".into())));
        let ip = |n| Ipv4Addr::new(172, 30, 0, n);
        assert!(!guests.visible(ip(2), ip(3)));
        assert!(guests.visible(ip(2), ip(2)));
        assert!(guests.visible(ip(4), ip(5)));
        assert!(!guests.visible(ip(4), ip(2)));
        assert!(guests.visible(Ipv4Addr::LOCALHOST, ip(3)));
        assert!(
            !guests.visible(ip(2), ip(9)),
            "a stopped VM is hidden from guests"
        );
        guests.remove("d");
        assert!(!guests.visible(ip(4), ip(5)));
    }
}
