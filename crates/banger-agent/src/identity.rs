//! A restored guest takes on its own identity ([`AgentRequest::Reconfigure`]): every
//! clone of a snapshot wakes up as a copy of the snapshotted guest, with its clock
//! stopped at the snapshot, its random state and SSH host keys shared with every other
//! clone, and its name and address. (The host keys are renewed by [`crate::ssh::rekey`].)
//!
//! [`AgentRequest::Reconfigure`]: banger_wire::agent::AgentRequest::Reconfigure

use std::io::Write;
use std::time::Duration;

use banger_wire::agent::GuestIdentity;
use nix::sys::time::TimeSpec;
use nix::time::{clock_settime, ClockId};

use crate::{boot, net};

/// Applies `id` to the machine: clock, randomness, hostname, network. Every step is
/// tried; the failures are returned, one line each.
pub async fn apply(id: &GuestIdentity) -> Vec<String> {
    let mut failures = Vec::new();
    if let Err(e) = set_clock(id.unix_time_ms) {
        failures.push(format!("cannot set the clock: {e}"));
    }
    if let Err(e) = reseed(&id.entropy) {
        failures.push(format!("cannot reseed the random number generator: {e}"));
    }
    boot::set_hostname(&id.hostname);
    failures.extend(
        net::reconfigure(
            id.ip.as_deref(),
            id.gateway.as_deref(),
            id.dns.as_deref(),
            id.mac.as_deref(),
        )
        .await,
    );
    failures
}

fn set_clock(unix_time_ms: u64) -> nix::Result<()> {
    let now = Duration::from_millis(unix_time_ms);
    clock_settime(ClockId::CLOCK_REALTIME, TimeSpec::from_duration(now))
}

// RNDRESEEDCRNG from <linux/random.h>: reseed the CRNG from the input pool now.
nix::ioctl_none!(rnd_reseed_crng, b'R', 0x07);

/// Mixes `entropy` into the kernel's input pool, then reseeds the CRNG from it, so
/// what the guest draws from now on differs from every other clone's.
fn reseed(entropy: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut random = fs_err::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    random.write_all(entropy)?;
    #[allow(unsafe_code)]
    // SAFETY: RNDRESEEDCRNG takes no argument; the fd is an open /dev/urandom.
    unsafe { rnd_reseed_crng(random.file().as_raw_fd()) }.map_err(std::io::Error::from)?;
    Ok(())
}
