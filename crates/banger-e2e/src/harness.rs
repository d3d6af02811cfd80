//! One [`Harness`] per test binary run: the turn on the host, isolated dirs, the daemon.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

use banger_wire::api::VmInfo;

use crate::out::{run, Out};

/// The bridge and default DNS port of the smoke config, away from a real banger's.
pub const BRIDGE: &str = "bgsmoke0";
const DEFAULT_DNS_PORT: u16 = 42079;
const DEFAULT_LOCK: &str = "/tmp/banger-smoke.lock";

/// Deletes what the run left, stops its daemon, removes its run dir, and only then gives
/// the turn back: it runs once its stdin closes, that is when the test binary exits,
/// however it exits. `$0` is the `banger` binary, `$1` the run dir.
const REAPER: &str = r#"echo locked
read -r _ || true
for vm in $("$0" vm list 2>/dev/null | awk 'NR > 1 {print $1}'); do
  "$0" vm delete "$vm" >/dev/null 2>&1 || true
done
"$0" daemon stop >/dev/null 2>&1 || true
rm -rf "$1""#;

/// The run's banger: binaries, dirs and config, and the daemon it started.
pub struct Harness {
    bin: PathBuf,
    /// `BANGER_STATE_DIR`: the smoke state, shared with `scripts/smoke.sh` runs.
    pub state_dir: PathBuf,
    /// `BANGER_CACHE_DIR`.
    pub cache_dir: PathBuf,
    config_dir: PathBuf,
    /// A fresh dir for this run: config, runtime dir, and scratch space for tests.
    pub run_dir: PathBuf,
    /// `BANGER_RUNTIME_DIR`.
    pub runtime_dir: PathBuf,
    /// `BANGER_SOCKET`.
    pub socket: PathBuf,
    /// The daemon's `dns_listen` port on 127.0.0.1.
    pub dns_port: u16,
    /// The smoke config as the run started; [`Harness::with_config`] changes it.
    config: String,
    /// Suffix that makes the run's VM names its own.
    tag: String,
    /// The reaper's stdin: closed by the exit of this process.
    _reaper: Option<ChildStdin>,
}

enum Setup {
    Ready(Harness),
    Skip(String),
    Broken(String),
}

static SETUP: OnceLock<Setup> = OnceLock::new();
static TURN: Mutex<()> = Mutex::new(());

/// A test's hold on the harness: tests share the host, so they run one at a time.
/// Dropped, it reports how long the test took.
pub struct Turn {
    harness: &'static Harness,
    started: Instant,
    _turn: MutexGuard<'static, ()>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Straight to stderr, past the test harness's capture, before its `ok`/`FAILED`.
        let took = format!("({:.1}s) ", self.started.elapsed().as_secs_f64());
        let _ = std::io::stderr().write_all(took.as_bytes());
    }
}

impl Deref for Turn {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        self.harness
    }
}

/// The harness for `test`, or `None` (with the reason on stderr) when this host cannot
/// run VMs. Panics when the set-up fails on a host that can.
pub fn turn(test: &str) -> Option<Turn> {
    let guard = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    match SETUP.get_or_init(setup) {
        Setup::Skip(reason) => {
            note(&format!("skipping {test}: {reason}"));
            None
        }
        Setup::Broken(err) => panic!("e2e set-up failed: {err}"),
        Setup::Ready(harness) => Some(Turn {
            harness,
            started: Instant::now(),
            _turn: guard,
        }),
    }
}

fn setup() -> Setup {
    let Some(bin) = std::env::var_os("BANGER_E2E_BIN") else {
        return Setup::Skip(
            "BANGER_E2E_BIN is not set (`make e2e` builds the binaries and runs these)".into(),
        );
    };
    if !nix::unistd::geteuid().is_root() {
        return Setup::Skip("needs root (bridge, taps, nftables)".into());
    }
    let backend = std::env::var("BANGER_SMOKE_BACKEND").ok();
    let vmm = match backend.as_deref() {
        Some("firecracker") => "firecracker",
        _ => "qemu-system-x86_64",
    };
    if !on_path(vmm) {
        return Setup::Skip(format!("no {vmm} on PATH"));
    }
    match Harness::start(PathBuf::from(bin), backend.as_deref()) {
        Ok(h) => Setup::Ready(h),
        Err(e) => Setup::Broken(e),
    }
}

/// A line on stderr, past the test harness's capture: set-up progress and skip reasons
/// show even for tests that pass.
pub(crate) fn note(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(name).is_file())
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Harness {
    fn start(bin: PathBuf, backend: Option<&str>) -> Result<Harness, String> {
        for b in ["banger", "bangerd", "banger-agent"] {
            if !bin.join(b).is_file() {
                return Err(format!(
                    "{} is missing (make e2e builds it)",
                    bin.join(b).display()
                ));
            }
        }
        let home = match std::env::var_os("BANGER_SMOKE_HOME") {
            Some(h) => PathBuf::from(h),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .nth(2)
                .ok_or("the crate is not in a workspace")?
                .join("target/smoke"),
        };
        let run_dir = tempfile::Builder::new()
            .prefix("banger-e2e.")
            .tempdir_in("/tmp")
            .map_err(io("create the run dir"))?
            .keep();
        let dns_port = match std::env::var("BANGER_SMOKE_DNS_PORT") {
            Ok(p) => p
                .parse()
                .map_err(|e| format!("BANGER_SMOKE_DNS_PORT {p:?}: {e}"))?,
            Err(_) => DEFAULT_DNS_PORT,
        };
        // Guests boot under software emulation here: give them room. Scenarios boot cold,
        // and no pool runs clones beside them unless a test sizes one (`image warm --pool`).
        let mut config = String::new();
        if let Some(b) = backend {
            config.push_str(&format!("backend = \"{b}\"\n"));
        }
        config.push_str(&format!(
            "bridge = \"{BRIDGE}\"\ndns_listen = \"127.0.0.1:{dns_port}\"\nmemory_mib = 512\n\
             disk_size_mib = 1024\nboot_timeout_secs = 180\nwarm_on_first_use = false\n\
             pool_size = 0\n"
        ));
        let mut h = Harness {
            bin,
            state_dir: home.join("state"),
            cache_dir: home.join("cache"),
            config_dir: run_dir.join("config"),
            runtime_dir: run_dir.join("run"),
            socket: run_dir.join("run/bangerd.sock"),
            run_dir,
            dns_port,
            config,
            tag: format!("{:04x}", std::process::id() & 0xffff),
            _reaper: None,
        };
        for d in [&h.state_dir, &h.cache_dir, &h.config_dir] {
            fs_err::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        h.write_config(&h.config)?;
        h._reaper = Some(h.take_turn()?);
        note(&format!(
            "e2e: state in {}, runtime in {}",
            h.state_dir.display(),
            h.run_dir.display()
        ));
        h.bring_up()?;
        Ok(h)
    }

    /// Waits for the host-wide smoke turn (the lock `scripts/take-turn.sh` takes), held
    /// by a reaper process until it has cleaned up after this one.
    fn take_turn(&self) -> Result<ChildStdin, String> {
        let lock = std::env::var("BANGER_SMOKE_LOCK").unwrap_or_else(|_| DEFAULT_LOCK.into());
        let wait = std::env::var("BANGER_SMOKE_WAIT_SECS").unwrap_or_else(|_| "3600".into());
        let mut reaper = if std::env::var("BANGER_SMOKE_LOCKED").ok() == Some(lock.clone()) {
            Command::new("sh")
        } else {
            let free = Command::new("flock").args(["-n", &lock, "true"]).status();
            if !free.map_err(io("run flock"))?.success() {
                note("e2e: a smoke run or benchmark is running on this host; waiting for it");
            }
            let mut c = Command::new("flock");
            c.args(["-o", "-w", &wait, &lock, "sh"]);
            c
        };
        self.env(&mut reaper);
        reaper
            .arg("-c")
            .arg(REAPER)
            .arg(self.bin.join("banger"))
            .arg(&self.run_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = reaper.spawn().map_err(io("spawn the reaper"))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(io("read the reaper"))?;
        }
        if line.trim() != "locked" {
            return Err(format!("no smoke turn on {lock} within {wait}s"));
        }
        child
            .stdin
            .take()
            .ok_or_else(|| "the reaper has no stdin".into())
    }

    fn bring_up(&self) -> Result<(), String> {
        let doctor = self.banger(&["doctor"]);
        if doctor.code != 0 {
            return Err(format!("banger doctor reports a FAIL:\n{}", doctor.text()));
        }
        let start = self.banger(&["daemon", "start"]);
        if start.code != 0 {
            return Err(format!("banger daemon start: {}", start.stderr));
        }
        // A run killed outright leaves its VMs in the shared state; the daemon adopted them.
        let list = self.banger(&["vm", "list", "--json"]);
        let vms: Vec<VmInfo> = serde_json::from_slice(&list.stdout)
            .map_err(|e| format!("banger vm list --json: {e}: {}", list.stderr))?;
        for vm in vms {
            note(&format!(
                "e2e: deleting {}, left by an earlier run",
                vm.name
            ));
            self.banger(&["vm", "delete", &vm.name]);
        }
        let t0 = Instant::now();
        // Its progress shows as it goes: the first build takes minutes.
        let built = self
            .command()
            .args(["image", "build"])
            .stdout(Stdio::null())
            .status()
            .map_err(io("run banger image build"))?;
        if !built.success() {
            return Err(format!("banger image build failed ({built})"));
        }
        note(&format!("e2e: image ready in {}s", t0.elapsed().as_secs()));
        Ok(())
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("BANGER_STATE_DIR", &self.state_dir)
            .env("BANGER_CACHE_DIR", &self.cache_dir)
            .env("BANGER_CONFIG_DIR", &self.config_dir)
            .env("BANGER_RUNTIME_DIR", &self.runtime_dir)
            .env("BANGER_SOCKET", &self.socket)
            .env("BANGER_DAEMON", self.bin.join("bangerd"))
            .env("BANGER_AGENT", self.bin.join("banger-agent"))
            .env("NO_COLOR", "1");
    }

    fn write_config(&self, text: &str) -> Result<(), String> {
        fs_err::write(self.config_dir.join("config.toml"), text).map_err(|e| e.to_string())
    }

    /// `banger` with the run's environment; stdin is empty unless the caller sets it.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("banger"));
        self.env(&mut cmd);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `banger ARGS` and returns its exit code and output, whatever they are.
    pub fn banger<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        let mut cmd = self.command();
        cmd.args(args);
        let what = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        run(cmd, &format!("banger {what}"))
    }

    /// Runs `banger ARGS`, fails the test unless it succeeds, and returns its stdout.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        self.banger(args).success().text()
    }

    /// `banger vm list --json`.
    pub fn vms(&self) -> Vec<VmInfo> {
        let out = self.banger(&["vm", "list", "--json"]).success();
        serde_json::from_slice(&out.stdout).expect("vm list --json is a list of VmInfo")
    }

    /// Waits up to `limit` for VM `name` to be gone from `vm list`; how long it took.
    pub fn gone_within(
        &self,
        name: &str,
        limit: std::time::Duration,
    ) -> Option<std::time::Duration> {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < limit {
            if !self.vms().iter().any(|v| v.name == name) {
                return Some(t0.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        None
    }

    /// `banger vm show NAME --json`.
    pub fn show(&self, name: &str) -> VmInfo {
        let out = self.banger(&["vm", "show", name, "--json"]).success();
        serde_json::from_slice(&out.stdout).expect("vm show --json is a VmInfo")
    }

    /// The daemon's public HTTP API (`/api/v1`).
    pub fn api(&self) -> crate::http::Api {
        crate::http::Api {
            socket: self.socket.clone(),
        }
    }

    /// `base` with the run's suffix: a VM name no other run uses.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.tag)
    }

    /// Stops the daemon and starts it again (with the config as it is now).
    pub fn restart_daemon(&self) {
        self.banger(&["daemon", "stop"]);
        self.ok(&["daemon", "start"]);
    }

    /// Sets `extra`'s keys in the run's config (over its own) and restarts the daemon
    /// with it; the config is restored and the daemon restarted again when the guard
    /// drops.
    pub fn with_config(&self, extra: &str) -> ConfigGuard<'_> {
        let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
        let set: Vec<String> = extra.lines().map(key).collect();
        let kept: String = self
            .config
            .lines()
            .filter(|l| !set.contains(&key(l)))
            .map(|l| format!("{l}\n"))
            .collect();
        self.write_config(&format!("{kept}{extra}\n"))
            .expect("write the config");
        self.restart_daemon();
        ConfigGuard { h: self }
    }
}

/// See [`Harness::with_config`].
pub struct ConfigGuard<'h> {
    h: &'h Harness,
}

impl Drop for ConfigGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.h.write_config(&self.h.config) {
            note(&format!("e2e: restoring the config: {e}"));
        }
        self.h.banger(&["daemon", "stop"]);
        self.h.banger(&["daemon", "start"]);
    }
}
