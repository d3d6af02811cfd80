//! The CLI ⇄ `bangerd` API: HTTP+JSON over a Unix socket.
//!
//! Every verb is one variant of [`Request`], POSTed as JSON to [`RPC_PATH`]. A plain
//! answer is a [`Response`]; a failure is a [`crate::WireError`] with a non-2xx status.
//! Long-running verbs (image build, `vm logs -f`) answer with newline-delimited
//! [`StreamEvent`]s. `vm exec` upgrades the HTTP connection on [`EXEC_PATH`] and then
//! carries [`crate::agent::HostFrame`] / [`crate::agent::GuestFrame`] frames.

use serde::{Deserialize, Serialize};

use crate::agent::{DetachedInfo, ExecSpec};
use crate::user::GuestUser;

/// Version prefix of every route. Bumped only on a breaking change.
pub const API_VERSION: &str = "v1";
/// Route for every [`Request`].
pub const RPC_PATH: &str = "/v1/rpc";
/// Route for the upgraded exec stream; the body is an [`ExecRequest`].
pub const EXEC_PATH: &str = "/v1/exec";
/// Route for the upgraded stream of a detached command's output (`vm logs --exec`);
/// the body is an [`ExecOutputRequest`], the frames are those of
/// [`crate::agent::AgentRequest::DetachedOutput`].
pub const EXEC_OUTPUT_PATH: &str = "/v1/exec/output";
/// Protocol name in the `Upgrade:` header of an exec request.
pub const EXEC_UPGRADE_PROTOCOL: &str = "banger-exec/1";
/// Route for a [`Request`] whose input is the request body ([`Request::ImageImport`]);
/// the request itself is the JSON in the [`REQUEST_HEADER`] header.
pub const UPLOAD_PATH: &str = "/v1/upload";
/// Header carrying the JSON [`Request`] of an [`UPLOAD_PATH`] request.
pub const REQUEST_HEADER: &str = "x-banger-request";

/// The VMM that runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Backend {
    Firecracker,
    Qemu,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Firecracker => "firecracker",
            Backend::Qemu => "qemu",
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "firecracker" => Ok(Backend::Firecracker),
            "qemu" => Ok(Backend::Qemu),
            other => Err(format!(
                "unknown backend {other:?} (expected firecracker or qemu)"
            )),
        }
    }
}

/// An image's own pool size (`image warm --pool N|default`): `N` paused clones, or
/// back to the daemon's `pool_size`. On the wire a number or the string `"default"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSize {
    Clones(u32),
    Default,
}

impl PoolSize {
    /// The size the store keeps for the image: none for the daemon's default.
    pub fn own(self) -> Option<u32> {
        match self {
            PoolSize::Clones(n) => Some(n),
            PoolSize::Default => None,
        }
    }
}

impl std::str::FromStr for PoolSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(PoolSize::Default),
            n => n
                .parse()
                .map(PoolSize::Clones)
                .map_err(|_| format!("pool {n:?} is neither a number of clones nor \"default\"")),
        }
    }
}

impl Serialize for PoolSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PoolSize::Clones(n) => s.serialize_u32(*n),
            PoolSize::Default => s.serialize_str("default"),
        }
    }
}

impl<'de> Deserialize<'de> for PoolSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, Unexpected, Visitor};
        struct Size;
        impl Visitor<'_> for Size {
            type Value = PoolSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of clones or \"default\"")
            }
            fn visit_u64<E: Error>(self, n: u64) -> Result<PoolSize, E> {
                u32::try_from(n)
                    .map(PoolSize::Clones)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(n), &self))
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<PoolSize, E> {
                match s {
                    "default" => Ok(PoolSize::Default),
                    _ => Err(E::invalid_value(Unexpected::Str(s), &self)),
                }
            }
        }
        d.deserialize_any(Size)
    }
}

/// A number of clones up to 64, or `"default"`.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for PoolSize {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(64)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["default"])),
            )
            .description(Some(
                "paused clones kept ready, or \"default\": the daemon's `pool_size`",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for PoolSize {}

/// Lifecycle state of a VM as recorded in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum VmState {
    /// Created, never started or cleanly stopped.
    Stopped,
    /// VMM launched, agent not ready yet.
    Starting,
    /// Agent answered.
    Running,
    /// Graceful stop in progress.
    Stopping,
    /// The VMM exited without being asked to.
    Crashed,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Stopped => "stopped",
            VmState::Starting => "starting",
            VmState::Running => "running",
            VmState::Stopping => "stopping",
            VmState::Crashed => "crashed",
        }
    }

    pub fn parse(s: &str) -> Option<VmState> {
        Some(match s {
            "stopped" => VmState::Stopped,
            "starting" => VmState::Starting,
            "running" => VmState::Running,
            "stopping" => VmState::Stopping,
            "crashed" => VmState::Crashed,
            _ => return None,
        })
    }
}

/// What `vm create` asks for. Unset fields take the daemon's configured defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmCreateSpec {
    /// DNS label; generated when absent.
    pub name: Option<String>,
    pub image: Option<String>,
    pub vcpu: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_size_mib: Option<u64>,
    pub backend: Option<Backend>,
    /// Create the VM but leave it stopped.
    #[serde(default)]
    pub no_start: bool,
    /// Do not give the VM a network interface.
    #[serde(default)]
    pub no_network: bool,
    /// Host ports forwarded to the guest: `HOST:GUEST` or `HOST:GUEST/udp`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// What the guest may reach, on top of the daemon's configured defaults.
    #[serde(default)]
    pub policy: NetPolicy,
    /// Clone this snapshot instead of booting: the VM resumes where the snapshotted
    /// one was, with its own disk, address and agent token. Image, backend, vcpu,
    /// memory and networking come from the snapshot.
    #[serde(default)]
    pub from_snapshot: Option<String>,
    /// Resume the image's warm snapshot (see [`Request::ImageWarm`]) instead of
    /// booting, when one was made for this machine (image, backend, vcpu, memory,
    /// disk size, networking); boot as usual otherwise.
    #[serde(default)]
    pub warm: bool,
    /// The caller only runs commands through the agent (`vm run`, MCP): answer once the
    /// agent is up. Otherwise the answer waits until the guest's sshd accepts
    /// connections, so an `ssh` right after `vm create` works.
    #[serde(default)]
    pub exec_only: bool,
    /// A throwaway VM (`vm run --rm`, MCP runs): a daemon that restarts deletes it, as
    /// the command it served died with the daemon's exec relay.
    #[serde(default)]
    pub ephemeral: bool,
    /// Delete the VM this many seconds after its create finished (also across daemon
    /// restarts).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// `NAME[:UID]`: the user the VM's commands run as unless one names another
    /// (created in the guest on first use); root when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "dev", pattern = "^[a-z_][a-z0-9_-]{0,31}(:[0-9]{1,5})?$"))]
    pub user: Option<GuestUser>,
    /// A warm create restores a clone of the warm snapshot itself instead of taking a
    /// paused one from the daemon's pool.
    #[serde(default)]
    pub no_pool: bool,
    /// Delete the VM once nothing has used it for this many seconds: no exec, copy,
    /// workspace or detached command running, no request naming it (see docs).
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
}

/// Changes for `vm set`; only on a stopped VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSetSpec {
    pub vcpu: Option<u32>,
    pub memory_mib: Option<u32>,
    pub disk_size_mib: Option<u64>,
    /// Network policy changes; each given field replaces the VM's.
    #[serde(default)]
    pub policy: NetPolicyChange,
}

/// Whether a guest is confined to the default policy or may reach the host and LAN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NetMode {
    /// The internet through NAT, the daemon's DNS, and what the policy allows.
    #[default]
    Isolated,
    /// Every host service, the LAN and other open VMs (banger's behaviour before
    /// isolation). Other VMs' isolation still holds.
    Open,
}

impl NetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetMode::Isolated => "isolated",
            NetMode::Open => "open",
        }
    }
}

impl std::str::FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "isolated" => Ok(NetMode::Isolated),
            "open" => Ok(NetMode::Open),
            other => Err(format!(
                "unknown network mode {other:?} (expected isolated or open)"
            )),
        }
    }
}

/// What a guest may reach beyond NAT to the internet and the daemon's DNS. The host
/// enforces it; nothing of it is inside the guest, so snapshots serve any policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetPolicy {
    /// `None` takes the configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<NetMode>,
    /// VMs in one group reach each other, by address and by `<name>.vm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Host ports on the gateway address: `PORT` or `PORT/udp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_host: Vec<String>,
    /// Networks beyond the host: `CIDR`, `CIDR:PORT` or `CIDR:PORT/udp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// When not empty, egress is limited to the addresses the daemon's DNS resolved for
    /// these domains and their subdomains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_allow: Vec<String>,
}

/// `vm set`'s network changes: each `Some` replaces that part of the policy (an empty
/// group or list clears it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPolicyChange {
    pub mode: Option<NetMode>,
    pub group: Option<String>,
    pub allow_host: Option<Vec<String>>,
    pub allow: Option<Vec<String>>,
    pub egress_allow: Option<Vec<String>>,
}

impl NetPolicyChange {
    pub fn is_empty(&self) -> bool {
        *self == NetPolicyChange::default()
    }
}

/// Boot timings of the last start, in milliseconds from the VMM spawn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BootTimings {
    /// banger's own work before the VMM was spawned (disks, config).
    pub prepare_ms: u64,
    /// VMM spawn until the guest agent said hello.
    pub agent_ready_ms: u64,
}

/// A VM as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VmInfo {
    pub id: String,
    pub name: String,
    pub state: VmState,
    pub backend: Backend,
    pub image: String,
    pub vcpu: u32,
    pub memory_mib: u32,
    pub disk_size_mib: u64,
    pub ip: Option<String>,
    pub pid: Option<u32>,
    /// RFC 3339 creation time.
    pub created_at: String,
    pub boot: Option<BootTimings>,
    /// Why the VM last crashed: the exit status and the tail of the VMM log.
    pub last_error: Option<String>,
    /// What the guest may reach (absent without a network).
    #[serde(default)]
    pub policy: Option<NetPolicy>,
    /// RFC 3339 time at which the daemon deletes the VM (`--ttl`).
    #[serde(default)]
    pub expires_at: Option<String>,
    /// The user its commands run as by default (`NAME[:UID]`); root when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub user: Option<GuestUser>,
    /// The daemon deletes the VM once unused for this many seconds (`--idle-timeout`).
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
}

/// A snapshot of a running VM: its memory, devices and writable disk at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotInfo {
    pub id: String,
    pub name: String,
    /// The VM it was taken of (which may have been deleted since).
    pub vm: String,
    pub image: String,
    pub backend: Backend,
    pub vcpu: u32,
    pub memory_mib: u32,
    pub disk_size_mib: u64,
    pub no_network: bool,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Bytes its files take on disk.
    pub disk_bytes: u64,
    /// How long the VM was paused to take it.
    pub paused_ms: u64,
    /// Whether it is an image's warm snapshot (a booted guest for `vm run`).
    pub warm: bool,
}

/// An image as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageInfo {
    pub name: String,
    /// sha256 of the image manifest: identifies the exact kernel, initrd and rootfs.
    pub digest: String,
    pub created_at: String,
    pub rootfs_bytes: u64,
    /// Where the image came from: `build:<suite>`, `import:<path>`, `pull:<url>`,
    /// `registry:<reference>@<digest>`.
    pub source: String,
    pub dir: String,
    /// What a container image's config asks of a run (`image pull` from a registry).
    #[serde(default)]
    pub run: ImageRunConfig,
    /// What the image lacks that banger can use: `sshd` (no `vm ssh`), `shell` (no
    /// `/bin/sh`: workspaces and `vm cp` need one).
    #[serde(default)]
    pub lacks: Vec<String>,
    /// The pool size the image set for itself (`image warm --pool N`); the config's
    /// `pool_size` when absent.
    #[serde(default)]
    pub pool_size: Option<u32>,
}

/// The run settings of a container image's config: `vm run` with no command runs
/// `entrypoint` + `cmd`; `env` and `working_dir` are every exec's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImageRunConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    pub working_dir: Option<String>,
}

impl ImageRunConfig {
    /// The command a run with no command of its own runs: entrypoint, then cmd.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// A registry login, as the CLI found it in the caller's own docker config (the
/// daemon reads no user's files). Never printed: its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// `image pull REF` from an OCI registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryPullSpec {
    /// `python:3.12`, `docker.io/library/node:22`, `ghcr.io/org/img@sha256:…`,
    /// `localhost:5000/x:1`.
    pub reference: String,
    /// The image's name (default: [`crate::reference::local_name`] of the reference).
    pub name: Option<String>,
    /// Plain HTTP, or HTTPS with any certificate (local registries).
    #[serde(default)]
    pub insecure: bool,
    /// Anonymous (with the registry's bearer tokens) when absent.
    #[serde(default)]
    pub credentials: Option<RegistryCredentials>,
}

/// What [`Request::ImagePullRegistry`] made, and which layers it had to download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegistryPullReport {
    pub image: ImageInfo,
    pub reference: String,
    /// The digest of the linux/amd64 image manifest.
    pub manifest_digest: String,
    pub layers: Vec<PulledLayer>,
}

/// One layer of a pulled image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PulledLayer {
    pub digest: String,
    pub bytes: u64,
    /// Found in the layer cache (not downloaded).
    pub cached: bool,
}

/// `image build` inputs. The same inputs give the same image, and a rebuild is a no-op.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageBuildSpec {
    pub name: Option<String>,
    pub suite: Option<String>,
    #[serde(default)]
    pub packages: Vec<String>,
    pub size_mib: Option<u64>,
    pub mirror: Option<String>,
    /// Path of the guest agent binary to install; the daemon finds it when absent.
    pub agent_path: Option<String>,
    /// Rebuild even when an image with these inputs exists.
    #[serde(default)]
    pub force: bool,
    /// A user to create in the image, with a home.
    #[serde(default)]
    pub user: Option<GuestUser>,
    /// Give `user` passwordless sudo (installs the `sudo` package).
    #[serde(default)]
    pub sudo: bool,
}

/// One request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    DaemonStatus,
    DaemonShutdown,
    VmCreate {
        spec: VmCreateSpec,
    },
    VmStart {
        name: String,
    },
    VmStop {
        name: String,
        force: bool,
    },
    VmRestart {
        name: String,
    },
    VmDelete {
        name: String,
        force: bool,
        /// Answer once the delete is under way instead of done (`vm run --rm`: the
        /// user waits for the command, not for the cleanup). An ephemeral VM whose
        /// delete a crash cut short is deleted by the next daemon.
        #[serde(default)]
        detach: bool,
    },
    VmList,
    VmShow {
        name: String,
    },
    VmSet {
        name: String,
        spec: VmSetSpec,
    },
    /// Answers with a stream of [`StreamEvent::Log`] chunks; ends at EOF unless `follow`.
    VmLogs {
        name: String,
        follow: bool,
    },
    ImageList,
    ImageShow {
        name: String,
    },
    ImageDelete {
        name: String,
    },
    /// Answers with a stream of [`StreamEvent::Progress`] and a final image.
    ImageBuild {
        spec: ImageBuildSpec,
    },
    /// Imports the body of an [`UPLOAD_PATH`] request: a rootfs tarball (plain or
    /// gzip), a `docker save` archive or an OCI layout as a tarball (the CLI reads the
    /// user's file or tars the user's directory, with the user's permissions).
    /// `source` only names it (the path the user gave); the daemon never opens it.
    /// Streams progress.
    ImageImport {
        source: String,
        name: Option<String>,
    },
    /// Fetches and verifies a published image bundle. Streams progress. A URL that is
    /// not http(s) names a path on the daemon's host: root callers only.
    ImagePull {
        url: String,
        name: Option<String>,
    },
    /// Pulls an image from an OCI registry (layers through the layer cache). Streams
    /// progress (phase `layer`, one bar per layer digest) and ends with
    /// [`Response::Pulled`].
    ImagePullRegistry {
        spec: RegistryPullSpec,
    },
    /// Answers with the raw bytes of one file of image `name`'s bundle: `file` is
    /// `manifest.json` (sent as is) or an image file (sent gzip-compressed, for
    /// `<file>.gz`). Refused when the image's digest is no longer `digest`, so the
    /// files of one export belong together. The CLI writes them where the user asked.
    ImageExportFile {
        name: String,
        digest: String,
        file: String,
    },
    /// Snapshots a running VM (it pauses for the copy, then runs on).
    VmSnapshot {
        vm: String,
        /// Generated from the VM's name when absent.
        name: Option<String>,
    },
    SnapshotList,
    SnapshotDelete {
        name: String,
    },
    /// Boots a VM of `spec`'s machine, waits until the guest has settled, and keeps a
    /// snapshot of it that warm creates resume; replaces an earlier one.
    ImageWarm {
        spec: VmCreateSpec,
        /// Sets the image's own pool size (0: no pool; `Default`: the daemon's); with a
        /// warm snapshot of the machine already there, only the pool changes (at once).
        #[serde(default)]
        pool: Option<PoolSize>,
    },
    /// Deletes stopped VMs, every snapshot that is not an image's warm snapshot, and
    /// the images (with their warm snapshots) no VM or snapshot left uses, except the
    /// configured default image. `dry_run`: only say what would go.
    Prune {
        dry_run: bool,
    },
    /// Adds a port forward `HOST:GUEST[/tcp|/udp]` to a VM, kept with it; on a running
    /// VM it answers at once. Answers the VM's forwards.
    VmPortAdd {
        name: String,
        port: String,
    },
    /// Removes the VM's forward of `HOST[:GUEST][/tcp|/udp]`. Answers the VM's forwards.
    VmPortRemove {
        name: String,
        port: String,
    },
    /// Answers the VM's port forwards.
    VmPortList {
        name: String,
    },
    /// Starts `spec` in the guest detached from any stream (`vm exec -d`); answers
    /// [`Response::Detached`] once it runs.
    VmExecDetach {
        name: String,
        spec: ExecSpec,
    },
    /// The VM's detached commands (`vm ps`): [`Response::DetachedList`].
    VmPs {
        name: String,
    },
    /// Signals a detached command's process group (`vm kill`): [`Response::Detached`].
    VmKill {
        name: String,
        id: String,
        signal: i32,
    },
}

impl Request {
    /// Whether the answer is a [`StreamEvent`] stream rather than one [`Response`].
    pub fn is_streaming(&self) -> bool {
        matches!(
            self,
            Request::VmLogs { .. }
                | Request::ImageBuild { .. }
                | Request::ImageImport { .. }
                | Request::ImagePull { .. }
                | Request::ImagePullRegistry { .. }
        )
    }

    /// Whether the answer is raw bytes (a 2xx body) rather than JSON.
    pub fn is_download(&self) -> bool {
        matches!(self, Request::ImageExportFile { .. })
    }
}

/// Daemon facts for `daemon status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DaemonInfo {
    pub version: String,
    pub pid: u32,
    pub socket: String,
    pub state_dir: String,
    pub uptime_secs: u64,
    pub vms_running: u32,
    pub vms_total: u32,
    /// Paused clones kept ready by the hot pool (not among `vms_total`).
    #[serde(default)]
    pub pool_vms: u32,
    /// The memory they take: the sum of their VMMs' PSS, in KiB.
    #[serde(default)]
    pub pool_pss_kib: u64,
    /// The warm snapshots' memory held for their clones to share, in KiB.
    #[serde(default)]
    pub pool_shared_kib: u64,
    /// Each pool: one per warm machine and network policy.
    #[serde(default)]
    pub pools: Vec<PoolInfo>,
}

/// One pool of paused clones of a warm snapshot, as `daemon status` and `doctor` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolInfo {
    pub image: String,
    pub backend: Backend,
    pub vcpu: u32,
    pub memory_mib: u32,
    /// Whether it serves creates with a network policy of their own.
    pub custom_policy: bool,
    /// Clones restored, paused and ready to be taken.
    pub ready: u32,
    /// How many it keeps: the image's pool size, else the config's `pool_size`.
    pub target: u32,
    /// The memory its clones take: the sum of their VMMs' PSS, in KiB.
    pub pss_kib: u64,
    /// Its last refill stopped short to keep the host's memory available.
    pub short_of_memory: bool,
    /// Refills that failed in a row, and the last one's error.
    pub refill_failures: u32,
    pub last_error: Option<String>,
}

impl PoolInfo {
    /// The machine it serves, for people: `default (qemu, 2 vcpu, 1024 MiB)`.
    pub fn machine(&self) -> String {
        let policy = if self.custom_policy {
            ", own network policy"
        } else {
            ""
        };
        format!(
            "{} ({}, {} vcpu, {} MiB{policy})",
            self.image,
            self.backend.as_str(),
            self.vcpu,
            self.memory_mib
        )
    }
}

/// One successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Response {
    Pong,
    Ok,
    Daemon(DaemonInfo),
    Vm(VmInfo),
    Vms(Vec<VmInfo>),
    Image(ImageInfo),
    Images(Vec<ImageInfo>),
    Snapshot(SnapshotInfo),
    Snapshots(Vec<SnapshotInfo>),
    Pruned(PruneReport),
    Pulled(RegistryPullReport),
    Ports(Vec<PortInfo>),
    Detached(DetachedInfo),
    DetachedList(Vec<DetachedInfo>),
}

/// One port forward of a VM: the host's port `host` (on every host address, 127.0.0.1
/// included) reaches the guest's port `guest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PortInfo {
    pub host: u16,
    pub guest: u16,
    pub proto: PortProto,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum PortProto {
    #[default]
    Tcp,
    Udp,
}

impl PortProto {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        }
    }
}

/// What [`Request::Prune`] removed (or, in a dry run, would remove), by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub vms: Vec<String>,
    pub snapshots: Vec<String>,
    pub images: Vec<String>,
    /// What could not be removed, and why (e.g. a VM started meanwhile).
    #[serde(default)]
    pub failed: Vec<String>,
    /// Digests of the cached registry layers no image uses any more.
    #[serde(default)]
    pub layers: Vec<String>,
}

/// One line of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A phase of long work moved on. `total` is absent when unknown.
    Progress {
        phase: String,
        done: u64,
        total: Option<u64>,
        message: Option<String>,
    },
    /// A chunk of a log (UTF-8, lossily decoded).
    Log { text: String },
    /// The work finished with this answer.
    Done { response: Box<Response> },
    /// The work failed.
    Error { error: crate::WireError },
}

/// Body of the exec upgrade request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub vm: String,
    pub spec: ExecSpec,
}

/// Body of the upgrade request for a detached command's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutputRequest {
    pub vm: String,
    pub id: String,
    /// Stream until the command has ended, rather than what it wrote so far.
    #[serde(default)]
    pub follow: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_image_jobs_and_logs_stream_their_answers() {
        let streaming = [
            Request::VmLogs {
                name: "a".into(),
                follow: false,
            },
            Request::ImageBuild {
                spec: ImageBuildSpec::default(),
            },
            Request::ImageImport {
                source: "/x".into(),
                name: None,
            },
            Request::ImagePull {
                url: "http://x".into(),
                name: None,
            },
        ];
        for req in streaming {
            assert!(req.is_streaming(), "{req:?}");
        }
        assert!(!Request::VmList.is_streaming());
        let download = Request::ImageExportFile {
            name: "a".into(),
            digest: "sha256:00".into(),
            file: "manifest.json".into(),
        };
        assert!(download.is_download() && !download.is_streaming());
    }

    use super::*;

    #[test]
    fn request_round_trips_through_json_with_an_op_tag() {
        let req = Request::VmCreate {
            spec: VmCreateSpec {
                name: Some("web".into()),
                vcpu: Some(2),
                backend: Some(Backend::Qemu),
                ..Default::default()
            },
        };
        let json = serde_json::to_value(&req).unwrap();
        assert_eq!(json["op"], "vm_create");
        assert_eq!(json["spec"]["backend"], "qemu");
        let back: Request = serde_json::from_value(json).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn response_round_trips_through_json() {
        let resp = Response::Vms(vec![VmInfo {
            id: "01".into(),
            name: "web".into(),
            state: VmState::Running,
            backend: Backend::Firecracker,
            image: "default".into(),
            vcpu: 2,
            memory_mib: 1024,
            disk_size_mib: 4096,
            ip: Some("172.30.0.2".into()),
            pid: Some(42),
            created_at: "2026-11-24T00:00:00Z".into(),
            boot: Some(BootTimings {
                prepare_ms: 3,
                agent_ready_ms: 2100,
            }),
            last_error: None,
            policy: Some(NetPolicy::default()),
            expires_at: Some("2026-11-24T01:00:00Z".into()),
            user: Some("dev".parse().unwrap()),
            idle_timeout_secs: Some(300),
        }]);
        let json = serde_json::to_string(&resp).unwrap();
        let back: Response = serde_json::from_str(&json).unwrap();
        assert_eq!(back, resp);
    }

    #[test]
    fn unknown_op_is_rejected() {
        let err = serde_json::from_str::<Request>(r#"{"op":"vm_explode"}"#).unwrap_err();
        assert!(err.to_string().contains("vm_explode"), "{err}");
    }

    #[test]
    fn vm_state_parses_what_it_prints() {
        for s in [
            VmState::Stopped,
            VmState::Starting,
            VmState::Running,
            VmState::Stopping,
            VmState::Crashed,
        ] {
            assert_eq!(VmState::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn a_pool_size_is_a_number_of_clones_or_default() {
        for (size, json) in [
            (PoolSize::Clones(0), "0"),
            (PoolSize::Clones(3), "3"),
            (PoolSize::Default, r#""default""#),
        ] {
            assert_eq!(serde_json::to_string(&size).unwrap(), json);
            assert_eq!(serde_json::from_str::<PoolSize>(json).unwrap(), size);
        }
        assert_eq!("default".parse(), Ok(PoolSize::Default));
        assert_eq!("2".parse(), Ok(PoolSize::Clones(2)));

        for bad in [r#""sometimes""#, "-1", "true", "4294967296", "1.5", "null"] {
            let err = serde_json::from_str::<PoolSize>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(r#"a number of clones or "default""#),
                "{bad}: {err}"
            );
        }
        let err = "lots".parse::<PoolSize>().unwrap_err();
        assert!(err.contains(r#"nor "default""#), "{err}");
    }
}
