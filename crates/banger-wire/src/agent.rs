//! The `bangerd` ⇄ guest agent protocol.
//!
//! # Transport
//! One byte stream per VM:
//! * Firecracker: vsock. The agent connects to the host (CID 2) on [`VSOCK_PORT`];
//!   Firecracker hands that connection to the Unix socket `<vsock_uds>_<port>` on the host.
//! * QEMU: a virtio-serial port named [`SERIAL_PORT_NAME`] (host side: a Unix socket).
//!
//! The guest always speaks first, so readiness reaches the host the moment the agent
//! is up, with no host-side polling.
//!
//! # Framing
//! Every message is a frame: a 4-byte big-endian length, then a postcard payload
//! ([`encode`] / [`decode`]). The same framing is used on the daemon ⇄ CLI exec stream.
//!
//! # Session
//! 1. guest → host: [`HELLO_SYNC`], then [`GuestHello`]
//! 2. host → guest: [`HostAuth`] with the per-VM token
//! 3. guest → host: [`AuthReply`]; on `Err` the guest closes the channel.
//! 4. Both sides run a yamux session over the channel (host = client). Each yamux
//!    stream carries one [`AgentRequest`] (host → guest) followed by [`HostFrame`]s from
//!    the host and [`GuestFrame`]s from the guest.

use serde::{Deserialize, Serialize};

use crate::user::GuestUser;
use crate::WireError;

/// Protocol version; the host refuses a guest that speaks another.
pub const PROTOCOL_VERSION: u32 = 1;
/// Guest-initiated vsock port (Firecracker).
pub const VSOCK_PORT: u32 = 10_789;
/// Name of the virtio-serial port (QEMU).
pub const SERIAL_PORT_NAME: &str = "org.banger.agent.0";
/// What the host writes first on a virtio-serial channel. A guest agent still in a
/// session with a previous host (a restarted daemon reconnects faster than the guest
/// can notice the hang-up) fails to parse it and starts over with a fresh
/// [`GuestHello`]; a guest waiting to say hello discards it. 12 bytes with a first byte
/// no yamux header or frame length can start with.
pub const HOST_KNOCK: [u8; 12] = *b"\xffbanger-knok";

/// What the guest writes right before every [`GuestHello`]. The host discards bytes
/// until it has seen it, so leftovers of a previous session (which QEMU may still hand
/// to the next host) never pass for a hello.
pub const HELLO_SYNC: [u8; 8] = *b"\xffBANGER\x01";

/// Largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// A frame larger than [`MAX_FRAME`]: `len` bytes announced or about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    pub len: usize,
}

impl std::fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a {}-byte frame, larger than the {MAX_FRAME}-byte limit",
            self.len
        )
    }
}

impl std::error::Error for FrameTooLarge {}

/// One length-prefixed frame: `payload`'s length as 4 big-endian bytes, then `payload`.
/// Both ends of the agent channel frame this way.
pub fn frame(payload: &[u8]) -> Result<Vec<u8>, FrameTooLarge> {
    if payload.len() > MAX_FRAME {
        return Err(FrameTooLarge { len: payload.len() });
    }
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    Ok(buf)
}

/// The payload length a frame's 4-byte prefix announces, refused above [`MAX_FRAME`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameTooLarge> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameTooLarge { len });
    }
    Ok(len)
}

/// Data chunk size for stdio and file streams.
pub const CHUNK: usize = 64 * 1024;

/// First frame on a fresh channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestHello {
    pub protocol: u32,
    pub agent_version: String,
    /// Random per guest boot; lets the host tell a reboot from a reconnect.
    pub boot_id: String,
    /// Milliseconds since guest kernel start when the agent came up.
    pub uptime_ms: u64,
}

/// Host's answer to [`GuestHello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAuth {
    pub token: String,
}

/// Guest's verdict on [`HostAuth`].
pub type AuthReply = Result<(), WireError>;

/// Terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// A command to run in the guest. `argv` reaches `execve` exactly as given: no shell,
/// no joining, no re-splitting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// Run under a pseudo-terminal of this size; stderr is merged into stdout then.
    pub tty: Option<TtySize>,
    /// Kill the process (group) after this many milliseconds.
    pub timeout_ms: Option<u64>,
    /// Run as this user, created in the guest when missing; root when absent (the
    /// daemon fills in the VM's default user first).
    #[serde(default)]
    pub user: Option<GuestUser>,
}

/// The exit code banger gives a command killed at its timeout, as `timeout(1)` does.
pub const TIMED_OUT: i32 = 124;

/// The first frame on every yamux stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentRequest {
    /// Answered with [`GuestFrame::Pong`].
    Ping,
    /// Run a process; then stdio frames flow until [`GuestFrame::Exit`].
    Exec(ExecSpec),
    /// Sync, unmount and power off (or reboot). Answered with [`GuestFrame::Ok`] first.
    Shutdown { reboot: bool },
    /// Gives a guest restored from a snapshot its own identity (every clone starts as a
    /// copy of the snapshotted guest). Answered with [`GuestFrame::Ok`] once applied;
    /// from then on only the new token is accepted.
    Reconfigure(GuestIdentity),
    /// Answered with [`GuestFrame::Ssh`] once the guest's sshd accepts connections (or
    /// at once when the image has none). Newer than the other requests: an older agent
    /// answers it with an error.
    SshReady,
    /// Starts a command detached from this stream (`vm exec -d`): it outlives the
    /// stream and the session, its output is kept in the guest. `tty` is refused.
    /// Answered with [`GuestFrame::Detached`] once it runs.
    ExecDetached(ExecSpec),
    /// Answered with [`GuestFrame::DetachedList`]: every detached command kept.
    DetachedList,
    /// The kept output of detached command `id` as [`GuestFrame::Stdout`] and
    /// [`GuestFrame::Stderr`] frames, then [`GuestFrame::Detached`] with its state.
    /// With `follow`, the output is streamed until the command has ended and its output
    /// is closed. Once an ended command's output was sent to its end, it is forgotten.
    DetachedOutput { id: String, follow: bool },
    /// Delivers `signal` to detached command `id`'s process group. Answered with
    /// [`GuestFrame::Detached`].
    DetachedKill { id: String, signal: i32 },
}

/// Whether a detached command still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DetachedState {
    Running,
    Exited,
}

/// A detached command as the agent keeps it (`vm exec -d`, `vm ps`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DetachedInfo {
    /// Addresses it in `vm ps`, `vm logs --exec` and `vm kill`.
    pub id: String,
    /// Its pid in the guest (also its process group).
    pub pid: u32,
    pub argv: Vec<String>,
    /// Guest wall clock when it started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    pub state: DetachedState,
    /// Once exited: its exit code, 128+n for signal n, 124 when its timeout killed it.
    pub exit_code: Option<i32>,
    /// Whether its timeout killed it.
    pub timed_out: bool,
    /// Output bytes dropped because the guest keeps only the newest
    /// [`DETACHED_OUTPUT_KEPT`] bytes.
    pub dropped_bytes: u64,
}

/// How much of a detached command's output (stdout and stderr together) the agent keeps
/// at least; older output is dropped in pieces of this size, so at most twice this is
/// ever kept.
pub const DETACHED_OUTPUT_KEPT: u64 = 4 << 20;
/// How many detached commands the agent keeps; starting one more forgets the oldest
/// ended one, or is refused when all of them still run.
pub const DETACHED_MAX: usize = 32;

/// Who a guest is: what a fresh boot reads from [`BootConfig`], plus what a restored
/// guest has to refresh (clock, randomness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestIdentity {
    pub token: String,
    pub hostname: String,
    /// `a.b.c.d/len`; replaces every address of the guest's network interface.
    pub ip: Option<String>,
    pub gateway: Option<String>,
    pub dns: Option<String>,
    /// The interface's new MAC address (a restored NIC keeps the snapshot's).
    pub mac: Option<String>,
    /// Host wall clock, milliseconds since the Unix epoch: a restored guest's clock
    /// stands where the snapshot stopped it.
    pub unix_time_ms: u64,
    /// Fresh host randomness mixed into the guest's pool and reseeding its CRNG, so
    /// clones of one snapshot do not share random numbers.
    #[serde(with = "serde_bytes")]
    pub entropy: Vec<u8>,
}

/// Exit status of a guest process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// Shell convention: a code as is, a signal n as 128+n.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// Host → guest frames after the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostFrame {
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Close the process's stdin.
    StdinEof,
    Resize(TtySize),
    /// Deliver this signal number to the process (group).
    Signal(i32),
}

/// Guest → host frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuestFrame {
    Pong {
        uptime_ms: u64,
    },
    Ok,
    Started {
        pid: u32,
    },
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The process ended; no more frames follow.
    Exit(ExitStatus),
    /// The request failed; no more frames follow.
    Error(WireError),
    /// Answer to [`AgentRequest::SshReady`]: whether sshd listens (false: the image has
    /// none, or it could not start).
    Ssh {
        listening: bool,
    },
    /// A detached command: the answer to [`AgentRequest::ExecDetached`] and
    /// [`AgentRequest::DetachedKill`], and the last frame of
    /// [`AgentRequest::DetachedOutput`].
    Detached(DetachedInfo),
    /// Answer to [`AgentRequest::DetachedList`], oldest first.
    DetachedList(Vec<DetachedInfo>),
}

/// Serializes one frame payload (without the length prefix).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // postcard only fails on types it cannot represent, which none of ours are.
    postcard::to_stdvec(msg).unwrap_or_default()
}

/// Parses one frame payload.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

pub use postcard::Error as DecodeError;

/// The QEMU fw_cfg item that carries the secret part of a [`BootConfig`] (the token)
/// in its command-line form, so that it appears on no host process's command line.
pub const FW_CFG_BOOT_NAME: &str = "opt/org.banger/boot";
/// Where the guest reads [`FW_CFG_BOOT_NAME`] (`qemu_fw_cfg` module loaded).
pub const FW_CFG_BOOT_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.banger/boot/raw";

/// Per-VM settings the guest reads from its kernel command line at boot, so the host
/// never mounts a guest disk. Keys are `banger.<field>=<value>`; values never contain
/// spaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootConfig {
    pub hostname: Option<String>,
    pub token: Option<String>,
    /// `a.b.c.d/len`
    pub ip: Option<String>,
    pub gateway: Option<String>,
    pub dns: Option<String>,
    /// `type:base64` of the authorized SSH public key (no comment).
    pub ssh_key: Option<String>,
    /// Where the guest finds the agent channel: `serial` or `vsock`.
    pub channel: Option<String>,
}

impl BootConfig {
    const FIELDS: [&'static str; 7] = [
        "hostname", "token", "ip", "gateway", "dns", "sshkey", "channel",
    ];

    fn slot(&mut self, key: &str) -> Option<&mut Option<String>> {
        Some(match key {
            "hostname" => &mut self.hostname,
            "token" => &mut self.token,
            "ip" => &mut self.ip,
            "gateway" => &mut self.gateway,
            "dns" => &mut self.dns,
            "sshkey" => &mut self.ssh_key,
            "channel" => &mut self.channel,
            _ => return None,
        })
    }

    /// Renders the `banger.*` arguments to append to a kernel command line.
    pub fn to_cmdline(&self) -> String {
        let mut copy = self.clone();
        let mut out = Vec::new();
        for key in Self::FIELDS {
            if let Some(Some(v)) = copy.slot(key).map(|s| s.take()) {
                out.push(format!("banger.{key}={v}"));
            }
        }
        out.join(" ")
    }

    /// Splits off the fields that must stay off host command lines: `(public, secret)`.
    pub fn split_secret(mut self) -> (BootConfig, BootConfig) {
        let secret = BootConfig {
            token: self.token.take(),
            ..Default::default()
        };
        (self, secret)
    }

    /// Takes every field `other` sets.
    pub fn merge(&mut self, other: BootConfig) {
        let mut other = other;
        for key in Self::FIELDS {
            if let Some(Some(v)) = other.slot(key).map(|s| s.take()) {
                if let Some(slot) = self.slot(key) {
                    *slot = Some(v);
                }
            }
        }
    }

    /// Parses a whole kernel command line, ignoring everything that is not `banger.*`.
    pub fn from_cmdline(cmdline: &str) -> BootConfig {
        let mut cfg = BootConfig::default();
        for arg in cmdline.split_whitespace() {
            let Some(rest) = arg.strip_prefix("banger.") else {
                continue;
            };
            let Some((key, value)) = rest.split_once('=') else {
                continue;
            };
            if let Some(slot) = cfg.slot(key) {
                *slot = Some(value.to_string());
            }
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_spec_keeps_argv_exactly() {
        let spec = ExecSpec {
            argv: vec!["sh".into(), "-c".into(), "exit 42".into()],
            env: vec![("A".into(), "b c".into())],
            cwd: Some("/root/repo".into()),
            tty: None,
            timeout_ms: None,
            user: Some("dev:1500".parse().unwrap()),
        };
        let back: AgentRequest = decode(&encode(&AgentRequest::Exec(spec.clone()))).unwrap();
        assert_eq!(back, AgentRequest::Exec(spec));
    }

    #[test]
    fn earlier_requests_keep_their_encoding() {
        // Reconfigure was appended; an older agent still reads these the same way.
        assert_eq!(encode(&AgentRequest::Ping), [0]);
        assert_eq!(encode(&AgentRequest::Shutdown { reboot: true }), [2, 1]);
    }

    #[test]
    fn reconfigure_round_trips() {
        let req = AgentRequest::Reconfigure(GuestIdentity {
            token: "t".into(),
            hostname: "clone-1".into(),
            ip: Some("172.30.0.9/24".into()),
            gateway: Some("172.30.0.1".into()),
            dns: None,
            mac: Some("06:00:ac:1e:00:09".into()),
            unix_time_ms: 1_800_000_000_000,
            entropy: vec![9; 32],
        });
        assert_eq!(decode::<AgentRequest>(&encode(&req)).unwrap(), req);
    }

    #[test]
    fn data_frames_are_compact() {
        let payload = vec![7u8; 1000];
        let bytes = encode(&GuestFrame::Stdout(payload.clone()));
        assert!(
            bytes.len() < 1010,
            "frame overhead too large: {}",
            bytes.len()
        );
        assert_eq!(
            decode::<GuestFrame>(&bytes).unwrap(),
            GuestFrame::Stdout(payload)
        );
    }

    #[test]
    fn signal_exit_maps_to_128_plus_n() {
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
        assert_eq!(ExitStatus::Code(42).shell_code(), 42);
    }

    #[test]
    fn boot_config_round_trips_through_a_cmdline() {
        let cfg = BootConfig {
            hostname: Some("web".into()),
            token: Some("abc123".into()),
            ip: Some("172.30.0.2/24".into()),
            gateway: Some("172.30.0.1".into()),
            dns: Some("172.30.0.1".into()),
            ssh_key: Some("ssh-ed25519:AAAAC3Nz".into()),
            channel: Some("serial".into()),
        };
        let line = format!("console=ttyS0 quiet {} panic=-1", cfg.to_cmdline());
        assert_eq!(BootConfig::from_cmdline(&line), cfg);
    }

    #[test]
    fn the_secret_half_carries_only_the_token_and_merges_back() {
        let cfg = BootConfig {
            hostname: Some("web".into()),
            token: Some("abc123".into()),
            ..Default::default()
        };

        let (public, secret) = cfg.clone().split_secret();
        let mut back = BootConfig::from_cmdline(&public.to_cmdline());
        back.merge(BootConfig::from_cmdline(&secret.to_cmdline()));

        assert!(!public.to_cmdline().contains("token"));
        assert_eq!(secret.to_cmdline(), "banger.token=abc123");
        assert_eq!(back, cfg);
    }

    #[test]
    fn boot_config_ignores_foreign_and_malformed_args() {
        let cfg =
            BootConfig::from_cmdline("root=/dev/vda banger.nope=1 banger.token banger.hostname=x");
        assert_eq!(
            cfg,
            BootConfig {
                hostname: Some("x".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_frame_is_its_length_then_its_payload_and_the_length_is_capped() {
        assert_eq!(frame(b"abc").unwrap(), b"\0\0\0\x03abc");
        assert_eq!(frame_len([0, 0, 0, 3]), Ok(3));
        assert_eq!(frame_len((MAX_FRAME as u32).to_be_bytes()), Ok(MAX_FRAME));
        let over = MAX_FRAME + 1;
        assert_eq!(
            frame_len((over as u32).to_be_bytes()),
            Err(FrameTooLarge { len: over })
        );
        assert_eq!(frame(&vec![0; over]), Err(FrameTooLarge { len: over }));
    }
}
