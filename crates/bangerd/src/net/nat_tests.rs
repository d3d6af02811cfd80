use serde_json::{json, Value};

use super::*;

fn subnet() -> Subnet {
    "172.30.0.0/24".parse().unwrap()
}

fn default_table() -> NftTable {
    NftTable::for_bridge("banger0")
}

fn objects(ruleset: &Nftables<'_>) -> Vec<Value> {
    let doc = serde_json::to_value(ruleset).unwrap();
    doc["nftables"].as_array().unwrap().clone()
}

fn rules_of(objects: &[Value], chain: &str) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| o["add"]["rule"]["chain"] == chain)
        .map(|o| o["add"]["rule"]["expr"].clone())
        .collect()
}

#[test]
fn base_creates_the_table_and_hooked_chains() {
    let objs = objects(&NftTable::for_bridge("banger0").base_ruleset(subnet(), "banger0"));
    assert_eq!(
        objs[0],
        json!({"add": {"table": {"family": "ip", "name": "banger"}}})
    );
    assert_eq!(
        objs[1],
        json!({"add": {"chain": {"family": "ip", "table": "banger", "name": "postrouting",
            "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}}})
    );
    let hooks: Vec<&Value> = objs[1..4]
        .iter()
        .map(|o| &o["add"]["chain"]["hook"])
        .collect();
    assert_eq!(hooks, ["postrouting", "prerouting", "output"]);
}

#[test]
fn base_flushes_only_its_own_rule_chains() {
    let objs = objects(&NftTable::for_bridge("banger0").base_ruleset(subnet(), "banger0"));
    let flushed: Vec<&Value> = objs
        .iter()
        .filter_map(|o| o.get("flush"))
        .map(|f| &f["chain"]["name"])
        .collect();
    // Not prerouting/output of the ip family: they hold the VMs' forward jumps.
    assert_eq!(
        flushed,
        [
            "postrouting",
            "prerouting",
            "forward",
            "output",
            "input",
            "forward",
            "from_guest",
            "to_guest"
        ]
    );
    let ip_nat_flushed = objs
        .iter()
        .filter_map(|o| o.get("flush"))
        .filter(|f| f["chain"]["family"] == "ip")
        .any(|f| f["chain"]["name"] == "prerouting" || f["chain"]["name"] == "output");
    assert!(!ip_nat_flushed);
}

#[test]
fn base_masquerades_the_subnet_leaving_through_other_links() {
    let objs = objects(&NftTable::for_bridge("banger0").base_ruleset(subnet(), "banger0"));
    let post = rules_of(&objs, "postrouting");
    assert_eq!(
        post[0],
        json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "172.30.0.0", "len": 24}}}},
            {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "banger0"}},
            {"masquerade": null}
        ])
    );
    assert_eq!(
        post[2],
        json!([
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "banger0"}},
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}},
            {"masquerade": null}
        ])
    );
    assert_eq!(post.len(), 3);
}

#[test]
fn guests_are_filtered_on_their_way_through_the_bridge() {
    let objs = objects(&NftTable::for_bridge("br-test").base_ruleset(subnet(), "br-test"));
    let fwd: Vec<Value> = objs
        .iter()
        .filter(|o| o["add"]["rule"]["chain"] == "forward" && o["add"]["rule"]["family"] == "ip")
        .map(|o| o["add"]["rule"]["expr"].clone())
        .collect();
    assert_eq!(
        fwd,
        [
            json!([
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "br-test"}},
                {"jump": {"target": "from_guest"}}
            ]),
            json!([
                {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "br-test"}},
                {"jump": {"target": "to_guest"}}
            ])
        ]
    );
}

#[test]
fn vm_forwards_live_in_a_tagged_vm_chain() {
    let fwds = ["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()];
    let ruleset = default_table()
        .vm_forward_ruleset("abc123", Ipv4Addr::new(172, 30, 0, 2), &fwds)
        .unwrap();
    let objs = objects(&ruleset);
    assert_eq!(
        objs[0],
        json!({"add": {"chain": {"family": "ip", "table": "banger", "name": "vm_abc123"}}})
    );
    let dnat = rules_of(&objs, "vm_abc123");
    assert_eq!(
        dnat[0],
        json!([
            {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                       "right": 8080}},
            {"dnat": {"addr": "172.30.0.2", "port": 80}}
        ])
    );
    assert_eq!(dnat[1][0]["match"]["left"]["payload"]["protocol"], "udp");
    let jumps: Vec<&Value> = objs
        .iter()
        .filter(|o| o["add"]["rule"]["comment"] == "banger vm abc123")
        .map(|o| &o["add"]["rule"]["chain"])
        .collect();
    assert_eq!(jumps, ["prerouting", "output"]);
}

#[test]
fn output_jump_includes_loopback_destinations() {
    let fwds = ["8080:80".parse().unwrap()];
    let objs = objects(
        &default_table()
            .vm_forward_ruleset("a", Ipv4Addr::new(172, 30, 0, 2), &fwds)
            .unwrap(),
    );
    let output = rules_of(&objs, "output");
    assert_eq!(
        output[0],
        json!([
            {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}},
                       "right": "local"}},
            {"jump": {"target": "vm_a"}}
        ])
    );
}

#[test]
fn removal_deletes_jumps_by_handle_then_the_chain() {
    let jumps = [("prerouting".to_string(), 7), ("output".to_string(), 9)];
    let objs = objects(&default_table().vm_removal_ruleset(&jumps, Some("vm_a")));
    assert_eq!(
        objs,
        vec![
            json!({"delete": {"rule": {"family": "ip", "table": "banger", "chain": "prerouting",
                                       "expr": [], "handle": 7}}}),
            json!({"delete": {"rule": {"family": "ip", "table": "banger", "chain": "output",
                                       "expr": [], "handle": 9}}}),
            json!({"flush": {"chain": {"family": "ip", "table": "banger", "name": "vm_a"}}}),
            json!({"delete": {"chain": {"family": "ip", "table": "banger", "name": "vm_a"}}}),
        ]
    );
}

#[test]
fn vm_ids_that_cannot_name_a_chain_are_rejected() {
    assert!(vm_chain("ok-id_1").is_ok());
    assert!(matches!(vm_chain("a b"), Err(NetError::InvalidVmId { .. })));
    assert!(matches!(vm_chain(""), Err(NetError::InvalidVmId { .. })));
    assert!(matches!(
        vm_chain("x;flush ruleset"),
        Err(NetError::InvalidVmId { .. })
    ));
}

#[test]
fn tags_round_trip() {
    assert_eq!(vm_of_tag(&vm_tag("abc")), Some("abc"));
    assert_eq!(vm_of_tag("something else"), None);
}

#[test]
fn publish_specs_parse() {
    let tcp: PortForward = "8080:80".parse().unwrap();
    assert_eq!(
        tcp,
        PortForward {
            host: 8080,
            guest: 80,
            proto: Proto::Tcp
        }
    );
    let udp: PortForward = "53:5353/udp".parse().unwrap();
    assert_eq!(udp.proto, Proto::Udp);
    assert_eq!(udp.to_string(), "53:5353/udp");
}

#[test]
fn bad_publish_specs_say_why() {
    let err = "8080".parse::<PortForward>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid port forward 8080: expected HOST_PORT:GUEST_PORT"
    );
    assert!("0:80".parse::<PortForward>().is_err());
    assert!("70000:80".parse::<PortForward>().is_err());
    assert!("80:80/sctp".parse::<PortForward>().is_err());
}

#[test]
fn a_host_port_cannot_be_published_twice() {
    let fwds = ["8080:80".parse().unwrap(), "8080:81".parse().unwrap()];
    let err = default_table()
        .vm_forward_ruleset("a", Ipv4Addr::new(172, 30, 0, 2), &fwds)
        .unwrap_err();
    assert!(err.to_string().contains("published twice"), "{err}");
}

#[test]
fn each_bridge_has_its_own_table() {
    assert_eq!(NftTable::for_bridge("banger0").name(), "banger");
    assert_eq!(NftTable::for_bridge("bgsmoke0").name(), "banger_bgsmoke0");
    assert_eq!(NftTable::for_bridge("br-x.1").name(), "banger_br_x_1");
}

#[test]
fn a_removal_spec_matches_what_it_names_and_any_part_it_leaves_out() {
    let web: PortForward = "8080:80".parse().unwrap();
    let dns: PortForward = "8080:53/udp".parse().unwrap();
    let by_host: PortMatch = "8080".parse().unwrap();
    let by_guest: PortMatch = "8080:80".parse().unwrap();
    let by_proto: PortMatch = "8080/udp".parse().unwrap();

    assert!(by_host.matches(&web) && by_host.matches(&dns));
    assert!(by_guest.matches(&web) && !by_guest.matches(&dns));
    assert!(!by_proto.matches(&web) && by_proto.matches(&dns));
    for bad in ["", "x", "0", "8080:", "8080/sctp", "70000"] {
        assert!(bad.parse::<PortMatch>().is_err(), "{bad:?}");
    }
}
