//! Links, addresses and routes over rtnetlink.
//!
//! A [`Netlink`] works in the network namespace of the thread that opened it.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, RouteMessageBuilder};

use super::{HostRoute, NetError, Subnet};

const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

/// A link as banger cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Index of the bridge it is attached to.
    pub controller: Option<u32>,
}

/// A handle to the kernel's rtnetlink; cheap to clone.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

fn err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

impl Netlink {
    /// Opens a netlink socket and drives it on the current tokio runtime.
    pub fn open() -> Result<Netlink, NetError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(NetError::NetlinkSocket)?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// The link called `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, NetError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(msg) => Ok(msg.map(to_link)),
            Err(e) if is_errno(&e, ENODEV) => Ok(None),
            Err(e) => Err(err(format!("get link {name}"))(e)),
        }
    }

    /// Every link of the namespace.
    pub async fn links(&self) -> Result<Vec<Link>, NetError> {
        let stream = self.handle.link().get().execute();
        let msgs: Vec<LinkMessage> = stream.try_collect().await.map_err(err("list links"))?;
        Ok(msgs.into_iter().map(to_link).collect())
    }

    /// Creates bridge `name` if missing, and brings it up. Returns its index.
    pub async fn ensure_bridge(&self, name: &str) -> Result<u32, NetError> {
        if self.link(name).await?.is_none() {
            let add = self.handle.link().add(LinkBridge::new(name).build());
            match add.execute().await {
                Ok(()) => tracing::info!(bridge = name, "created bridge"),
                Err(e) if is_errno(&e, EEXIST) => {}
                Err(e) => return Err(err(format!("create bridge {name}"))(e)),
            }
        }
        let link = self
            .link(name)
            .await?
            .ok_or_else(|| NetError::NetlinkVanished { name: name.into() })?;
        self.set_up(name, None).await?;
        Ok(link.index)
    }

    /// Brings `name` up, attached to `controller` when given.
    pub async fn set_up(&self, name: &str, controller: Option<u32>) -> Result<(), NetError> {
        let mut msg = LinkUnspec::new_with_name(name).up();
        if let Some(index) = controller {
            msg = msg.controller(index);
        }
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(err(format!("set {name} up")))
    }

    /// Deletes link `name`; a missing link is not an error. Returns whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, NetError> {
        let Some(link) = self.link(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, ENODEV) => Ok(false),
            Err(e) => Err(err(format!("delete link {name}"))(e)),
        }
    }

    /// The IPv4 addresses on link `index`, as (address, prefix).
    pub async fn ipv4_addrs(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetError> {
        let stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let msgs: Vec<_> = stream.try_collect().await.map_err(err("list addresses"))?;
        Ok(msgs
            .into_iter()
            .filter(|m| m.header.index == index && m.header.family == AddressFamily::Inet)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip))
                    | AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            })
            .collect())
    }

    /// Makes `gateway/prefix` the only IPv4 address of link `index`.
    pub async fn set_only_ipv4(
        &self,
        index: u32,
        gateway: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetError> {
        let current = self.ipv4_addrs(index).await?;
        if current == [(gateway, prefix)] {
            return Ok(());
        }
        let stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let msgs: Vec<_> = stream.try_collect().await.map_err(err("list addresses"))?;
        for msg in msgs
            .into_iter()
            .filter(|m| m.header.index == index && m.header.family == AddressFamily::Inet)
        {
            self.handle
                .address()
                .del(msg)
                .execute()
                .await
                .map_err(err("remove old bridge address"))?;
        }
        self.handle
            .address()
            .add(index, IpAddr::V4(gateway), prefix)
            .execute()
            .await
            .map_err(err(format!("add address {gateway}/{prefix}")))
    }

    /// The host's IPv4 routes from every table, with their device names.
    pub async fn ipv4_routes(&self) -> Result<Vec<HostRoute>, NetError> {
        let links = self.links().await?;
        let name_of = |index: u32| {
            links
                .iter()
                .find(|l| l.index == index)
                .map(|l| l.name.clone())
        };
        let request = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let stream = self.handle.route().get(request).execute();
        let msgs: Vec<_> = stream.try_collect().await.map_err(err("list routes"))?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| {
                let dst = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })?;
                let dev = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => name_of(*i),
                    _ => None,
                });
                HostRoute::new(dst, m.header.destination_prefix_length, dev)
            })
            .collect())
    }

    /// The subnet configured on link `index`, when it has exactly one IPv4 address.
    pub async fn subnet_of(&self, index: u32) -> Result<Option<Subnet>, NetError> {
        let addrs = self.ipv4_addrs(index).await?;
        Ok(match addrs.as_slice() {
            [(ip, prefix)] => Subnet::containing(*ip, *prefix)
                .ok()
                .filter(|s| s.gateway() == *ip),
            _ => None,
        })
    }
}

fn to_link(msg: LinkMessage) -> Link {
    let mut name = String::new();
    let mut controller = None;
    for attr in msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n,
            LinkAttribute::Controller(c) => controller = Some(c),
            _ => {}
        }
    }
    Link {
        index: msg.header.index,
        name,
        controller,
    }
}
