//! The nftables ruleset banger owns: `table ip banger` for the default bridge `banger0`,
//! `table ip banger_<bridge>` for any other, so daemons on different bridges (a smoke run
//! beside a real install) never rewrite or prune each other's rules. Pure generation
//! only; [`super::nft`] applies it.
//!
//! ```text
//! table ip banger {
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ip saddr SUBNET oifname != BRIDGE masquerade                     # guests -> uplink
//!     oifname BRIDGE ip saddr SUBNET ct status dnat masquerade          # hairpin publish
//!     oifname BRIDGE ip saddr 127.0.0.0/8 masquerade                    # localhost publish
//!   }
//!   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//!     fib daddr type local jump vm_ID comment "banger vm ID"           # one per VM
//!   }
//!   chain output { type nat hook output priority dstnat; policy accept;
//!     fib daddr type local jump vm_ID comment "banger vm ID"
//!   }
//!   chain vm_ID { tcp dport HOST dnat to GUEST_IP:GUEST }             # --publish
//! }
//! ```
//!
//! The base chains' own rules are rewritten by [`base_ruleset`]; the VM jumps in
//! `prerouting`/`output` and the `vm_*` chains are left alone, so a daemon restart keeps
//! running VMs' port forwards. A published port answers on 127.0.0.1 too: the bridge
//! has `route_localnet` so such packets may leave through it, masqueraded (guests still
//! cannot reach the host's loopback: the input chain of [`super::isolation`] drops it).
//! The filter chains (forward, input) and the bridge table are [`super::isolation`]'s.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use nftables::batch::Batch;
use nftables::expr::{Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression};
use nftables::expr::{Payload, PayloadField, Prefix, CT};
use nftables::schema::{Chain, FlushObject, NfCmd, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{JumpTarget, Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::subnet::LOOPBACK;
use super::{NetError, Subnet};

const TABLE: &str = "banger";
const DEFAULT_BRIDGE: &str = "banger0";
pub const PREROUTING: &str = "prerouting";
pub const OUTPUT: &str = "output";
const POSTROUTING: &str = "postrouting";
const VM_CHAIN_PREFIX: &str = "vm_";
const TAG_PREFIX: &str = "banger vm ";

const PRIO_DSTNAT: i32 = -100;
const PRIO_SRCNAT: i32 = 100;

pub use banger_wire::api::PortProto as Proto;

/// One `--publish HOST:GUEST[/tcp|/udp]`: the host's port `host` reaches the guest's `guest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortForward {
    pub host: u16,
    pub guest: u16,
    pub proto: Proto,
}

impl FromStr for PortForward {
    type Err = NetError;

    fn from_str(spec: &str) -> Result<PortForward, NetError> {
        let invalid = |reason: &str| NetError::InvalidPublish {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (ports, proto) = match spec.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, Proto::Tcp),
            Some((ports, "udp")) => (ports, Proto::Udp),
            Some(_) => return Err(invalid("protocol must be tcp or udp")),
            None => (spec, Proto::Tcp),
        };
        let (host, guest) = ports
            .split_once(':')
            .ok_or_else(|| invalid("expected HOST_PORT:GUEST_PORT"))?;
        let port = |s: &str| match s.parse::<u16>() {
            Ok(0) | Err(_) => Err(invalid("ports are numbers from 1 to 65535")),
            Ok(p) => Ok(p),
        };
        Ok(PortForward {
            host: port(host)?,
            guest: port(guest)?,
            proto,
        })
    }
}

impl From<PortForward> for banger_wire::api::PortInfo {
    fn from(f: PortForward) -> Self {
        banger_wire::api::PortInfo {
            host: f.host,
            guest: f.guest,
            proto: f.proto,
        }
    }
}

/// What `vm port rm` names: `HOST[:GUEST][/tcp|/udp]`; an absent part matches any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMatch {
    pub host: u16,
    pub guest: Option<u16>,
    pub proto: Option<Proto>,
}

impl PortMatch {
    pub fn matches(&self, fwd: &PortForward) -> bool {
        fwd.host == self.host
            && self.guest.is_none_or(|g| g == fwd.guest)
            && self.proto.is_none_or(|p| p == fwd.proto)
    }
}

impl FromStr for PortMatch {
    type Err = NetError;

    fn from_str(spec: &str) -> Result<PortMatch, NetError> {
        let (ports, proto) = match spec.rsplit_once('/') {
            Some((ports, proto)) => (ports, Some(proto)),
            None => (spec, None),
        };
        // A full HOST:GUEST/PROTO parses as a forward; HOST alone borrows its guest.
        let full = match ports.split_once(':') {
            Some(_) => format!("{ports}/{}", proto.unwrap_or("tcp")),
            None => format!("{ports}:{ports}/{}", proto.unwrap_or("tcp")),
        };
        let fwd: PortForward = full.parse().map_err(|_| NetError::InvalidPublish {
            spec: spec.to_string(),
            reason: "expected HOST_PORT[:GUEST_PORT][/tcp|/udp]".into(),
        })?;
        Ok(PortMatch {
            host: fwd.host,
            guest: ports.contains(':').then_some(fwd.guest),
            proto: proto.map(|_| fwd.proto),
        })
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.host, self.guest, self.proto.as_str())
    }
}

/// Fails when two forwards claim the same host port and protocol.
pub fn check_forwards(forwards: &[PortForward]) -> Result<(), NetError> {
    let mut seen = HashSet::new();
    for fwd in forwards {
        if !seen.insert((fwd.host, fwd.proto)) {
            return Err(NetError::InvalidPublish {
                spec: fwd.to_string(),
                reason: format!("host port {} is published twice", fwd.host),
            });
        }
    }
    Ok(())
}

/// The chain holding one VM's forwards. VM ids become part of a chain name, so only
/// ASCII letters, digits, `-` and `_` are allowed.
pub fn vm_chain(vm_id: &str) -> Result<String, NetError> {
    let valid = !vm_id.is_empty()
        && vm_id.len() <= 64
        && vm_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match valid {
        true => Ok(format!("{VM_CHAIN_PREFIX}{vm_id}")),
        false => Err(NetError::InvalidVmId {
            id: vm_id.to_string(),
        }),
    }
}

/// The comment on a VM's jump rules.
pub fn vm_tag(vm_id: &str) -> String {
    format!("{TAG_PREFIX}{vm_id}")
}

/// The VM id a jump-rule comment belongs to.
pub fn vm_of_tag(comment: &str) -> Option<&str> {
    comment.strip_prefix(TAG_PREFIX)
}

/// The nftables table of the daemon serving one bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftTable {
    name: String,
}

impl NftTable {
    pub fn for_bridge(bridge: &str) -> NftTable {
        let name = match bridge {
            DEFAULT_BRIDGE => TABLE.to_string(),
            other => {
                let safe: String = other
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                format!("{TABLE}_{safe}")
            }
        };
        NftTable { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Creates the table and base chains and (re)writes the NAT and forward rules, in one
    /// transaction. VM chains and jumps are kept.
    pub fn base_ruleset(&self, subnet: Subnet, bridge: &str) -> Nftables<'static> {
        let mut batch = Batch::new();
        batch.add(NfListObject::Table(self.table()));
        let base = [
            (
                POSTROUTING,
                NfChainType::NAT,
                NfHook::Postrouting,
                PRIO_SRCNAT,
            ),
            (
                PREROUTING,
                NfChainType::NAT,
                NfHook::Prerouting,
                PRIO_DSTNAT,
            ),
            (OUTPUT, NfChainType::NAT, NfHook::Output, PRIO_DSTNAT),
        ];
        for (name, kind, hook, prio) in base {
            batch.add(NfListObject::Chain(Chain {
                _type: Some(kind),
                hook: Some(hook),
                prio: Some(prio),
                policy: Some(NfChainPolicy::Accept),
                ..self.chain(name)
            }));
        }
        batch.add_cmd(NfCmd::Flush(FlushObject::Chain(self.chain(POSTROUTING))));

        let from_subnet = matches(payload("ip", "saddr"), prefix(subnet), Operator::EQ);
        let to_bridge = matches(meta(MetaKey::Oifname), string(bridge), Operator::EQ);
        let dnatted = matches(ct("status"), string("dnat"), Operator::IN);
        let rules = [
            (
                POSTROUTING,
                vec![
                    from_subnet.clone(),
                    matches(meta(MetaKey::Oifname), string(bridge), Operator::NEQ),
                    Statement::Masquerade(None),
                ],
            ),
            (
                POSTROUTING,
                vec![
                    to_bridge.clone(),
                    from_subnet,
                    dnatted.clone(),
                    Statement::Masquerade(None),
                ],
            ),
            (
                POSTROUTING,
                vec![
                    to_bridge,
                    matches(payload("ip", "saddr"), prefix(LOOPBACK), Operator::EQ),
                    Statement::Masquerade(None),
                ],
            ),
        ];
        for (chain, expr) in rules {
            batch.add(NfListObject::Rule(self.rule(chain, expr, None)));
        }
        self.isolation_base(&mut batch, subnet, bridge);
        batch.to_nftables()
    }

    /// Adds one VM's forwards: its chain with a DNAT rule per forward, and a tagged jump from
    /// `prerouting` and `output`. The caller removes any earlier forwards of the VM first.
    pub fn vm_forward_ruleset(
        &self,
        vm_id: &str,
        guest_ip: Ipv4Addr,
        forwards: &[PortForward],
    ) -> Result<Nftables<'static>, NetError> {
        check_forwards(forwards)?;
        let chain_name = vm_chain(vm_id)?;
        let mut batch = Batch::new();
        batch.add(NfListObject::Chain(self.chain(&chain_name)));
        for fwd in forwards {
            let dnat = Statement::DNAT(Some(NAT {
                addr: Some(string(&guest_ip.to_string())),
                family: None,
                port: Some(Expression::Number(u32::from(fwd.guest))),
                flags: None,
            }));
            let port = matches(
                payload(fwd.proto.as_str(), "dport"),
                Expression::Number(u32::from(fwd.host)),
                Operator::EQ,
            );
            batch.add(NfListObject::Rule(self.rule(
                &chain_name,
                vec![port, dnat],
                None,
            )));
        }
        let local = matches(
            Expression::Named(NamedExpression::Fib(Fib {
                result: FibResult::Type,
                flags: HashSet::from([FibFlag::Daddr]),
            })),
            string("local"),
            Operator::EQ,
        );
        let jump = Statement::Jump(JumpTarget {
            target: chain_name.clone().into(),
        });
        let tag = Some(vm_tag(vm_id));
        batch.add(NfListObject::Rule(self.rule(
            PREROUTING,
            vec![local.clone(), jump.clone()],
            tag.clone(),
        )));
        batch.add(NfListObject::Rule(self.rule(
            OUTPUT,
            vec![local, jump],
            tag,
        )));
        Ok(batch.to_nftables())
    }

    /// Removes one VM's jump rules (by the handles found in a listing) and its chain.
    pub fn vm_removal_ruleset(
        &self,
        jumps: &[(String, u32)],
        chain_name: Option<&str>,
    ) -> Nftables<'static> {
        let mut batch = Batch::new();
        for (chain, handle) in jumps {
            batch.delete(NfListObject::Rule(Rule {
                handle: Some(*handle),
                ..self.rule(chain, Vec::new(), None)
            }));
        }
        if let Some(name) = chain_name {
            batch.add_cmd(NfCmd::Flush(FlushObject::Chain(self.chain(name))));
            batch.delete(NfListObject::Chain(self.chain(name)));
        }
        batch.to_nftables()
    }

    /// Deletes banger's whole table.
    pub fn delete_table_ruleset(&self) -> Nftables<'static> {
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(self.table()));
        batch.to_nftables()
    }

    fn table(&self) -> Table<'static> {
        Table {
            family: NfFamily::IP,
            name: self.name.clone().into(),
            handle: None,
        }
    }

    fn chain(&self, name: &str) -> Chain<'static> {
        Chain {
            family: NfFamily::IP,
            table: self.name.clone().into(),
            name: name.to_string().into(),
            ..Chain::default()
        }
    }

    fn rule(
        &self,
        chain: &str,
        expr: Vec<Statement<'static>>,
        comment: Option<String>,
    ) -> Rule<'static> {
        Rule {
            family: NfFamily::IP,
            table: self.name.clone().into(),
            chain: chain.to_string().into(),
            expr: Cow::Owned(expr),
            handle: None,
            index: None,
            comment: comment.map(Cow::Owned),
        }
    }
}

pub(super) fn matches(
    left: Expression<'static>,
    right: Expression<'static>,
    op: Operator,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

pub(super) fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

pub(super) fn string(s: &str) -> Expression<'static> {
    Expression::String(s.to_string().into())
}

pub(super) fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn prefix(subnet: Subnet) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(string(&subnet.network().to_string())),
        len: u32::from(subnet.prefix()),
    }))
}

pub(super) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

pub(super) fn ct(key: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: key.into(),
        family: None,
        dir: None,
    }))
}

#[cfg(test)]
#[path = "nat_tests.rs"]
mod tests;
