//! Timeouts, VM lifetimes and prune: `--timeout` kills a command's whole process group
//! and exits 124, `--ttl` deletes a VM (also across a daemon restart), `banger prune`
//! deletes stopped VMs. Prune acts on the run's whole state (the smoke state), where
//! the harness has deleted every earlier VM and keeps only the default image.

use std::time::{Duration, Instant};

use banger_e2e::host::vmm_pids;

/// How many processes in the guest have exactly this command line.
fn processes(vm: &banger_e2e::TestVm<'_>, cmdline: &str) -> String {
    let script = format!(
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <\"$f\"; echo; done | grep -c '^{cmdline} $' || true"
    );
    vm.sh(&script)
}

#[test]
fn exec_timeout_kills_the_process_group() {
    let Some(h) = banger_e2e::turn("exec_timeout_kills_the_process_group") else {
        return;
    };
    let vm = h.create("timeout", &[]);
    let t0 = Instant::now();

    let out = h.banger(&[
        "vm",
        "exec",
        "--timeout",
        "2",
        vm.name(),
        "--",
        "sh",
        "-c",
        "sleep 61 & sleep 61",
    ]);

    let took = t0.elapsed();
    out.failure(Some(124), "command timed out after 2s");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert_eq!(
        processes(&vm, "sleep 61"),
        "0",
        "a sleep outlived the timeout"
    );
}

#[test]
fn run_timeout_covers_the_command_and_deletes_the_vm() {
    let Some(h) = banger_e2e::turn("run_timeout_covers_the_command_and_deletes_the_vm") else {
        return;
    };
    let name = h.name("run-timeout");

    let out = h.banger(&[
        "vm",
        "run",
        "--rm",
        "--name",
        &name,
        "--timeout",
        "3s",
        "--",
        "sleep",
        "60",
    ]);

    out.failure(Some(124), "command timed out after 3s");
    assert!(h.vms().iter().all(|v| v.name != name));
}

#[test]
fn ttl_deletes_a_vm_when_it_expires() {
    let Some(h) = banger_e2e::turn("ttl_deletes_a_vm_when_it_expires") else {
        return;
    };
    let vm = h.create("ttl", &["--no-start", "--ttl", "5s"]);
    let created = Instant::now();
    let info = vm.info();

    let gone = h.gone_within(vm.name(), Duration::from_secs(20));

    assert!(info.expires_at.is_some(), "{info:?}");
    let gone = gone.expect("the vm outlived its ttl by 15s");
    let lived = created.elapsed() - Duration::from_millis(250);
    assert!(
        lived >= Duration::from_secs(4),
        "deleted after {lived:?}, before its ttl"
    );
    assert!(
        gone < Duration::from_secs(9),
        "deleted {gone:?} after create"
    );
}

#[test]
fn ttl_expired_while_the_daemon_was_down_deletes_the_running_vm_at_start() {
    let Some(h) = banger_e2e::turn("ttl_expired_while_the_daemon_was_down") else {
        return;
    };
    let ours = [h.state_dir.as_path(), h.runtime_dir.as_path()];
    let before = vmm_pids(&ours);
    let vm = h.create("ttl-down", &["--ttl", "5s"]);
    assert_eq!(vm.exec(&["true"]).code, 0);

    h.banger(&["daemon", "stop"]);
    std::thread::sleep(Duration::from_secs(7));
    h.ok(&["daemon", "start"]);
    let gone = h.gone_within(vm.name(), Duration::from_secs(10));

    assert!(
        gone.is_some(),
        "the expired vm is still there after the restart"
    );
    assert_eq!(vmm_pids(&ours), before, "its vmm still runs");
}

#[test]
fn prune_lists_then_deletes_a_stopped_vm() {
    let Some(h) = banger_e2e::turn("prune_lists_then_deletes_a_stopped_vm") else {
        return;
    };
    let stopped = h.create("prune-stopped", &["--no-start"]);
    let running = h.create("prune-running", &[]);
    let line = format!("vm {}", stopped.name());

    let refused = h.banger(&["prune"]);
    let dry = h.ok(&["prune", "--dry-run"]);
    let still_there = h.vms().len();
    let forced = h.ok(&["prune", "--force"]);

    refused.failure(Some(3), "pass --force");
    assert!(dry.lines().any(|l| l == line), "{dry}");
    assert!(!dry.contains(running.name()), "{dry}");
    assert_eq!(still_there, 2);
    assert!(forced.lines().any(|l| l == line), "{forced}");
    let left: Vec<String> = h.vms().into_iter().map(|v| v.name).collect();
    assert_eq!(left, [running.name()]);
}
