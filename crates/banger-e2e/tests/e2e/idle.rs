//! Idle timeouts: `--idle-timeout` deletes a VM nothing has used for its timeout, never
//! while a command runs in it (streamed, detached or over ssh), and also after a daemon restart
//! (the clock then starts again from the daemon's start). The VMs' disappearance is
//! watched with `vm list`, which names no VM and so does not use them.

use std::time::Duration;

use banger_e2e::host::vmm_pids;

#[test]
fn idle_timeout_deletes_an_unused_vm() {
    let Some(h) = banger_e2e::turn("idle_timeout_deletes_an_unused_vm") else {
        return;
    };
    let refused = h.banger(&[
        "vm",
        "create",
        &h.name("idle-long"),
        "--idle-timeout",
        "400d",
    ]);
    let vm = h.create("idle", &["--idle-timeout", "5s"]);
    let info = vm.info();

    let gone = h.gone_within(vm.name(), Duration::from_secs(25));

    refused.failure(Some(3), "idle timeout of 34560000 seconds is too long");
    assert!(refused.stderr.contains("hint:"), "{}", refused.stderr);
    assert!(h.vms().iter().all(|v| !v.name.starts_with("idle-long")));
    assert_eq!(info.idle_timeout_secs, Some(5), "{info:?}");
    let gone = gone.expect("the vm outlived its idle timeout by 20s");
    assert!(
        gone >= Duration::from_secs(4),
        "deleted {gone:?} after its last use, before its idle timeout"
    );
    assert!(
        gone < Duration::from_secs(12),
        "deleted {gone:?} after its last use"
    );
}

#[test]
fn a_running_command_keeps_an_idle_vm_until_it_ends() {
    let Some(h) = banger_e2e::turn("a_running_command_keeps_an_idle_vm_until_it_ends") else {
        return;
    };
    let vm = h.create("idle-busy", &["--idle-timeout", "5s"]);

    let out = vm.exec(&["sleep", "12"]);
    let gone = h.gone_within(vm.name(), Duration::from_secs(25));

    assert_eq!(
        out.code, 0,
        "the vm went while its command ran: {}",
        out.stderr
    );
    let gone = gone.expect("the vm outlived its idle timeout by 20s");
    assert!(
        gone >= Duration::from_secs(4),
        "deleted {gone:?} after its command ended"
    );
    assert!(
        gone < Duration::from_secs(12),
        "deleted {gone:?} after its command ended"
    );
}

#[test]
fn a_detached_command_keeps_an_idle_vm_until_it_ends() {
    let Some(h) = banger_e2e::turn("a_detached_command_keeps_an_idle_vm_until_it_ends") else {
        return;
    };
    let vm = h.create("idle-detached", &["--idle-timeout", "5s"]);

    h.ok(&["vm", "exec", "-d", vm.name(), "--", "sleep", "10"]);
    let gone = h.gone_within(vm.name(), Duration::from_secs(30));

    let gone = gone.expect("the vm outlived its detached command and idle timeout by 15s");
    assert!(
        gone >= Duration::from_secs(14),
        "deleted {gone:?} after its 10s detached command started"
    );
    assert!(
        gone < Duration::from_secs(22),
        "deleted {gone:?} after it started"
    );
}

#[test]
fn an_ssh_session_keeps_an_idle_vm_until_it_ends() {
    let Some(h) = banger_e2e::turn("an_ssh_session_keeps_an_idle_vm_until_it_ends") else {
        return;
    };
    let vm = h.create("idle-ssh", &["--idle-timeout", "5s"]);

    // The session is plain ssh to the VM's address: the daemon sees no stream of it.
    let out = h.banger(&["vm", "ssh", vm.name(), "--", "sleep", "10"]);
    let gone = h.gone_within(vm.name(), Duration::from_secs(25));

    assert_eq!(
        out.code, 0,
        "the vm went during the session: {}",
        out.stderr
    );
    let gone = gone.expect("the vm outlived its idle timeout by 20s");
    assert!(
        gone >= Duration::from_secs(3),
        "deleted {gone:?} after the session ended"
    );
}

#[test]
fn an_idle_vm_goes_after_a_daemon_restart() {
    let Some(h) = banger_e2e::turn("an_idle_vm_goes_after_a_daemon_restart") else {
        return;
    };
    let ours = [h.state_dir.as_path(), h.runtime_dir.as_path()];
    let before = vmm_pids(&ours);
    let vm = h.create("idle-restart", &["--idle-timeout", "5s"]);

    h.banger(&["daemon", "stop"]);
    std::thread::sleep(Duration::from_secs(7));
    h.ok(&["daemon", "start"]);
    let gone = h.gone_within(vm.name(), Duration::from_secs(25));

    let gone = gone.expect("the idle vm is still there 25s after the restart");
    assert!(
        gone >= Duration::from_secs(3),
        "deleted {gone:?} after the restart: its clock starts at the daemon's start"
    );
    assert_eq!(vmm_pids(&ours), before, "its vmm still runs");
}
