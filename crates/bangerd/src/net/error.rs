//! What can fail while setting up or tearing down host networking.

use std::net::SocketAddr;
use std::path::PathBuf;

use banger_wire::{Diagnostic, ErrorCode};

use super::{PortHolder, Subnet};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid subnet {value}: {reason}")]
    InvalidSubnet { value: String, reason: String },
    #[error("subnet {subnet} clashes with the host route {route} dev {dev}")]
    SubnetClash {
        subnet: Subnet,
        route: Subnet,
        dev: String,
    },
    #[error("no free /24 left in 172.16.0.0/12: the host routes all of it")]
    NoFreeSubnet,
    #[error("invalid port forward {spec}: {reason}")]
    InvalidPublish { spec: String, reason: String },
    #[error("invalid {flag} {spec:?}: {reason}")]
    InvalidPolicy {
        flag: &'static str,
        spec: String,
        reason: String,
    },
    #[error("lease {ip} is not a guest address of subnet {subnet}")]
    LeaseOutsideSubnet {
        ip: std::net::Ipv4Addr,
        subnet: Subnet,
    },
    #[error("vm id {id:?} cannot name an nftables chain")]
    InvalidVmId { id: String },
    #[error("cannot open a netlink socket")]
    NetlinkSocket(#[source] std::io::Error),
    #[error("netlink request failed: {what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {name} disappeared while being set up")]
    NetlinkVanished { name: String },
    #[error("cannot take the tap lock {path}")]
    TapLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create tap device {name}")]
    TapCreate {
        name: String,
        #[source]
        source: tun::Error,
    },
    #[error("nftables request failed: {what}")]
    Nft {
        what: String,
        #[source]
        source: nftables::helper::NftablesError,
    },
    #[error("nftables request failed: {what}: {stderr}")]
    NftFailed { what: String, stderr: String },
    #[error("unexpected nftables output: {detail}")]
    NftOutput { detail: String },
    #[error("cannot access {path}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dns port {addr} is already in use{}", in_use_by(.holder))]
    DnsPortInUse {
        addr: SocketAddr,
        holder: Option<PortHolder>,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for dns on {addr}")]
    DnsBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up dns forwarding: {reason}")]
    DnsForwarder { reason: String },
    #[error("cannot read resolver configuration {path}")]
    ResolvConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn in_use_by(holder: &Option<PortHolder>) -> String {
    match holder {
        Some(h) => format!(" by {} (pid {})", h.name, h.pid),
        None => String::new(),
    }
}

impl Diagnostic for NetError {
    /// A refused policy is bad input; anything else is the host's networking failing.
    fn code(&self) -> ErrorCode {
        match self {
            NetError::InvalidPolicy { .. } => ErrorCode::InvalidArgument,
            _ => ErrorCode::HostFailed,
        }
    }

    fn hint(&self) -> Option<String> {
        match self {
            NetError::SubnetClash { .. } | NetError::NoFreeSubnet => Some(
                "set `subnet` in config.toml to a free /24, e.g. subnet = \"172.30.0.0/24\"".into(),
            ),
            NetError::InvalidSubnet { .. } => {
                Some("`subnet` in config.toml takes the form \"172.30.0.0/24\"".into())
            }
            NetError::InvalidPublish { .. } => {
                Some("use --publish HOST_PORT:GUEST_PORT[/tcp|/udp], e.g. 8080:80".into())
            }
            NetError::InvalidPolicy { flag, .. } => Some(match *flag {
                "--net-group" => "--net-group takes a name like `ci`".into(),
                "--allow-host" => {
                    "use --allow-host PORT or PORT/udp, e.g. --allow-host 8000".into()
                }
                "--allow" => {
                    "use --allow CIDR[:PORT[/udp]], e.g. --allow 192.168.1.0/24:5000".into()
                }
                _ => "use --egress-allow DOMAIN, e.g. --egress-allow pypi.org".into(),
            }),
            NetError::DnsPortInUse { holder, .. } => Some(match holder {
                Some(h) => format!(
                    "stop {} (pid {}) or set `dns_listen` in config.toml to a free port",
                    h.name, h.pid
                ),
                None => "set `dns_listen` in config.toml to a free port".into(),
            }),
            NetError::Nft { source, .. } if is_missing_binary(source) => {
                Some("install nftables: apt-get install nftables".into())
            }
            NetError::NetlinkSocket(_) | NetError::TapCreate { .. } | NetError::Netlink { .. } => {
                Some("host networking needs root (CAP_NET_ADMIN) and /dev/net/tun".into())
            }
            _ => None,
        }
    }
}

fn is_missing_binary(err: &nftables::helper::NftablesError) -> bool {
    matches!(err, nftables::helper::NftablesError::NftExecution { inner, .. }
        if inner.kind() == std::io::ErrorKind::NotFound)
}

/// What `vm port add|rm` refuses.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("vm {vm:?} has no network, so it has no port forwards")]
    NoNetwork { vm: String },
    #[error("host port {port} is already forwarded to vm {vm:?}'s port {guest}")]
    Taken {
        port: String,
        vm: String,
        guest: u16,
    },
    #[error("host port {port} is in use{}", in_use_by(.holder))]
    InUse {
        port: String,
        holder: Option<PortHolder>,
    },
    #[error("vm {vm:?} has no forward of host port {spec}")]
    NotForwarded { vm: String, spec: String },
}

impl Diagnostic for PortError {
    fn code(&self) -> ErrorCode {
        match self {
            PortError::NoNetwork { .. } => ErrorCode::FailedPrecondition,
            PortError::Taken { .. } | PortError::InUse { .. } => ErrorCode::AlreadyExists,
            PortError::NotForwarded { .. } => ErrorCode::NotFound,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            PortError::NoNetwork { .. } => {
                "a VM created with --no-network cannot forward ports".into()
            }
            PortError::Taken { port, vm, .. } => format!(
                "pick another host port, or remove that forward first with \
                 `banger vm port rm {vm} {port}`"
            ),
            PortError::InUse { .. } => "pick another host port, or stop what listens on it".into(),
            PortError::NotForwarded { vm, .. } => {
                format!("list its forwards with `banger vm port ls {vm}`")
            }
        })
    }
}
