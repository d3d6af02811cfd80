//! The bridge subnet: parsing, and picking one that does not clash with the host's routes.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::NetError;

/// An IPv4 network, `addr/prefix` with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

/// Where banger looks for a default subnet.
pub const DEFAULT_POOL: Subnet = Subnet {
    network: Ipv4Addr::new(172, 16, 0, 0),
    prefix: 12,
};

/// 127.0.0.0/8.
pub const LOOPBACK: Subnet = Subnet {
    network: Ipv4Addr::new(127, 0, 0, 0),
    prefix: 8,
};

/// Smallest network banger accepts: the bridge, one VM, network and broadcast.
const MAX_PREFIX: u8 = 29;
const MIN_PREFIX: u8 = 8;

impl Subnet {
    /// A subnet from its network address; fails when host bits are set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Subnet, String> {
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&prefix) {
            return Err(format!(
                "prefix length must be between /{MIN_PREFIX} and /{MAX_PREFIX}"
            ));
        }
        let subnet = Subnet { network, prefix };
        if subnet.network() != network {
            return Err(format!(
                "host bits are set; the network address is {}",
                subnet.network()
            ));
        }
        Ok(subnet)
    }

    /// The subnet of length `prefix` that `ip` is in, e.g. `172.30.0.1`, 24 -> 172.30.0.0/24.
    pub fn containing(ip: Ipv4Addr, prefix: u8) -> Result<Subnet, String> {
        Subnet::new(Ipv4Addr::from(u32::from(ip) & mask_of(prefix)), prefix)
    }

    fn mask(&self) -> u32 {
        mask_of(self.prefix)
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) & self.mask())
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// The bridge's address: the first host address (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The addresses a VM may lease: from `.2` up to the one before broadcast.
    pub fn lease_range(&self) -> impl Iterator<Item = Ipv4Addr> {
        (u32::from(self.network) + 2..u32::from(self.broadcast())).map(Ipv4Addr::from)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = mask_of(shorter);
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }
}

fn mask_of(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p.min(32))),
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Subnet, NetError> {
        let invalid = |reason: String| NetError::InvalidSubnet {
            value: s.to_string(),
            reason,
        };
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| invalid("expected ADDRESS/PREFIX, e.g. 172.30.0.0/24".into()))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| invalid(format!("{addr} is not an IPv4 address")))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| invalid(format!("{prefix} is not a prefix length")))?;
        Subnet::new(addr, prefix).map_err(invalid)
    }
}

/// One IPv4 route of the host, as far as a subnet clash is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoute {
    pub dst: Subnet,
    /// Name of the outgoing device, when the route has one.
    pub dev: Option<String>,
}

impl HostRoute {
    /// A route from raw parts; `None` for routes that cannot clash (default routes).
    pub fn new(dst: Ipv4Addr, prefix: u8, dev: Option<String>) -> Option<HostRoute> {
        if prefix == 0 {
            return None;
        }
        let network = Ipv4Addr::from(u32::from(dst) & mask_of(prefix));
        Some(HostRoute {
            dst: Subnet { network, prefix },
            dev,
        })
    }
}

/// Decides the bridge subnet.
///
/// `routes` must not contain the routes of banger's own bridge. A `configured` subnet wins
/// but must not clash; otherwise `previous` (what the bridge had before) is kept when it
/// still does not clash; otherwise the first free /24 of [`DEFAULT_POOL`] is taken,
/// starting at 172.30.0.0/24 because container tools fill the pool from its low end.
pub fn pick_subnet(
    routes: &[HostRoute],
    configured: Option<Subnet>,
    previous: Option<Subnet>,
) -> Result<Subnet, NetError> {
    let clash = |candidate: &Subnet| routes.iter().find(|r| r.dst.overlaps(candidate));
    if let Some(subnet) = configured {
        return match clash(&subnet) {
            Some(route) => Err(NetError::SubnetClash {
                subnet,
                route: route.dst,
                dev: route.dev.clone().unwrap_or_else(|| "-".into()),
            }),
            None => Ok(subnet),
        };
    }
    if let Some(subnet) = previous.filter(|s| clash(s).is_none()) {
        return Ok(subnet);
    }
    let first = u32::from(DEFAULT_POOL.network);
    let count = 1u32 << (24 - DEFAULT_POOL.prefix);
    let start = (u32::from(Ipv4Addr::new(172, 30, 0, 0)) - first) >> 8;
    (0..count)
        .map(|i| Subnet {
            network: Ipv4Addr::from(first + (((start + i) % count) << 8)),
            prefix: 24,
        })
        .find(|candidate| clash(candidate).is_none())
        .ok_or(NetError::NoFreeSubnet)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(s: &str, dev: &str) -> HostRoute {
        let (addr, prefix) = s.split_once('/').unwrap();
        HostRoute::new(
            addr.parse().unwrap(),
            prefix.parse().unwrap(),
            Some(dev.into()),
        )
        .unwrap()
    }

    #[test]
    fn parses_and_derives_addresses() {
        let s: Subnet = "172.30.5.0/24".parse().unwrap();
        assert_eq!(s.gateway(), Ipv4Addr::new(172, 30, 5, 1));
        assert_eq!(s.broadcast(), Ipv4Addr::new(172, 30, 5, 255));
        assert_eq!(s.lease_range().next(), Some(Ipv4Addr::new(172, 30, 5, 2)));
        assert_eq!(s.lease_range().last(), Some(Ipv4Addr::new(172, 30, 5, 254)));
        assert_eq!(s.lease_range().count(), 253);
        assert_eq!(s.to_string(), "172.30.5.0/24");
    }

    #[test]
    fn containing_masks_the_host_bits() {
        let s = Subnet::containing(Ipv4Addr::new(172, 30, 5, 1), 24).unwrap();
        assert_eq!(s, "172.30.5.0/24".parse().unwrap());
    }

    #[test]
    fn rejects_host_bits_and_bad_prefixes() {
        let err = "172.30.5.1/24".parse::<Subnet>().unwrap_err();
        assert!(err.to_string().contains("172.30.5.1/24"), "{err}");
        assert!("172.30.5.0/31".parse::<Subnet>().is_err());
        assert!("172.30.5.0".parse::<Subnet>().is_err());
        assert!("fd00::/64".parse::<Subnet>().is_err());
    }

    #[test]
    fn overlap_is_symmetric_across_prefix_lengths() {
        let wide: Subnet = "172.16.0.0/12".parse().unwrap();
        let narrow: Subnet = "172.30.0.0/24".parse().unwrap();
        let other: Subnet = "10.0.0.0/8".parse().unwrap();
        assert!(wide.overlaps(&narrow));
        assert!(narrow.overlaps(&wide));
        assert!(!narrow.overlaps(&other));
    }

    #[test]
    fn default_is_172_30_0_0_on_a_plain_host() {
        let routes = [route("10.0.2.0/24", "eth0")];
        assert_eq!(
            pick_subnet(&routes, None, None).unwrap(),
            "172.30.0.0/24".parse().unwrap()
        );
    }

    #[test]
    fn default_skips_clashing_routes() {
        let routes = [
            route("172.30.0.0/23", "docker0"),
            route("172.30.2.7/32", "wg0"),
        ];
        assert_eq!(
            pick_subnet(&routes, None, None).unwrap(),
            "172.30.3.0/24".parse().unwrap()
        );
    }

    #[test]
    fn default_wraps_to_the_low_end_of_the_pool() {
        let routes = [route("172.30.0.0/15", "vpn0")];
        assert_eq!(
            pick_subnet(&routes, None, None).unwrap(),
            "172.16.0.0/24".parse().unwrap()
        );
    }

    #[test]
    fn no_free_subnet_when_the_pool_is_routed() {
        let routes = [route("172.16.0.0/12", "vpn0")];
        assert!(matches!(
            pick_subnet(&routes, None, None),
            Err(NetError::NoFreeSubnet)
        ));
    }

    #[test]
    fn previous_subnet_is_kept_when_free() {
        let previous: Subnet = "172.20.9.0/24".parse().unwrap();
        assert_eq!(pick_subnet(&[], None, Some(previous)).unwrap(), previous);
    }

    #[test]
    fn configured_subnet_clash_names_the_route() {
        let configured: Subnet = "172.17.0.0/24".parse().unwrap();
        let routes = [route("172.17.0.0/16", "docker0")];
        let err = pick_subnet(&routes, Some(configured), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet 172.17.0.0/24 clashes with the host route 172.17.0.0/16 dev docker0"
        );
    }

    #[test]
    fn default_routes_never_clash() {
        assert_eq!(HostRoute::new(Ipv4Addr::UNSPECIFIED, 0, None), None);
    }
}
