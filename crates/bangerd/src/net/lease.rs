//! IP lease allocation and the MAC address that goes with a lease. Pure: the store keeps
//! which addresses are taken.

use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;

use super::Subnet;

/// The lowest free address of `subnet` from `.2` up, or `None` when all are taken.
/// `.1` is the bridge; network and broadcast addresses are never handed out.
pub fn allocate(subnet: Subnet, taken: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    subnet.lease_range().find(|ip| !taken.contains(ip))
}

/// A guest MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

/// First two octets of every banger guest MAC: `02` is a locally administered unicast
/// address, `ba` marks banger.
pub const MAC_PREFIX: [u8; 2] = [0x02, 0xba];

/// The MAC of the guest holding `ip`: [`MAC_PREFIX`] then the four octets of the address,
/// so one lease always has one MAC and two leases never share one.
pub fn mac_for(ip: Ipv4Addr) -> Mac {
    let [a, b, c, d] = ip.octets();
    Mac([MAC_PREFIX[0], MAC_PREFIX[1], a, b, c, d])
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(s: &str) -> Subnet {
        s.parse().unwrap()
    }

    #[test]
    fn first_lease_is_dot_two() {
        let ip = allocate(subnet("172.30.0.0/24"), &HashSet::new());
        assert_eq!(ip, Some(Ipv4Addr::new(172, 30, 0, 2)));
    }

    #[test]
    fn fills_the_lowest_gap() {
        let taken = HashSet::from([Ipv4Addr::new(172, 30, 0, 2), Ipv4Addr::new(172, 30, 0, 4)]);
        let ip = allocate(subnet("172.30.0.0/24"), &taken);
        assert_eq!(ip, Some(Ipv4Addr::new(172, 30, 0, 3)));
    }

    #[test]
    fn ignores_addresses_outside_the_subnet() {
        let taken = HashSet::from([Ipv4Addr::new(10, 0, 0, 2)]);
        let ip = allocate(subnet("172.30.0.0/24"), &taken);
        assert_eq!(ip, Some(Ipv4Addr::new(172, 30, 0, 2)));
    }

    #[test]
    fn full_subnet_gives_none() {
        let s = subnet("172.30.0.0/29");
        let taken: HashSet<Ipv4Addr> = s.lease_range().collect();
        assert_eq!(taken.len(), 5);
        assert_eq!(allocate(s, &taken), None);
    }

    #[test]
    fn mac_is_derived_from_the_ip() {
        let mac = mac_for(Ipv4Addr::new(172, 30, 0, 2));
        assert_eq!(mac.to_string(), "02:ba:ac:1e:00:02");
    }

    #[test]
    fn mac_is_locally_administered_unicast() {
        let mac = mac_for(Ipv4Addr::new(172, 31, 255, 254));
        assert_eq!(mac.0[0] & 0b11, 0b10);
    }
}
