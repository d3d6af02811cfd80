//! Create, stop, start, set and delete; what bad input leaves behind (nothing).

use banger_e2e::host::vmm_pids;
use banger_wire::api::VmState;

fn vm_dirs(h: &banger_e2e::Harness) -> Vec<String> {
    let mut dirs: Vec<String> = match fs_err::read_dir(h.state_dir.join("vms")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    };
    dirs.sort();
    dirs
}

/// Bad input fails with a clear error and leaves no row, no VMM and no files; a
/// duplicate name leaves the first VM as it was.
#[test]
fn invalid_spec() {
    let Some(h) = banger_e2e::turn("invalid_spec") else {
        return;
    };
    let ours = [h.state_dir.as_path(), h.runtime_dir.as_path()];
    let vmms = vmm_pids(&ours);
    let bad = h.name("bad");

    h.banger(&["vm", "create", &bad, "--vcpu", "0"])
        .failure(Some(3), "vcpu");
    h.banger(&["vm", "create", &bad, "--memory", "1"])
        .failure(Some(3), "memory of 1 MiB is too small");
    h.banger(&["vm", "create", &bad, "--image", "no-such-image"])
        .failure(Some(4), "no-such-image");

    assert_eq!(h.vms(), vec![]);
    assert_eq!(vm_dirs(&h), Vec::<String>::new(), "vm files left");
    assert_eq!(vmm_pids(&ours), vmms);

    let dup = h.create("dup", &["--no-start"]);
    let id = dup.info().id;
    h.banger(&["vm", "create", dup.name()])
        .failure(Some(5), &format!("{:?} already exists", dup.name()));

    let vms = h.vms();
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert_eq!(dup.info().id, id);
    assert_eq!(vm_dirs(&h), vec![id]);
    assert_eq!(vmm_pids(&ours), vmms);
    dup.delete();
}

#[test]
fn lifecycle() {
    let Some(h) = banger_e2e::turn("lifecycle") else {
        return;
    };
    let vm = h.create("life", &[]);

    vm.sh("echo persisted >/root/mark && sync");
    vm.stop();
    assert_eq!(vm.info().state, VmState::Stopped);
    vm.start();

    assert_eq!(
        vm.exec(&["cat", "/root/mark"]).success().text(),
        "persisted"
    );
    vm.delete();
    assert_eq!(h.vms(), vec![]);
}

#[test]
fn isolated_writes() {
    let Some(h) = banger_e2e::turn("isolated_writes") else {
        return;
    };
    let a = h.create("iso-a", &[]);
    let b = h.create("iso-b", &[]);

    a.sh("echo a >/root/only-a");
    let seen = b.exec(&["test", "-e", "/root/only-a"]);

    assert_eq!(seen.code, 1, "{seen:?}");
}

#[test]
fn vm_set_vcpu() {
    let Some(h) = banger_e2e::turn("vm_set_vcpu") else {
        return;
    };
    let vm = h.create("cpus", &["--vcpu", "2"]);
    assert_eq!(vm.exec(&["nproc"]).success().text(), "2");

    vm.stop();
    vm.set(&["--vcpu", "4"]).success();
    vm.start();

    assert_eq!(vm.exec(&["nproc"]).success().text(), "4");
    assert_eq!(vm.info().vcpu, 4);
}

#[test]
fn set_running_refused() {
    let Some(h) = banger_e2e::turn("set_running_refused") else {
        return;
    };
    let vm = h.create("busy", &[]);
    let vcpu = vm.info().vcpu;

    let out = vm.set(&["--vcpu", &(vcpu + 1).to_string()]);

    out.failure(None, "stopped VM only");
    assert_eq!(vm.info().vcpu, vcpu);
}
