//! The isolation rules of one bridge (issue 13), next to its NAT in [`super::nat`]:
//!
//! ```text
//! table bridge banger {                  # frames on the bridge's ports (taps)
//!   set ports; set src_mac { ifname . ether_addr }; set src_ip { ifname . ipv4_addr }
//!   set peers { ifname . ifname }        # pairs of taps whose guests may talk
//!   chain prerouting { hook prerouting: frames from guests
//!     iifname != @ports accept           # other bridges' ports
//!     iifname . ether saddr != @src_mac drop            # anti-spoofing: MAC,
//!     arp: iifname . arp saddr ether/ip != @src_mac/@src_ip drop   # ARP
//!     ip: iifname . ip saddr != @src_ip drop            # and IPv4 source
//!     ether type { ip, arp } accept; drop               # no IPv6, no VLANs, nothing else
//!   }
//!   chain forward { iifname != @ports accept; iifname . oifname @peers accept; drop }
//!   chain output { oifname != @ports accept; broadcast accept;   # host to guests:
//!     oifname . ether daddr != @src_mac drop }                   # no flooding to others
//! }
//! table ip banger {
//!   set open, egress_limited { ipv4_addr }; set host_allow { ip . proto . port }
//!   set peer_ips { ip . ip }             # as `peers`, by address
//!   set allow { ip . net . proto . port }; set allow_all { ip . net }
//!   set egress { ip . ip, timeout }      # filled by the DNS server for --egress-allow
//!   chain input { hook input: guests reach the host's DNS on the gateway only
//!     iifname != BRIDGE accept; ct established,related accept
//!     ip daddr GATEWAY th dport 53 accept; @host_allow to GATEWAY accept; @open accept; drop }
//!   chain forward { iifname BRIDGE jump from_guest; oifname BRIDGE jump to_guest }
//!   chain to_guest { established,related accept; ct status dnat accept; drop }
//!   chain from_guest { established,related accept; dnat (published ports) accept
//!     oifname BRIDGE @peer_ips accept; oifname BRIDGE drop   # guest to guest, routed
//!                                    # or bridged (seen here when br_netfilter is on) @allow/@allow_all accept; @open accept; @egress accept
//!     @egress_limited drop; private, shared, link-local, loopback, multicast drop; accept }
//! }
//! table ip banger_dnslimit { chain input { hook input, ahead of the one above:
//!   iifname BRIDGE tcp dport 53: over 16 connections per guest or 256 in all: drop } }
//! ```
//!
//! The static sets are rewritten as a whole from [`Guest`]s on every attach and detach
//! (one `nft` transaction); `egress` is the DNS server's and changes per answer.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::Ipv4Addr;

use nftables::batch::Batch;
use nftables::expr::{Elem, Expression, MetaKey, NamedExpression, Prefix, Range};
use nftables::schema::{Chain, Element, FlushObject, NfCmd, NfListObject, Nftables, Rule, Set};
use nftables::schema::{SetFlag, SetType, SetTypeValue, Table};
use nftables::stmt::{JumpTarget, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::nat::{accept, ct, matches, meta, payload, string, NftTable, Proto};
use super::policy::{peers, Guest};
use super::Subnet;

const INPUT: &str = "input";
const FORWARD: &str = "forward";
const FROM_GUEST: &str = "from_guest";
const TO_GUEST: &str = "to_guest";
const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";

const PORTS: &str = "ports";
const SRC_MAC: &str = "src_mac";
const SRC_IP: &str = "src_ip";
const PEERS: &str = "peers";
const PEER_IPS: &str = "peer_ips";
const OPEN: &str = "open";
const HOST_ALLOW: &str = "host_allow";
const ALLOW: &str = "allow";
const ALLOW_ALL: &str = "allow_all";
const EGRESS_LIMITED: &str = "egress_limited";
pub const EGRESS: &str = "egress";

/// TCP connections to the daemon's DNS one guest may hold, and all guests together, so
/// no guest can run the daemon out of file descriptors (idle ones time out in the DNS
/// server).
pub const DNS_TCP_PER_GUEST: u32 = 16;
pub const DNS_TCP_TOTAL: u32 = 256;
const DNS_CONNS: &str = "dns_conns";

/// Priority of the bridge family's filter hooks.
const PRIO_BRIDGE_FILTER: i32 = -200;
const PRIO_FILTER: i32 = 0;

/// What no guest reaches unless allowed: this network, private (RFC 1918), shared
/// (RFC 6598), loopback, link-local (cloud metadata), multicast and reserved ranges.
pub const BLOCKED: [(Ipv4Addr, u32); 8] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(224, 0, 0, 0), 3),
];

use SetType::{EtherAddr, Ifname, InetProto, InetService, Ipv4Addr as Ip4};

/// The static sets: (family, name, type, interval).
const SETS: [(NfFamily, &str, &[SetType], bool); 10] = [
    (NfFamily::Bridge, PORTS, &[Ifname], false),
    (NfFamily::Bridge, SRC_MAC, &[Ifname, EtherAddr], false),
    (NfFamily::Bridge, SRC_IP, &[Ifname, Ip4], false),
    (NfFamily::Bridge, PEERS, &[Ifname, Ifname], false),
    (NfFamily::IP, PEER_IPS, &[Ip4, Ip4], false),
    (NfFamily::IP, OPEN, &[Ip4], false),
    (
        NfFamily::IP,
        HOST_ALLOW,
        &[Ip4, InetProto, InetService],
        false,
    ),
    (
        NfFamily::IP,
        ALLOW,
        &[Ip4, Ip4, InetProto, InetService],
        true,
    ),
    (NfFamily::IP, ALLOW_ALL, &[Ip4, Ip4], true),
    (NfFamily::IP, EGRESS_LIMITED, &[Ip4], false),
];

impl NftTable {
    /// Adds the isolation chains and sets to a base ruleset; their rules are rewritten,
    /// the sets' elements kept (running VMs keep their rules across a daemon restart).
    pub(super) fn isolation_base(&self, batch: &mut Batch<'static>, subnet: Subnet, bridge: &str) {
        batch.add(NfListObject::Table(Table {
            family: NfFamily::Bridge,
            name: self.name().to_string().into(),
            handle: None,
        }));
        for (family, name, types, interval) in SETS {
            batch.add(NfListObject::Set(Box::new(
                self.set(family, name, types, interval, false),
            )));
        }
        batch.add(NfListObject::Set(Box::new(self.set(
            NfFamily::IP,
            EGRESS,
            &[Ip4, Ip4],
            false,
            true,
        ))));
        let hooked = [
            (
                NfFamily::Bridge,
                PREROUTING,
                NfHook::Prerouting,
                PRIO_BRIDGE_FILTER,
            ),
            (
                NfFamily::Bridge,
                FORWARD,
                NfHook::Forward,
                PRIO_BRIDGE_FILTER,
            ),
            (NfFamily::Bridge, OUTPUT, NfHook::Output, PRIO_BRIDGE_FILTER),
            (NfFamily::IP, INPUT, NfHook::Input, PRIO_FILTER),
            (NfFamily::IP, FORWARD, NfHook::Forward, PRIO_FILTER),
        ];
        for (family, name, hook, prio) in hooked {
            batch.add(NfListObject::Chain(Chain {
                _type: Some(NfChainType::Filter),
                hook: Some(hook),
                prio: Some(prio),
                policy: Some(NfChainPolicy::Accept),
                ..self.chain_in(family, name)
            }));
        }
        for name in [FROM_GUEST, TO_GUEST] {
            batch.add(NfListObject::Chain(self.chain_in(NfFamily::IP, name)));
        }
        for (family, name) in [
            (NfFamily::Bridge, PREROUTING),
            (NfFamily::Bridge, FORWARD),
            (NfFamily::Bridge, OUTPUT),
            (NfFamily::IP, INPUT),
            (NfFamily::IP, FORWARD),
            (NfFamily::IP, FROM_GUEST),
            (NfFamily::IP, TO_GUEST),
        ] {
            batch.add_cmd(NfCmd::Flush(FlushObject::Chain(
                self.chain_in(family, name),
            )));
        }
        for (family, chain, expr) in isolation_rules(subnet, bridge) {
            batch.add(NfListObject::Rule(Rule {
                family,
                table: self.name().to_string().into(),
                chain: chain.into(),
                expr: Cow::Owned(expr),
                handle: None,
                index: None,
                comment: None,
            }));
        }
    }

    /// The DNS connection caps, applied with the base ruleset: a table of their own
    /// (`<table>_dnslimit`), made anew each time (the kernel marks the set `dynamic`,
    /// which nft 1.0.6's JSON cannot declare, so it cannot be re-added in place), with an
    /// input chain ahead of the main one. Raw JSON: the nftables crate cannot express a
    /// set statement carrying `ct count`.
    pub fn dns_limit_objects(&self, bridge: &str) -> Vec<serde_json::Value> {
        use serde_json::json;
        let table = self.dns_limit_table();
        let on_dns = [
            json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": bridge}}),
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 53}}),
        ];
        let rule = |cap: serde_json::Value| {
            let mut expr = on_dns.to_vec();
            expr.extend([cap, json!({"drop": null})]);
            json!({"add": {"rule": {"family": "ip", "table": table, "chain": INPUT, "expr": expr}}})
        };
        let t = json!({"family": "ip", "name": table});
        vec![
            json!({"add": {"table": t}}),
            json!({"delete": {"table": t}}),
            json!({"add": {"table": t}}),
            json!({"add": {"chain": {"family": "ip", "table": table, "name": INPUT,
                "type": "filter", "hook": "input", "prio": PRIO_FILTER - 10, "policy": "accept"}}}),
            json!({"add": {"set": {"family": "ip", "table": table, "name": DNS_CONNS,
                "type": "ipv4_addr", "size": 65535}}}),
            rule(json!({"set": {
                "op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}},
                "set": format!("@{DNS_CONNS}"),
                "stmt": [{"ct count": {"val": DNS_TCP_PER_GUEST, "inv": true}}]
            }})),
            rule(json!({"ct count": {"val": DNS_TCP_TOTAL, "inv": true}})),
        ]
    }

    /// The table holding the DNS connection caps.
    pub fn dns_limit_table(&self) -> String {
        format!("{}_dnslimit", self.name())
    }

    /// Rewrites the static sets for exactly these guests.
    pub fn guests_ruleset(&self, guests: &[Guest]) -> Nftables<'static> {
        let mut batch = Batch::new();
        for (family, name, types, interval) in SETS {
            let set = self.set(family, name, types, interval, false);
            batch.add_cmd(NfCmd::Flush(FlushObject::Set(Box::new(set))));
        }
        let mut elems: Vec<(NfFamily, &str, Expression<'static>)> = Vec::new();
        for g in guests {
            let (tap, ip) = (string(&g.tap), string(&g.ip.to_string()));
            let mac = string(&g.mac.to_string());
            elems.push((NfFamily::Bridge, PORTS, tap.clone()));
            elems.push((NfFamily::Bridge, SRC_MAC, concat([tap.clone(), mac])));
            elems.push((NfFamily::Bridge, SRC_IP, concat([tap, ip.clone()])));
            if g.rules.mode == banger_wire::api::NetMode::Open {
                elems.push((NfFamily::IP, OPEN, ip.clone()));
            }
            if !g.rules.egress.is_empty() {
                elems.push((NfFamily::IP, EGRESS_LIMITED, ip.clone()));
            }
            for p in &g.rules.host_ports {
                let port = Expression::Number(u32::from(p.port));
                let elem = concat([ip.clone(), proto(p.proto), port]);
                elems.push((NfFamily::IP, HOST_ALLOW, elem));
            }
            for a in &g.rules.allow {
                let net = cidr(a.net.addr, u32::from(a.net.len));
                match a.port {
                    Some(p) => {
                        let port = Expression::Range(Box::new(Range {
                            range: [
                                Expression::Number(u32::from(p.port)),
                                Expression::Number(u32::from(p.port)),
                            ],
                        }));
                        let elem = concat([ip.clone(), net, proto(p.proto), port]);
                        elems.push((NfFamily::IP, ALLOW, elem));
                    }
                    None => elems.push((NfFamily::IP, ALLOW_ALL, concat([ip.clone(), net]))),
                }
            }
        }
        for (a, b) in peers(guests) {
            elems.push((
                NfFamily::Bridge,
                PEERS,
                concat([string(&a.tap), string(&b.tap)]),
            ));
            let ips = concat([string(&a.ip.to_string()), string(&b.ip.to_string())]);
            elems.push((NfFamily::IP, PEER_IPS, ips));
        }
        for (family, name, elem) in elems {
            batch.add(NfListObject::Element(Element {
                family,
                table: self.name().to_string().into(),
                name: name.to_string().into(),
                elem: Cow::Owned(vec![elem]),
            }));
        }
        batch.to_nftables()
    }

    /// Lets guest `guest` reach `addrs` for `secs` seconds (an `--egress-allow` answer).
    pub fn egress_ruleset(
        &self,
        guest: Ipv4Addr,
        addrs: &[Ipv4Addr],
        secs: u32,
    ) -> Nftables<'static> {
        let elem: Vec<Expression<'static>> = addrs
            .iter()
            .map(|a| {
                Expression::Named(NamedExpression::Elem(Elem {
                    val: Box::new(concat([string(&guest.to_string()), string(&a.to_string())])),
                    timeout: Some(secs),
                    expires: None,
                    comment: None,
                    counter: None,
                }))
            })
            .collect();
        let mut batch = Batch::new();
        batch.add(NfListObject::Element(Element {
            family: NfFamily::IP,
            table: self.name().to_string().into(),
            name: EGRESS.into(),
            elem: Cow::Owned(elem),
        }));
        batch.to_nftables()
    }

    /// Removes these `egress` elements (a detached guest's).
    pub fn egress_removal_ruleset(&self, pairs: &[(Ipv4Addr, Ipv4Addr)]) -> Nftables<'static> {
        let elem: Vec<Expression<'static>> = pairs
            .iter()
            .map(|(g, a)| concat([string(&g.to_string()), string(&a.to_string())]))
            .collect();
        let mut batch = Batch::new();
        batch.delete(NfListObject::Element(Element {
            family: NfFamily::IP,
            table: self.name().to_string().into(),
            name: EGRESS.into(),
            elem: Cow::Owned(elem),
        }));
        batch.to_nftables()
    }

    /// Deletes the bridge-family table.
    pub fn delete_bridge_table_ruleset(&self) -> Nftables<'static> {
        let mut batch = Batch::new();
        batch.delete(NfListObject::Table(Table {
            family: NfFamily::Bridge,
            name: self.name().to_string().into(),
            handle: None,
        }));
        batch.to_nftables()
    }

    fn set(
        &self,
        family: NfFamily,
        name: &str,
        types: &[SetType],
        interval: bool,
        timeout: bool,
    ) -> Set<'static> {
        let set_type = match types {
            [one] => SetTypeValue::Single(*one),
            many => SetTypeValue::Concatenated(Cow::Owned(many.to_vec())),
        };
        let mut flags = HashSet::new();
        if interval {
            flags.insert(SetFlag::Interval);
        }
        if timeout {
            flags.insert(SetFlag::Timeout);
        }
        Set {
            family,
            table: self.name().to_string().into(),
            name: name.to_string().into(),
            set_type,
            flags: (!flags.is_empty()).then_some(flags),
            ..Set::default()
        }
    }

    fn chain_in(&self, family: NfFamily, name: &str) -> Chain<'static> {
        Chain {
            family,
            table: self.name().to_string().into(),
            name: name.to_string().into(),
            ..Chain::default()
        }
    }
}

/// The rules of the isolation chains, in order.
fn isolation_rules(
    subnet: Subnet,
    bridge: &str,
) -> Vec<(NfFamily, &'static str, Vec<Statement<'static>>)> {
    use NfFamily::{Bridge, IP};
    let iif = || meta(MetaKey::Iifname);
    let oif = || meta(MetaKey::Oifname);
    let set = |name: &str| string(&format!("@{name}"));
    let not_in = |left, name| matches(left, set(name), Operator::NEQ);
    let is_in = |left, name| matches(left, set(name), Operator::EQ);
    let drop = || Statement::Drop(None);
    let ether_type = |t: &str| matches(payload("ether", "type"), string(t), Operator::EQ);
    let established = || {
        matches(
            ct("state"),
            Expression::List(vec![string("established"), string("related")]),
            Operator::IN,
        )
    };
    let dnatted = || matches(ct("status"), string("dnat"), Operator::IN);
    let saddr = || payload("ip", "saddr");
    let daddr = || payload("ip", "daddr");
    let l4 = || meta(MetaKey::L4proto);
    let dport = || payload("th", "dport");
    let gateway = || matches(daddr(), string(&subnet.gateway().to_string()), Operator::EQ);
    let on_bridge = |m: Expression<'static>| matches(m, string(bridge), Operator::EQ);
    let blocked = Expression::Named(NamedExpression::Set(
        BLOCKED
            .iter()
            .map(|(a, l)| nftables::expr::SetItem::Element(cidr(*a, *l)))
            .collect(),
    ));
    let jump = |target: &str| {
        Statement::Jump(JumpTarget {
            target: target.to_string().into(),
        })
    };
    vec![
        (Bridge, PREROUTING, vec![not_in(iif(), PORTS), accept()]),
        (
            Bridge,
            PREROUTING,
            vec![
                not_in(concat([iif(), payload("ether", "saddr")]), SRC_MAC),
                drop(),
            ],
        ),
        (
            Bridge,
            PREROUTING,
            vec![
                ether_type("arp"),
                not_in(concat([iif(), payload("arp", "saddr ether")]), SRC_MAC),
                drop(),
            ],
        ),
        (
            Bridge,
            PREROUTING,
            vec![
                ether_type("arp"),
                not_in(concat([iif(), payload("arp", "saddr ip")]), SRC_IP),
                drop(),
            ],
        ),
        (
            Bridge,
            PREROUTING,
            vec![
                ether_type("ip"),
                not_in(concat([iif(), saddr()]), SRC_IP),
                drop(),
            ],
        ),
        (
            Bridge,
            PREROUTING,
            vec![
                matches(
                    payload("ether", "type"),
                    Expression::Named(NamedExpression::Set(vec![
                        nftables::expr::SetItem::Element(string("ip")),
                        nftables::expr::SetItem::Element(string("arp")),
                    ])),
                    Operator::EQ,
                ),
                accept(),
            ],
        ),
        (Bridge, PREROUTING, vec![drop()]),
        (Bridge, FORWARD, vec![not_in(iif(), PORTS), accept()]),
        (
            Bridge,
            FORWARD,
            vec![is_in(concat([iif(), oif()]), PEERS), accept()],
        ),
        (Bridge, FORWARD, vec![drop()]),
        (Bridge, OUTPUT, vec![not_in(oif(), PORTS), accept()]),
        (
            Bridge,
            OUTPUT,
            vec![
                matches(
                    payload("ether", "daddr"),
                    string("ff:ff:ff:ff:ff:ff"),
                    Operator::EQ,
                ),
                accept(),
            ],
        ),
        (
            Bridge,
            OUTPUT,
            vec![
                not_in(concat([oif(), payload("ether", "daddr")]), SRC_MAC),
                drop(),
            ],
        ),
        (
            IP,
            INPUT,
            vec![matches(iif(), string(bridge), Operator::NEQ), accept()],
        ),
        (IP, INPUT, vec![established(), accept()]),
        (
            IP,
            INPUT,
            vec![
                gateway(),
                matches(
                    l4(),
                    Expression::Named(NamedExpression::Set(vec![
                        nftables::expr::SetItem::Element(string("tcp")),
                        nftables::expr::SetItem::Element(string("udp")),
                    ])),
                    Operator::EQ,
                ),
                matches(dport(), Expression::Number(53), Operator::EQ),
                accept(),
            ],
        ),
        (
            IP,
            INPUT,
            vec![
                gateway(),
                is_in(concat([saddr(), l4(), dport()]), HOST_ALLOW),
                accept(),
            ],
        ),
        (IP, INPUT, vec![is_in(saddr(), OPEN), accept()]),
        (IP, INPUT, vec![drop()]),
        (IP, FORWARD, vec![on_bridge(iif()), jump(FROM_GUEST)]),
        (IP, FORWARD, vec![on_bridge(oif()), jump(TO_GUEST)]),
        (IP, TO_GUEST, vec![established(), accept()]),
        (IP, TO_GUEST, vec![dnatted(), accept()]),
        (IP, TO_GUEST, vec![drop()]),
        (IP, FROM_GUEST, vec![established(), accept()]),
        (IP, FROM_GUEST, vec![dnatted(), accept()]),
        (
            IP,
            FROM_GUEST,
            vec![
                on_bridge(oif()),
                is_in(concat([saddr(), daddr()]), PEER_IPS),
                accept(),
            ],
        ),
        (IP, FROM_GUEST, vec![on_bridge(oif()), drop()]),
        (
            IP,
            FROM_GUEST,
            vec![
                is_in(concat([saddr(), daddr(), l4(), dport()]), ALLOW),
                accept(),
            ],
        ),
        (
            IP,
            FROM_GUEST,
            vec![is_in(concat([saddr(), daddr()]), ALLOW_ALL), accept()],
        ),
        (IP, FROM_GUEST, vec![is_in(saddr(), OPEN), accept()]),
        (
            IP,
            FROM_GUEST,
            vec![is_in(concat([saddr(), daddr()]), EGRESS), accept()],
        ),
        (IP, FROM_GUEST, vec![is_in(saddr(), EGRESS_LIMITED), drop()]),
        (
            IP,
            FROM_GUEST,
            vec![matches(daddr(), blocked, Operator::EQ), drop()],
        ),
        (IP, FROM_GUEST, vec![accept()]),
    ]
}

fn concat<const N: usize>(parts: [Expression<'static>; N]) -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(parts.to_vec()))
}

fn cidr(addr: Ipv4Addr, len: u32) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(string(&addr.to_string())),
        len,
    }))
}

fn proto(p: Proto) -> Expression<'static> {
    string(p.as_str())
}

#[cfg(test)]
#[path = "isolation_tests.rs"]
mod tests;
