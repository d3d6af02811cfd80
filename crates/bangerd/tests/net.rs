//! Host networking against the real kernel.
//!
//! DNS tests on loopback need nothing special. The others need root, `ip` and `nft`;
//! each runs in throwaway network namespaces (`ip netns add`, entered with setns on a
//! dedicated thread) that are deleted afterwards, so the host is never touched. They
//! print why they skip.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use banger_wire::Diagnostic;
use bangerd::net::{
    self, nft, HostNetwork, NetConfig, NetError, Netlink, NftTable, PortForward, Rules, VmLookup,
    TAP_PREFIX,
};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::net::UdpSocket;

// ---------- fixtures ----------

/// A named network namespace, deleted on drop.
struct Netns {
    name: String,
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Netns {
    fn new(role: &str) -> Netns {
        let n = NS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("bgtest-{}-{role}{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `body` to completion inside this namespace, with its own tokio runtime.
    fn run<T, F>(&self, body: impl FnOnce() -> F + Send + 'static) -> T
    where
        F: std::future::Future<Output = T>,
        T: Send + 'static,
    {
        in_netns(&self.name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(body())
        })
        .join()
        .unwrap()
    }
}

/// Runs `f` on a new thread that first enters namespace `name`. Sockets made there
/// stay in that namespace wherever they are used later.
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Why privileged tests cannot run here, if they cannot.
fn privileged_skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new(tool).arg("-V").output().is_ok();
        if !found {
            return Some(format!("needs the `{tool}` binary"));
        }
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("needs /dev/net/tun".into());
    }
    None
}

macro_rules! require_privileges {
    () => {
        if let Some(reason) = privileged_skip_reason() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

fn lookup_of(entries: &[(&str, Ipv4Addr)]) -> VmLookup {
    let map: HashMap<String, Ipv4Addr> =
        entries.iter().map(|(n, ip)| (n.to_string(), *ip)).collect();
    Arc::new(move |name| map.get(name).copied())
}

fn config(spares: usize) -> NetConfig {
    NetConfig {
        bridge: "banger0".into(),
        subnet: None,
        previous_subnet: None,
        spare_taps: spares,
    }
}

/// One DNS query over UDP.
async fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut msg = Message::new();
    msg.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let sock = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    sock.send_to(&msg.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("dns answer within 5 s")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

/// A fake upstream resolver on loopback: `A 192.0.2.7` for every name except those
/// starting with `missing.`, which get NXDOMAIN.
async fn fake_upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            let request = Message::from_vec(&buf[..n]).unwrap();
            let mut reply = Message::new();
            reply
                .set_id(request.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_recursion_available(true)
                .add_queries(request.queries().to_vec());
            let q = &request.queries()[0];
            if q.name().to_ascii().starts_with("missing.") {
                reply.set_response_code(ResponseCode::NXDomain);
            } else if q.query_type() == RecordType::A {
                let a = A(Ipv4Addr::new(192, 0, 2, 7));
                reply.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(a)));
            }
            sock.send_to(&reply.to_vec().unwrap(), from).await.unwrap();
        }
    });
    addr
}

async fn bgtaps(netlink: &Netlink) -> Vec<String> {
    let mut names: Vec<String> = netlink
        .links()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .filter(|n| n.starts_with(TAP_PREFIX))
        .collect();
    names.sort();
    names
}

// ---------- DNS on loopback (unprivileged) ----------

#[tokio::test]
async fn dns_answers_vm_names_and_nxdomain_for_unknown_ones() {
    let lookup = lookup_of(&[("web", Ipv4Addr::new(172, 30, 0, 2))]);
    let dns = net::DnsServer::start(&["127.0.0.1:0".parse().unwrap()], &[], lookup, None)
        .await
        .unwrap();
    let addr = dns.local_addrs()[0];

    let known = query(addr, "web.vm.", RecordType::A).await;
    let unknown = query(addr, "db.vm.", RecordType::A).await;
    let aaaa = query(addr, "web.vm.", RecordType::AAAA).await;

    assert_eq!(known.response_code(), ResponseCode::NoError);
    assert_eq!(a_records(&known), [Ipv4Addr::new(172, 30, 0, 2)]);
    assert!(known.authoritative());
    assert_eq!(unknown.response_code(), ResponseCode::NXDomain);
    assert_eq!(
        (aaaa.response_code(), aaaa.answers().len()),
        (ResponseCode::NoError, 0)
    );
    dns.shutdown().await;
}

#[tokio::test]
async fn dns_sees_vms_added_after_start() {
    let table = Arc::new(std::sync::Mutex::new(HashMap::<String, Ipv4Addr>::new()));
    let reader = table.clone();
    let lookup: VmLookup = Arc::new(move |name| reader.lock().unwrap().get(name).copied());
    let dns = net::DnsServer::start(&["127.0.0.1:0".parse().unwrap()], &[], lookup, None)
        .await
        .unwrap();
    let addr = dns.local_addrs()[0];

    let before = query(addr, "late.vm.", RecordType::A).await;
    table
        .lock()
        .unwrap()
        .insert("late".into(), Ipv4Addr::new(172, 30, 0, 9));
    let after = query(addr, "late.vm.", RecordType::A).await;

    assert_eq!(before.response_code(), ResponseCode::NXDomain);
    assert_eq!(a_records(&after), [Ipv4Addr::new(172, 30, 0, 9)]);
}

#[tokio::test]
async fn dns_forwards_other_names_to_the_upstream() {
    let upstream = fake_upstream().await;
    let dns = net::DnsServer::start(
        &["127.0.0.1:0".parse().unwrap()],
        &[upstream],
        lookup_of(&[]),
        None,
    )
    .await
    .unwrap();
    let addr = dns.local_addrs()[0];

    let found = query(addr, "example.test.", RecordType::A).await;
    let missing = query(addr, "missing.test.", RecordType::A).await;

    assert_eq!(a_records(&found), [Ipv4Addr::new(192, 0, 2, 7)]);
    assert_eq!(missing.response_code(), ResponseCode::NXDomain);
}

#[tokio::test]
async fn dns_without_upstreams_refuses_other_names() {
    let dns = net::DnsServer::start(&["127.0.0.1:0".parse().unwrap()], &[], lookup_of(&[]), None)
        .await
        .unwrap();

    let reply = query(dns.local_addrs()[0], "example.test.", RecordType::A).await;

    assert_eq!(reply.response_code(), ResponseCode::Refused);
}

#[tokio::test]
async fn dns_port_in_use_names_the_holder() {
    let squatter = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = squatter.local_addr().unwrap();

    let err = net::DnsServer::start(&[addr], &[], lookup_of(&[]), None)
        .await
        .err()
        .unwrap();

    let me = std::process::id();
    assert!(
        matches!(&err, NetError::DnsPortInUse { holder: Some(h), .. } if h.pid == me),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("dns port {addr} is already in use by ")),
        "{message}"
    );
    assert!(message.ends_with(&format!("(pid {me})")), "{message}");
    assert!(err.hint().unwrap().contains(&format!("pid {me}")));
}

// ---------- host network in a namespace (root) ----------

#[test]
fn bridge_and_spare_taps_come_up() {
    require_privileges!();
    let ns = Netns::new("host");

    let (gateway_addr, taps, controllers, taken, forwarding) = ns.run(|| async {
        let host = HostNetwork::setup(&config(2), &HashSet::new())
            .await
            .unwrap();
        let netlink = Netlink::open().unwrap();
        let bridge = netlink.link("banger0").await.unwrap().unwrap();
        let addrs = netlink.ipv4_addrs(bridge.index).await.unwrap();
        let taps = bgtaps(&netlink).await;
        let mut controllers = Vec::new();
        for name in &taps {
            let link = netlink.link(name).await.unwrap().unwrap();
            controllers.push(link.controller == Some(bridge.index));
        }
        let taken = host.taps().take().await.unwrap();
        let forwarding = net::forwarding_enabled().unwrap();
        (addrs, taps, controllers, taken, forwarding)
    });

    assert_eq!(gateway_addr, [(Ipv4Addr::new(172, 30, 0, 1), 24)]);
    assert_eq!(taps, ["bgtap0", "bgtap1"]);
    assert_eq!(controllers, [true, true]);
    assert!(taken.name.starts_with(TAP_PREFIX));
    assert!(forwarding);
}

#[test]
fn setup_keeps_running_vms_taps_and_deletes_stale_ones() {
    require_privileges!();
    let ns = Netns::new("host");

    let after_restart = ns.run(|| async {
        let first = HostNetwork::setup(&config(3), &HashSet::new())
            .await
            .unwrap();
        let in_use = first.taps().take().await.unwrap();
        drop(first); // daemon dies without cleanup: spares and the VM's tap stay
        let keep = HashSet::from([in_use.name.clone()]);
        let second = HostNetwork::setup(&config(1), &keep).await.unwrap();
        let taps = bgtaps(&Netlink::open().unwrap()).await;
        (in_use.name, second.taps().spares(), taps)
    });

    let (kept, spares, taps) = after_restart;
    let mut expected = vec![kept.clone(), spares[0].clone()];
    expected.sort();
    assert_eq!(taps, expected);
    assert_ne!(spares[0], kept);
}

#[test]
fn twenty_create_delete_cycles_leave_no_taps_or_rules() {
    require_privileges!();
    let ns = Netns::new("host");

    let (during, after_cycles, after_shutdown, forwards_left) = ns.run(|| async {
        let host = HostNetwork::setup(&config(2), &HashSet::new())
            .await
            .unwrap();
        let mut during = Vec::new();
        for i in 0..20u16 {
            let vm = format!("vm{i}");
            let ip = net::allocate(host.subnet(), &HashSet::new()).unwrap();
            let fwd: PortForward = format!("{}:80", 8000 + i).parse().unwrap();
            let vm_net = host
                .attach(&vm, ip, &[fwd], Rules::default())
                .await
                .unwrap();
            during.push(nft::vms_with_forwards(host.nft_table()).await.unwrap() == [vm.clone()]);
            host.release(&vm, Some(&vm_net.tap.name)).await.unwrap();
        }
        let netlink = Netlink::open().unwrap();
        host.taps().fill().await.unwrap();
        let after_cycles = bgtaps(&netlink).await;
        let table = host.nft_table().clone();
        host.shutdown().await.unwrap();
        let after_shutdown = bgtaps(&netlink).await;
        let listing = nft::list_table(&table).await.unwrap().unwrap();
        let parsed = nft::TableListing::parse(&listing).unwrap();
        let ports = run("nft", &["list", "set", "bridge", table.name(), "ports"]);
        assert!(
            !ports.contains("bgtap"),
            "isolation rules left behind: {ports}"
        );
        (during, after_cycles, after_shutdown, parsed)
    });

    assert_eq!(during, vec![true; 20]);
    assert_eq!(after_cycles.len(), 2, "{after_cycles:?}");
    assert!(after_shutdown.is_empty(), "{after_shutdown:?}");
    assert!(forwards_left.tagged_rules.is_empty(), "{forwards_left:?}");
    assert_eq!(
        forwards_left.chains,
        [
            "postrouting",
            "prerouting",
            "output",
            "input",
            "forward",
            "from_guest",
            "to_guest"
        ]
    );
}

#[test]
fn shutdown_during_a_refill_leaves_only_the_taps_handed_out() {
    require_privileges!();
    let ns = Netns::new("host");

    let (taken, left) = ns.run(|| async {
        let host = HostNetwork::setup(&config(2), &HashSet::new())
            .await
            .unwrap();
        // Taking a spare wakes the refill; the daemon stops at once.
        let taken = host.taps().take().await.unwrap().name;
        host.shutdown().await.unwrap();
        drop(host);
        // Give a refill that would still run every chance to.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (taken, bgtaps(&Netlink::open().unwrap()).await)
    });

    assert_eq!(left, [taken]);
}

#[test]
fn daemons_on_two_bridges_keep_out_of_each_others_rules_and_taps() {
    require_privileges!();
    let ns = Netns::new("host");

    let (smoke_table, user_forwards, user_taps) = ns.run(|| async {
        let user = HostNetwork::setup(&config(0), &HashSet::new())
            .await
            .unwrap();
        let ip = net::allocate(user.subnet(), &HashSet::new()).unwrap();
        let user_vm = user
            .attach(
                "uservm",
                ip,
                &["8080:80".parse().unwrap()],
                Rules::default(),
            )
            .await
            .unwrap();
        // A second daemon (a smoke run) on its own bridge: set-up, pruning of forwards
        // of VMs it does not know, and a full clean-up of its own things.
        let smoke_cfg = NetConfig {
            bridge: "bgsmoke0".into(),
            ..config(1)
        };
        let smoke = HostNetwork::setup(&smoke_cfg, &HashSet::new())
            .await
            .unwrap();
        let smoke_table = smoke.nft_table().name().to_string();
        smoke.prune_forwards(&HashSet::new()).await.unwrap();
        smoke.shutdown().await.unwrap();
        HostNetwork::cleanup_all("bgsmoke0").await.unwrap();
        let user_forwards = nft::vms_with_forwards(user.nft_table()).await.unwrap();
        let user_taps = bgtaps(&Netlink::open().unwrap()).await;
        assert!(user_taps.contains(&user_vm.tap.name));
        (smoke_table, user_forwards, user_taps)
    });

    assert_eq!(smoke_table, "banger_bgsmoke0");
    assert_eq!(user_forwards, ["uservm"]);
    assert_eq!(user_taps.len(), 1, "{user_taps:?}");
}

#[test]
fn nat_rules_are_what_nft_lists() {
    require_privileges!();
    let ns = Netns::new("host");

    let listing = ns.run(|| async {
        let host = HostNetwork::setup(&config(0), &HashSet::new())
            .await
            .unwrap();
        let ip = Ipv4Addr::new(172, 30, 0, 2);
        host.attach("vm1", ip, &["8080:80".parse().unwrap()], Rules::default())
            .await
            .unwrap();
        run("nft", &["list", "table", "ip", "banger"])
    });

    let expected = [
        "ip saddr 172.30.0.0/24 oifname != \"banger0\" masquerade",
        "oifname \"banger0\" ip saddr 172.30.0.0/24 ct status dnat masquerade",
        "oifname \"banger0\" ip saddr 127.0.0.0/8 masquerade",
        "iifname \"banger0\" jump from_guest",
        "oifname \"banger0\" jump to_guest",
        "ip daddr 172.30.0.1 meta l4proto { tcp, udp } th dport 53 accept",
        "oifname \"banger0\" ip saddr . ip daddr @peer_ips accept",
        "ip saddr . ip daddr @egress accept",
        "ip saddr @egress_limited drop",
        "fib daddr type local jump vm_vm1 comment \"banger vm vm1\"",
        "tcp dport 8080 dnat to 172.30.0.2:80",
    ];
    let missing: Vec<&str> = expected
        .into_iter()
        .filter(|line| !listing.contains(line))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{listing}");
}

#[test]
fn a_running_vms_forwards_are_replaced_and_removed_in_place() {
    require_privileges!();
    let ns = Netns::new("host");

    let (added, replaced, emptied, tagged_left) = ns.run(|| async {
        let host = HostNetwork::setup(&config(0), &HashSet::new())
            .await
            .unwrap();
        let ip = Ipv4Addr::new(172, 30, 0, 2);
        let web: PortForward = "8080:80".parse().unwrap();
        let dns: PortForward = "5353:53/udp".parse().unwrap();
        host.attach("vm1", ip, &[web], Rules::default())
            .await
            .unwrap();
        let list = || run("nft", &["list", "chain", "ip", "banger", "vm_vm1"]);

        host.set_forwards("vm1", ip, &[web, dns]).await.unwrap();
        let added = list();
        host.set_forwards("vm1", ip, &[dns]).await.unwrap();
        let replaced = list();
        host.set_forwards("vm1", ip, &[]).await.unwrap();
        let emptied = nft::list_table(host.nft_table()).await.unwrap().unwrap();
        let parsed = nft::TableListing::parse(&emptied).unwrap();
        (added, replaced, parsed.chains, parsed.tagged_rules.len())
    });

    assert!(
        added.contains("tcp dport 8080 dnat to 172.30.0.2:80"),
        "{added}"
    );
    assert!(
        added.contains("udp dport 5353 dnat to 172.30.0.2:53"),
        "{added}"
    );
    assert!(!replaced.contains("8080"), "{replaced}");
    assert!(replaced.contains("udp dport 5353"), "{replaced}");
    assert!(!emptied.iter().any(|c| c == "vm_vm1"), "{emptied:?}");
    assert_eq!(tagged_left, 0);
}

#[test]
fn cleanup_all_removes_bridge_taps_and_table() {
    require_privileges!();
    let ns = Netns::new("host");

    let (links, table) = ns.run(|| async {
        let host = HostNetwork::setup(&config(2), &HashSet::new())
            .await
            .unwrap();
        let ip = Ipv4Addr::new(172, 30, 0, 2);
        host.attach("vm1", ip, &["8080:80".parse().unwrap()], Rules::default())
            .await
            .unwrap();
        HostNetwork::cleanup_all("banger0").await.unwrap();
        let netlink = Netlink::open().unwrap();
        let links: Vec<String> = netlink
            .links()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        let table = nft::list_table(&NftTable::for_bridge("banger0")).await;
        (links, table.unwrap())
    });

    assert_eq!(links, ["lo"]);
    assert_eq!(table, None);
}

#[test]
fn configured_subnet_that_clashes_is_refused() {
    require_privileges!();
    let ns = Netns::new("host");
    let n = ns.name.as_str();
    run(
        "ip",
        &[
            "-n", n, "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
        ],
    );
    run(
        "ip",
        &["-n", n, "addr", "add", "10.50.0.1/16", "dev", "lan0"],
    );
    run("ip", &["-n", n, "link", "set", "lan0", "up"]);
    run("ip", &["-n", n, "link", "set", "lan1", "up"]);

    let err = ns.run(|| async {
        let cfg = NetConfig {
            subnet: Some("10.50.3.0/24".parse().unwrap()),
            ..config(0)
        };
        HostNetwork::setup(&cfg, &HashSet::new())
            .await
            .err()
            .unwrap()
    });

    assert_eq!(
        err.to_string(),
        "subnet 10.50.3.0/24 clashes with the host route 10.50.0.0/16 dev lan0"
    );
}

/// Plugs a guest namespace in where VM `tap` would be: the tap is swapped for a veth of
/// the same name (the rules match ports by name), the guest gets the VM's MAC and address.
fn plug_guest(host: &str, guest: &str, tap: &str, mac: &str, cidr: &str) {
    run("ip", &["-n", host, "link", "del", tap]);
    let veth = [
        "-n", host, "link", "add", tap, "type", "veth", "peer", "name", "eth0",
    ];
    run("ip", &[&veth[..], &["netns", guest]].concat());
    run(
        "ip",
        &["-n", host, "link", "set", tap, "master", "banger0", "up"],
    );
    run("ip", &["-n", guest, "link", "set", "eth0", "address", mac]);
    run("ip", &["-n", guest, "addr", "add", cidr, "dev", "eth0"]);
    run("ip", &["-n", guest, "link", "set", "eth0", "up"]);
    run(
        "ip",
        &["-n", guest, "route", "add", "default", "via", "172.30.0.1"],
    );
}

/// Serves `addr` in namespace `ns` until the test ends: each connection gets the peer's
/// address.
fn serve(ns: &str, addr: &str) {
    let addr = addr.to_string();
    let listener = in_netns(ns, move || std::net::TcpListener::bind(addr).unwrap())
        .join()
        .unwrap();
    std::thread::spawn(move || {
        while let Ok((mut conn, peer)) = listener.accept() {
            let _ = conn.write_all(peer.ip().to_string().as_bytes());
        }
    });
}

/// Whether a TCP connection from namespace `ns` to `addr` gets an answer within a second.
fn reaches(ns: &str, addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    in_netns(ns, move || {
        let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).is_ok() && !out.is_empty()
    })
    .join()
    .unwrap()
}

/// A query from namespace `ns` to the bridge DNS.
fn query_from(ns: &str, name: &'static str) -> Message {
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(query("172.30.0.1:53".parse().unwrap(), name, RecordType::A))
    })
    .join()
    .unwrap()
}

/// Guests in namespaces on the bridge, as VMs with policies: isolated ones reach the
/// "internet" (an uplink namespace on documentation addresses) and the bridge DNS only;
/// a group's members reach each other; `--allow-host` opens one host port; an egress
/// allow-list opens exactly what DNS answered for the allowed name; a guest that takes
/// another address or MAC loses its network; published ports answer on 127.0.0.1.
#[test]
fn guests_reach_only_what_their_policy_allows() {
    require_privileges!();
    let host = Netns::new("host");
    let uplink = Netns::new("uplink");
    let guests: Vec<Netns> = (0..5).map(|_| Netns::new("guest")).collect();
    let (h, u) = (host.name.clone(), uplink.name.clone());
    let veth = [
        "-n", &h, "link", "add", "up0", "type", "veth", "peer", "name", "eth0",
    ];
    run("ip", &[&veth[..], &["netns", &u]].concat());
    run(
        "ip",
        &["-n", &h, "addr", "add", "203.0.113.1/24", "dev", "up0"],
    );
    run("ip", &["-n", &h, "link", "set", "up0", "up"]);
    for addr in ["203.0.113.10/24", "192.0.2.7/24"] {
        run("ip", &["-n", &u, "addr", "add", addr, "dev", "eth0"]);
    }
    run("ip", &["-n", &u, "link", "set", "eth0", "up"]);
    run(
        "ip",
        &[
            "-n",
            &h,
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            "203.0.113.10",
        ],
    );
    serve(&u, "0.0.0.0:80");
    serve(&h, "0.0.0.0:7001");
    serve(&h, "0.0.0.0:7002");
    let g: Vec<String> = guests.iter().map(|n| n.name.clone()).collect();
    for ns in &g[..4] {
        serve(ns, "0.0.0.0:80");
    }
    let rules = |f: &dyn Fn(&mut banger_wire::api::NetPolicy)| {
        let mut p = banger_wire::api::NetPolicy::default();
        f(&mut p);
        Rules::parse(&p).unwrap()
    };
    // a: default with one host port; b: default; c, d: group g; e: egress allow-list.
    let vms = [
        ("a", 2, rules(&|p| p.allow_host = vec!["7001".into()])),
        ("b", 3, rules(&|_| {})),
        ("c", 4, rules(&|p| p.group = Some("g".into()))),
        ("d", 5, rules(&|p| p.group = Some("g".into()))),
        (
            "e",
            6,
            rules(&|p| p.egress_allow = vec!["example.test".into()]),
        ),
    ];
    let g2 = g.clone();
    let checks = host.run(move || async move {
        let net = Arc::new(
            HostNetwork::setup(&config(1), &HashSet::new())
                .await
                .unwrap(),
        );
        let ip = |n: u8| Ipv4Addr::new(172, 30, 0, n);
        let lookup = lookup_of(&[("a", ip(2)), ("b", ip(3)), ("c", ip(4)), ("d", ip(5))]);
        let upstream = fake_upstream().await;
        let listen: [SocketAddr; 2] = ["127.0.0.1:0".parse().unwrap(), (net.gateway(), 53).into()];
        let dns = net::DnsServer::start(&listen, &[upstream], lookup, Some(net.clone()))
            .await
            .unwrap();
        for (i, (name, n, rules)) in vms.into_iter().enumerate() {
            let publish: Vec<PortForward> = match name {
                "a" => vec!["8080:80".parse().unwrap()],
                _ => vec![],
            };
            let vm = net.attach(name, ip(n), &publish, rules).await.unwrap();
            let cidr = format!("{}/24", ip(n));
            plug_guest(&h, &g2[i], &vm.tap.name, &vm.mac.to_string(), &cidr);
        }
        let blocking = |f: Box<dyn FnOnce() -> bool + Send>| tokio::task::spawn_blocking(f);
        let mut checks: Vec<(&str, bool, bool)> = Vec::new();
        let (ga, gb, gc, ge) = (g2[0].clone(), g2[1].clone(), g2[2].clone(), g2[4].clone());
        let probes: Vec<(&str, String, &str, bool)> = vec![
            (
                "a reaches the internet",
                ga.clone(),
                "203.0.113.10:80",
                true,
            ),
            (
                "a reaches its allowed host port",
                ga.clone(),
                "172.30.0.1:7001",
                true,
            ),
            (
                "a is kept from other host ports",
                ga.clone(),
                "172.30.0.1:7002",
                false,
            ),
            (
                "a is kept from the host's other address",
                ga.clone(),
                "203.0.113.1:7002",
                false,
            ),
            (
                "b is kept from a's host port",
                gb.clone(),
                "172.30.0.1:7001",
                false,
            ),
            ("a is kept from b", ga.clone(), "172.30.0.3:80", false),
            (
                "c reaches d in its group",
                gc.clone(),
                "172.30.0.5:80",
                true,
            ),
            ("c is kept from b", gc.clone(), "172.30.0.3:80", false),
            (
                "e is kept from the internet before DNS",
                ge.clone(),
                "203.0.113.10:80",
                false,
            ),
        ];
        for (what, ns, addr, want) in probes {
            let addr = addr.to_string();
            let got = blocking(Box::new(move || reaches(&ns, &addr)))
                .await
                .unwrap();
            checks.push((what, want, got));
        }
        let names = tokio::task::spawn_blocking(move || {
            let b_from_a = query_from(&ga, "b.vm.");
            let d_from_c = query_from(&gc, "d.vm.");
            let refused = query_from(&ge, "missing.test.");
            let allowed = query_from(&ge, "example.test.");
            (
                a_records(&b_from_a),
                a_records(&d_from_c),
                refused.response_code(),
                a_records(&allowed),
            )
        })
        .await
        .unwrap();
        checks.push(("a cannot resolve b", true, names.0.is_empty()));
        checks.push(("c resolves d", true, names.1 == [ip(5)]));
        checks.push((
            "e is refused other names",
            true,
            names.2 == ResponseCode::Refused,
        ));
        checks.push((
            "e resolves its allowed name",
            true,
            names.3 == [Ipv4Addr::new(192, 0, 2, 7)],
        ));
        let (ge2, ge3) = (g2[4].clone(), g2[4].clone());
        let egress = blocking(Box::new(move || reaches(&ge2, "192.0.2.7:80")))
            .await
            .unwrap();
        checks.push(("e reaches what DNS answered", true, egress));
        let other = blocking(Box::new(move || reaches(&ge3, "203.0.113.10:80")))
            .await
            .unwrap();
        checks.push(("e is still kept from the rest", false, other));
        let local = blocking(Box::new(|| {
            let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
            TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
        }))
        .await
        .unwrap();
        checks.push(("a's published port answers on 127.0.0.1", true, local));
        // a takes b's address: it loses its network, b keeps its own.
        run("ip", &["-n", &g2[0], "addr", "flush", "dev", "eth0"]);
        run(
            "ip",
            &["-n", &g2[0], "addr", "add", "172.30.0.3/24", "dev", "eth0"],
        );
        run(
            "ip",
            &[
                "-n",
                &g2[0],
                "route",
                "replace",
                "default",
                "via",
                "172.30.0.1",
            ],
        );
        let (ga, gb) = (g2[0].clone(), g2[1].clone());
        let spoofed = blocking(Box::new(move || reaches(&ga, "203.0.113.10:80")))
            .await
            .unwrap();
        let victim = blocking(Box::new(move || reaches(&gb, "203.0.113.10:80")))
            .await
            .unwrap();
        checks.push(("a with b's address is cut off", false, spoofed));
        checks.push(("b keeps its network", true, victim));
        // d takes c's MAC: it loses its network.
        let c_mac = net::mac_for(ip(4)).to_string();
        run(
            "ip",
            &["-n", &g2[3], "link", "set", "eth0", "address", &c_mac],
        );
        let gd = g2[3].clone();
        let mac_spoofed = blocking(Box::new(move || reaches(&gd, "203.0.113.10:80")))
            .await
            .unwrap();
        checks.push(("d with c's MAC is cut off", false, mac_spoofed));
        for name in ["a", "b", "c", "d", "e"] {
            net.release(name, None).await.unwrap();
        }
        dns.shutdown().await;
        checks
    });
    let failed: Vec<String> = checks
        .iter()
        .filter(|(_, want, got)| want != got)
        .map(|(what, want, got)| format!("{what}: wanted {want}, got {got}"))
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

/// A guest holding TCP connections to the bridge DNS gets at most
/// `DNS_TCP_PER_GUEST` of them; the rest are dropped, so it cannot exhaust the daemon's
/// file descriptors.
#[test]
fn dns_tcp_connections_per_guest_are_capped() {
    require_privileges!();
    let host = Netns::new("host");
    let guest = Netns::new("guest");
    let (h, g) = (host.name.clone(), guest.name.clone());
    let held = host.run(move || async move {
        let net = Arc::new(
            HostNetwork::setup(&config(1), &HashSet::new())
                .await
                .unwrap(),
        );
        let listen: [SocketAddr; 1] = [(net.gateway(), 53).into()];
        let dns = net::DnsServer::start(&listen, &[], lookup_of(&[]), Some(net.clone()))
            .await
            .unwrap();
        let ip = Ipv4Addr::new(172, 30, 0, 2);
        let vm = net.attach("a", ip, &[], Rules::default()).await.unwrap();
        plug_guest(&h, &g, &vm.tap.name, &vm.mac.to_string(), "172.30.0.2/24");
        let held = tokio::task::spawn_blocking(move || {
            in_netns(&g, || {
                let addr: SocketAddr = "172.30.0.1:53".parse().unwrap();
                (0..24)
                    .filter_map(|_| {
                        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()
                    })
                    .collect::<Vec<_>>()
            })
            .join()
            .unwrap()
            .len()
        })
        .await
        .unwrap();
        net.release("a", None).await.unwrap();
        dns.shutdown().await;
        held
    });
    assert_eq!(held as u32, net::isolation::DNS_TCP_PER_GUEST);
}

/// Two daemons that started before either made a tap never hand out the same tap name:
/// the second one's new tap gets a free index instead of opening (and moving to its
/// own bridge) the first one's device.
#[test]
fn daemons_started_together_never_share_a_tap() {
    require_privileges!();
    let ns = Netns::new("host");

    let (a, b, a_master) = ns.run(|| async {
        let first = HostNetwork::setup(&config(0), &HashSet::new())
            .await
            .unwrap();
        let other = NetConfig {
            bridge: "bgother0".into(),
            ..config(0)
        };
        let second = HostNetwork::setup(&other, &HashSet::new()).await.unwrap();
        let a = first.taps().take().await.unwrap();
        let b = second.taps().take().await.unwrap();
        let netlink = Netlink::open().unwrap();
        let bridge = netlink.link("banger0").await.unwrap().unwrap().index;
        let a_master = netlink.link(&a.name).await.unwrap().unwrap().controller == Some(bridge);
        HostNetwork::cleanup_all("bgother0").await.unwrap();
        (a.name, b.name, a_master)
    });

    assert_ne!(a, b);
    assert!(a_master, "the first daemon's tap moved to the other bridge");
}
