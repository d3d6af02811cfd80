//! The hot pool: a warm `vm run` takes a paused clone of the warm snapshot restored
//! ahead of time. Each pooled clone is its own machine (name, address, host key, disk),
//! the pool refills after a take, and a daemon that stops or dies leaves no VMM behind.

use std::time::{Duration, Instant};

use banger_e2e::host::{taps_on, vmm_pids};
use banger_e2e::{Harness, BRIDGE};
use banger_wire::api::DaemonInfo;

pub(super) fn status(h: &Harness) -> DaemonInfo {
    let out = h.banger(&["daemon", "status", "--json"]).success();
    serde_json::from_slice(&out.stdout).expect("daemon status --json is a DaemonInfo")
}

/// Waits up to two minutes for the pools to hold `n` clones, all ready (`pool_vms`
/// also counts clones being made, whose VMM may not run yet).
pub(super) fn pool_holds(h: &Harness, n: u32) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(120) {
        let s = status(h);
        if s.pool_vms == n && s.pools.iter().map(|p| p.ready).sum::<u32>() == n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// The default image's warm snapshot with a pool of its own; on drop the image goes
/// back to the config's pool size (none in these tests) and the snapshot is deleted.
pub(super) struct Warm<'h>(&'h Harness, pub(super) String);

impl<'h> Warm<'h> {
    /// A pool of 2.
    pub(super) fn make(h: &'h Harness) -> Warm<'h> {
        Warm::with(h, &["--pool", "2"])
    }

    /// `image warm ARGS`.
    pub(super) fn with(h: &'h Harness, args: &[&str]) -> Warm<'h> {
        let out = h.ok(&[&["image", "warm"], args].concat());
        let name = out.split_whitespace().next().unwrap().to_string();
        Warm(h, name)
    }
}

impl Drop for Warm<'_> {
    fn drop(&mut self) {
        // While the machine is warm, this only resizes its pool.
        self.0.banger(&["image", "warm", "--pool", "default"]);
        self.0.banger(&["vm", "snapshot", "delete", &self.1]);
    }
}

#[test]
fn pooled_clones_are_their_own_machines_and_the_pool_refills() {
    let Some(h) = banger_e2e::turn("pooled_clones_are_their_own_machines_and_the_pool_refills")
    else {
        return;
    };
    let _warm = Warm::make(&h);
    assert!(pool_holds(&h, 2), "the pool never filled: {:?}", status(&h));
    let (a, b) = (h.name("pooled-a"), h.name("pooled-b"));

    let first = h.ok(&[
        "vm",
        "run",
        "--rm",
        "--name",
        &a,
        "--",
        "sh",
        "-c",
        "hostname; echo mine > /root/left-behind",
    ]);
    let second = h.ok(&[
        "vm",
        "run",
        "--rm",
        "--name",
        &b,
        "--",
        "sh",
        "-c",
        "hostname; ls /root/left-behind 2>&1 || true",
    ]);

    assert_eq!(first.trim(), a);
    assert!(second.starts_with(&format!("{b}\n")), "{second}");
    assert!(
        second.contains("No such file"),
        "a pooled run saw another's file: {second}"
    );
    assert!(
        pool_holds(&h, 2),
        "the pool did not refill: {:?}",
        status(&h)
    );
    // (The runs' own VMs may still be listed while their detached deletes finish.)
    let listed = h.vms();
    assert!(
        listed.iter().all(|v| !v.name.starts_with("pool-")),
        "pooled clones are listed: {listed:?}"
    );
}

#[test]
fn two_pooled_clones_have_their_own_address_and_host_key() {
    let Some(h) = banger_e2e::turn("two_pooled_clones_have_their_own_address_and_host_key") else {
        return;
    };
    let _warm = Warm::make(&h);
    assert!(pool_holds(&h, 2), "the pool never filled: {:?}", status(&h));
    let (a, b) = (h.name("own-a"), h.name("own-b"));
    h.ok(&["vm", "run", "--name", &a, "--", "true"]);
    h.ok(&["vm", "run", "--name", &b, "--", "true"]);
    let (va, vb) = (
        banger_e2e::TestVm::new(&h, a),
        banger_e2e::TestVm::new(&h, b),
    );
    va.wait_for_sshd();
    vb.wait_for_sshd();

    let key = "cat /etc/ssh/ssh_host_ed25519_key.pub";
    let (key_a, key_b) = (va.sh(key), vb.sh(key));

    assert_ne!(va.ip(), vb.ip());
    assert_eq!(va.sh("hostname"), va.name());
    assert_eq!(vb.sh("hostname"), vb.name());
    assert!(key_a.starts_with("ssh-ed25519 "), "{key_a}");
    assert_ne!(key_a, key_b, "two pooled clones share a host key");
}

#[test]
fn a_daemon_stop_or_death_leaves_no_pooled_vmm_behind() {
    let Some(h) = banger_e2e::turn("a_daemon_stop_or_death_leaves_no_pooled_vmm_behind") else {
        return;
    };
    let ours = [h.state_dir.as_path(), h.runtime_dir.as_path()];
    let _warm = Warm::make(&h);
    assert!(pool_holds(&h, 2), "the pool never filled: {:?}", status(&h));

    // A stopped daemon deletes its clones: no VMM, tap or file of theirs is left (with
    // no other VM running, no tap at all: the spare ones go at any stop).
    h.ok(&["daemon", "stop"]);

    assert_eq!(
        vmm_pids(&ours),
        Vec::<u32>::new(),
        "a pooled VMM outlived the daemon"
    );
    assert_eq!(taps_on(BRIDGE), 0, "a pooled clone's tap is left");
    let vm_dirs = fs_err::read_dir(h.state_dir.join("vms")).unwrap().count();
    assert_eq!(vm_dirs, 0, "a pooled clone's files are left");

    h.ok(&["daemon", "start"]);
    assert!(
        pool_holds(&h, 2),
        "the pool never refilled: {:?}",
        status(&h)
    );
    let before = vmm_pids(&ours);

    // A daemon that dies leaves its clones to the next one, which deletes them.
    let pid = nix::unistd::Pid::from_raw(status(&h).pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let proc = std::path::PathBuf::from(format!("/proc/{pid}"));
    let t0 = Instant::now();
    while proc.exists() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!proc.exists(), "bangerd {pid} survived SIGKILL");
    h.ok(&["daemon", "start"]);

    assert!(
        pool_holds(&h, 2),
        "the pool never refilled: {:?}",
        status(&h)
    );
    let after = vmm_pids(&ours);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        before.iter().all(|p| !after.contains(p)),
        "a dead daemon's pooled VMM is still running: {before:?} {after:?}"
    );
}
