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

use bangerd::net::{
    self, nft, HostNetwork, NetConfig, NetError, Netlink, NftTable, PortForward, VmLookup,
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
    let dns = net::DnsServer::start(&["127.0.0.1:0".parse().unwrap()], &[], lookup)
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
    let dns = net::DnsServer::start(&["127.0.0.1:0".parse().unwrap()], &[], lookup)
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
    let dns = net::DnsServer::start(&["127.0.0.1:0".parse().unwrap()], &[], lookup_of(&[]))
        .await
        .unwrap();

    let reply = query(dns.local_addrs()[0], "example.test.", RecordType::A).await;

    assert_eq!(reply.response_code(), ResponseCode::Refused);
}

#[tokio::test]
async fn dns_port_in_use_names_the_holder() {
    let squatter = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = squatter.local_addr().unwrap();

    let err = net::DnsServer::start(&[addr], &[], lookup_of(&[]))
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
            let vm_net = host.attach(&vm, ip, &[fwd]).await.unwrap();
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
        (during, after_cycles, after_shutdown, parsed)
    });

    assert_eq!(during, vec![true; 20]);
    assert_eq!(after_cycles.len(), 2, "{after_cycles:?}");
    assert!(after_shutdown.is_empty(), "{after_shutdown:?}");
    assert!(forwards_left.tagged_rules.is_empty(), "{forwards_left:?}");
    assert_eq!(
        forwards_left.chains,
        ["postrouting", "forward", "prerouting", "output"]
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
            .attach("uservm", ip, &["8080:80".parse().unwrap()])
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
        host.attach("vm1", ip, &["8080:80".parse().unwrap()])
            .await
            .unwrap();
        run("nft", &["list", "table", "ip", "banger"])
    });

    let expected = [
        "ip saddr 172.30.0.0/24 oifname != \"banger0\" masquerade",
        "oifname \"banger0\" ip saddr 172.30.0.0/24 ct status dnat masquerade",
        "iifname \"banger0\" accept",
        "oifname \"banger0\" ct state established,related accept",
        "fib daddr type local jump vm_vm1 comment \"banger vm vm1\"",
        "fib daddr type local ip daddr != 127.0.0.0/8 jump vm_vm1 comment \"banger vm vm1\"",
        "tcp dport 8080 dnat to 172.30.0.2:80",
    ];
    let missing: Vec<&str> = expected
        .into_iter()
        .filter(|line| !listing.contains(line))
        .collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{listing}");
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
        host.attach("vm1", ip, &["8080:80".parse().unwrap()])
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

/// A guest namespace on a veth port of the bridge: it resolves a `.vm` name through the
/// bridge DNS, reaches an "uplink" namespace through the NAT (which sees the host's
/// address), and the host reaches the guest's port 80 through `--publish 8080:80`.
#[test]
fn guest_on_the_bridge_resolves_names_and_reaches_out() {
    require_privileges!();
    let host = Netns::new("host");
    let guest = Netns::new("guest");
    let uplink = Netns::new("uplink");
    let (h, g, u) = (&host.name, &guest.name, &uplink.name);
    run(
        "ip",
        &[
            "-n", h, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", u,
        ],
    );
    run(
        "ip",
        &["-n", h, "addr", "add", "10.99.0.1/24", "dev", "up0"],
    );
    run("ip", &["-n", h, "link", "set", "up0", "up"]);
    run(
        "ip",
        &["-n", u, "addr", "add", "10.99.0.2/24", "dev", "eth0"],
    );
    run("ip", &["-n", u, "link", "set", "eth0", "up"]);
    let (g2, u2, h2) = (g.clone(), u.clone(), h.clone());

    let results = host.run(move || async move {
        let net = HostNetwork::setup(&config(1), &HashSet::new())
            .await
            .unwrap();
        let lookup = lookup_of(&[("web", Ipv4Addr::new(172, 30, 0, 2))]);
        let listen: [SocketAddr; 2] = [
            "127.0.0.1:42069".parse().unwrap(),
            (net.gateway(), 53).into(),
        ];
        let dns = net::DnsServer::start(&listen, &[], lookup).await.unwrap();
        net.attach(
            "web",
            Ipv4Addr::new(172, 30, 0, 2),
            &["8080:80".parse().unwrap()],
        )
        .await
        .unwrap();
        run(
            "ip",
            &[
                "-n", &h2, "link", "add", "vport0", "type", "veth", "peer", "name", "eth0",
                "netns", &g2,
            ],
        );
        run(
            "ip",
            &[
                "-n", &h2, "link", "set", "vport0", "master", "banger0", "up",
            ],
        );
        run(
            "ip",
            &["-n", &g2, "addr", "add", "172.30.0.2/24", "dev", "eth0"],
        );
        run("ip", &["-n", &g2, "link", "set", "eth0", "up"]);
        run(
            "ip",
            &["-n", &g2, "route", "add", "default", "via", "172.30.0.1"],
        );
        let guest_web = serve_once(&g2, "0.0.0.0:80", |_| "hello from guest".to_string());
        let uplink_svc = serve_once(&u2, "10.99.0.2:7000", |peer| peer.ip().to_string());

        let from_guest = tokio::task::spawn_blocking(move || {
            in_netns(&g2, || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let answer = rt.block_on(query(
                    "172.30.0.1:53".parse().unwrap(),
                    "web.vm.",
                    RecordType::A,
                ));
                (a_records(&answer), read_all("10.99.0.2:7000"))
            })
            .join()
            .unwrap()
        })
        .await
        .unwrap();
        let on_host = query(dns.local_addrs()[0], "web.vm.", RecordType::A).await;
        let published = tokio::task::spawn_blocking(|| read_all("172.30.0.1:8080"))
            .await
            .unwrap();
        guest_web.join().unwrap();
        uplink_svc.join().unwrap();
        dns.shutdown().await;
        (from_guest, a_records(&on_host), published)
    });

    let ((guest_answer, seen_by_uplink), host_answer, published) = results;
    assert_eq!(guest_answer, [Ipv4Addr::new(172, 30, 0, 2)]);
    assert_eq!(seen_by_uplink, "10.99.0.1");
    assert_eq!(host_answer, [Ipv4Addr::new(172, 30, 0, 2)]);
    assert_eq!(published, "hello from guest");
}

/// Listens on `addr` in namespace `ns`, answers one connection with `reply(peer)`.
fn serve_once(
    ns: &str,
    addr: &str,
    reply: impl FnOnce(SocketAddr) -> String + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let addr = addr.to_string();
    let listener = in_netns(ns, move || std::net::TcpListener::bind(addr).unwrap())
        .join()
        .unwrap();
    std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        conn.write_all(reply(peer).as_bytes()).unwrap();
    })
}

/// Connects to `addr` and reads until the peer closes.
fn read_all(addr: &str) -> String {
    let addr: SocketAddr = addr.parse().unwrap();
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out
}
