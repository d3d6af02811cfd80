//! `banger vm run --slurm` ⇄ `banger slurm node`: the protocol over one Slurm step's
//! stdin and stdout.
//!
//! The submit side runs `srun … banger slurm node`; Slurm places the step on a node and
//! relays its stdio. Every message is a frame as on the agent channel (a 4-byte
//! big-endian length, then a postcard payload, [`crate::agent::encode`]), at most
//! [`MAX_FRAME`] bytes.
//!
//! 1. submit → node: [`ClientFrame::Start`], the VM to make.
//! 2. node → submit: [`NodeFrame::Ready`] once the VM runs, or [`NodeFrame::Fatal`].
//! 3. Then any number of exec channels, each opened by [`ClientFrame::Exec`] with an id
//!    of the submit side's choosing: the agent's [`HostFrame`]s go one way
//!    ([`ClientFrame::Host`]) and its [`GuestFrame`]s the other ([`NodeFrame::Guest`]),
//!    exactly as on a local exec stream, until the guest frame that ends it (or
//!    [`NodeFrame::Closed`]). The repository ship, the command and the patch export are
//!    such channels.
//! 4. submit → node: [`ClientFrame::Done`]; the node deletes the VM and exits with the
//!    command's code. An end of input without it (the client died, `scancel`) deletes
//!    the VM too.
//!
//! Both sides treat what they read as untrusted: frames are capped, the node runs
//! execs only in the VM it made, and the submit side caps what it keeps.

use serde::{Deserialize, Serialize};

use crate::agent::{ExecSpec, GuestFrame, HostFrame};
use crate::api::VmCreateSpec;
use crate::WireError;

/// Protocol version; the node refuses a client that speaks another.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame either side sends or accepts: an agent frame and its envelope.
pub const MAX_FRAME: usize = crate::agent::MAX_FRAME + 1024;

/// Most exec channels open at once.
pub const MAX_CHANNELS: usize = 16;

/// The prefix of the VMs a job's steps make: `slurm-<job>-<step>`. The epilog deletes
/// a job's VMs by it.
pub fn vm_prefix(job: &str) -> String {
    format!("slurm-{job}-")
}

/// The request a step starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub protocol: u32,
    /// The VM to make; the node names it (after the job and step), makes it exec-only
    /// and throwaway. As JSON inside the frame: its optional fields are left out when
    /// empty, which postcard cannot express.
    #[serde(with = "as_json")]
    pub vm: VmCreateSpec,
}

mod as_json {
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        serde_json::to_string(v)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }

    pub fn deserialize<'de, T: serde::de::DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        serde_json::from_str(&String::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// Submit side → node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    Start(Start),
    /// Open exec channel `id` in the VM.
    Exec {
        id: u32,
        spec: ExecSpec,
    },
    /// A frame for the process of channel `id`.
    Host {
        id: u32,
        frame: HostFrame,
    },
    /// The submit side let go of channel `id`: the node closes its exec stream, and the
    /// agent kills the process.
    Hangup {
        id: u32,
    },
    /// The run is over: delete the VM and exit with `code`.
    Done {
        code: i32,
    },
}

/// Node → submit side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeFrame {
    /// The VM runs.
    Ready { node: String, vm: String },
    /// A frame from the process of channel `id`.
    Guest { id: u32, frame: GuestFrame },
    /// Channel `id` ended without an exit of its process (the exec stream broke).
    Closed { id: u32, error: WireError },
    /// The node cannot go on (no daemon, the VM could not be made); it exits next.
    Fatal(WireError),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::agent::{decode, encode};

    #[test]
    fn a_full_guest_frame_fits_in_a_node_frame() {
        let frame = NodeFrame::Guest {
            id: u32::MAX,
            frame: GuestFrame::Stdout(vec![0xff; crate::agent::MAX_FRAME - 8]),
        };

        let bytes = encode(&frame);

        assert!(bytes.len() <= MAX_FRAME);
        assert_eq!(decode::<NodeFrame>(&bytes).unwrap(), frame);
    }

    #[test]
    fn a_start_carries_a_sparse_create_spec() {
        let start = ClientFrame::Start(Start {
            protocol: PROTOCOL_VERSION,
            vm: VmCreateSpec {
                image: Some("default".into()),
                policy: crate::api::NetPolicy {
                    allow_host: vec!["8080".into()],
                    ..Default::default()
                },
                ..Default::default()
            },
        });

        let back: ClientFrame = decode(&encode(&start)).unwrap();

        assert_eq!(back, start);
    }
}
