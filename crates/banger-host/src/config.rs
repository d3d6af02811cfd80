//! Where banger keeps things, and what the user configured.
//!
//! Every directory follows XDG and can be overridden by environment, so a test or a
//! smoke run never touches real user state:
//!
//! | what | root | user | override |
//! |---|---|---|---|
//! | config (`config.toml`) | `/etc/banger` | `$XDG_CONFIG_HOME/banger` | `BANGER_CONFIG_DIR` |
//! | state (`state.db`, images, VM disks) | `/var/lib/banger` | `$XDG_STATE_HOME/banger` | `BANGER_STATE_DIR` |
//! | cache (apt/debootstrap downloads) | `/var/cache/banger` | `$XDG_CACHE_HOME/banger` | `BANGER_CACHE_DIR` |
//! | runtime (sockets, pids) | `/run/banger` | `$XDG_RUNTIME_DIR/banger`, else `<state>/run` | `BANGER_RUNTIME_DIR` |
//! | daemon socket | `<runtime>/bangerd.sock` | same | `BANGER_SOCKET` |
//!
//! A user's runtime directory must be the user's own with mode 0700
//! ([`crate::private_dir`]); there is no shared `/tmp` fallback another user could make
//! first. A non-root CLI uses the system daemon ([`SYSTEM_SOCKET`]) when it answers.

use std::path::{Path, PathBuf};

use banger_wire::api::{Backend, NetMode, NetPolicy};
use serde::{Deserialize, Serialize};

/// The socket of the system daemon (root's `bangerd`).
pub const SYSTEM_SOCKET: &str = "/run/banger/bangerd.sock";

/// Resolved directories of one banger installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub socket: PathBuf,
}

impl Paths {
    /// Resolves paths from the process environment.
    pub fn from_env() -> Paths {
        Paths::resolve(nix::unistd::geteuid().is_root(), &|k| {
            std::env::var_os(k).map(PathBuf::from)
        })
    }

    /// Resolves paths from an explicit environment lookup (hermetic for tests).
    pub fn resolve(is_root: bool, env: &dyn Fn(&str) -> Option<PathBuf>) -> Paths {
        let home = env("HOME").unwrap_or_else(|| PathBuf::from("/root"));
        let xdg = |var: &str, fallback: &str| -> PathBuf {
            env(var)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(fallback))
        };
        let pick = |over: &str, root: &str, user: PathBuf| -> PathBuf {
            env(over).unwrap_or_else(|| if is_root { PathBuf::from(root) } else { user })
        };
        // Root honours explicit XDG variables too, so a root smoke run stays isolated.
        let pick_xdg = |over: &str, var: &str, root: &str, fallback: &str| -> PathBuf {
            env(over)
                .or_else(|| {
                    env(var)
                        .filter(|p| p.is_absolute())
                        .map(|p| p.join("banger"))
                })
                .unwrap_or_else(|| {
                    if is_root {
                        PathBuf::from(root)
                    } else {
                        xdg(var, fallback).join("banger")
                    }
                })
        };
        let config_dir = pick_xdg(
            "BANGER_CONFIG_DIR",
            "XDG_CONFIG_HOME",
            "/etc/banger",
            ".config",
        );
        let state_dir = pick_xdg(
            "BANGER_STATE_DIR",
            "XDG_STATE_HOME",
            "/var/lib/banger",
            ".local/state",
        );
        let cache_dir = pick_xdg(
            "BANGER_CACHE_DIR",
            "XDG_CACHE_HOME",
            "/var/cache/banger",
            ".cache",
        );
        // Root's runtime dir ignores XDG_RUNTIME_DIR (a login sets it to /run/user/0).
        // A user without one gets a directory under their own state dir, never a
        // guessable shared path such as /tmp/banger-<uid>.
        let runtime_dir = pick(
            "BANGER_RUNTIME_DIR",
            "/run/banger",
            env("XDG_RUNTIME_DIR")
                .filter(|p| p.is_absolute())
                .map(|p| p.join("banger"))
                .unwrap_or_else(|| state_dir.join("run")),
        );
        let socket = env("BANGER_SOCKET").unwrap_or_else(|| runtime_dir.join("bangerd.sock"));
        Paths {
            config_dir,
            state_dir,
            cache_dir,
            runtime_dir,
            socket,
        }
    }

    /// All paths under one root; for tests and in-process daemons.
    pub fn under(root: &Path) -> Paths {
        Paths {
            config_dir: root.join("config"),
            state_dir: root.join("state"),
            cache_dir: root.join("cache"),
            runtime_dir: root.join("run"),
            socket: root.join("run/bangerd.sock"),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }
    pub fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }
    /// Per-VM persistent files (writable disk, serial log).
    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.vms_dir().join(id)
    }
    /// Per-VM runtime files (VMM sockets, pid file).
    pub fn vm_runtime_dir(&self, id: &str) -> PathBuf {
        self.runtime_dir.join("vms").join(id)
    }
    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }
    /// Held by the running daemon (see `daemon::lock_state_dir`); free once it is gone.
    pub fn daemon_lock(&self) -> PathBuf {
        self.state_dir.join("bangerd.lock")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.state_dir.join("bangerd.log")
    }
    /// banger's own SSH key pair for `vm ssh`.
    pub fn ssh_key(&self) -> PathBuf {
        self.state_dir.join("ssh").join("id_ed25519")
    }
}

/// `config.toml`. Every field is optional; absent fields take these defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Bridge subnet for VM networking, a /24 inside 172.16.0.0/12.
    pub subnet: Option<String>,
    pub bridge: String,
    pub default_image: String,
    pub vcpu: u32,
    pub memory_mib: u32,
    pub disk_size_mib: u64,
    /// Backend for new VMs; chosen from what the host can run when absent.
    pub backend: Option<Backend>,
    /// Group that owns the daemon socket.
    pub socket_group: String,
    /// Seconds a graceful stop may take before the VMM is killed.
    pub stop_timeout_secs: u64,
    /// Seconds a boot may take until the agent answers.
    pub boot_timeout_secs: u64,
    /// DNS listen address for `<vm>.vm` names.
    pub dns_listen: String,
    /// The first `vm run` of a machine (image, backend, resources, networking) with no
    /// warm snapshot takes one of its fresh VM before the command runs, so later runs
    /// resume instead of booting.
    pub warm_on_first_use: bool,
    /// `isolated` (default): guests reach the internet and the daemon's DNS only;
    /// `open`: also the host and the LAN.
    pub net: NetMode,
    /// The group new VMs join (VMs of one group reach each other).
    pub net_group: Option<String>,
    /// Host ports every new VM may reach on its gateway (`PORT[/udp]`).
    pub allow_host: Vec<String>,
    /// Networks every new VM may reach (`CIDR[:PORT[/udp]]`).
    pub allow: Vec<String>,
    /// When not empty, new VMs reach only these domains (and their subdomains).
    pub egress_allow: Vec<String>,
    /// A running VM's console log (`serial.log`) is kept under this size: the oldest
    /// output goes first.
    pub console_log_max_mib: u64,
    /// Resolvers the DNS server forwards to (`IP` or `IP:PORT`); default: the host's
    /// `/etc/resolv.conf`.
    pub dns_upstreams: Vec<String>,
    /// Most uncompressed MiB an `image import` or `image pull` may unpack.
    pub import_max_mib: u64,
    /// Most archive entries (files, directories, links) an `image import` may unpack.
    pub import_max_entries: u64,
    /// Paused clones of each warm snapshot kept ready, so a warm `vm run` takes one
    /// instead of restoring; 0 turns the pool off.
    pub pool_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            subnet: None,
            bridge: "banger0".into(),
            default_image: "default".into(),
            vcpu: 2,
            memory_mib: 1024,
            disk_size_mib: 4096,
            backend: None,
            socket_group: "banger".into(),
            stop_timeout_secs: 10,
            boot_timeout_secs: 120,
            dns_listen: "127.0.0.1:42069".into(),
            warm_on_first_use: true,
            net: NetMode::Isolated,
            net_group: None,
            allow_host: Vec::new(),
            allow: Vec::new(),
            egress_allow: Vec::new(),
            dns_upstreams: Vec::new(),
            import_max_mib: Limits::default().max_bytes >> 20,
            import_max_entries: Limits::default().max_entries,
            console_log_max_mib: 4,
            pool_size: 2,
        }
    }
}

impl Config {
    /// The caps on image imports and pulls.
    pub fn image_limits(&self) -> Limits {
        Limits {
            max_bytes: self.import_max_mib.saturating_mul(1 << 20),
            max_entries: self.import_max_entries,
        }
    }

    /// The network policy defaults new VMs start from.
    pub fn default_policy(&self) -> NetPolicy {
        NetPolicy {
            mode: Some(self.net),
            group: self.net_group.clone(),
            allow_host: self.allow_host.clone(),
            allow: self.allow.clone(),
            egress_allow: self.egress_allow.clone(),
        }
    }
}

/// Caps on what one `image import` or `image pull` may unpack (`import_max_mib` and
/// `import_max_entries` in `config.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Uncompressed bytes: of the tar streams unpacked into one tree, of the file data
    /// they write (sparse files at their full size), and of a pulled bundle's files.
    pub max_bytes: u64,
    /// Entries of the tar streams unpacked into one tree.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 16 << 30,
            max_entries: 1_000_000,
        }
    }
}

/// Failure to read `config.toml`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

impl Config {
    /// Loads `config.toml`; a missing file means all defaults.
    pub fn load(paths: &Paths) -> Result<Config, ConfigError> {
        let path = paths.config_file();
        match fs_err::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<PathBuf> {
        let map: HashMap<String, PathBuf> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn root_uses_system_dirs() {
        let p = Paths::resolve(true, &env_of(&[("HOME", "/root")]));
        assert_eq!(p.state_dir, PathBuf::from("/var/lib/banger"));
        assert_eq!(p.socket, PathBuf::from("/run/banger/bangerd.sock"));
        assert_eq!(p.db(), PathBuf::from("/var/lib/banger/state.db"));
    }

    #[test]
    fn user_follows_xdg() {
        let p = Paths::resolve(
            false,
            &env_of(&[("HOME", "/home/u"), ("XDG_RUNTIME_DIR", "/run/user/1000")]),
        );
        assert_eq!(p.state_dir, PathBuf::from("/home/u/.local/state/banger"));
        assert_eq!(p.config_dir, PathBuf::from("/home/u/.config/banger"));
        assert_eq!(
            p.socket,
            PathBuf::from("/run/user/1000/banger/bangerd.sock")
        );
    }

    #[test]
    fn user_without_xdg_runtime_dir_stays_under_their_own_state_dir() {
        let p = Paths::resolve(false, &env_of(&[("HOME", "/home/u")]));
        assert_eq!(
            p.runtime_dir,
            PathBuf::from("/home/u/.local/state/banger/run")
        );
        assert_eq!(
            p.socket,
            PathBuf::from("/home/u/.local/state/banger/run/bangerd.sock")
        );
    }

    #[test]
    fn overrides_win() {
        let p = Paths::resolve(
            true,
            &env_of(&[
                ("BANGER_STATE_DIR", "/tmp/s"),
                ("BANGER_SOCKET", "/tmp/x.sock"),
            ]),
        );
        assert_eq!(p.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(p.socket, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn root_with_explicit_xdg_state_is_isolated() {
        let p = Paths::resolve(true, &env_of(&[("XDG_STATE_HOME", "/tmp/smoke/state")]));
        assert_eq!(p.state_dir, PathBuf::from("/tmp/smoke/state/banger"));
    }

    #[test]
    fn import_limits_have_defaults_and_can_be_set() {
        let set: Config = toml::from_str("import_max_mib = 2\nimport_max_entries = 5").unwrap();

        assert_eq!(
            Config::default().image_limits(),
            Limits {
                max_bytes: 16 << 30,
                max_entries: 1_000_000
            }
        );
        assert_eq!(
            set.image_limits(),
            Limits {
                max_bytes: 2 << 20,
                max_entries: 5
            }
        );
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let err = toml::from_str::<Config>("vcpus = 4").unwrap_err();
        assert!(err.to_string().contains("vcpus"), "{err}");
    }
}
