//! banger on a Slurm cluster (docs/slurm.md).
//!
//! * [`session`]: the submit side of `vm run --slurm`: one `srun` step whose stdio
//!   carries the [`banger_wire::slurm`] protocol, exec channels in the node's VM as
//!   local exec streams (so `workspace::prepare`, `export` and the interactive pump run
//!   over them unchanged).
//! * [`node`]: the step's program on the node (`banger slurm node`): makes the VM in
//!   its own bangerd, relays the channels, deletes the VM however the step ends.
//! * [`conf`]: `banger slurm conf` (a node's slurm.conf and gres.conf lines) and
//!   `banger slurm cleanup` (the epilog's: a job's leftover VMs).

pub mod conf;
mod error;
pub mod node;
pub mod session;

pub use error::SlurmError;

use tokio_util::codec::LengthDelimitedCodec;

/// The frames of the step's stdio: a 4-byte big-endian length, then the payload (the
/// agent channel's framing), capped at [`banger_wire::slurm::MAX_FRAME`].
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(banger_wire::slurm::MAX_FRAME)
        .new_codec()
}
