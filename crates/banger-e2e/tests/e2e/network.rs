//! Guest networking: names and addresses, isolation between guests and from the host,
//! egress through NAT and an allow-list, and what VM churn leaves on the host.

use std::process::{Command, Stdio};

use banger_e2e::host::{
    cmd, dig, neighbour_mac, other_host_address, taps_on, tcp_banner, wait_for_listener,
    Background, WebServer,
};
use banger_e2e::{Harness, TestVm, BRIDGE};

/// A guest-side probe: the first four bytes of `$0:$1` (`SSH-` for sshd), by bash's
/// /dev/tcp, which takes an address or a name.
fn banner_from(vm: &TestVm<'_>, host: &str, port: &str) -> String {
    let script = "exec 3<>/dev/tcp/$0/$1; head -c 4 <&3";
    vm.exec(&["timeout", "20", "bash", "-c", script, host, port])
        .text()
}

/// A guest-side probe: `HOST:PORT open` or `HOST:PORT closed` for each target.
fn ports_from(vm: &TestVm<'_>, targets: &[&str]) -> String {
    let probe = r#"for t in "$@"; do
      if timeout 3 bash -c "exec 3<>/dev/tcp/${t%:*}/${t#*:}" 2>/dev/null; then echo "$t open"; else echo "$t closed"; fi
    done"#;
    let mut argv = vec!["bash", "-c", probe, "x"];
    argv.extend_from_slice(targets);
    vm.exec(&argv).success().text()
}

fn resolved_in(vm: &TestVm<'_>, name: &str) -> String {
    let out = vm.exec(&["getent", "hosts", name]).text();
    out.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn network() {
    let Some(h) = banger_e2e::turn("network") else {
        return;
    };
    // One group: they reach each other. net-a may reach one host port.
    let a = h.create("net-a", &["--net-group", "pair", "--allow-host", "18089"]);
    let b = h.create("net-b", &["--net-group", "pair"]);
    let ip_b = b.ip();
    let name_b = format!("{}.vm", b.name());
    a.wait_for_sshd();
    b.wait_for_sshd();

    // DNS on the host answers with the lease.
    assert_eq!(dig(h.dns_port, &name_b), ip_b);
    // The host reaches a guest's sshd by IP.
    assert_eq!(tcp_banner(&ip_b, 22), "SSH-");
    // Guest to guest, by IP and by <name>.vm through the bridge DNS.
    assert_eq!(banner_from(&a, &ip_b, "22"), "SSH-");
    assert_eq!(resolved_in(&a, &name_b), ip_b);
    assert_eq!(banner_from(&a, &name_b, "22"), "SSH-");
    // A guest reaches the host service its --allow-host names (on the bridge gateway).
    let gw = a.gateway();
    let _web = WebServer::serve(&format!("{gw}:18089"), "smoke-host-service");
    wait_for_listener(&gw, 18089);
    let get = "exec 3<>/dev/tcp/$0/18089; printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' >&3; tail -n1 <&3";
    let got = a.exec(&["timeout", "20", "bash", "-c", get, &gw]).success();
    assert_eq!(got.text(), "smoke-host-service");
}

/// A default guest reaches no host service (on the gateway or any other host address)
/// and no other VM, cannot even learn their names; --allow-host opens one port; a guest
/// that takes another's address or MAC is cut off and steals nothing.
#[test]
fn isolation() {
    let Some(h) = banger_e2e::turn("isolation") else {
        return;
    };
    let _web = WebServer::serve("0.0.0.0:18091", "smoke-isolation");
    let a = h.create("iso-a", &[]);
    let b = h.create("iso-b", &[]);
    let c = h.create("iso-c", &["--allow-host", "18091", "--publish", "18092:22"]);
    let shown = h.ok(&["vm", "show", c.name()]);
    assert!(
        shown
            .lines()
            .any(|l| l == "network   isolated, host ports 18091"),
        "{shown}"
    );
    assert_eq!(c.info().policy.unwrap().allow_host, ["18091"]);
    let ip_b = b.ip();
    b.wait_for_sshd();
    let gw = a.gateway();
    let other = other_host_address(BRIDGE);
    wait_for_listener("127.0.0.1", 18091);

    let seen = ports_from(
        &a,
        &[
            &format!("{gw}:18091"),
            &format!("{other}:18091"),
            &format!("{ip_b}:22"),
            &format!("{gw}:22"),
        ],
    );
    assert_eq!(
        seen,
        format!("{gw}:18091 closed\n{other}:18091 closed\n{ip_b}:22 closed\n{gw}:22 closed")
    );
    assert_eq!(
        ports_from(&c, &[&format!("{gw}:18091")]),
        format!("{gw}:18091 open")
    );
    // A published port answers on the host's loopback too.
    c.wait_for_sshd();
    assert_eq!(tcp_banner("127.0.0.1", 18092), "SSH-");

    // The policy changes on a stopped VM only.
    c.set(&["--net-group", "g"])
        .failure(None, "stopped VM only");
    c.stop();
    c.set(&["--allow-host", "none", "--net-group", "g"])
        .success();
    let shown = h.ok(&["vm", "show", c.name()]);
    assert!(
        shown.lines().any(|l| l == "network   isolated, group g"),
        "{shown}"
    );
    c.set(&["--allow", "10.0.0.1/8"])
        .failure(Some(3), "invalid --allow");

    // Names of VMs it cannot reach do not resolve; the host still sees them all.
    let name_b = format!("{}.vm", b.name());
    assert_eq!(a.exec(&["getent", "hosts", &name_b]).text(), "");
    assert_eq!(dig(h.dns_port, &name_b), ip_b);

    // iso-a takes iso-b's address: it loses its network, iso-b keeps its own, and the
    // host's neighbour entry for that address stays iso-b's.
    let mac_b = b
        .exec(&["cat", "/sys/class/net/eth0/address"])
        .success()
        .text();
    a.sh(&format!(
        "ip addr flush dev eth0 && ip addr add {ip_b}/24 dev eth0 && ip route add default via {gw}"
    ));
    let dns = format!("{gw}:53");
    assert_eq!(ports_from(&a, &[&dns]), format!("{dns} closed"));
    assert_eq!(ports_from(&b, &[&dns]), format!("{dns} open"));
    assert_eq!(tcp_banner(&ip_b, 22), "SSH-");
    assert_eq!(neighbour_mac(&ip_b, BRIDGE), Some(mac_b.clone()));
    // ...and with iso-b's MAC too (whether the route comes back does not matter).
    a.exec(&["sh", "-c", &format!("ip link set eth0 down && ip link set eth0 address {mac_b} && ip link set eth0 up && ip route add default via {gw}")]);
    assert_eq!(ports_from(&a, &[&dns]), format!("{dns} closed"));
    assert_eq!(ports_from(&b, &[&dns]), format!("{dns} open"));
}

/// A test host in a network namespace, playing the internet on documentation addresses:
/// web servers on 203.0.113.10 and .11, and a DNS upstream on .10. Gone when dropped.
struct Internet {
    servers: Vec<Background>,
}

const NS: &str = "bgsmoke-inet";

impl Internet {
    fn up(h: &Harness) -> Internet {
        // What an earlier run killed outright may have left.
        let _ = Command::new("ip")
            .args(["netns", "del", NS])
            .stderr(Stdio::null())
            .status();
        let mut inet = Internet { servers: vec![] };
        cmd("ip", &["netns", "add", NS]);
        cmd(
            "ip",
            &[
                "link",
                "add",
                "bgsmoke-up",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                NS,
            ],
        );
        cmd(
            "ip",
            &["addr", "add", "203.0.113.1/24", "dev", "bgsmoke-up"],
        );
        cmd("ip", &["link", "set", "bgsmoke-up", "up"]);
        cmd(
            "ip",
            &["-n", NS, "addr", "add", "203.0.113.10/24", "dev", "eth0"],
        );
        cmd(
            "ip",
            &["-n", NS, "addr", "add", "203.0.113.11/24", "dev", "eth0"],
        );
        cmd("ip", &["-n", NS, "link", "set", "eth0", "up"]);
        cmd("ip", &["-n", NS, "link", "set", "lo", "up"]);
        fs_err::write(h.run_dir.join("inet.html"), "smoke-inet\n").unwrap();
        for addr in ["203.0.113.10", "203.0.113.11"] {
            inet.servers.push(Background::spawn(
                Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        NS,
                        "python3",
                        "-m",
                        "http.server",
                        "80",
                        "--bind",
                        addr,
                    ])
                    .current_dir(&h.run_dir),
            ));
        }
        let dns = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/net/tiny_dns.py");
        inet.servers
            .push(Background::spawn(Command::new("ip").args([
                "netns",
                "exec",
                NS,
                "python3",
                dns,
                "203.0.113.10",
                "allowed.test=203.0.113.10",
                "www.allowed.test=203.0.113.10",
                "other.test=203.0.113.11",
            ])));
        wait_for_listener("203.0.113.10", 80);
        wait_for_listener("203.0.113.11", 80);
        inet
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = Command::new("ip").args(["netns", "del", NS]).status();
        let _ = Command::new("ip")
            .args(["link", "del", "bgsmoke-up"])
            .status();
    }
}

/// `TARGET smoke-inet` or `TARGET blocked` for each target's web page.
fn web_from(vm: &TestVm<'_>, targets: &[&str]) -> String {
    let get = r#"for t in "$@"; do
      out=$(timeout 5 bash -c "exec 3<>/dev/tcp/$t/80 && printf \"GET /inet.html HTTP/1.0\r\n\r\n\" >&3 && tail -n1 <&3" 2>/dev/null) || out=blocked
      echo "$t $out"
    done"#;
    let mut argv = vec!["bash", "-c", get, "x"];
    argv.extend_from_slice(targets);
    vm.exec(&argv).success().text()
}

/// Egress: a default guest reaches the test internet through NAT (names resolved by the
/// configured upstream); an --egress-allow guest reaches the allowed name only.
#[test]
fn egress() {
    let Some(h) = banger_e2e::turn("egress") else {
        return;
    };
    let _inet = Internet::up(&h);
    let _config = h.with_config(r#"dns_upstreams = ["203.0.113.10"]"#);
    let open = h.create("eg-open", &[]);
    let limited = h.create("eg-lim", &["--egress-allow", "allowed.test"]);

    let from_open = web_from(&open, &["allowed.test", "other.test", "203.0.113.11"]);
    let from_limited = web_from(
        &limited,
        &[
            "203.0.113.10",
            "allowed.test",
            "www.allowed.test",
            "other.test",
            "203.0.113.11",
        ],
    );

    assert_eq!(
        from_open,
        "allowed.test smoke-inet\nother.test smoke-inet\n203.0.113.11 smoke-inet"
    );
    assert_eq!(
        from_limited,
        "203.0.113.10 blocked\nallowed.test smoke-inet\nwww.allowed.test smoke-inet\n\
         other.test blocked\n203.0.113.11 blocked"
    );
}

/// Booted cycles with a published port exercise taps and per-VM nft rules; the rest
/// exercise leases. Nothing is left behind.
#[test]
fn net_churn() {
    let Some(h) = banger_e2e::turn("net_churn") else {
        return;
    };

    for _ in 0..3 {
        h.create("churn", &["--publish", "18090:22"]).delete();
    }
    for _ in 0..17 {
        h.create("churn", &["--no-start"]).delete();
    }

    assert_eq!(h.vms(), vec![]);
    let taps = taps_on(BRIDGE);
    assert!(taps <= 4, "{taps} taps left");
    let table = Command::new("nft")
        .args(["list", "table", "ip", "banger"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&table.stdout);
    assert!(!rules.contains("chain vm_"), "per-vm chains left:\n{rules}");
}
