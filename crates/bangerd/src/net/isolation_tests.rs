use serde_json::{json, Value};

use super::*;
use crate::net::policy::{Allow, Cidr, Port, Rules};
use crate::net::{mac_for, Proto};

fn objects(ruleset: &Nftables<'_>) -> Vec<Value> {
    serde_json::to_value(ruleset).unwrap()["nftables"]
        .as_array()
        .unwrap()
        .clone()
}

fn guest(id: &str, n: u8, rules: Rules) -> Guest {
    let ip = Ipv4Addr::new(172, 30, 0, n);
    Guest {
        vm_id: id.into(),
        tap: format!("bgtap{n}"),
        ip,
        mac: mac_for(ip),
        rules,
    }
}

/// The elements added to set `name`.
fn elements(objs: &[Value], name: &str) -> Vec<Value> {
    objs.iter()
        .filter(|o| o["add"]["element"]["name"] == name)
        .flat_map(|o| o["add"]["element"]["elem"].as_array().unwrap().clone())
        .collect()
}

#[test]
fn base_filters_guests_at_the_bridge_and_the_host() {
    let table = NftTable::for_bridge("banger0");
    let objs = objects(&table.base_ruleset("172.30.0.0/24".parse().unwrap(), "banger0"));
    let hooked: Vec<(String, String)> = objs
        .iter()
        .filter_map(|o| {
            let c = &o["add"]["chain"];
            c["hook"]
                .as_str()
                .map(|h| (c["family"].as_str().unwrap().into(), h.into()))
        })
        .collect();
    for (family, hook) in [
        ("bridge", "prerouting"),
        ("bridge", "forward"),
        ("bridge", "output"),
        ("ip", "input"),
        ("ip", "forward"),
    ] {
        assert!(
            hooked.contains(&(family.into(), hook.into())),
            "{family} {hook}"
        );
    }
    let input: Vec<&Value> = objs
        .iter()
        .filter(|o| o["add"]["rule"]["chain"] == "input")
        .map(|o| &o["add"]["rule"]["expr"])
        .collect();
    assert_eq!(input.last().unwrap(), &&json!([{"drop": null}]));
    let last_of = |family: &str, chain: &str| {
        objs.iter()
            .rev()
            .find(|o| o["add"]["rule"]["chain"] == chain && o["add"]["rule"]["family"] == family)
            .map(|o| o["add"]["rule"]["expr"].clone())
            .unwrap()
    };
    assert_eq!(last_of("bridge", "prerouting"), json!([{"drop": null}]));
    assert_eq!(last_of("bridge", "forward"), json!([{"drop": null}]));
    assert_eq!(last_of("ip", "to_guest"), json!([{"drop": null}]));
    // Sets are declared, never flushed by the base: running VMs keep their rules.
    assert!(!objs.iter().any(|o| o["flush"].get("set").is_some()));
}

#[test]
fn guests_fill_the_anti_spoofing_and_policy_sets() {
    let table = NftTable::for_bridge("banger0");
    let open = Rules {
        mode: banger_wire::api::NetMode::Open,
        ..Rules::default()
    };
    let grouped = Rules {
        group: Some("g".into()),
        host_ports: vec![Port {
            proto: Proto::Udp,
            port: 5353,
        }],
        allow: vec![
            Allow {
                net: Cidr {
                    addr: Ipv4Addr::new(10, 1, 0, 0),
                    len: 16,
                },
                port: Some(Port {
                    proto: Proto::Tcp,
                    port: 5000,
                }),
            },
            Allow {
                net: Cidr {
                    addr: Ipv4Addr::new(192, 168, 7, 0),
                    len: 24,
                },
                port: None,
            },
        ],
        egress: vec!["pypi.org".into()],
        ..Rules::default()
    };
    let guests = [
        guest("a", 2, Rules::default()),
        guest("b", 3, open),
        guest("c", 4, grouped.clone()),
        guest("d", 5, grouped),
    ];
    let objs = objects(&table.guests_ruleset(&guests));
    let flushed = objs
        .iter()
        .filter(|o| o["flush"].get("set").is_some())
        .count();
    assert_eq!(flushed, SETS.len(), "every static set is rewritten");
    assert_eq!(elements(&objs, "ports").len(), 4);
    assert_eq!(
        elements(&objs, "src_mac")[0],
        json!({"concat": ["bgtap2", "02:ba:ac:1e:00:02"]})
    );
    assert_eq!(
        elements(&objs, "src_ip")[0],
        json!({"concat": ["bgtap2", "172.30.0.2"]})
    );
    assert_eq!(elements(&objs, "open"), [json!("172.30.0.3")]);
    assert_eq!(
        elements(&objs, "peers"),
        [
            json!({"concat": ["bgtap4", "bgtap5"]}),
            json!({"concat": ["bgtap5", "bgtap4"]})
        ]
    );
    assert_eq!(
        elements(&objs, "host_allow")[0],
        json!({"concat": ["172.30.0.4", "udp", 5353]})
    );
    assert_eq!(
        elements(&objs, "allow")[0],
        json!({"concat": ["172.30.0.4", {"prefix": {"addr": "10.1.0.0", "len": 16}}, "tcp",
                          {"range": [5000, 5000]}]})
    );
    assert_eq!(
        elements(&objs, "allow_all")[0],
        json!({"concat": ["172.30.0.4", {"prefix": {"addr": "192.168.7.0", "len": 24}}]})
    );
    assert_eq!(elements(&objs, "egress_limited").len(), 2);
}

#[test]
fn egress_answers_carry_a_timeout() {
    let table = NftTable::for_bridge("banger0");
    let objs = objects(&table.egress_ruleset(
        Ipv4Addr::new(172, 30, 0, 2),
        &[Ipv4Addr::new(203, 0, 113, 10)],
        600,
    ));
    let elems = elements(&objs, "egress");
    assert_eq!(elems.len(), 1);
    assert_eq!(
        elems[0]["elem"]["val"],
        json!({"concat": ["172.30.0.2", "203.0.113.10"]})
    );
    assert_eq!(elems[0]["elem"]["timeout"], 600);
}
