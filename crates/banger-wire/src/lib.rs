//! Wire types shared across process boundaries.
//!
//! * [`api`]: the CLI ⇄ `bangerd` contract (HTTP+JSON over a Unix socket).
//! * [`agent`]: the `bangerd` ⇄ guest agent contract (postcard frames over one
//!   multiplexed channel), also used for the exec stream the daemon relays to the CLI.
//! * [`public`]: the public HTTP API (`/api/v1`) on the daemon's socket.
//! * [`workspace`]: the guest-side scripts of a workspace (CLI and public API).
//! * [`user`]: `NAME[:UID]`, the guest user a command runs as, checked alike everywhere.
//! * [`error`]: the structured error that crosses both boundaries.
//! * [`bundle`]: the file names of an image and of its export bundle.
//! * [`reference`]: registry references next to local image names.
//! * [`slurm`]: `vm run --slurm` ⇄ `banger slurm node` over a Slurm step's stdio.
//!
//! This crate holds data only: serde, no async runtime, no OS calls.

pub mod agent;
pub mod api;
pub mod bundle;
pub mod error;
pub mod public;
pub mod reference;
pub mod slurm;
pub mod user;
pub mod workspace;

pub use error::{Diagnostic, ErrorCode, WireError};
