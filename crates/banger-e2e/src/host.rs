//! The host side of network scenarios: probes, a tiny web server, `ip -j` queries, and
//! background processes that end with their guard.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The first four bytes a TCP service at `host:port` sends (`SSH-` for sshd), or what
/// went wrong, within 20 s.
pub fn tcp_banner(host: &str, port: u16) -> String {
    let read = || -> std::io::Result<String> {
        let addr = resolve(host, port)?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(20))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|e| format!("no banner from {host}:{port}: {e}"))
}

fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))
}

/// Whether something accepts TCP connections on `host:port` within 3 s.
pub fn tcp_open(host: &str, port: u16) -> bool {
    resolve(host, port)
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(3)))
        .is_ok()
}

/// A host service for guests to reach: answers every connection with an HTTP response
/// whose last line is `body`. Stops when dropped.
pub struct WebServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WebServer {
    /// Listens on `addr` (`IP:PORT`); fails the test when it cannot.
    pub fn serve(addr: &str, body: &str) -> WebServer {
        let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("listen on {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{addr}: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let response = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{body}\n");
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        // Read the request (the guest sends one before reading); a
                        // probe that only connects sends nothing, which is fine too.
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = conn.read(&mut [0u8; 1024]);
                        let _ = conn.write_all(response.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        WebServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for WebServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A background process (a server in a network namespace), killed when dropped.
pub struct Background(Child);

impl Background {
    pub fn spawn(cmd: &mut Command) -> Background {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Background(child)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 10 s for a TCP listener on `host:port`.
pub fn wait_for_listener(host: &str, port: u16) {
    let t0 = Instant::now();
    while !tcp_open(host, port) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nothing listens on {host}:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs a host command that must succeed; its stdout.
pub fn cmd(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -j ARGS`, parsed.
pub fn ip_json(args: &[&str]) -> Value {
    let mut argv = vec!["-j"];
    argv.extend_from_slice(args);
    let text = cmd("ip", &argv);
    if text.trim().is_empty() {
        return Value::Array(vec![]);
    }
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip {}: {e}: {text}", args.join(" ")))
}

fn entries(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// How many of banger's taps (`bgtap*`) are attached to `bridge`.
pub fn taps_on(bridge: &str) -> usize {
    let links = ip_json(&["link", "show", "master", bridge]);
    entries(&links)
        .iter()
        .filter(|l| l["ifname"].as_str().is_some_and(|n| n.starts_with("bgtap")))
        .count()
}

/// The MAC the host's neighbour table has for `ip` on `dev`.
pub fn neighbour_mac(ip: &str, dev: &str) -> Option<String> {
    let neigh = ip_json(&["neigh", "show", ip, "dev", dev]);
    entries(&neigh)
        .iter()
        .find_map(|n| n["lladdr"].as_str().map(str::to_string))
}

/// An address of the host's other than on `bridge`: the source of its default route,
/// else any global one.
pub fn other_host_address(bridge: &str) -> String {
    let route = Command::new("ip")
        .args(["-j", "-4", "route", "get", "1.1.1.1"])
        .output();
    if let Ok(out) = route {
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if let Some(src) = entries(&parsed).iter().find_map(|r| r["prefsrc"].as_str()) {
            return src.to_string();
        }
    }
    let addrs = ip_json(&["-4", "addr", "show", "scope", "global"]);
    let other = entries(&addrs)
        .iter()
        .filter(|l| l["ifname"].as_str() != Some(bridge))
        .flat_map(|l| entries(&l["addr_info"]).iter())
        .find_map(|a| a["local"].as_str());
    other
        .expect("the host has no address off the bridge")
        .to_string()
}

/// `dig +short @127.0.0.1 -p PORT NAME`: what the daemon's DNS answers.
pub fn dig(port: u16, name: &str) -> String {
    let port = port.to_string();
    cmd("dig", &["+short", "@127.0.0.1", "-p", &port, name])
        .trim_end()
        .to_string()
}

/// VMM processes (QEMU, Firecracker) with a file open below one of `dirs`: the VMMs of
/// one banger, whatever else runs on the host.
pub fn vmm_pids(dirs: &[&Path]) -> Vec<u32> {
    let Ok(procs) = fs_err::read_dir("/proc") else {
        return vec![];
    };
    let mut pids: Vec<u32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| is_vmm(*pid) && has_open_file_below(*pid, dirs))
        .collect();
    pids.sort_unstable();
    pids
}

fn is_vmm(pid: u32) -> bool {
    let Ok(cmdline) = fs_err::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let name = Path::new(std::ffi::OsStr::from_bytes(argv0))
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.starts_with("qemu-system") || name == "firecracker"
}

fn has_open_file_below(pid: u32, dirs: &[&Path]) -> bool {
    let Ok(fds) = fs_err::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|fd| fs_err::read_link(fd.ok()?.path()).ok())
        .any(|target| dirs.iter().any(|d| target.starts_with(d)))
}
