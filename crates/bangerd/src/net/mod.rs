//! Host-side VM networking (issue 5): a bridge with a subnet that does not clash with
//! the host's routes, a persistent tap per VM from a pool of spares, NAT and port
//! forwards in an nftables table of its own (`table ip banger` for `banger0`), and a DNS server for `<vm>.vm` names.
//!
//! Everything acts in the network namespace of the calling thread, which is what lets
//! the privileged tests run in a throwaway namespace.
//!
//! Pure parts (subnet choice, leases, MACs, rulesets, resolv.conf) are unit tested;
//! `tests/net.rs` drives the real kernel in a namespace as root.

mod dns;
mod error;
mod holder;
mod host;
pub mod isolation;
mod lease;
mod link;
pub mod nat;
pub mod nft;
pub mod policy;
mod resolv;
mod subnet;
mod tap;

pub use dns::{DnsServer, VmLookup, VM_ZONE};
pub use error::{NetError, PortError};
pub use holder::{port_bound, port_holder, socket_inodes, PortHolder, Transport};
pub use host::{HostNetwork, NetConfig, VmNet, DEFAULT_SPARE_TAPS};
pub use lease::{allocate, mac_for, Mac, MAC_PREFIX};
pub use link::{Link, Netlink};
pub use nat::{NftTable, PortForward, PortMatch, Proto};
pub use nft::{enable_forwarding, forwarding_enabled};
pub use policy::{Guest, Guests, Rules};
pub use resolv::{host_nameservers, parse_nameservers, RESOLV_CONF};
pub use subnet::{pick_subnet, HostRoute, Subnet, DEFAULT_POOL};
pub use tap::{open_queue as open_tap_queue, tap_index, Tap, TapPool, TAP_PREFIX};
