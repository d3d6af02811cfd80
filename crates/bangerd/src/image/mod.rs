//! Guest images: build from Debian packages, the image store, and the per-VM writable
//! disk.
//!
//! An image is a directory `<state>/images/<name>/` with
//! - `vmlinux` (ELF kernel, Firecracker) and `bzImage` (QEMU), from Debian's
//!   `linux-image-cloud-amd64`;
//! - `initrd.img`, banger's initramfs (busybox + virtio/vsock/overlay modules +
//!   `/init`, see `init.sh`);
//! - `rootfs.ext4`, the shared base root file system, label `banger-root`, attached
//!   read-only to every VM of the image;
//! - `manifest.json`, digests of the four files and where they came from.
//!
//! # Boot contract
//! A VM gets the base disk (read-only) and its own writable disk made by
//! [`create_upper_disk`] (label `banger-upper`), in any order. The initramfs finds both by
//! label, mounts `overlay(lower=base, upper=writable)` as `/`, moves the layers to
//! `/.banger/{base,upper}` and `/dev`, `/proc`, `/sys` into the new root, then execs
//! `/usr/local/sbin/banger-agent init` as PID 1. The kernel command line needs only
//! the console (`console=ttyS0`) and `reboot=k panic=-1`; `banger.*` settings are for
//! the agent. Any failure is printed to the console and powers the VM off.
//!
//! All functions block; call them from a blocking thread.

use std::borrow::Cow;

mod boot;
mod build;
mod bundle;
mod cmd;
#[cfg(test)]
mod e2e_tests;
mod elf;
mod error;
mod ext4;
mod import;
mod initramfs;
mod kernel;
mod layers;
mod manifest;
mod mirror;
mod modules;
mod name;
mod oci;
mod packages;
mod registry;
mod rootfs;
mod store;

pub use build::{build, DEFAULT_SIZE_MIB, DEFAULT_SUITE};
pub use bundle::{compress, pull};
pub use error::ImageError;
pub use ext4::{create_upper_disk, grow_upper_disk, MAX_DISK_MIB, ROOT_LABEL, UPPER_LABEL};
pub use import::import;
/// Small images in a store, for other modules' tests.
#[cfg(test)]
pub(crate) use manifest::tests::{image_dir as test_image_dir, inputs as test_inputs};
pub use manifest::{BootInfo, BuildInputs, FileDigest, Manifest, Origin};
pub use name::{validate_name, DEFAULT_IMAGE};
pub use registry::{exec_defaults, pull as pull_registry, Cache as LayerCache, SharedProgress};
pub use rootfs::AGENT_PATH;
pub use store::{delete, get, list, sweep, Image};

/// One step of long image work; maps onto `StreamEvent::Progress`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// `check`, `rootfs`, `kernel`, `initramfs`, `ext4`, `digest`, `import`, `pull`,
    /// `resolve`, `unpack`; `layer <digest>` for each layer of a registry pull.
    pub phase: Cow<'static, str>,
    pub done: u64,
    /// Absent when unknown (e.g. debootstrap steps).
    pub total: Option<u64>,
    pub message: Option<String>,
}

impl Progress {
    /// A step with a message and no measure.
    pub fn step(phase: impl Into<Cow<'static, str>>, message: String) -> Progress {
        Progress {
            phase: phase.into(),
            done: 0,
            total: None,
            message: Some(message),
        }
    }

    /// Bytes done of a known total.
    pub fn bytes(
        phase: impl Into<Cow<'static, str>>,
        done: u64,
        total: u64,
        what: &str,
    ) -> Progress {
        Progress {
            phase: phase.into(),
            done,
            total: Some(total),
            message: Some(what.to_string()),
        }
    }
}

/// Receives progress; called from the building thread.
pub type ProgressFn<'a> = &'a (dyn Fn(Progress) + Send + Sync);
